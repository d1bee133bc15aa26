"""Training loop: determinism, exact resume, Ctrl-C, skipped samples, budgets, run cache, DDP batch sharding.

Tiny data: synthetic images (one stripe pattern per token) in the competition layout, and the smoke
SATRN config, so each training run takes a second or two on a 2-core CPU.
"""
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from ocrlib.errors import BadInput
from ocrlib.locking import folder_lock
from ocrlib.checkpoints import read_checkpoint
from ocrlib.train import ShardedBatchSampler, data_fingerprint, run_id, train

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
    assert [r["progress"] for r in records] == [0.1667, 0.3333, 0.5, 0.6667, 0.8333, 1.0]  # no budget: steps
    assert "val_sa" in records[2] and "val_sa" not in records[3] and "val_wer" in records[5]
    assert records[0]["tf_ratio"] == pytest.approx(0.9) and records[0]["lr"] < records[1]["lr"]  # warm-up
    assert all(0 < r["data_wait"] < 1 for r in records)  # the share of each step spent waiting for its batch
    # the corrupt image is skipped (every epoch it comes round), counted, and training went on
    assert summary["skipped_samples"] >= 1 and summary["skip_reasons"]
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 6 and state["vocab"][:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert state["config"] == tiny_config(*data_dirs).to_dict() and state["format"] == 2


def test_same_seed_same_losses_other_seed_differs(data_dirs, tmp_path):
    config = tiny_config(*data_dirs, max_steps=2, eval_every=0)
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    train(config.replace({"training.seed": 1}), tmp_path / "c", progress=False)
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
    config = config.replace({"data.vocab": str(tmp_path / "tokens.txt")})  # a shared vocabulary, not the labels'
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


@pytest.fixture
def ten_second_steps(monkeypatch):
    """A fake clock in ocrlib.train on which each optimiser step takes 10 s and nothing else any time."""
    import ocrlib.train as train_module

    clock, real_step = [time.time()], train_module.optimizer_step

    def step(*args):
        clock[0] += 10.0
        return real_step(*args)

    monkeypatch.setattr(train_module, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(train_module, "optimizer_step", step)


# a 1-minute budget of 10-second steps, max_steps far away: the cosine and the teacher forcing run over 6 steps
BUDGET_RUN = dict(max_steps=1000, budget_min=1.0, warmup_steps=0, lr=1e-3, min_lr=0.0, eval_every=0)
BUDGET_LRS = [1e-3 * f for f in (1.0, 0.9330127, 0.75, 0.5, 0.25, 0.0669873)]  # cosine at progress 0, 1/6, ...
BUDGET_TFS = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65]  # 0.9 -> 0.6, linear in progress


def test_a_budget_limited_run_ends_its_schedules_when_the_budget_is_spent(data_dirs, tmp_path, ten_second_steps):
    summary = train(tiny_config(*data_dirs, **BUDGET_RUN), tmp_path / "run", progress=False)
    assert summary["stopped"] == "budget" and summary["steps"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["progress"] for r in records] == [0.1667, 0.3333, 0.5, 0.6667, 0.8333, 1.0]
    assert [r["lr"] for r in records] == pytest.approx(BUDGET_LRS)
    assert [r["tf_ratio"] for r in records] == pytest.approx(BUDGET_TFS)
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["elapsed_s"] == pytest.approx(60.0)


def test_a_resumed_budget_run_continues_its_schedules_from_the_checkpointed_time(data_dirs, tmp_path, monkeypatch,
                                                                                  ten_second_steps):
    import ocrlib.train as train_module

    config, real_save = tiny_config(*data_dirs, **BUDGET_RUN), train_module.save_checkpoint

    def crash_after_step_3(state, path):
        real_save(state, path)
        if state["step"] == 3:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    summary = train(config, tmp_path / "run", resume=True, progress=False)  # 30 s of the budget already spent
    assert summary["stopped"] == "budget" and summary["steps"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx(BUDGET_LRS)
    assert [r["tf_ratio"] for r in records] == pytest.approx(BUDGET_TFS)


def test_several_train_folders_are_one_training_set(data_dirs, tmp_path):
    more = write_dataset(tmp_path / "tex", 5, seed=9)
    config = tiny_config(*data_dirs, max_steps=1).replace({"data.train": [str(data_dirs[0]), str(more)]})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["train_samples"] == 12 + 1 + 5  # both folders (the first has a corrupt image too)
    assert summary["train"] == f"{data_dirs[0]}, {more}"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["train"] == [str(data_dirs[0]),
                                                                                               str(more)]


def test_init_from_starts_at_the_given_weights_and_vocabulary(data_dirs, straight_run, tmp_path):
    run, _ = straight_run
    start = read_checkpoint(run / "best.pt")
    config = tiny_config(*data_dirs, max_steps=1, lr=0.0, eval_every=0).replace(
        {"training.init_from": str(run / "best.pt"), "training.warmup_steps": 0})
    train(config, tmp_path / "tuned", progress=False)
    tuned = read_checkpoint(tmp_path / "tuned" / "checkpoint.pt")
    assert tuned["vocab"] == start["vocab"]
    # lr 0: one step leaves the weights where the initial checkpoint had them (a fresh init would differ);
    # batch-norm running statistics move with the step's batch
    weights = [k for k in start["model"] if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 10 and all(torch.equal(tuned["model"][k], start["model"][k]) for k in weights)
    wider = tiny_config(*data_dirs, max_steps=1).replace({"training.init_from": str(run / "best.pt"),
                                                          "model.hidden": 48})
    with pytest.raises(BadInput, match="do not fit this run's model"):
        train(wider, tmp_path / "wider", progress=False)


def test_unknown_training_key_is_refused(data_dirs):
    with pytest.raises(BadInput, match="training.warmup=5: unknown key 'training.warmup'"):
        tiny_config(*data_dirs, warmup=5)


def test_unwritable_run_dir_fails_before_training(data_dirs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadInput, match="not writable"):
        train(tiny_config(*data_dirs), blocker / "run", progress=False)


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
def test_synthetic_data_is_rendered_once_into_a_cache(tmp_path, monkeypatch):
    import ocrlib.data.build as build_module
    from ocrlib.config import DataConfig
    from ocrlib.data.sources import read_gt
    from ocrlib.train import prepare_data

    monkeypatch.setattr(build_module, "DATA_DIR", tmp_path)
    spec = DataConfig(source="synth", synth_n=24, val_fraction=0.25)
    (train_dir,), val_dir = prepare_data(spec, progress=False)
    assert train_dir.parent.parent == tmp_path / "cache"
    train_labels = {" ".join(s.tokens) for s in read_gt(train_dir)[0]}
    val_labels = {" ".join(s.tokens) for s in read_gt(val_dir)[0]}
    assert train_labels and val_labels and not train_labels & val_labels  # val formulas are new
    stamp = (train_dir / "gt.txt").stat().st_mtime_ns
    assert prepare_data(spec, progress=False) == ((train_dir,), val_dir)
    assert (train_dir / "gt.txt").stat().st_mtime_ns == stamp  # cached, not rendered again
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no partial folders left


def test_cli_train_refuses_an_unwritable_run_dir(tmp_path, capsys):
    from ocrlib.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["train", "--config", "satrn", "--preset", "smoke", "--run-dir", str(blocker / "run")])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: {blocker / 'run'}: run directory is not writable")


@pytest.mark.slow  # two training processes and a straight run, about 20 s
def test_ctrl_c_saves_a_checkpoint_exits_130_and_resume_continues_the_same_run(data_dirs, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = tiny_config(*data_dirs, max_steps=60, eval_every=0, checkpoint_every=1000, num_workers=0)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ocrlib", "train", "--config", str(path), "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log, deadline = run / "metrics.jsonl", time.time() + 120
    while (not log.is_file() or len(log.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err and "--resume" in err
    stopped = read_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= stopped < 60 and not (run / "summary.json").exists()
    assert [s for s, _ in losses(run)] == list(range(1, stopped + 1))

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 60
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the processes' thread count: float sums depend on it
    train(config, tmp_path / "straight", progress=False)
    assert losses(run) == losses(tmp_path / "straight")  # the interrupted run is the same run


def test_profile_run_resumes_an_interrupted_run_and_waits_for_one_in_progress(data_dirs, tmp_path, monkeypatch):
    """A notebook killed mid-run (or a closed session) continues that run the next time it is asked for; two
    notebooks asking for the same run at once train it once."""
    import threading

    import ocrlib.train as train_module

    vocab = tmp_path / "tokens.txt"
    vocab.write_text("\n".join(["<pad>", "<sos>", "<eos>", "<unk>", *ALPHABET]) + "\n")
    built = SimpleNamespace(sets={"printed/train": data_dirs[0], "printed/val": data_dirs[1]}, vocab_path=vocab)
    straight = tiny_config(*data_dirs)
    overrides = {key: value for key, value in straight.to_dict()["training"].items() if key != "seed"}
    overrides = {**{f"training.{k}": v for k, v in overrides.items()}, "model.dropout": 0.1, "model.max_len": 12,
                 "data.augment": "light"}
    monkeypatch.setattr(train_module, "RUNS_DIR", tmp_path / "runs")
    real_save = train_module.save_checkpoint

    def crash_after_step_4(state, path):
        real_save(state, path)
        if path.name == "checkpoint.pt" and state["step"] == 4:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_module.profile_run("satrn", built, "smoke", 0, overrides, progress=False, train_sets=("printed/train",))
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    config, run_dir, summary = train_module.profile_run("satrn", built, "smoke", 0, overrides, progress=False,
                                                        train_sets=("printed/train",))
    assert summary["steps"] == 6 and [s for s, _ in losses(run_dir)] == [1, 2, 3, 4, 5, 6]
    train(config, tmp_path / "straight", progress=False)  # the same config, never interrupted
    assert losses(run_dir) == losses(tmp_path / "straight")

    # the lock: a second holder waits until the first lets go
    order, held = [], threading.Event()

    def first():
        with folder_lock(run_dir):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait()
    with folder_lock(run_dir):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
