"""Task subsets: the k most frequent tokens, a length limit, images linked not copied."""
from ocrlib.data.sources import read_gt
from ocrlib.data.subsets import frequent_tokens, restrict

from helpers import write_dataset


def test_restrict_keeps_formulas_over_the_frequent_tokens_and_short_enough(tmp_path):
    folder = write_dataset(tmp_path / "d", 30, seed=0)
    samples, _ = read_gt(folder)
    allowed = frequent_tokens(samples, 4)
    assert len(allowed) == 4 and frequent_tokens(samples, None) == {t for s in samples for t in s.tokens}
    out, kept = restrict(folder, tmp_path / "sub", allowed, max_tokens=5)
    subset, problems = read_gt(out)
    expected = [s for s in samples if len(s.tokens) <= 5 and set(s.tokens) <= allowed]
    assert problems == [] and kept == len(subset) == len(expected) > 0
    assert [(s.image.name, s.tokens) for s in subset] == [(s.image.name, s.tokens) for s in expected]
    assert (out / "images").is_symlink() and subset[0].image.resolve() == expected[0].image.resolve()
    assert restrict(folder, out, allowed, max_tokens=None)[1] >= kept  # rewritten in place, longer ones back


def test_task_subset_cuts_every_set_and_writes_its_vocabulary(tmp_path):
    from ocrlib.data.build import BuiltData
    from ocrlib.data.subsets import task_subset
    from ocrlib.tokens import SPECIALS, Vocab

    built = BuiltData(tmp_path, {"printed/train": write_dataset(tmp_path / "tr", 30, seed=0),
                                 "printed/val": write_dataset(tmp_path / "va", 10, seed=1)})
    sub, kept = task_subset(built, 8, 6, train_sets=("printed/train",))
    assert sub.root == tmp_path / "subsets" / "k8-len6" and set(sub.sets) == {"printed/train", "printed/val"}
    vocab = Vocab.load(sub.vocab_path)
    assert len(vocab) == len(SPECIALS) + 8
    for key, folder in sub.sets.items():
        samples, _ = read_gt(folder)
        assert len(samples) == kept[key] and all(len(s.tokens) <= 6 and all(t in vocab for t in s.tokens)
                                                 for s in samples)
    assert kept["printed/train"] > 0
