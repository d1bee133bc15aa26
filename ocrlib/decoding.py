"""Greedy and beam-search decoding for every recogniser, plus a bracket-balance constraint.

Decoding drives a model through its step API (see ocrlib.models.base):
    state = model.init_state(images, widths); log_probs, state = model.step(state, prev)
and gathers rows of the state with `reorder` (every tensor in it is batch-first). Transformer decoders keep
a key/value cache in the state (each step feeds one token; the encoder memory keys/values are projected
once in init_state); attention decoders keep the projected memory keys. So a step costs one token's worth
of work, never a recomputation of the prefix (`greedy_uncached` is that reference). What all hypotheses of
an image share (its memory and their projections) sits under state["per_image"]: beam search neither
copies nor reorders it, and the decoders let an image's hypotheses attend to it together.

Output convention: tokens (B, L) without sos, eos then pad; scores = summed token log-probs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # (B, L) long: ids, eos, then pad
    scores: torch.Tensor  # (B,) float: sum of log-probs of the emitted tokens (eos included)
    attention: torch.Tensor | None  # (B, L, h, w) attention per emitted token, or None
    token_log_probs: torch.Tensor  # (B, L) float: log-prob of each emitted token (eos included; 0 after eos)
    beams: torch.Tensor | None = None  # (B, K, L) every final hypothesis of a beam search, best first
    beam_scores: torch.Tensor | None = None  # (B, K) their ranking scores (sum log p / length ** penalty)


PER_IMAGE = "per_image"  # the state entry of what every hypothesis of an image shares


def reorder(state, index: torch.Tensor, per_image: bool = True):
    """Gather rows `index` of every tensor in a (nested) state; other values pass through. per_image=False
    leaves every "per_image" entry as it is (beam search: `index` moves hypotheses within their images).
    An object with `select_rows` (a decoder's `KVCache`) gathers them itself, lazily."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if hasattr(state, "select_rows"):
        return state.select_rows(index)
    if isinstance(state, dict):
        return {key: value if key == PER_IMAGE and not per_image else reorder(value, index, per_image)
                for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(reorder(value, index, per_image) for value in state)
    return state


GROUP, DELIMITER, BRACKET = 1, 2, 3  # kinds of bracket-stack entries


def _is_delimiter(rest: str) -> bool:
    """What follows `\\left` / `\\right` in a delimiter token: `(`, `\\{`, `.`, ... but not `arrow`."""
    return rest == "" or not rest[0].isalpha()


def token_kinds(tok: str) -> tuple[int, int]:
    """(kind opened, kind closed) by a token, 0 = none. `\\leftarrow` and `\\rightarrow` are ordinary."""
    if tok == "{":
        return GROUP, 0
    if tok == "}":
        return 0, GROUP
    if tok in ("(", "["):
        return BRACKET, 0
    if tok in (")", "]"):
        return 0, BRACKET
    if tok.startswith("\\left") and _is_delimiter(tok[5:]):
        return DELIMITER, 0
    if tok.startswith("\\right") and _is_delimiter(tok[6:]):
        return 0, DELIMITER
    return 0, 0


class BracketConstraint:
    """Keeps `{ }`, `\\left ... \\right` and round/square brackets balanced, as a logits mask.

    Three kinds, each a stack entry: group `{`/`}`; delimiter `\\left?`/`\\right?` (any pair, since
    `\\left( ... \\right.` is valid LaTeX); bracket `(` or `[` closed by `)` or `]` (either, so
    half-open intervals like `[0, 1)` stay possible). A closer is allowed only when it matches the
    kind on top of the stack; eos only on an empty stack; and an opener or ordinary token only when
    enough steps remain to close everything and emit eos within max_len, so every finished output
    is balanced. Openers of a kind with no closer in the vocabulary are never allowed.
    Build once per vocabulary: `BracketConstraint(vocab.tokens, vocab.eos_id)`.
    """

    def __init__(self, tokens: list[str], eos_id: int):
        self.eos_id = eos_id
        kinds = torch.tensor([token_kinds(tok) for tok in tokens], dtype=torch.long)  # (V, 2)
        self.opens, self.closes = kinds[:, 0], kinds[:, 1]  # kind opened / closed by each token, 0 = none
        closable = torch.zeros(4, dtype=torch.bool)
        closable[self.closes[self.closes > 0]] = True
        self.opener = (self.opens > 0) & closable[self.opens]  # (V,)
        self.ordinary = (self.opens == 0) & (self.closes == 0)  # (V,)
        self.ordinary[eos_id] = False

    def start(self, n: int, max_len: int, device=None) -> dict:
        """Empty stacks for n hypotheses (a state dict, reorderable with `reorder`)."""
        for name in ("opens", "closes", "opener", "ordinary"):
            setattr(self, name, getattr(self, name).to(device))
        return {"stack": torch.zeros(n, max_len + 1, dtype=torch.long, device=device),
                "depth": torch.zeros(n, dtype=torch.long, device=device)}

    def allowed(self, cstate: dict, t: int, max_len: int) -> torch.Tensor:
        """(n, V) bool: tokens allowed at step t (0-based) of at most max_len steps."""
        depth = cstate["depth"]  # (n,)
        top = cstate["stack"].gather(1, (depth - 1).clamp(min=0)[:, None]).squeeze(1)  # (n,)
        top = torch.where(depth > 0, top, torch.zeros_like(top))
        room = max_len - t - 1  # steps left after this one
        allowed = (self.ordinary[None] & (depth + 1 <= room)[:, None]) \
            | (self.opener[None] & (depth + 2 <= room)[:, None]) \
            | ((self.closes[None] == top[:, None]) & (depth > 0)[:, None])  # (n, V)
        allowed[:, self.eos_id] = depth == 0
        return allowed

    def advance(self, cstate: dict, tokens: torch.Tensor) -> dict:
        """Push/pop for the emitted tokens (n,)."""
        depth, stack = cstate["depth"], cstate["stack"].clone()
        opened = self.opens[tokens]  # (n,)
        push = opened > 0
        rows = torch.nonzero(push).squeeze(1)
        stack[rows, depth[rows]] = opened[rows]
        pop = self.closes[tokens] > 0
        return {"stack": stack, "depth": depth + push.long() - (pop & (depth > 0)).long()}


def _never_emitted(log_probs: torch.Tensor, model) -> torch.Tensor:
    """pad and sos are never outputs (pad only fills after eos)."""
    log_probs = log_probs.clone()
    log_probs[:, [model.pad_id, model.sos_id]] = NEG_INF
    return log_probs


@torch.no_grad()
def greedy(model, images: torch.Tensor, max_len: int, constraint: BracketConstraint | None = None,
           widths: torch.Tensor | None = None) -> DecodeResult:
    """Argmax decoding of at most max_len tokens (eos included), batched; stops when all ended.
    widths: image widths before a keep-aspect batch was padded (None: unpadded).

    An image that has ended leaves the batch (its rows of the state are dropped), so one long or runaway
    reading costs the steps it takes, not that many steps for every image of the batch."""
    B, device = images.size(0), images.device
    state = model.init_state(images, widths)
    rows = torch.arange(B, device=device)  # the images still being decoded, in the order of the state's rows
    prev = torch.full((B,), model.sos_id, dtype=torch.long, device=device)
    tokens = torch.full((B, max_len), model.pad_id, dtype=torch.long, device=device)
    token_log_probs = torch.zeros(B, max_len, device=device)
    cstate = constraint.start(B, max_len, device) if constraint else None
    maps = None  # (B, max_len, S) attention of every emitted token, zero after eos
    for t in range(max_len):
        log_probs, state = model.step(state, prev)  # (n, V)
        log_probs = _never_emitted(log_probs, model)
        if constraint:
            log_probs = log_probs.masked_fill(~constraint.allowed(cstate, t, max_len), NEG_INF)
        tok = log_probs.argmax(-1)  # (n,)
        tokens[rows, t] = tok
        token_log_probs[rows, t] = log_probs.gather(1, tok[:, None]).squeeze(1)
        if state.get("attn") is not None:
            if maps is None:
                maps = torch.zeros(B, max_len, state["attn"].size(-1), device=device)
            maps[rows, t] = state["attn"]
        if constraint:
            cstate = constraint.advance(cstate, tok)
        ended = tok == model.eos_id
        if ended.all():
            break
        if ended.any():
            keep = (~ended).nonzero().squeeze(1)
            state, rows, tok = reorder(state, keep), rows[keep], tok[keep]
            cstate = reorder(cstate, keep) if constraint else None
        prev = tok
    L = t + 1
    hw = state.get("hw")
    attention = None if maps is None or hw is None else maps[:, :L].reshape(B, L, *hw)  # (B, L, h, w)
    return DecodeResult(tokens[:, :L], token_log_probs[:, :L].sum(1), attention, token_log_probs[:, :L])


@torch.no_grad()
def beam_search(model, images: torch.Tensor, max_len: int, beam: int, constraint: BracketConstraint | None = None,
                length_penalty: float = 1.0, widths: torch.Tensor | None = None) -> DecodeResult:
    """Batched beam search: B images x `beam` hypotheses in one (B*beam) batch per step.

    Hypotheses are ranked by sum(log p) / length ** length_penalty (Wu et al. 2016 use a similar
    normalisation; 0 = raw sums). A finished hypothesis stays in its beam slot, extended by pad at
    no cost, until every hypothesis of every image has finished or max_len steps have run.
    """
    B, K, device = images.size(0), beam, images.device
    N = B * K
    state = reorder(model.init_state(images, widths), torch.arange(B, device=device).repeat_interleave(K), per_image=False)
    scores = torch.full((B, K), NEG_INF, device=device)
    scores[:, 0] = 0.0  # one live hypothesis per image at the start, so no duplicate beams
    lengths = torch.zeros(B, K, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    history = []  # per step: (rows of the previous step each hypothesis extends (N,), token (N,), its log-prob (N,),
    # attention (N, S) | None); hypotheses are traced back once at the end instead of copied every step
    prev = torch.full((N,), model.sos_id, dtype=torch.long, device=device)
    cstate = constraint.start(N, max_len, device) if constraint else None
    offsets = (torch.arange(B, device=device) * K)[:, None]  # (B, 1)
    for t in range(max_len):
        log_probs, state = model.step(state, prev)  # (N, V)
        log_probs = _never_emitted(log_probs, model)
        V = log_probs.size(1)
        if constraint:
            log_probs = log_probs.masked_fill(~constraint.allowed(cstate, t, max_len), NEG_INF)
        done = finished.view(N, 1)
        pad_only = torch.full_like(log_probs, NEG_INF)
        pad_only[:, model.pad_id] = 0.0
        log_probs = torch.where(done, pad_only, log_probs)
        total = scores.view(N, 1) + log_probs  # (N, V)
        new_len = lengths.view(N, 1) + (~done).float()  # (N, 1)
        rank = total / new_len.clamp(min=1.0) ** length_penalty  # (N, V)
        _, idx = rank.view(B, K * V).topk(K, dim=1)  # (B, K)
        src_beam, tok = idx // V, idx % V  # (B, K)
        src = (offsets + src_beam).view(N)  # rows of the (N, ...) state to keep
        scores = total.view(B, K * V).gather(1, idx)
        gained = log_probs.view(B, K * V).gather(1, idx).view(N)  # 0 for the pad after eos
        lengths = new_len.view(B, K).gather(1, src_beam)
        finished = finished.gather(1, src_beam) | (tok == model.eos_id)
        tok = tok.view(N)
        state = reorder(state, src, per_image=False)
        attn = state.get("attn")  # (N, S), already reordered with the state
        history.append((src, tok, gained, attn))
        if constraint:
            cstate = constraint.advance(reorder(cstate, src), tok)
        prev = tok
        if finished.all():
            break
    final = scores / lengths.clamp(min=1.0) ** length_penalty  # (B, K)
    final, order = final.sort(dim=1, descending=True)
    ranked = (offsets + order).view(N)  # rows of every hypothesis, best first per image
    tokens, token_log_probs, attention = _trace_back(history, ranked)  # (N, L) each, (N, L, S) | None
    maps = None
    if attention is not None and state.get("hw") is not None:
        maps = attention[::K].reshape(B, attention.size(1), *state["hw"])  # (B, L, h, w) of the best
        maps = maps * (tokens[::K] != model.pad_id)[:, :, None, None]
    return DecodeResult(tokens[::K], scores.view(N).index_select(0, ranked[::K]), maps, token_log_probs[::K],
                        tokens.view(B, K, -1), final)


def _trace_back(history: list, rows: torch.Tensor):
    """The hypotheses ending in `rows` of the last step, followed back through the steps' parent rows:
    -> tokens (M, L), their log-probs (M, L), attention (M, L, S) or None."""
    tokens, log_probs, maps = [], [], []
    for src, tok, gained, attn in reversed(history):
        tokens.append(tok[rows])
        log_probs.append(gained[rows])
        if attn is not None:
            maps.append(attn[rows])
        rows = src[rows]
    attention = torch.stack(maps[::-1], 1) if maps else None
    return torch.stack(tokens[::-1], 1), torch.stack(log_probs[::-1], 1), attention


@torch.no_grad()
def greedy_uncached(model, images: torch.Tensor, max_len: int, widths: torch.Tensor | None = None) -> torch.Tensor:
    """The reference `greedy` is measured and tested against: the image is encoded once, but every step runs
    the decoder's training pass over the whole prefix again (memory keys/values projected anew, no cache), as
    the team's code did. Models with a sequence decoder only. -> tokens (B, max_len) (eos, then pad)."""
    memory, _, mask = model.encode_masked(images, widths)
    B = images.size(0)
    tokens = torch.full((B, max_len), model.pad_id, dtype=torch.long, device=images.device)
    ended = torch.zeros(B, dtype=torch.bool, device=images.device)
    for t in range(max_len):
        logits = model.decoder(memory, tokens[:, :t + 1], 1.0, mask)[:, t]  # inputs: sos, tokens[:t]
        tok = _never_emitted(logits.log_softmax(-1), model).argmax(-1)
        tokens[:, t] = torch.where(ended, model.pad_id, tok)
        ended |= tok == model.eos_id
        if ended.all():
            break
    return tokens
