"""Decoding: greedy, batched beam search, key/value caching, bracket-balance constraint."""
from __future__ import annotations

import itertools

import pytest
import torch

from ocrlib.decoding import BracketConstraint, beam_search, greedy, greedy_uncached, reorder
from ocrlib.models import create_model
from ocrlib.models.layers import KVCache

TOKENS = ["<pad>", "<sos>", "<eos>", "<unk>", "{", "}", "(", ")", "[", "]", "\\left(", "\\right)", "\\right.",
          "x", "y", "^", "_", "1", "2", "\\frac", "+", "=", "a", "\\leftarrow", "\\rightarrow"]
VOCAB = len(TOKENS)
# made likely in the constraint tests; the arrows too, which must stay ordinary tokens
BRACKETS = [i for i, t in enumerate(TOKENS) if t in "{}()[]" or t.startswith(("\\left", "\\right"))]
TINY = {
    "satrn": dict(hidden=32, filter=64, encoder_layers=1, decoder_layers=2, heads=4, dropout=0.0),
    "attention": dict(channels=(8, 16, 16, 32), blocks=(1, 1, 1, 1), stem_channels=8, hidden=32, embed_dim=16,
                      attn_dim=32, dropout=0.0),
}
TINY["attention_gru"] = dict(TINY["attention"], cell="gru")


def random_model(name: str, seed: int = 0, max_len: int = 16):
    torch.manual_seed(seed)
    return create_model(name.removesuffix("_gru"), VOCAB, max_len=max_len, **TINY[name]).eval()


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 64, generator=torch.Generator().manual_seed(seed))


def until_eos(row: list[int]) -> list[int]:
    return row[:row.index(2) + 1] if 2 in row else row


def is_balanced(tokens: list[str]) -> bool:
    """Reference check, independent of BracketConstraint: { } strict, \\left/\\right strict, ( [ vs ) ]."""
    stack = []
    for tok in tokens:
        delim_open = tok in ("\\left(", "\\left.")
        delim_close = tok in ("\\right)", "\\right.")
        kind_open = "group" if tok == "{" else "delim" if delim_open else "bracket" if tok in "([" else None
        kind_close = "group" if tok == "}" else "delim" if delim_close else "bracket" if tok in ")]" else None
        if kind_open:
            stack.append(kind_open)
        elif kind_close and (not stack or stack.pop() != kind_close):
            return False
    return not stack


class TableModel:
    """A fake recogniser with the step API: log p(next | image, step, previous token) from a random table."""

    pad_id, sos_id, eos_id = 0, 1, 2

    def __init__(self, n_images: int, steps: int, vocab: int, seed: int = 0, bias: torch.Tensor | None = None):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(n_images, steps, vocab, vocab, generator=g) * 2
        if bias is not None:
            logits = logits + bias
        self.table = logits.log_softmax(-1)  # (images, steps, prev, next)

    def init_state(self, images, widths=None):
        return {"image": torch.arange(images.size(0)), "t": torch.zeros(images.size(0), dtype=torch.long)}

    def step(self, state, prev):
        log_probs = self.table[state["image"], state["t"], prev]  # (N, V)
        return log_probs, {"image": state["image"], "t": state["t"] + 1}


def recompute_greedy(model, images, max_len):
    """Reference greedy decoding without any cache: the full forward pass on the whole prefix each step."""
    tokens = torch.zeros(images.size(0), 0, dtype=torch.long)
    scores = torch.zeros(images.size(0))
    done = torch.zeros(images.size(0), dtype=torch.bool)
    for _ in range(max_len):
        prefix = torch.nn.functional.pad(tokens, (0, 1))  # the last entry is only a placeholder
        log_probs = model(images, prefix)[:, -1].log_softmax(-1)
        log_probs[:, [model.pad_id, model.sos_id]] = float("-inf")
        best = log_probs.argmax(-1)
        scores += torch.where(done, 0.0, log_probs.gather(1, best[:, None]).squeeze(1))
        done |= best == model.eos_id
        tokens = torch.cat([tokens, best[:, None]], dim=1)
    return tokens, scores


@pytest.mark.parametrize("name", ["satrn", "attention", "attention_gru"])
def test_cached_decoding_equals_recomputing_everything(name):
    model = random_model(name, seed=1, max_len=9)
    images = random_images(4)
    with torch.no_grad():
        reference, ref_scores = recompute_greedy(model, images, 9)
    result = model.decode(images)
    for row, ref in zip(result.tokens.tolist(), reference.tolist()):
        assert until_eos(row) == until_eos(ref)
    assert torch.allclose(result.scores, ref_scores, atol=1e-4)


@pytest.mark.parametrize("name", ["satrn", "attention"])
def test_the_uncached_reference_reads_as_cached_greedy(name):
    model = random_model(name, seed=4, max_len=9).eval()
    images = random_images(4, seed=5)
    cached = model.decode(images).tokens
    reference = greedy_uncached(model, images, 9)
    for row, ref in zip(cached.tolist(), reference.tolist()):
        assert until_eos(row) == until_eos(ref)


def test_satrn_projects_memory_once_and_caches_keys(monkeypatch):
    model = random_model("satrn", max_len=7)
    calls = []
    original = model.decoder.memory_kv
    monkeypatch.setattr(model.decoder, "memory_kv", lambda memory: calls.append(1) or original(memory))
    state = model.init_state(random_images(2))
    for t in range(5):
        _, state = model.step(state, torch.full((2,), model.sos_id if t == 0 else 5))
    assert len(calls) == 1
    assert [k.size(2) for k, _ in state["caches"]] == [5, 5]  # one cached position per fed token
    model.decode(random_images(2), beam=3)
    assert len(calls) == 2  # once per decode call, not per step or per beam


def test_a_reordered_cache_gathers_its_rows_when_it_grows():
    k, v, new_k, new_v = torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5), torch.randn(3, 2, 1, 5), torch.randn(3, 2, 1, 5)
    first, then = torch.tensor([3, 3, 0, 1]), torch.tensor([2, 0, 1])  # beam search: rows copied, dropped, moved
    state = reorder(reorder({"caches": [KVCache(k, v)]}, first), then)
    cache = state["caches"][0]
    assert cache.k is k  # nothing copied yet
    rows = first[then]
    assert all(torch.equal(a, b) for a, b in zip(cache, (k[rows], v[rows])))
    grown = cache.extend(new_k, new_v)
    assert torch.equal(grown.k, torch.cat([k[rows], new_k], 2))
    assert torch.equal(grown.v, torch.cat([v[rows], new_v], 2))
    assert grown.rows is None and grown.length == 4


def test_attention_decoder_projects_memory_once(monkeypatch):
    model = random_model("attention", max_len=7)
    calls = []
    original = model.decoder.attention.project_memory
    monkeypatch.setattr(model.decoder.attention, "project_memory", lambda m: calls.append(1) or original(m))
    model.decode(random_images(2), beam=2)
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["satrn", "attention"])
def test_beam_of_one_equals_greedy(name):
    model = random_model(name, seed=2)
    images = random_images(5, seed=3)
    g = greedy(model, images, 12)
    b = beam_search(model, images, 12, beam=1)
    assert torch.equal(g.tokens, b.tokens)
    assert torch.allclose(g.scores, b.scores, atol=1e-5)
    assert torch.allclose(g.attention, b.attention, atol=1e-6)


def exhaustive_best(model: TableModel, image: int, max_len: int, length_penalty: float):
    """Best sequence by brute force: every token string, ended by eos or cut at max_len."""
    words = range(3, model.table.size(-1))
    best, best_rank = None, float("-inf")
    for n in range(max_len + 1):
        for body in itertools.product(words, repeat=n):
            seq = list(body) + [model.eos_id] if n < max_len else list(body)
            prev, total = model.sos_id, 0.0
            for t, tok in enumerate(seq):
                total += model.table[image, t, prev, tok].item()
                prev = tok
            rank = total / len(seq) ** length_penalty
            if rank > best_rank:
                best, best_rank = seq, rank
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(length_penalty):
    model = TableModel(n_images=3, steps=4, vocab=6, seed=4)
    result = beam_search(model, torch.zeros(3, 1), max_len=4, beam=128, length_penalty=length_penalty)
    for image in range(3):
        assert until_eos(result.tokens[image].tolist()) == exhaustive_best(model, image, 4, length_penalty)


def test_batched_beams_equal_one_image_at_a_time():
    model = random_model("satrn", seed=5)
    images = random_images(3, seed=6)
    batched = model.decode(images, beam=4)
    for i in range(3):
        alone = model.decode(images[i:i + 1], beam=4)
        assert until_eos(batched.tokens[i].tolist()) == until_eos(alone.tokens[0].tolist())
        assert torch.allclose(batched.scores[i], alone.scores[0], atol=1e-4)


def test_bracket_constraint_masks():
    c = BracketConstraint(TOKENS, eos_id=2)
    idx = {t: i for i, t in enumerate(TOKENS)}
    state = c.start(1, 10)
    allowed = c.allowed(state, 0, 10)[0]
    assert not any(allowed[idx[t]] for t in ["}", ")", "]", "\\right)", "\\right."])
    assert allowed[idx["{"]] and allowed[idx["\\left("]] and allowed[2] and allowed[idx["x"]]
    assert allowed[idx["\\rightarrow"]] and allowed[idx["\\leftarrow"]]  # arrows are not delimiters
    after_brace = c.advance(state, torch.tensor([idx["{"]]))
    allowed = c.allowed(after_brace, 1, 10)[0]
    assert allowed[idx["}"]] and not allowed[idx[")"]] and not allowed[2]
    after_paren = c.advance(after_brace, torch.tensor([idx["["]]))
    assert c.allowed(after_paren, 2, 10)[0][idx[")"]]  # [0, 1) intervals are fine
    assert not c.allowed(after_paren, 2, 10)[0][idx["}"]]
    # step 7 of 10 with two open: only the closer of the innermost may follow (2 closers + eos = 3 steps)
    forced = c.allowed(after_paren, 7, 10)[0]
    assert forced.nonzero().squeeze(1).tolist() == [idx[")"], idx["]"]]


def test_openers_without_closers_are_never_allowed():
    c = BracketConstraint(["<pad>", "<sos>", "<eos>", "<unk>", "\\left(", "x"], eos_id=2)
    assert not c.allowed(c.start(1, 5), 0, 5)[0][4]


@pytest.mark.parametrize("beam", [1, 3])
def test_constraint_always_yields_balanced_output(beam):
    bias = torch.zeros(VOCAB)
    bias[BRACKETS] = 3.0  # a random model that loves brackets
    bias[2] = 1.0
    constraint = BracketConstraint(TOKENS, eos_id=2)
    unbalanced_without = 0
    for seed in range(20):
        model = TableModel(n_images=4, steps=10, vocab=VOCAB, seed=seed, bias=bias)
        images = torch.zeros(4, 1)
        free = beam_search(model, images, 10, beam) if beam > 1 else greedy(model, images, 10)
        unbalanced_without += sum(not is_balanced([TOKENS[i] for i in until_eos(r)]) for r in free.tokens.tolist())
        out = beam_search(model, images, 10, beam, constraint) if beam > 1 else greedy(model, images, 10, constraint)
        for row in out.tokens.tolist():
            assert 2 in row, "every output ends with eos"
            assert is_balanced([TOKENS[i] for i in until_eos(row)[:-1]]), [TOKENS[i] for i in row]
    assert unbalanced_without > 10  # the constraint, not luck, keeps them balanced


@pytest.mark.parametrize("name", ["satrn", "attention"])
def test_constraint_on_random_recognisers(name):
    constraint = BracketConstraint(TOKENS, eos_id=2)
    for seed in range(3):
        model = random_model(name, seed=seed, max_len=12)
        with torch.no_grad():
            model.decoder.head.bias[BRACKETS] += 4.0  # make brackets likely
        for beam in (1, 3):
            out = model.decode(random_images(4, seed), beam=beam, constraints=constraint)
            for row in out.tokens.tolist():
                assert 2 in row and is_balanced([TOKENS[i] for i in until_eos(row)[:-1]])


def table_log_probs(model: TableModel, image: int, row: list[int]) -> list[float]:
    """Log-prob of each token of `row` up to eos, read from the fake model's table; 0 for the pad after it."""
    out, prev = [], model.sos_id
    for t, tok in enumerate(row):
        out.append(0.0 if tok == model.pad_id else model.table[image, t, prev, tok].item())
        prev = tok
    return out


@pytest.mark.parametrize("beam", [1, 3])
def test_each_emitted_token_carries_its_own_log_prob(beam):
    model = TableModel(n_images=4, steps=6, vocab=7, seed=8)
    result = (greedy(model, torch.zeros(4, 1), 6) if beam == 1
              else beam_search(model, torch.zeros(4, 1), 6, beam=beam))
    assert result.token_log_probs.shape == result.tokens.shape
    for image in range(4):
        row = result.tokens[image].tolist()
        assert result.token_log_probs[image].tolist() == pytest.approx(table_log_probs(model, image, row), abs=1e-5)
    assert torch.allclose(result.token_log_probs.sum(1), result.scores, atol=1e-5)


def test_beam_search_returns_every_hypothesis_ranked_best_first():
    model = TableModel(n_images=3, steps=5, vocab=6, seed=9)
    K, penalty = 4, 1.0
    result = beam_search(model, torch.zeros(3, 1), 5, beam=K, length_penalty=penalty)
    assert result.beams.shape[:2] == (3, K) and result.beam_scores.shape == (3, K)
    assert torch.equal(result.beams[:, 0], result.tokens)
    assert (result.beam_scores[:, :-1] >= result.beam_scores[:, 1:]).all()
    for image in range(3):
        hypotheses = [until_eos(row) for row in result.beams[image].tolist()]
        assert len({tuple(h) for h in hypotheses}) == K  # K different readings, not one repeated
        for hypothesis, rank in zip(hypotheses, result.beam_scores[image].tolist()):
            assert sum(table_log_probs(model, image, hypothesis)) / len(hypothesis) ** penalty == pytest.approx(rank)
