"""pyproject.toml: exact pins, a runtime without the notebook and test tools, those in extras; environment.yml
(the full development environment) lists the runtime plus every extra with the same pins; torch is the CPU build."""
import tomllib

import yaml

from ocrlib.paths import PROJECT_ROOT

NOT_RUNTIME = {"jupyterlab", "pytest", "papermill", "nbformat", "nbconvert", "ipykernel"}


def pyproject() -> dict:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def runtime_deps() -> list[str]:
    return pyproject()["dependencies"]


def extras() -> dict[str, list[str]]:
    return pyproject().get("optional-dependencies", {})


def all_deps() -> list[str]:
    return runtime_deps() + [d for deps in extras().values() for d in deps]


def conda_pip_deps() -> list[str]:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [d for d in pip_section if not d.startswith("-e")]


def name_of(dep: str) -> str:
    return dep.split("==")[0].strip().lower()


def test_environment_yml_is_the_runtime_plus_every_extra():
    assert sorted(conda_pip_deps()) == sorted(all_deps())
    assert len(set(map(name_of, all_deps()))) == len(all_deps()), "a package listed twice"


def test_the_extras_are_notebooks_and_dev():
    assert {"notebooks", "dev"} <= set(extras())
    assert "nbformat" in map(name_of, extras()["notebooks"]) and "pytest" in map(name_of, extras()["dev"])


def test_every_dependency_is_pinned_exactly():
    unpinned = [d for d in all_deps() + conda_pip_deps() if "==" not in d or any(c in d for c in "<>~!,;[")]
    assert unpinned == []


def test_the_runtime_leaves_out_notebook_and_test_tools():
    assert NOT_RUNTIME.isdisjoint(map(name_of, runtime_deps()))


def test_torch_is_the_cpu_build_and_torchvision_is_absent():
    deps = {name_of(d): d.split("==")[1] for d in all_deps()}
    assert deps["torch"] == "2.13.0" and "torch" in map(name_of, runtime_deps())
    assert "torchvision" not in deps


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    mismatched = {}
    for dep in all_deps():
        name, pinned = dep.split("==")
        installed = version(name).split("+")[0]
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert mismatched == {}
