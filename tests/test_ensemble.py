"""Ensembles (ocrlib.ensemble): token-level averaging under one search, sequence voting, per-member input sizes."""
import dataclasses

import numpy as np
import pytest
import torch

from helpers import TINY
from ocrlib.config import DataConfig
from ocrlib.decoding import reorder
from ocrlib.data.dataset import FormulaDataset, png_bytes
from ocrlib.data.sources import Sample
from ocrlib.ensemble import Averaged, Member, evaluate_ensemble, member_inputs, read_averaged, vote
from ocrlib.errors import BadInput
from ocrlib.evaluate import evaluate
from ocrlib.models import create_model
from ocrlib.tokens import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 30
DATA = DataConfig(height=16, width=None, augment="none")


def member(name: str, seed: int, vocab: int = VOCAB, data: DataConfig = DATA) -> Member:
    torch.manual_seed(seed)
    return Member(create_model(name, vocab, max_len=8, **TINY[name]).eval(), data, f"{name}-{seed}")


def grays(n: int = 3) -> list[np.ndarray]:
    """Black-on-white uint8 images of a few widths."""
    rng = np.random.default_rng(0)
    images = []
    for width in (40, 64, 52)[:n]:
        image = np.full((20, width), 255, np.uint8)
        image[4:16, 2:width - 2] = np.where(rng.random((12, width - 4)) < 0.3, 0, 255)
        images.append(image)
    return images


def test_a_model_averaged_with_itself_reads_as_it_does_alone():
    alone = member("satrn", 0)
    images, widths = member_inputs([alone], grays())[0]
    expected = alone.model.decode(images, widths=widths)
    result = read_averaged([alone, alone], grays())
    assert torch.equal(result.tokens, expected.tokens)
    assert torch.allclose(result.scores, expected.scores, atol=1e-5)


def test_the_ensemble_step_is_the_log_of_the_mean_probability():
    members = [member("satrn", 0), member("attention", 1)]
    ensemble = Averaged(members)
    inputs = member_inputs(members, grays())
    state = ensemble.init_state(inputs)
    prev = torch.full((3,), ensemble.sos_id)
    log_probs, _ = ensemble.step(state, prev)
    singles = [m.model.step(m.model.init_state(*x), prev)[0].exp() for m, x in zip(members, inputs)]
    assert torch.allclose(log_probs.exp(), (singles[0] + singles[1]) / 2, atol=1e-6)


def test_beam_search_drives_an_ensemble_without_copying_each_members_memory():
    members = [member("satrn", 0), member("attention", 1)]
    result = read_averaged(members, grays(), beam=3)
    assert result.beams.shape[:2] == (3, 3) and (result.beam_scores[:, :-1] >= result.beam_scores[:, 1:]).all()
    state = Averaged(members).init_state(member_inputs(members, grays()))
    repeated = reorder(state, torch.arange(3).repeat_interleave(3), per_image=False)
    memory_k = repeated["members"][0]["per_image"]["memory_kv"][0][0]
    assert memory_k.size(0) == 3 and repeated["members"][1]["h"].size(0) == 9  # memory per image, states per beam


def test_voting_takes_the_majority_reading():
    a, b = member("satrn", 0), member("satrn", 5)
    images, widths = member_inputs([a], grays())[0]
    majority = a.model.decode(images, widths=widths).tokens.tolist()
    chosen = vote([a, b, a], grays())
    assert [list(c) for c in chosen] == [row[:row.index(a.model.eos_id)] if a.model.eos_id in row else row
                                         for row in majority]


def test_each_member_sees_its_own_input_size_unless_one_is_shared():
    small = member("satrn", 0)
    large = member("satrn", 1, data=dataclasses.replace(DATA, height=32))
    own = member_inputs([small, large], grays())
    assert [images.shape[2] for images, _ in own] == [16, 32]
    shared = member_inputs([small, large], grays(), shared=DATA)
    assert [images.shape[2] for images, _ in shared] == [16, 16]
    assert own.size(0) == 3 and own.device == torch.device("cpu")


def test_members_of_different_vocabularies_are_refused():
    with pytest.raises(BadInput, match="one vocabulary"):
        Averaged([member("satrn", 0), member("satrn", 1, vocab=VOCAB + 1)])


def samples_in(tmp_path) -> list[Sample]:
    samples = []
    for i, gray in enumerate(grays()):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(gray))
        samples.append(Sample(tmp_path / f"{i}.png", ["t1", "t2"]))
    return samples


def test_an_ensemble_is_evaluated_like_a_model(tmp_path):
    vocab = Vocab([f"t{i}" for i in range(VOCAB - 4)])
    samples = samples_in(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    samples.append(Sample(tmp_path / "broken.png", ["t1"]))
    alone = member("satrn", 0)
    _, frame = evaluate_ensemble([alone, alone], samples, vocab, batch_size=2)
    _, reference = evaluate(alone.model, FormulaDataset.for_config(samples, vocab, DATA), vocab)
    assert frame["pred"].tolist() == reference["pred"].tolist() and frame.attrs["n_skipped"] == 1
    _, voted = evaluate_ensemble([alone, member("satrn", 3), alone], samples, vocab, method="vote")
    assert voted["pred"].tolist() == reference["pred"].tolist()
    with pytest.raises(BadInput, match="not 'average' or 'vote'"):
        evaluate_ensemble([alone], samples, vocab, method="mean")


def test_a_member_with_the_tokens_in_another_order_is_mapped_onto_the_ensembles(tmp_path):
    vocab = Vocab([f"t{i}" for i in range(VOCAB - 4)])
    shuffled = Vocab(vocab.tokens[:4] + vocab.tokens[4:][::-1])  # the same tokens, another order (specials first)
    alone = member("satrn", 0)
    # the same network with its embedding and output rows in the shuffled order
    same = member("satrn", 0)
    rows = torch.tensor([vocab.index[t] for t in shuffled.tokens])
    decoder = same.model.decoder
    with torch.no_grad():
        for tensor in (decoder.embed.weight, decoder.head.weight, decoder.head.bias):
            tensor.copy_(tensor[rows])
    same.vocab = shuffled
    samples = samples_in(tmp_path)
    _, reference = evaluate(alone.model, FormulaDataset.for_config(samples, vocab, DATA), vocab)
    assert reference["pred"].str.len().gt(0).all()  # it reads tokens, so an unmapped order would read others
    for method in ("average", "vote"):
        _, frame = evaluate_ensemble([same], samples, vocab, method=method)
        assert frame["pred"].tolist() == reference["pred"].tolist()
        _, frame = evaluate_ensemble([alone, same], samples, vocab, method=method)
        assert frame["pred"].tolist() == reference["pred"].tolist()
    same.vocab = Vocab(vocab.tokens[:-1] + ["other"])
    with pytest.raises(BadInput, match="differ in 2 tokens"):
        evaluate_ensemble([alone, same], samples, vocab)
