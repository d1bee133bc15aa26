"""DDP on CPU: two processes (gloo) train the tiny config; weights agree across ranks, only rank 0 writes,
and a resumed run ends with the weights of the run that never stopped (every rank's RNG is restored)."""
import os
import shutil

import pytest
import torch
import torch.multiprocessing as mp

from ocrlib.checkpoints import read_checkpoint
from ocrlib.load import free_port

from helpers import tiny_config, write_dataset


def run_rank(rank: int, world_size: int, port: int, config, run_dirs: list, out_dir: str,
             resume: bool = False, keep_step: int | None = None) -> None:
    """One torchrun-like process: the environment torchrun would set, then train(); saves its final weights
    (and, with keep_step, a copy of the checkpoint written at that step)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    import ocrlib.train as train_module

    wrapped = []

    class RecordingDDP(train_module.DDP):  # keeps a handle on this rank's model to compare weights afterwards
        def __init__(self, module, *args, **kwargs):
            super().__init__(module, *args, **kwargs)
            wrapped.append(module.model)  # DDP wraps WithLoss(recogniser)

    train_module.DDP = RecordingDDP
    real_save = train_module.save_checkpoint

    def keeping_save(state, path):
        real_save(state, path)
        if path.name == "checkpoint.pt" and state["step"] == keep_step:
            shutil.copy(path, os.path.join(out_dir, f"step{keep_step}.pt"))

    train_module.save_checkpoint = keeping_save
    train_module.train(config, run_dirs[rank], resume=resume, progress=False)
    # parameters only: BatchNorm running stats are rank 0's, broadcast at each forward (rank 0 checkpoints them)
    params = {name: p.detach() for name, p in wrapped[0].named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow  # spawns two training processes
def test_two_cpu_processes_stay_in_sync_and_only_rank0_writes(tmp_path):
    train_dir = write_dataset(tmp_path / "train", 12, seed=0, bad=1)
    val_dir = write_dataset(tmp_path / "val", 4, seed=1)
    # grad_accum=2 exercises the no-sync micro-batch; each rank sees other batches (sharded sampler)
    config = tiny_config(train_dir, val_dir, max_steps=3, grad_accum=2, eval_every=0, checkpoint_every=1)
    run_dirs = [str(tmp_path / "run_rank0"), str(tmp_path / "run_rank1")]
    mp.spawn(run_rank, args=(2, free_port(), config, run_dirs, str(tmp_path), False, 2), nprocs=2, join=True)

    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    checkpoint = read_checkpoint(tmp_path / "run_rank0" / "checkpoint.pt")
    assert checkpoint["step"] == 3 and all(torch.equal(checkpoint["model"][k], weights[0][k]) for k in weights[0])
    assert (tmp_path / "run_rank0" / "summary.json").is_file()
    assert len((tmp_path / "run_rank0" / "metrics.jsonl").read_text().splitlines()) == 3
    assert not os.path.exists(run_dirs[1])  # rank 1 wrote nothing
    ranks = checkpoint["rng"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"]), "one RNG state per rank"

    # resume from the step-2 checkpoint: both ranks continue their own random streams -> the same weights
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(tmp_path / "step2.pt", resumed / "checkpoint.pt")
    shutil.copy(tmp_path / "run_rank0" / "metrics.jsonl", resumed / "metrics.jsonl")
    resumed_dirs = [str(resumed)] * 2  # as torchrun runs it: every rank reads the one checkpoint
    mp.spawn(run_rank, args=(2, free_port(), config, resumed_dirs, str(tmp_path / "resumed"), True), nprocs=2,
             join=True)
    again = torch.load(resumed / "rank1.pt", weights_only=True)
    assert all(torch.equal(again[k], weights[1][k]) for k in weights[1])
