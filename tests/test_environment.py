"""The two environment files list the same pinned packages; torch is pinned to the CPU build on disk."""
import tomllib

import yaml

from ocrlib.paths import PROJECT_ROOT


def pyproject_deps() -> list[str]:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def conda_pip_deps() -> list[str]:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [d for d in pip_section if not d.startswith("-e")]


def test_environment_yml_and_pyproject_agree():
    assert sorted(conda_pip_deps()) == sorted(pyproject_deps())


def test_every_dependency_is_pinned_exactly():
    unpinned = [d for d in pyproject_deps() if "==" not in d]
    assert unpinned == []


def test_torch_is_the_cpu_build_and_torchvision_is_absent():
    deps = {d.split("==")[0].lower(): d.split("==")[1] for d in pyproject_deps()}
    assert deps["torch"] == "2.13.0"
    assert "torchvision" not in deps


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    mismatched = {}
    for dep in pyproject_deps():
        name, pinned = dep.split("==")
        installed = version(name).split("+")[0]
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert mismatched == {}
