"""Training loop: determinism, exact resume, atomic checkpoints, skipped samples, budgets, run cache; optim and losses.

Tiny data: synthetic images (one stripe pattern per token) in the competition layout, and the smoke
SATRN config, so each training run takes a second or two on a 2-core CPU.
"""
import json
from pathlib import Path

import pytest
import torch

from ocrlib.errors import BadInput
from ocrlib.evaluate import read_checkpoint
from ocrlib.losses import bracket_ids, bracket_penalty
from ocrlib.optim import AdamP, build_optimizer, get_lr, get_tf_ratio
from ocrlib.train import ShardedBatchSampler, data_fingerprint, run_id, save_checkpoint, train

from helpers import ALPHABET, tiny_config, write_dataset


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_dataset(root / "train", 12, seed=0, bad=1), write_dataset(root / "val", 6, seed=1)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def straight_run(data_dirs, tmp_path_factory):
    """A 6-step run of the tiny config, uninterrupted: (run folder, summary)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    return run, train(tiny_config(*data_dirs), run, progress=False)


def test_run_folder_contents_and_summary(data_dirs, straight_run):
    run, summary = straight_run
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "best.pt", "tokens.txt", "summary.json"} <= {
        p.name for p in run.iterdir()}
    assert not list(run.glob("*.tmp"))
    assert summary["steps"] == 6 and summary["stopped"] == "steps"
    assert json.loads((run / "summary.json").read_text()) == summary
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert "val_sa" in records[2] and "val_sa" not in records[3] and "val_wer" in records[5]
    assert records[0]["tf_ratio"] == pytest.approx(0.9) and records[0]["lr"] < records[1]["lr"]  # warm-up
    # the corrupt image is skipped (every epoch it comes round), counted, and training went on
    assert summary["skipped_samples"] >= 1 and summary["skip_reasons"]
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 6 and state["vocab"][:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert state["config"] == tiny_config(*data_dirs)


def test_same_seed_same_losses_other_seed_differs(data_dirs, tmp_path):
    config = tiny_config(*data_dirs, max_steps=2, eval_every=0)
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    config["training"]["seed"] = 1
    train(config, tmp_path / "c", progress=False)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert [l for _, l in losses(tmp_path / "a")] != [l for _, l in losses(tmp_path / "c")]


def test_resume_after_crash_gives_identical_losses(data_dirs, straight_run, tmp_path, monkeypatch):
    config = tiny_config(*data_dirs)

    import ocrlib.train as train_module
    real_save = train_module.save_checkpoint

    def crash_after_step_4(state, path):  # mid-epoch (3 batches an epoch), after an evaluation
        real_save(state, path)
        if path.name == "checkpoint.pt" and state["step"] == 4:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert [s for s, _ in losses(tmp_path / "resumed")] == [1, 2, 3, 4]
    train(config, tmp_path / "resumed", resume=True, progress=False)

    assert losses(tmp_path / "resumed") == losses(straight_run[0])  # exact float equality
    elapsed = [json.loads(line)["elapsed_s"] for line in (tmp_path / "resumed" / "metrics.jsonl").open()]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0, "wall-clock time continues across the resume"
    straight = read_checkpoint(straight_run[0] / "checkpoint.pt")["model"]
    resumed = read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_budget_stop_finishes_the_run_which_is_cached_and_resumable(data_dirs, tmp_path):
    config = tiny_config(*data_dirs, max_steps=3, eval_every=0)
    (tmp_path / "tokens.txt").write_text("\n".join(["<pad>", "<sos>", "<eos>", "<unk>", *ALPHABET, "\\alpha"]) + "\n")
    config["data"]["vocab"] = str(tmp_path / "tokens.txt")  # a shared vocabulary instead of the labels'
    summary = train(config, tmp_path / "run", budget_min=1e-9, progress=False)
    assert summary["stopped"] == "budget" and summary["steps"] == 1 and summary["last_val"]["n"] == 6
    assert summary["vocab_size"] == 4 + len(ALPHABET) + 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    log_before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert train(config, tmp_path / "run", progress=False) == summary  # finished with this config: not retrained
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == log_before
    other = tiny_config(*data_dirs, max_steps=3, eval_every=0, lr=1e-2)
    with pytest.raises(BadInput, match="already holds a run"):
        train(other, tmp_path / "run", progress=False)
    assert train(config, tmp_path / "run", resume=True, progress=False)["steps"] == 3
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3]


def test_unknown_training_key_is_refused(data_dirs, tmp_path):
    with pytest.raises(BadInput, match="unknown training key.*warmup"):
        train(tiny_config(*data_dirs, warmup=5), tmp_path / "run", progress=False)


def test_unwritable_run_dir_fails_before_training(data_dirs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadInput, match="not writable"):
        train(tiny_config(*data_dirs), blocker / "run", progress=False)


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = read_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_run_id_and_fingerprint(data_dirs):
    config = tiny_config(*data_dirs)
    fingerprint = data_fingerprint(*data_dirs)
    assert run_id(config, fingerprint) == run_id(tiny_config(*data_dirs), data_fingerprint(*data_dirs))
    assert run_id(config, fingerprint).startswith("satrn-")
    assert run_id(tiny_config(*data_dirs, lr=1e-2), fingerprint) != run_id(config, fingerprint)
    assert run_id(config, data_fingerprint(data_dirs[0])) != run_id(config, fingerprint)


def test_sharded_batches_are_disjoint_and_equal_in_number():
    batches = [[i] for i in range(7)]
    shards = [list(ShardedBatchSampler(batches, rank, 2)) for rank in (0, 1)]
    assert shards == [[[0], [2], [4]], [[1], [3], [5]]]  # the odd tail batch is dropped on every rank
    assert len(ShardedBatchSampler(batches, 0, 2)) == 3


# ---------------------------------------------------------------- optimisers, schedules, losses
def test_lr_schedules():
    assert get_lr(0, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert get_lr(10, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert get_lr(55, 100, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.55)
    assert get_lr(100, 100, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.1)
    assert get_lr(0, 100, 1.0, "onecycle") == pytest.approx(1 / 25)
    assert get_lr(30, 100, 1.0, "onecycle") == pytest.approx(1.0)
    assert get_lr(100, 100, 1.0, "onecycle") == pytest.approx(1 / 25e4)
    assert [get_lr(s, 100, 1.0, "step", step_size=10, gamma=0.5) for s in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]
    with pytest.raises(ValueError, match="known"):
        get_lr(0, 10, 1.0, "bogus")


def test_teacher_forcing_schedules():
    assert get_tf_ratio(50, 100, "constant", start=0.8) == 0.8
    assert get_tf_ratio(50, 100, "linear", start=1.0, end=0.5) == pytest.approx(0.75)
    assert [get_tf_ratio(s, 90, "step") for s in (0, 29, 30, 60, 89)] == [0.5, 0.5, 0.4, 0.3, 0.3]


def test_adamp_equals_adam_on_vectors_and_slows_norm_growth_on_scale_invariant_weights():
    torch.manual_seed(0)
    bias = torch.randn(5, requires_grad=True)
    bias_ref = bias.detach().clone().requires_grad_(True)
    opt, ref = AdamP([bias], lr=0.1), torch.optim.Adam([bias_ref], lr=0.1)
    for _ in range(5):
        for p, o in ((bias, opt), (bias_ref, ref)):
            o.zero_grad()
            ((p - 3) ** 2).sum().backward()
            o.step()
    assert torch.allclose(bias, bias_ref, atol=1e-6)

    target = torch.randn(4, 8)
    norms = {}
    for name in ("adam", "adamp"):
        weight = torch.nn.Parameter(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))
        optimizer = build_optimizer(name, [weight], lr=0.05)
        for _ in range(50):  # the loss depends on the direction only: scale-invariant
            optimizer.zero_grad()
            (-(torch.nn.functional.normalize(weight, dim=1) * target).sum()).backward()
            optimizer.step()
        norms[name] = weight.norm().item()
    assert norms["adamp"] < norms["adam"]
    with pytest.raises(ValueError, match="known"):
        build_optimizer("sgdx", [weight], lr=0.1)


def test_bracket_penalty_prefers_balanced_predictions():
    tokens = ["<pad>", "<sos>", "<eos>", "<unk>", "{", "}", "x", "(", ")"]
    pairs = bracket_ids(tokens)
    assert pairs == [(4, 5), (7, 8)]
    targets = torch.tensor([[4, 6, 5, 2, 0]])  # { x } <eos> <pad>
    balanced = torch.full((1, 5, 9), -20.0)
    balanced[0, torch.arange(5), targets[0]] = 20.0
    unbalanced = balanced.clone()
    unbalanced[0, 2, 5], unbalanced[0, 2, 6] = -20.0, 20.0  # predicts x instead of }
    assert bracket_penalty(balanced, targets, pairs, pad_id=0).item() == pytest.approx(0.0, abs=1e-6)
    assert bracket_penalty(unbalanced, targets, pairs, pad_id=0).item() == pytest.approx(0.5 * 1 / 4, rel=1e-3)
    logits = unbalanced.clone().requires_grad_(True)
    bracket_penalty(logits, targets, pairs, pad_id=0).backward()
    assert logits.grad[0, 2, 5] < 0  # gradient descent raises the missing closing brace


def test_synthetic_data_is_rendered_once_into_a_cache(tmp_path, monkeypatch):
    import ocrlib.train as train_module
    from ocrlib.data.sources import read_gt
    from ocrlib.train import prepare_data

    monkeypatch.setattr(train_module, "DATA_DIR", tmp_path)
    spec = {"source": "synth", "synth_n": 24, "val_fraction": 0.25}
    train_dir, val_dir = prepare_data(spec, progress=False)
    assert train_dir.parent.parent == tmp_path / "cache"
    train_labels = {" ".join(s.tokens) for s in read_gt(train_dir)[0]}
    val_labels = {" ".join(s.tokens) for s in read_gt(val_dir)[0]}
    assert train_labels and val_labels and not train_labels & val_labels  # val formulas are new
    stamp = (train_dir / "gt.txt").stat().st_mtime_ns
    assert prepare_data(spec, progress=False) == (train_dir, val_dir)
    assert (train_dir / "gt.txt").stat().st_mtime_ns == stamp  # cached, not rendered again
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no partial folders left


def test_cli_train_refuses_an_unwritable_run_dir(tmp_path, capsys):
    from ocrlib.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["train", "--config", "satrn", "--profile", "smoke", "--run-dir", str(blocker / "run")])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: {blocker / 'run'}: run directory is not writable")
