"""Train a recogniser: one readable loop (nanoGPT's train.py), checkpoints that resume exactly, run logs.

    summary = train(load_config("satrn", preset="smoke"), "runs/satrn-smoke")
    ocrlib train --config satrn --preset smoke --set training.lr=3e-4
    torchrun --nproc_per_node 2 -m ocrlib train --config satrn   # DDP: gloo on CPU, NCCL on GPU

A run folder holds config.yaml, metrics.jsonl (one line per log step), checkpoint.pt (written
atomically), best.pt (best validation score), tokens.txt and summary.json. A checkpoint holds model,
optimiser, AMP scaler, sampler position, the TrainState (step, best score, RNG states of every rank...),
config and vocabulary, as tensors and plain values (ocrlib.checkpoints). Learning rate and teacher
forcing are functions of training progress (ocrlib.optim.training_progress: the fraction of max_steps
or of the wall-clock budget, whichever ends the run first; training stops at 1). Without a budget that is
the step's alone, so resuming from step s gives the same next loss as a run that never stopped
(bit-identical on CPU); with one, the checkpointed elapsed time carries the schedule across a resume.
Ctrl-C saves a checkpoint at the end of the current step and stops (`--resume` continues); a second
Ctrl-C stops at once.

What the config's sections mean: ocrlib.config (DataConfig, TrainingConfig).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter  # step timing, apart from the budget's clock (time.time)
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ocrlib.checkpoints import load_weights, read_checkpoint, read_model_checkpoint, save_checkpoint
from ocrlib.config import DataConfig, RunConfig, TrainingConfig, load_config
from ocrlib.data.build import synthetic_sets
from ocrlib.data.dataset import BucketBatchSampler, FormulaDataset, make_loader
from ocrlib.data.sources import read_gt
from ocrlib.errors import BadInput
from ocrlib.evaluate import evaluate, select_device
from ocrlib.losses import bracket_ids, bracket_penalty
from ocrlib.models import model_from_config
from ocrlib.optim import build_optimizer, get_lr, get_tf_ratio, training_progress
from ocrlib.locking import folder_lock
from ocrlib.paths import RUNS_DIR
from ocrlib.pretrained import default_checkpoint
from ocrlib.tokens import Vocab

SUMMARY, CHECKPOINT, BEST, LOG = "summary.json", "checkpoint.pt", "best.pt", "metrics.jsonl"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint of the last finished step was saved."""


# ---------------------------------------------------------------- run identity and data
def data_fingerprint(*folders: str | Path) -> str:
    """Hash of the labels and of the image names and sizes of competition-layout folders (cheap: no pixels)."""
    digest = hashlib.sha1()
    for folder in map(Path, folders):
        for name in ("gt.txt", "source.txt"):
            if (folder / name).is_file():
                digest.update((folder / name).read_bytes())
        images = folder / "images"
        for path in sorted(images.rglob("*")) if images.is_dir() else []:
            digest.update(f"{path.relative_to(images)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def run_id(config: RunConfig, fingerprint: str) -> str:
    """'<model>-<hash of config and data>': the same config on the same data names the same run."""
    text = json.dumps(config.to_dict(), sort_keys=True) + fingerprint
    return f"{config.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def profile_run(model: str, built, preset: str, seed: int = 0, overrides: dict | None = None,
                progress: bool | str = "lines", train_sets: tuple[str, ...] = ("printed/train", "tex/train"),
                val_set: str = "printed/val") -> tuple[RunConfig, Path, dict]:
    """Train `model` at `preset` on sets of a built profile (data.build.build_datasets; by default the printed
    mathtext and TeX training renders, mathtext validation; a set named twice is seen twice as often),
    `overrides` on top, or find that run done before: a run is named by its config and data (`run_id`), so every
    notebook asking for the same run shares one; a run that was interrupted (killed notebook, closed session)
    resumes from its checkpoint. -> (config, run folder, summary)."""
    sets = built.sets
    base = {"data.train": [str(sets[name]) for name in train_sets], "data.val": str(sets[val_set]),
            "data.vocab": str(built.vocab_path), "training.seed": seed}
    config = load_config(model, preset=preset, overrides={**base, **(overrides or {})})
    folders = [sets[name] for name in dict.fromkeys(train_sets)] + [sets[val_set]]
    run_dir = RUNS_DIR / run_id(config, data_fingerprint(*folders))
    with folder_lock(run_dir):  # another notebook or process training this same run: wait, then read its summary
        interrupted = (run_dir / CHECKPOINT).is_file() and not (run_dir / SUMMARY).is_file() and \
            _same_config(run_dir, config)  # a finished run is read by train() itself
        return config, run_dir, train(config, run_dir, resume=interrupted, progress=progress)


def _same_config(run_dir: Path, config: RunConfig) -> bool:
    path = run_dir / "config.yaml"
    return path.is_file() and yaml.safe_load(path.read_text()) == config.to_dict()


def prepare_data(data: DataConfig, progress: bool = True) -> tuple[tuple[Path, ...], Path]:
    """The train folders (one or several, e.g. mathtext and TeX renders) and the val folder: data.train/data.val,
    or with data.source 'synth' a small set rendered once from the formula generator (data.build.synthetic_sets)."""
    if data.train and data.val:
        train = tuple(map(Path, (data.train,) if isinstance(data.train, str) else data.train))
        for folder in (*train, Path(data.val)):
            if not (folder / "gt.txt").is_file():
                raise BadInput(folder, "not a competition-layout folder (no gt.txt)")
        return train, Path(data.val)
    if data.train or data.val:
        raise BadInput(data.train or data.val, "set both data.train and data.val (or neither, for synthetic data)")
    train_dir, val_dir = synthetic_sets(data.synth_n, data.synth_seed, data.renderer, data.val_fraction,
                                        progress=progress)
    return (train_dir,), val_dir


def finished_summary(run_dir: Path, config: RunConfig) -> dict | None:
    """The summary of a run that already finished in run_dir with this same config (then nothing to train)."""
    if (run_dir / SUMMARY).is_file() and _same_config(run_dir, config):
        return json.loads((run_dir / SUMMARY).read_text())
    return None


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Create and check the run folder before any training: writable, and not silently overwriting a run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BadInput(run_dir, f"run directory is not writable ({err.strerror or err})") from err
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise BadInput(run_dir / CHECKPOINT, "nothing to resume: no checkpoint")
    if not resume and ((run_dir / CHECKPOINT).is_file() or (run_dir / LOG).is_file()):
        raise BadInput(run_dir, "already holds a run; resume it, or choose another run directory")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a crash between log and checkpoint)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


# ---------------------------------------------------------------- RNG and the run state
def rng_state() -> dict:
    """Every generator that training draws from, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass
class TrainState:
    """Everything about a run's progress that is not weights, optimiser or sampler (those have state_dicts)."""
    step: int = 0  # optimiser steps done
    best_score: float = -math.inf  # best validation score so far (best.pt holds its weights)
    best_val: dict | None = None  # that validation's summary, with its step
    last_val: dict | None = None  # the latest validation's summary
    n_skipped: int = 0  # unreadable samples skipped so far
    consumed: int = 0  # batches this rank took from the sampler in the current epoch
    elapsed_s: float = 0.0  # training seconds of earlier sessions of this run (curves against wall-clock time)
    seen: int = 0  # samples since the last log line (samples/s; neither it nor the fields below are checkpointed)
    seen_total: int = 0  # samples of this session
    last_log: float = field(default_factory=time.time)  # when the last log line was written
    pixels: int = 0  # input pixels since the last log line, padding included (the padded share)
    image_pixels: int = 0  # of which image
    step_s: float = 0.0  # seconds in optimiser steps since the last log line
    wait_s: float = 0.0  # of which waiting for the loader's next batch (the data-wait share)

    def to_checkpoint(self, elapsed_now: float, rng: list[dict]) -> dict:
        return {"step": self.step, "best_score": self.best_score, "n_skipped": self.n_skipped,
                "best_val": self.best_val, "last_val": self.last_val, "elapsed_s": self.elapsed_s + elapsed_now,
                "rng": rng}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, rank: int, world_size: int) -> TrainState:
        """The state of a checkpoint; restores this rank's RNG (one state per rank of the saving run; a single
        dict in format-1 checkpoints of one process; another world size reuses them round-robin)."""
        rngs = checkpoint["rng"] if isinstance(checkpoint["rng"], list) else [checkpoint["rng"]]
        set_rng_state(rngs[rank % len(rngs)])
        return cls(step=checkpoint["step"], best_score=checkpoint["best_score"], best_val=checkpoint["best_val"],
                   last_val=checkpoint["last_val"], n_skipped=checkpoint["n_skipped"],
                   consumed=checkpoint["sampler"]["position"] // world_size, elapsed_s=checkpoint["elapsed_s"])


# ---------------------------------------------------------------- distributed
class ShardedBatchSampler:
    """Rank r of w takes batches r, r+w, r+2w... of a BucketBatchSampler (DistributedSampler for batches).

    Every rank iterates the same seeded order; a tail shorter than w batches is dropped so all ranks
    run the same number of steps (DDP needs that). Positions in state_dict count the wrapped
    sampler's batches, so a checkpoint resumes on any rank.
    """

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self):
        group = []
        for batch in self.batch_sampler:
            group.append(batch)
            if len(group) == self.world_size:
                yield group[self.rank]
                group = []

    def __len__(self) -> int:
        return len(self.batch_sampler) // self.world_size

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def state_dict(self, position: int) -> dict:
        """position: batches this rank consumed this epoch."""
        return self.batch_sampler.state_dict(position=position * self.world_size)

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


@dataclass
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on some rank (all ranks stop at the same step)."""
        return self.max(float(flag)) > 0

    def max(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)  # NCCL needs it on the device
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup_processes(device_name: str) -> Processes:
    """Rank, world size and device from torchrun's environment; starts the process group when world > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    device = select_device(device_name if device_name != "auto" else
                           f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and world_size > 1:  # share the cores between the processes of this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    return Processes(rank, world_size, device)


# ---------------------------------------------------------------- setup: data, model, optimiser
@dataclass
class RunData:
    vocab: Vocab
    train_set: FormulaDataset
    sampler: BucketBatchSampler | ShardedBatchSampler  # sharded: one slice of the batches per rank
    loader: DataLoader
    val_loader: DataLoader
    train_dirs: tuple[Path, ...]
    val_dir: Path
    bad_lines: int  # unusable gt.txt lines of train and val
    too_long: int  # training targets longer than model.max_len, left out


def setup_data(config: RunConfig, checkpoint: dict | None, procs: Processes, progress: bool) -> RunData:
    """Competition-layout folders (or a cached synthetic render), the vocabulary, datasets and loaders."""
    data, training, max_len = config.data, config.training, config.model.max_len
    if not procs.master:
        procs.barrier()  # wait for rank 0 to render the synthetic set, if any
    train_dirs, val_dir = prepare_data(data, progress is True and procs.master)
    if procs.master:
        procs.barrier()
    train_samples, bad_lines = [], []
    for folder in train_dirs:
        samples, problems = read_gt(folder)
        train_samples += samples
        bad_lines += problems
    val_samples, bad_val_lines = read_gt(val_dir)
    too_long = sum(len(s.tokens) + 1 > max_len for s in train_samples)  # + eos
    train_samples = [s for s in train_samples if len(s.tokens) + 1 <= max_len]
    if not train_samples:
        raise BadInput(", ".join(map(str, train_dirs)),
                       f"no usable training samples ({len(bad_lines)} bad gt.txt lines, {too_long} too long)")
    if checkpoint:  # resumed, or the one fine-tuning starts from: its vocabulary, so the output rows match
        vocab = Vocab(checkpoint["vocab"])
    else:  # a shared tokens.txt (ocrlib.data.build writes one per profile), else the training labels'
        vocab = Vocab.load(data.vocab) if data.vocab else Vocab.build(s.tokens for s in train_samples)
    train_set = FormulaDataset.for_config(train_samples, vocab, data, augment=data.augment, seed=training.seed)
    sampler = BucketBatchSampler(train_set.bucket_keys, training.batch_size, seed=training.seed, shuffle=True,
                                 drop_last=procs.world_size > 1, on_epoch=train_set.set_epoch)
    if procs.world_size > 1:
        sampler = ShardedBatchSampler(sampler, procs.rank, procs.world_size)
    # make_loader gives the loader its own generator: creating an iterator must not draw from the global
    # RNG (resume would drift)
    loader = make_loader(train_set, training.batch_size, seed=training.seed, num_workers=training.num_workers,
                         batch_sampler=sampler)
    val_set = FormulaDataset.for_config(val_samples[: training.val_samples or None], vocab, data)
    val_loader = make_loader(val_set, training.batch_size, seed=0, shuffle=False)
    return RunData(vocab, train_set, sampler, loader, val_loader, train_dirs, val_dir,
                   len(bad_lines) + len(bad_val_lines), too_long)


class WithLoss(nn.Module):
    """The model's forward_logits_loss as a forward, so that DDP's gradient hooks see the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, targets, tf_ratio: float, label_smoothing: float, widths=None):
        return self.model.forward_logits_loss(images, targets, tf_ratio, label_smoothing, widths)


@dataclass
class Engine:
    raw_model: nn.Module  # the Recognizer (what checkpoints hold)
    step_model: nn.Module  # WithLoss(raw_model), DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]  # autocast on CUDA with AMP, else a no-op
    brackets: list = field(default_factory=list)  # (open id, close id) pairs for the bracket penalty


def setup_engine(config: RunConfig, vocab, procs: Processes) -> Engine:
    """Model (rank 0's initial weights are broadcast by DDP), optimiser and mixed precision."""
    training, device = config.training, procs.device
    raw_model = model_from_config(config, vocab).to(device)
    step_model = WithLoss(raw_model)
    if procs.world_size > 1:
        step_model = DDP(step_model, device_ids=[device.index] if device.type == "cuda" else None,
                         find_unused_parameters=training.find_unused_parameters)
    optimizer = build_optimizer(training.optimizer, raw_model.parameters(), lr=training.lr,
                                weight_decay=training.weight_decay, betas=training.betas)
    use_amp = training.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    return Engine(raw_model, step_model, optimizer, scaler, autocast, bracket_ids(vocab.tokens))


def initial_weights(init_from: str) -> dict:
    """The checkpoint a fine-tuning run starts from ("pretrained" = the shipped model): weights and vocabulary."""
    return read_model_checkpoint(default_checkpoint() if init_from == "pretrained" else init_from,
                                 needs=("model", "vocab"))


def restore(checkpoint: dict, engine: Engine, data: RunData, procs: Processes) -> TrainState:
    """Weights, optimiser, scaler, sampler position and RNG, so the next batch and loss match a straight run."""
    engine.raw_model.load_state_dict(checkpoint["model"])
    engine.optimizer.load_state_dict(checkpoint["optimizer"])
    engine.scaler.load_state_dict(checkpoint["scaler"])
    data.sampler.load_state_dict(checkpoint["sampler"])
    return TrainState.from_checkpoint(checkpoint, procs.rank, procs.world_size)


def next_batch(data: RunData, state: TrainState, batches: list) -> dict:
    """The next non-empty batch; moves to the next epoch when the sampler runs out. `batches` holds the
    current epoch's iterator in a one-item list, so this can replace it."""
    while True:
        for batch in batches[0]:
            state.consumed += 1
            state.n_skipped += batch["n_skipped"]
            if batch["paths"]:
                return batch
        data.sampler.set_epoch(data.sampler.epoch + 1)
        batches[0], state.consumed = iter(data.loader), 0


def optimizer_step(engine: Engine, data: RunData, state: TrainState, batches: list, procs: Processes,
                   training: TrainingConfig, tf_ratio: float) -> float:
    """Forward and backward over grad_accum micro-batches, clip once, step; returns the mean loss."""
    loss_sum, began = 0.0, perf_counter()
    for micro in range(training.grad_accum):
        waiting = perf_counter()
        batch = next_batch(data, state, batches)
        state.wait_s += perf_counter() - waiting
        images, targets = batch["images"].to(procs.device), batch["targets"].to(procs.device)  # (B,C,H,W), (B,T)
        widths = batch["widths"].to(procs.device)  # (B,) before keep-aspect padding
        if procs.world_size > 1:  # all-reduce gradients only on the last micro-batch
            engine.step_model.require_backward_grad_sync = micro == training.grad_accum - 1
        with engine.autocast():
            logits, loss = engine.step_model(images, targets, tf_ratio, training.label_smoothing, widths)  # (B,T,V)
            if training.bracket_penalty:
                loss = loss + training.bracket_penalty * bracket_penalty(logits, targets, engine.brackets,
                                                                         data.vocab.pad_id)
        engine.scaler.scale(loss / training.grad_accum).backward()
        loss_sum += loss.item() / training.grad_accum
        state.seen += len(batch["paths"])
        state.pixels += images[:, 0].numel()
        state.image_pixels += int(batch["widths"].sum()) * images.size(2)
    engine.scaler.unscale_(engine.optimizer)
    if training.grad_clip:
        torch.nn.utils.clip_grad_norm_(engine.raw_model.parameters(), training.grad_clip)
    engine.scaler.step(engine.optimizer)
    engine.scaler.update()
    engine.optimizer.zero_grad(set_to_none=True)
    state.step_s += perf_counter() - began
    return loss_sum


# ---------------------------------------------------------------- log, validate, checkpoint
def log_validate_save(config: RunConfig, run_dir: Path, state: TrainState, engine: Engine, data: RunData,
                      procs: Processes, metrics: dict, final: bool, started: float) -> dict | None:
    """metrics.jsonl (every log_every steps), validation + best.pt (every eval_every), checkpoint.pt
    (every checkpoint_every, and at the end). Rank 0 writes; the others take part in the collectives.
    `started`: when this session began (elapsed time continues across resumes). Returns the log record, if any."""
    training, record = config.training, None
    validating = final or (training.eval_every and state.step % training.eval_every == 0)
    if validating or state.step % training.log_every == 0:
        now = time.time()
        record = {"step": state.step, "elapsed_s": round(state.elapsed_s + now - started, 1), **metrics,
                  "loss": procs.mean(metrics["loss"]),  # the mean over every rank's batch
                  "samples_per_s": round(state.seen * procs.world_size / max(now - state.last_log, 1e-9), 2),
                  "padded": round(1 - state.image_pixels / max(state.pixels, 1), 4),  # share of input pixels
                  "data_wait": round(state.wait_s / max(state.step_s, 1e-9), 4)}  # share of step time
        state.seen_total, state.seen, state.last_log = state.seen_total + state.seen, 0, now
        state.pixels = state.image_pixels = 0
        state.step_s = state.wait_s = 0.0
        if procs.master:
            if validating:
                results, _ = evaluate(engine.raw_model, data.val_loader, data.vocab)
                state.last_val = results.summary()
                record.update(val_sa=state.last_val["SA"], val_wer=state.last_val["WER"],
                              val_score=state.last_val["score"])
                if state.last_val["score"] > state.best_score:
                    state.best_score, state.best_val = state.last_val["score"], {**state.last_val, "step": state.step}
                    save_checkpoint({"model": engine.raw_model.state_dict(), "config": config.to_dict(),
                                     "vocab": data.vocab.tokens, "step": state.step, "val": state.last_val},
                                    run_dir / BEST)
            with open(run_dir / LOG, "a") as log:
                log.write(json.dumps(record) + "\n")
    if final or state.step % training.checkpoint_every == 0:
        rng = [rng_state()]  # every rank's generators, so each rank resumes its own dropout/sampling stream
        if procs.world_size > 1:
            rng = [None] * procs.world_size
            dist.all_gather_object(rng, rng_state())
        if procs.master:
            save_checkpoint({"model": engine.raw_model.state_dict(), "optimizer": engine.optimizer.state_dict(),
                             "scaler": engine.scaler.state_dict(),
                             "sampler": data.sampler.state_dict(position=state.consumed),
                             **state.to_checkpoint(time.time() - started, rng), "config": config.to_dict(),
                             "vocab": data.vocab.tokens}, run_dir / CHECKPOINT)
    return record


@contextlib.contextmanager
def graceful_interrupt():
    """Ctrl-C sets a flag that the loop reads after each step (the step's checkpoint is then saved); a second
    Ctrl-C interrupts at once. Yields a one-item list holding the flag."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield flag
        return

    def on_sigint(signum, frame):
        flag[0] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- the training loop
def run_progress(state: TrainState, max_steps: int, budget_min: float | None, started: float,
                 procs: Processes) -> float:
    """training_progress now, counting earlier sessions' time; the slowest rank's clock, so that every rank
    uses the same learning rate and all stop at the same step."""
    elapsed = procs.max(state.elapsed_s + time.time() - started)
    return training_progress(state.step, max_steps, elapsed, budget_min)


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, budget_min: float | None = None,
          progress: bool | str = True) -> dict:
    """Train the model of `config` into `run_dir`; returns the summary (also written to summary.json).
    progress: True a progress bar, "lines" a line on stderr per validation (notebooks), False nothing."""
    started, training, run_dir = time.time(), config.training, Path(run_dir)
    budget_min = budget_min if budget_min is not None else training.budget_min
    if not resume and (finished := finished_summary(run_dir, config)):
        return finished
    procs = setup_processes(training.device)  # torchrun sets WORLD_SIZE; only rank 0 writes files
    if procs.master:
        prepare_run_dir(run_dir, resume)
    checkpoint = read_checkpoint(run_dir / CHECKPOINT) if resume else None
    init = initial_weights(training.init_from) if training.init_from and not checkpoint else None
    seed_everything(training.seed)  # data order, augmentation and initialisation follow training.seed
    data = setup_data(config, checkpoint or init, procs, progress)
    engine = setup_engine(config, data.vocab, procs)
    if checkpoint:
        state = restore(checkpoint, engine, data, procs)
        if procs.master:
            _truncate_log(run_dir / LOG, state.step)
    else:
        if init:  # another size of model is a one-line error
            load_weights(engine.raw_model, init, training.init_from,
                         "this run's model; fine-tune with the same model config")
        state = TrainState()
        torch.manual_seed(training.seed + procs.rank)  # per-process dropout / teacher-forcing draws after a shared init
    if procs.master:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        data.vocab.save(run_dir / "tokens.txt")

    # -- the loop: lr and teacher forcing from progress, accumulate, clip once, step, log, validate, save
    batches = [iter(data.loader)]
    bar = tqdm(total=training.max_steps, initial=state.step, disable=not (progress is True and procs.master),
               desc=run_dir.name)
    fraction = run_progress(state, training.max_steps, budget_min, started, procs)
    with graceful_interrupt() as interrupted:
        while state.step < training.max_steps:  # at least one step, even if setup spent the budget
            lr = get_lr(state.step, fraction, training.lr, training.lr_schedule, training.warmup_steps,
                        training.min_lr, training.lr_step_size, training.lr_gamma)
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
            tf = get_tf_ratio(fraction, training.tf_schedule, training.tf_ratio_start, training.tf_ratio_end,
                              training.tf_values)
            loss = optimizer_step(engine, data, state, batches, procs, training, tf)
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")

            # -- stop when progress reaches 1 (max_steps or the budget, as the schedules) or on Ctrl-C
            fraction = run_progress(state, training.max_steps, budget_min, started, procs)
            stop_now = procs.any(interrupted[0])
            record = log_validate_save(config, run_dir, state, engine, data, procs,
                                       {"loss": loss, "lr": lr, "tf_ratio": tf, "progress": round(fraction, 4)},
                                       fraction >= 1 or stop_now, started)
            if progress == "lines" and record and "val_sa" in record:
                print(f"{run_dir.name}: step {state.step}/{training.max_steps}, loss {record['loss']:.3f}, "
                      f"val SA {record['val_sa']:.3f}, {record['elapsed_s'] / 60:.1f} min", file=sys.stderr, flush=True)
            if stop_now:
                bar.close()
                raise TrainingInterrupted(f"{run_dir}: interrupted at step {state.step}; checkpoint saved, "
                                          "continue with --resume")
            if fraction >= 1:
                break
    bar.close()
    stop = "steps" if state.step >= training.max_steps else "budget"
    return finish(config, run_dir, state, engine, data, procs, stop, time.time() - started)


def finish(config: RunConfig, run_dir: Path, state: TrainState, engine: Engine, data: RunData, procs: Processes,
           stop: str, seconds: float) -> dict:
    """summary.json (a budget stop is a finished run too; --resume with a larger --budget-min, or none,
    continues it towards max_steps: the budget counts the time of every session)."""
    summary = None
    if procs.master:
        summary = {"run_dir": str(run_dir), "model": config.name, "steps": state.step, "stopped": stop,
                   "seconds": round(seconds, 1),
                   "samples_per_s": round((state.seen_total + state.seen) * procs.world_size / seconds, 2),
                   "device": str(procs.device), "world_size": procs.world_size,
                   "parameters": sum(p.numel() for p in engine.raw_model.parameters()),
                   "vocab_size": len(data.vocab), "train": ", ".join(map(str, data.train_dirs)), "val": str(data.val_dir),
                   "train_samples": len(data.train_set), "bad_label_lines": data.bad_lines,
                   "too_long": data.too_long, "skipped_samples": state.n_skipped,
                   "skip_reasons": dict(data.train_set.skipped), "best_val": state.best_val,
                   "last_val": state.last_val}
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    if procs.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary or {"rank": procs.rank, "steps": state.step, "stopped": stop}


# ---------------------------------------------------------------- command line
def cli_train(args) -> int:
    """`ocrlib train --config NAME|YAML [--preset P] [--set k=v] [--run-dir D] [--resume] [--budget-min M]`;
    the run folder defaults to runs/<run_id>. Ctrl-C saves a checkpoint and exits 130."""
    try:
        config = load_config(args.config, preset=args.preset, overrides=args.set)
        run_dir = args.run_dir
        if run_dir is None:
            train_dirs, val_dir = prepare_data(config.data)
            run_dir = RUNS_DIR / run_id(config, data_fingerprint(*train_dirs, val_dir))
        summary = train(config, run_dir, resume=args.resume, budget_min=args.budget_min)
    except KeyboardInterrupt as err:
        print(f"\n{err}" if isinstance(err, TrainingInterrupted) else "\ninterrupted before training started",
              file=sys.stderr)
        return 130
    if summary.get("run_dir"):
        print(json.dumps(summary, indent=2))
    return 0
