"""Train a recogniser: one readable loop (nanoGPT's train.py), checkpoints that resume exactly, run logs.

    summary = train(config, "runs/satrn-smoke")            # config = ocrlib.models.load_config("satrn", "smoke")
    python -m ocrlib train --config satrn --profile smoke --set training.lr=3e-4
    torchrun --nproc_per_node 2 -m ocrlib train --config satrn   # DDP: gloo on CPU, NCCL on GPU

A run folder holds config.yaml, metrics.jsonl (one line per log step), checkpoint.pt (written
atomically), best.pt (best validation score), tokens.txt and summary.json. A checkpoint holds model,
optimiser, AMP scaler, RNG states of every rank (python, numpy, torch, cuda), sampler position, step, config and
vocabulary tokens, all as tensors and plain values so it loads with torch.load(weights_only=True).
Learning rate and teacher forcing are functions of the step (ocrlib.optim), so resuming from step s
gives the same next loss as a run that never stopped (bit-identical on CPU).

Config keys read here (defaults in TRAINING_DEFAULTS and DATA_DEFAULTS):
    model.name + model fields (ocrlib.models)
    model.max_len: longer training targets are skipped (counted as "too long")
    data.train / data.val (competition-layout folders), else data.source: synth (+ synth_n, synth_seed,
        renderer, val_fraction); data.vocab (tokens.txt; default: built from the training labels);
        data.height, width, augment, vertical_fix, channels
    training.* : see TRAINING_DEFAULTS (keys a model YAML leaves out take these values)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path, PurePath

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from ocrlib.errors import BadInput
from ocrlib.evaluate import evaluate, read_checkpoint, select_device
from ocrlib.losses import bracket_ids, bracket_penalty
from ocrlib.optim import build_optimizer, get_lr, get_tf_ratio
from ocrlib.paths import DATA_DIR, RUNS_DIR

TRAINING_DEFAULTS = {
    "seed": 0,                 # data order, augmentation and initialisation
    "max_steps": 1000,         # optimiser steps (each over grad_accum micro-batches)
    "budget_min": None,        # stop after this many wall-clock minutes, setup included (the argument wins)
    "batch_size": 16,          # per process
    "grad_accum": 1,           # micro-batches per optimiser step
    "optimizer": "adamw",      # adam | adamw | adadelta | adamp
    "lr": 3e-4,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "lr_schedule": "cosine",   # constant | cosine | onecycle | step
    "warmup_steps": 0,
    "min_lr": 0.0,             # cosine floor
    "lr_step_size": 1000,      # step schedule: multiply by lr_gamma every lr_step_size steps
    "lr_gamma": 0.5,
    "grad_clip": 1.0,          # max gradient norm after accumulation; 0 = off
    "label_smoothing": 0.0,
    "bracket_penalty": 0.0,    # weight of ocrlib.losses.bracket_penalty; 0 = off
    "tf_schedule": "linear",   # teacher forcing: constant (tf_ratio_start) | step (tf_values) | linear
    "tf_ratio_start": 1.0,     # linear: from tf_ratio_start to tf_ratio_end over training
    "tf_ratio_end": 1.0,
    "tf_values": [0.5, 0.4, 0.3],  # step schedule, over equal parts of training (the team's)
    "log_every": 10,           # steps between metrics.jsonl lines
    "eval_every": 200,         # steps between validations (0: only at the end)
    "checkpoint_every": 200,   # steps between checkpoint.pt writes (and always at the end)
    "val_samples": 500,        # validation images used during training (0: all)
    "amp": True,               # mixed precision on CUDA (bf16 when supported, else fp16); never on CPU
    "num_workers": 0,          # DataLoader workers
    "device": "auto",          # auto | cpu | cuda | cuda:1 ...
    "find_unused_parameters": False,  # DDP: set for models with branches unused in some steps
}
DATA_DEFAULTS = {"train": None, "val": None, "vocab": None, "source": "synth", "synth_n": 1000, "synth_seed": 0,
                 "renderer": "mathtext", "val_fraction": 0.1, "height": 128, "width": 128, "augment": "none",
                 "vertical_fix": True, "channels": 1}
SUMMARY, CHECKPOINT, BEST, LOG = "summary.json", "checkpoint.pt", "best.pt", "metrics.jsonl"


# ---------------------------------------------------------------- run identity and data
def plain_config(config: dict) -> dict:
    """The config as JSON/YAML-plain values (tuples become lists, paths strings), as checkpoints need."""
    def encode(value):
        if isinstance(value, PurePath):
            return str(value)
        raise BadInput("config", f"{value!r} is not a plain value (numbers, strings, lists, dicts only)")

    return json.loads(json.dumps(config, default=encode))


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


def run_id(config: dict, fingerprint: str) -> str:
    """'<model>-<hash of config and data>': the same config on the same data names the same run."""
    text = json.dumps(plain_config(config), sort_keys=True) + fingerprint
    return f"{config['model']['name']}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def prepare_data(data_cfg: dict, progress: bool = True) -> tuple[Path, Path]:
    """The train and val folders: data.train/data.val, or with data.source 'synth' a small set rendered
    once from ocrlib.data.synth into data/cache/<hash>/{train,val} (split by formula hash, so val formulas
    are new)."""
    cfg = {**DATA_DEFAULTS, **data_cfg}
    if cfg["train"] and cfg["val"]:
        folders = Path(cfg["train"]), Path(cfg["val"])
        for folder in folders:
            if not (folder / "gt.txt").is_file():
                raise BadInput(folder, "not a competition-layout folder (no gt.txt)")
        return folders
    if cfg["source"] != "synth":
        raise BadInput(cfg["train"] or "data.train",
                       "no training data: set data.train and data.val, or data.source: synth")
    spec = {k: cfg[k] for k in ("synth_n", "synth_seed", "renderer", "val_fraction")}
    root = DATA_DIR / "cache" / hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    if not root.is_dir():
        from ocrlib.data.render import render_dataset
        from ocrlib.data.splits import split_of
        from ocrlib.data.synth import generate_formulas
        from ocrlib.tokens import normalize_latex

        formulas = generate_formulas(cfg["synth_n"], cfg["synth_seed"], mathtext_safe=cfg["renderer"] == "mathtext")
        fractions = (("train", 1 - cfg["val_fraction"]), ("val", cfg["val_fraction"]))
        splits = [split_of(normalize_latex(f), fractions) for f in formulas]
        partial = root.with_name(f"{root.name}.partial-{os.getpid()}")  # renamed when complete: no half caches
        for offset, split in enumerate(("train", "val")):
            chosen = [f for f, s in zip(formulas, splits) if s == split]
            render_dataset(chosen, partial / split, cfg["renderer"], seed=cfg["synth_seed"] + offset, progress=progress)
        try:
            os.replace(partial, root)
        except OSError:  # another process finished first: its copy is as good
            shutil.rmtree(partial, ignore_errors=True)
    return root / "train", root / "val"


def with_defaults(config: dict, section: str, defaults: dict) -> dict:
    """A config section over its defaults; an unknown key (a typo) is an error, not silently ignored."""
    given = config.get(section) or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise BadInput("config", f"unknown {section} key(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    return {**defaults, **given}


def finished_summary(run_dir: Path, config: dict) -> dict | None:
    """The summary of a run that already finished in run_dir with this same config (then nothing to train)."""
    if (run_dir / SUMMARY).is_file() and (run_dir / "config.yaml").is_file():
        if yaml.safe_load((run_dir / "config.yaml").read_text()) == config:
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


# ---------------------------------------------------------------- checkpoints and RNG
def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file, fsync, then os.replace: a crash mid-write leaves the old checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a crash between log and checkpoint)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


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


def init_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; starts the process group when world > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return rank, world_size, local_rank


def all_reduce(value: float, device: torch.device, op=dist.ReduceOp.SUM) -> float:
    """A float reduced over every rank (on the device, which NCCL requires)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.item()


# ---------------------------------------------------------------- the training loop
def train(config: dict, run_dir: str | Path, resume: bool = False, budget_min: float | None = None,
          progress: bool = True) -> dict:
    """Train the model of `config` into `run_dir`; returns the summary (also written to summary.json)."""
    from ocrlib.data.dataset import BucketBatchSampler, FormulaDataset, make_loader
    from ocrlib.data.sources import read_gt
    from ocrlib.models import DEFAULT_MAX_LEN, model_from_config
    from ocrlib.tokens import Vocab

    started = time.time()
    config = plain_config(config)
    tcfg = with_defaults(config, "training", TRAINING_DEFAULTS)
    dcfg = with_defaults(config, "data", DATA_DEFAULTS)
    budget_min = budget_min if budget_min is not None else tcfg["budget_min"]
    run_dir = Path(run_dir)
    finished = None if resume else finished_summary(run_dir, config)
    if finished:
        return finished

    # -- processes and device: torchrun sets WORLD_SIZE; only rank 0 writes files
    rank, world_size, local_rank = init_distributed()
    master = rank == 0
    device = select_device(tcfg["device"] if tcfg["device"] != "auto" else
                           f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and world_size > 1:  # share the cores between the processes of this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    if master:
        prepare_run_dir(run_dir, resume)
    checkpoint = read_checkpoint(run_dir / CHECKPOINT) if resume else None

    # -- seed everything: data order, augmentation and initialisation follow training.seed
    seed = tcfg["seed"]
    seed_everything(seed)

    # -- data: competition-layout folders (or a cached synthetic render), vocabulary from train labels
    if world_size > 1 and not master:
        dist.barrier()  # wait for rank 0 to render the synthetic set, if any
    train_dir, val_dir = prepare_data(dcfg, progress and master)
    if world_size > 1 and master:
        dist.barrier()
    train_samples, bad_lines = read_gt(train_dir)
    val_samples, bad_val_lines = read_gt(val_dir)
    max_len = config["model"].get("max_len") or DEFAULT_MAX_LEN
    too_long = sum(len(s.tokens) + 1 > max_len for s in train_samples)  # + eos
    train_samples = [s for s in train_samples if len(s.tokens) + 1 <= max_len]
    if not train_samples:
        raise BadInput(train_dir, f"no usable training samples ({len(bad_lines)} bad gt.txt lines, "
                                  f"{too_long} too long)")
    if checkpoint:
        vocab = Vocab(checkpoint["vocab"])
    else:  # a shared tokens.txt (ocrlib.data.build writes one per profile), else the training labels'
        vocab = Vocab.load(dcfg["vocab"]) if dcfg["vocab"] else Vocab.build(s.tokens for s in train_samples)
    image_opts = {key: dcfg[key] for key in ("height", "width", "vertical_fix", "channels")}
    train_set = FormulaDataset(train_samples, vocab, augment=dcfg["augment"], seed=seed, **image_opts)
    sampler = BucketBatchSampler(train_set.lengths, tcfg["batch_size"], seed=seed, shuffle=True,
                                 drop_last=world_size > 1, on_epoch=train_set.set_epoch)
    if world_size > 1:
        sampler = ShardedBatchSampler(sampler, rank, world_size)
    # make_loader gives the loader its own generator: creating an iterator must not draw from the global
    # RNG (resume would drift)
    loader = make_loader(train_set, tcfg["batch_size"], seed=seed, num_workers=tcfg["num_workers"], batch_sampler=sampler)
    val_set = FormulaDataset(val_samples[: tcfg["val_samples"] or None], vocab, augment=None, **image_opts)
    val_loader = make_loader(val_set, tcfg["batch_size"], seed=0, shuffle=False)

    # -- model (rank 0's initial weights are broadcast by DDP), optimiser, mixed precision
    raw_model = model_from_config(config, len(vocab), pad_id=vocab.pad_id, sos_id=vocab.sos_id,
                                  eos_id=vocab.eos_id).to(device)
    model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=tcfg["find_unused_parameters"]) if world_size > 1 else raw_model
    optimizer = build_optimizer(tcfg["optimizer"], raw_model.parameters(), lr=tcfg["lr"],
                                weight_decay=tcfg["weight_decay"], betas=tcfg["betas"])
    use_amp = tcfg["amp"] and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    pairs = bracket_ids(vocab.tokens)

    # -- resume: weights, optimiser, scaler, sampler position and RNG, so the next batch and loss match
    step, best_score, n_skipped, best_val, last_val, consumed = 0, -math.inf, 0, None, None, 0
    elapsed_before = 0.0  # training seconds of earlier sessions of this run (curves against wall-clock time)
    if checkpoint:
        raw_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        sampler.load_state_dict(checkpoint["sampler"])
        step, best_score, n_skipped = checkpoint["step"], checkpoint["best_score"], checkpoint["n_skipped"]
        consumed = checkpoint["sampler"]["position"] // world_size
        best_val, last_val = checkpoint["best_val"], checkpoint["last_val"]
        elapsed_before = checkpoint["elapsed_s"]
        # one state per rank of the saving run (a single dict in older checkpoints); another world size reuses them
        rngs = checkpoint["rng"] if isinstance(checkpoint["rng"], list) else [checkpoint["rng"]]
        set_rng_state(rngs[rank % len(rngs)])
        if master:
            _truncate_log(run_dir / LOG, step)
    else:
        torch.manual_seed(seed + rank)  # per-process dropout / teacher-forcing draws after a shared init
    if master:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        vocab.save(run_dir / "tokens.txt")

    def next_batch():
        """The next non-empty batch, moving to the next epoch when the sampler runs out."""
        nonlocal batches, n_skipped, consumed
        while True:
            for batch in batches:
                consumed += 1
                n_skipped += batch["n_skipped"]
                if batch["paths"]:
                    return batch
            sampler.set_epoch(sampler.epoch + 1)
            batches, consumed = iter(loader), 0

    def checkpoint_state(rng: list[dict]) -> dict:
        # the learning rate is get_lr(step): the step is the whole scheduler state
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "sampler": sampler.state_dict(position=consumed), "rng": rng, "step": step,
                "best_score": best_score, "n_skipped": n_skipped, "best_val": best_val, "last_val": last_val,
                "elapsed_s": elapsed_before + time.time() - started, "config": config, "vocab": vocab.tokens}

    def validate() -> dict:
        results, _ = evaluate(raw_model, val_loader, vocab)
        return results.summary()

    # -- the loop: lr and teacher forcing from the step, accumulate, clip once, step, log, validate, save
    batches = iter(loader)
    bar = tqdm(total=tcfg["max_steps"], initial=step, disable=not (progress and master), desc=run_dir.name)
    seen, seen_total, tick, stop = 0, 0, time.time(), "steps"
    while step < tcfg["max_steps"]:
        lr = get_lr(step, tcfg["max_steps"], tcfg["lr"], tcfg["lr_schedule"], tcfg["warmup_steps"], tcfg["min_lr"],
                    tcfg["lr_step_size"], tcfg["lr_gamma"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        tf = get_tf_ratio(step, tcfg["max_steps"], tcfg["tf_schedule"], tcfg["tf_ratio_start"], tcfg["tf_ratio_end"],
                          tuple(tcfg["tf_values"]))
        loss_sum = 0.0
        for micro in range(tcfg["grad_accum"]):
            batch = next_batch()
            images, targets = batch["images"].to(device), batch["targets"].to(device)  # (B,C,H,W), (B,T)
            if world_size > 1:  # all-reduce gradients only on the last micro-batch
                model.require_backward_grad_sync = micro == tcfg["grad_accum"] - 1
            with autocast():
                logits = model(images, targets, tf_ratio=tf)  # (B, T, V)
                loss = raw_model.loss(logits, targets, label_smoothing=tcfg["label_smoothing"])
                if tcfg["bracket_penalty"]:
                    loss = loss + tcfg["bracket_penalty"] * bracket_penalty(logits, targets, pairs, vocab.pad_id)
            scaler.scale(loss / tcfg["grad_accum"]).backward()
            loss_sum += loss.item() / tcfg["grad_accum"]
            seen += len(batch["paths"])
        scaler.unscale_(optimizer)
        if tcfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{lr:.2e}")

        # -- stop at max_steps or when the wall-clock budget is spent (all ranks stop at the same step)
        out_of_time = budget_min is not None and time.time() - started > budget_min * 60
        if world_size > 1 and budget_min is not None:
            out_of_time = all_reduce(float(out_of_time), device, dist.ReduceOp.MAX) > 0
        final = step == tcfg["max_steps"] or out_of_time
        validating = final or (tcfg["eval_every"] and step % tcfg["eval_every"] == 0)
        logging = validating or step % tcfg["log_every"] == 0
        if logging and world_size > 1:
            loss_sum = all_reduce(loss_sum, device) / world_size  # log the mean over every rank's batch

        # -- log, validate and checkpoint (rank 0 only; the other ranks go on and wait in the next all-reduce)
        if master and logging:
            record = {"step": step, "elapsed_s": round(elapsed_before + time.time() - started, 1),
                      "loss": loss_sum, "lr": lr, "tf_ratio": tf,
                      "samples_per_s": round(seen * world_size / max(time.time() - tick, 1e-9), 2)}
            seen_total, seen, tick = seen_total + seen, 0, time.time()
            if validating:
                last_val = validate()
                record.update(val_sa=last_val["SA"], val_wer=last_val["WER"], val_score=last_val["score"])
                if last_val["score"] > best_score:
                    best_score, best_val = last_val["score"], {**last_val, "step": step}
                    save_checkpoint({"model": raw_model.state_dict(), "config": config, "vocab": vocab.tokens,
                                     "step": step, "val": last_val}, run_dir / BEST)
            with open(run_dir / LOG, "a") as log:
                log.write(json.dumps(record) + "\n")
        if final or step % tcfg["checkpoint_every"] == 0:
            rng = [rng_state()]  # every rank's generators, so each rank resumes its own dropout/sampling stream
            if world_size > 1:
                rng = [None] * world_size
                dist.all_gather_object(rng, rng_state())
            if master:
                save_checkpoint(checkpoint_state(rng), run_dir / CHECKPOINT)
        if out_of_time:
            stop = "budget"
            break
    bar.close()

    # -- finish: summary.json (a budget stop is a finished run too; --resume continues it towards max_steps)
    summary = None
    if master:
        seconds = time.time() - started
        summary = {"run_dir": str(run_dir), "model": config["model"]["name"], "steps": step, "stopped": stop,
                   "seconds": round(seconds, 1), "samples_per_s": round((seen_total + seen) * world_size / seconds, 2),
                   "device": str(device), "world_size": world_size,
                   "parameters": sum(p.numel() for p in raw_model.parameters()), "vocab_size": len(vocab),
                   "train": str(train_dir), "val": str(val_dir), "train_samples": len(train_samples),
                   "bad_label_lines": len(bad_lines) + len(bad_val_lines), "too_long": too_long,
                   "skipped_samples": n_skipped, "skip_reasons": dict(train_set.skipped),
                   "best_val": best_val, "last_val": last_val}
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary or {"rank": rank, "steps": step, "stopped": stop}


# ---------------------------------------------------------------- command line
def cli_train(args) -> int:
    """`python -m ocrlib train --config NAME|YAML [--profile P] [--set k=v] [--run-dir D] [--resume]
    [--budget-min M]`; the run folder defaults to runs/<run_id>."""
    from ocrlib.models import load_config

    config = load_config(args.config, profile=args.profile, overrides=args.set)
    run_dir = args.run_dir
    if run_dir is None:
        train_dir, val_dir = prepare_data(config.get("data", {}))
        run_dir = RUNS_DIR / run_id(config, data_fingerprint(train_dir, val_dir))
    summary = train(config, run_dir, resume=args.resume, budget_min=args.budget_min)
    if summary.get("run_dir"):
        print(json.dumps(summary, indent=2))
    return 0
