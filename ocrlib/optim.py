"""Optimisers, learning-rate schedules and teacher-forcing schedules for `ocrlib.train`.

Schedules are plain functions of training progress (nanoGPT's `get_lr`, over a fraction instead of a step
count): the fraction of whichever limit ends the run first, `max_steps` or the wall-clock budget, so a run cut
by its budget still completes its schedule on a slower machine. The training loop writes the learning rate
into the optimiser before every step; a resumed run continues exactly from its step and checkpointed elapsed time.

AdamP: B. Heo, S. Chun, S. J. Oh, D. Han, S. Yun, G. Kim, Y. Uh, J.-W. Ha, "AdamP: Slowing Down the
Slowdown for Momentum Optimizers on Scale-invariant Weights", ICLR 2021.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

OPTIMIZERS = ("adam", "adamw", "adadelta", "adamp")
LR_SCHEDULES = ("constant", "cosine", "onecycle", "step")
TF_SCHEDULES = ("constant", "step", "linear")


class AdamP(torch.optim.Optimizer):
    """Adam whose update loses its radial part on scale-invariant weights (Heo et al. 2021).

    A weight followed by a normalisation layer only matters through its direction; Adam's momentum
    then mostly grows its norm, which shrinks the effective step. When the gradient is nearly
    orthogonal to the weight (cosine < delta / sqrt(dim), per output channel or for the whole
    layer), AdamP projects the radial component out of the update and scales weight decay by wd_ratio.
    Weight decay is decoupled (as in AdamW).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1,
                 nesterov: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta,
                        wd_ratio=wd_ratio, nesterov=nesterov)
        super().__init__(params, defaults)

    @staticmethod
    def _project(weight: torch.Tensor, grad: torch.Tensor, update: torch.Tensor, delta: float, eps: float):
        """Remove the radial part of `update` if `weight` looks scale-invariant; returns (update, projected?)."""
        views = (lambda x: x.reshape(x.size(0), -1), lambda x: x.reshape(1, -1))  # per channel, whole layer
        for view in views:
            w, g = view(weight), view(grad)                                          # (C, D)
            cosine = F.cosine_similarity(g, w, dim=1, eps=eps).abs()                 # (C,)
            if cosine.max() < delta / math.sqrt(w.size(1)):
                unit = w / w.norm(dim=1, keepdim=True).add(eps)                      # (C, D)
                u = view(update)
                return (u - unit * (unit * u).sum(dim=1, keepdim=True)).view_as(update), True
        return update, False

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1 = 1 - beta1 ** state["step"]
                bias2 = 1 - beta2 ** state["step"]
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                momentum = beta1 * exp_avg + (1 - beta1) * grad if group["nesterov"] else exp_avg
                update = momentum / denom
                wd_scale = 1.0
                if p.dim() > 1:  # biases and norm gains are never scale-invariant
                    update, projected = self._project(p, grad, update, group["delta"], group["eps"])
                    wd_scale = group["wd_ratio"] if projected else 1.0
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * wd_scale)
                p.add_(update, alpha=-group["lr"] / bias1)
        return loss


def build_optimizer(name: str, params: Iterable, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """One of OPTIMIZERS. Adadelta (the competition's ASTER baseline) ignores betas; its lr is usually 1.0."""
    betas = tuple(betas)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    if name == "adamp":
        return AdamP(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def training_progress(step: int, max_steps: int, elapsed_s: float, budget_min: float | None) -> float:
    """Fraction of the run done, in [0, 1]: of the step limit or of the wall-clock budget, whichever is nearer
    its end (training stops at 1). Without a budget it depends on the step only, so runs are reproducible."""
    progress = step / max_steps
    if budget_min is not None:
        progress = max(progress, elapsed_s / (budget_min * 60))
    return min(1.0, progress)


def get_lr(step: int, progress: float, lr: float, schedule: str = "cosine", warmup_steps: int = 0,
           min_lr: float = 0.0, step_size: int = 1000, gamma: float = 0.5, pct_start: float = 0.3,
           div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """Learning rate for optimiser step `step` (0-based), `progress` (training_progress) through training.

    Warm-up is linear over the first `warmup_steps` steps; after it the shape follows progress over the
    whole run, not rescaled to start at the warm-up's end: a budget-limited run cannot know in advance what
    fraction its warm-up takes, and for a short warm-up the cosine has barely moved by then.
    constant: lr (after warm-up).  cosine: from lr down to min_lr at progress 1.
    onecycle (Smith & Topin 2019, as torch's OneCycleLR with cosine annealing; no warm-up of its own): from
    lr/div_factor up to lr over pct_start of progress, then down to lr/(div_factor*final_div_factor).
    step: lr * gamma ** (step // step_size), after warm-up; on steps, not progress, since step_size is a
    step count by definition.
    """
    if schedule == "onecycle":
        start, end = lr / div_factor, lr / (div_factor * final_div_factor)
        if progress < pct_start:
            return start + (lr - start) * progress / pct_start
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * (progress - pct_start) / (1 - pct_start)))
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma ** (step // step_size)
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")


def get_tf_ratio(progress: float, schedule: str = "linear", start: float = 1.0, end: float = 1.0,
                 values: tuple[float, ...] = (0.5, 0.4, 0.3)) -> float:
    """Teacher-forcing ratio (probability of feeding the ground-truth token) at `progress` (training_progress).

    constant: `start` throughout.  linear: from `start` to `end` over training.
    step: `values` over equal parts of training (the team's 0.5 -> 0.4 -> 0.3).
    """
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "step":
        return values[min(len(values) - 1, int(progress * len(values)))]
    raise ValueError(f"unknown teacher-forcing schedule {schedule!r}; known: {', '.join(TF_SCHEDULES)}")
