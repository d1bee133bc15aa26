"""Ensembles: several recognisers read one image together (the team's last step before submission).

- `Averaged`: token-level probability averaging under one shared search. At every step each member sees the
  same prefix and the ensemble's next-token distribution is the mean of theirs; it offers the step API, so
  `decoding.greedy` and `decoding.beam_search` drive it unchanged.
- `vote`: sequence voting; each member reads alone, the most frequent reading wins (ties: the best mean
  log-prob).
- Input sizes: each member sees the image as it was trained to (`Member.data`: model-wise multi-scale), or
  every member sees one size (`shared=`): what the team's ensemble did by mistake.

Members must share one set of tokens; a member whose vocabulary lists them in another order (`Member.vocab`, e.g.
a run trained on an earlier build of the data) is mapped onto the ensemble's order at every step.
"""
from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ocrlib.config import DataConfig
from ocrlib.data.dataset import BadImage, load_gray, model_input, pad_images, width_multiple_of
from ocrlib.data.sources import Sample
from ocrlib.decoding import BracketConstraint, beam_search, greedy
from ocrlib.errors import BadInput
from ocrlib.evaluate import frame_of, sample_row
from ocrlib.tokens import Vocab


@dataclass
class Member:
    model: torch.nn.Module  # a Recognizer
    data: DataConfig  # how its images are prepared: its training config's data section
    name: str = ""
    vocab: Vocab | None = None  # its own vocabulary; None: the ensemble's


def vocab_maps(members: list[Member], vocab: Vocab | None) -> list[torch.Tensor | None]:
    """Per member, the ensemble's token ids -> the member's ids (None where the two orders agree); the member's
    log-probs over the ensemble's vocabulary are then `log_probs[:, map]`, and its input token `map[prev]`."""
    maps = []
    for member in members:
        own = member.vocab
        if vocab is None or own is None or own.tokens == vocab.tokens:
            maps.append(None)
            continue
        missing = [t for t in vocab.tokens if t not in own.index] + [t for t in own.tokens if t not in vocab.index]
        if missing:
            raise BadInput(member.name or type(member.model).__name__,
                           f"its vocabulary and the ensemble's differ in {len(missing)} tokens, e.g. {missing[0]!r}")
        device = next(member.model.parameters()).device
        maps.append(torch.tensor([own.index[t] for t in vocab.tokens], device=device))
    return maps


class MemberInputs(tuple):
    """Each member's (images, widths) of one batch. Decoding asks a model's input for size(0) and device only."""

    def size(self, dim: int) -> int:
        return self[0][0].size(dim)

    @property
    def device(self) -> torch.device:
        return self[0][0].device


def member_inputs(members: list[Member], grays: list[np.ndarray], shared: DataConfig | None = None) -> MemberInputs:
    """The batch of uint8 images as each member sees it (or all at `shared`'s size)."""
    inputs = []
    for member in members:
        data = shared or member.data
        tensors = [model_input(gray, data) for gray in grays]
        device = next(member.model.parameters()).device
        inputs.append((pad_images(tensors, width_multiple_of(data)).to(device),
                       torch.tensor([t.shape[-1] for t in tensors], device=device)))
    return MemberInputs(inputs)


class Averaged:
    """The members as one model: log of the mean of their next-token probabilities, one shared prefix."""

    def __init__(self, members: list[Member], vocab: Vocab | None = None):
        first = members[0].model
        for member in members[1:]:
            m = member.model
            if (m.vocab_size, m.pad_id, m.sos_id, m.eos_id) != (first.vocab_size, first.pad_id, first.sos_id, first.eos_id):
                raise BadInput(member.name or type(m).__name__, "an ensemble's members need one vocabulary")
        self.members = members
        self.maps = vocab_maps(members, vocab)
        self.pad_id, self.sos_id, self.eos_id = first.pad_id, first.sos_id, first.eos_id
        self.max_len = min(member.model.max_len for member in members)

    def init_state(self, inputs: MemberInputs, widths=None) -> dict:
        return {"members": [member.model.init_state(images, member_widths)
                            for member, (images, member_widths) in zip(self.members, inputs)]}

    def step(self, state: dict, prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        outputs = [member.model.step(member_state, prev if ids is None else ids[prev])
                   for member, member_state, ids in zip(self.members, state["members"], self.maps)]
        log_probs = torch.stack([lp if ids is None else lp[:, ids] for (lp, _), ids in zip(outputs, self.maps)])
        log_probs = log_probs.logsumexp(0) - math.log(len(outputs))  # (N, V)
        return log_probs, {"members": [new for _, new in outputs]}  # no attention map: members' grids differ


@torch.no_grad()
def read_averaged(members: list[Member], grays: list[np.ndarray], beam: int = 1, max_len: int | None = None,
                  constraint: BracketConstraint | None = None, length_penalty: float = 1.0,
                  shared: DataConfig | None = None, vocab: Vocab | None = None):
    """Token-level averaging of `members` on uint8 images -> decoding.DecodeResult (ids of `vocab`, when given)."""
    ensemble = Averaged(members, vocab)
    for member in members:
        member.model.eval()
    inputs = member_inputs(members, grays, shared)
    max_len = min(max_len or ensemble.max_len, ensemble.max_len)
    if beam == 1:
        return greedy(ensemble, inputs, max_len, constraint)
    return beam_search(ensemble, inputs, max_len, beam, constraint, length_penalty)


def until_eos(row: list[int], eos_id: int) -> tuple[int, ...]:
    return tuple(row[:row.index(eos_id)] if eos_id in row else row)


@torch.no_grad()
def vote(members: list[Member], grays: list[np.ndarray], beam: int = 1, shared: DataConfig | None = None,
         vocab: Vocab | None = None, **options) -> list[tuple[int, ...]]:
    """Sequence voting: each member reads the images alone; per image the reading most members agree on (ties:
    the higher mean per-token log-prob among its readers). -> token ids without eos (of `vocab`, when given), one
    tuple per image."""
    readings = []  # per member: [(tokens, mean log-prob)] per image
    for member, (images, widths), ids_map in zip(members, member_inputs(members, grays, shared),
                                                 vocab_maps(members, vocab)):
        out = member.model.decode(images, beam=beam, widths=widths, **options)
        to_shared = None if ids_map is None else [vocab.index[t] for t in member.vocab.tokens]  # member id -> ours
        rows = []
        for ids, log_probs in zip(out.tokens.tolist(), out.token_log_probs.tolist()):
            tokens = until_eos(ids, member.model.eos_id)
            tokens = tokens if to_shared is None else tuple(to_shared[t] for t in tokens)
            rows.append((tokens, sum(log_probs[:len(tokens) + 1]) / (len(tokens) + 1)))
        readings.append(rows)
    chosen = []
    for per_image in zip(*readings):
        counts = Counter(tokens for tokens, _ in per_image)
        score = {tokens: max(s for t, s in per_image if t == tokens) for tokens in counts}
        chosen.append(max(counts, key=lambda tokens: (counts[tokens], score[tokens])))
    return chosen


def evaluate_ensemble(members: list[Member], samples: list[Sample], vocab: Vocab, method: str = "average",
                      beam: int = 1, shared: DataConfig | None = None, batch_size: int = 32, progress: bool = False):
    """`evaluate` for an ensemble read by `method` ("average" or "vote") on samples (ocrlib.data.sources.read_gt)
    -> (Results, per-sample frame); unreadable images are skipped and counted (frame.attrs["n_skipped"])."""
    if method not in ("average", "vote"):
        raise BadInput("ensemble method", f"{method!r} is not 'average' or 'vote'")
    rows, n_skipped, seconds = [], 0, 0.0
    for start in range(0, len(samples), batch_size):
        batch, grays = [], []
        for sample in samples[start:start + batch_size]:
            try:
                grays.append(load_gray(sample.image))
                batch.append(sample)
            except BadImage as err:
                n_skipped += 1
                if progress:
                    print(f"{err}: skipped", file=sys.stderr)
        if not batch:
            continue
        started = time.perf_counter()
        if method == "average":
            out = read_averaged(members, grays, beam, shared=shared, vocab=vocab)
            readings = [until_eos(ids, vocab.eos_id) for ids in out.tokens.tolist()]
        else:
            readings = vote(members, grays, beam, shared, vocab)
        seconds += time.perf_counter() - started
        rows += [sample_row(Path(sample.image), list(sample.tokens), vocab.decode(list(ids)), sample.source)
                 for sample, ids in zip(batch, readings)]
    return frame_of(rows, n_skipped, seconds)
