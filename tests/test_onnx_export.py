"""ONNX export: the encoder and a decoder step with its key/value cache, run by onnxruntime, read as torch does."""
import pytest
import torch

from ocrlib.data.dataset import model_input, pad_images, width_multiple_of
from ocrlib.data.render import render_one
from ocrlib.pretrained import WEIGHTS

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[serve]')")
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped model in ocrlib/pretrained/")

FORMULAS = [r"\frac{1}{2}", r"f(x)=2x+1", r"x^{2}-4x+3=0", r"\sqrt{3}"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ocrlib.onnx_export import OnnxRecognizer, export_onnx

    folder = export_onnx(None, tmp_path_factory.mktemp("onnx"))
    return OnnxRecognizer(folder)


def batch_of(config):
    tensors = [model_input(render_one(latex, "mathtext", seed=0, index=i), config.data)
               for i, latex in enumerate(FORMULAS)]
    return pad_images(tensors, width_multiple_of(config.data)), torch.tensor([t.shape[-1] for t in tensors])


@pytest.mark.parametrize("beam", [1, 3])
def test_onnx_reads_the_same_tokens_as_torch(exported, beam):
    from ocrlib.checkpoints import load_checkpoint
    from ocrlib.pretrained import default_checkpoint

    model, _, config = load_checkpoint(default_checkpoint(None))
    images, widths = batch_of(config)
    reference = model.decode(images, widths=widths, beam=beam)
    result = exported.decode(images, widths=widths, beam=beam)
    assert torch.equal(result.tokens, reference.tokens)  # a padded batch of four widths, so the masks are exercised
    assert torch.allclose(result.scores, reference.scores, atol=1e-3)
    assert torch.allclose(result.attention, reference.attention, atol=1e-3)


def test_the_reader_on_the_onnx_runtime_reads_as_on_torch(exported):
    from ocrlib.reader import FormulaReader

    images = [render_one(latex, "mathtext", seed=0, index=i) for i, latex in enumerate(FORMULAS)]
    on_torch = FormulaReader(beam=1).read(images)
    on_onnx = FormulaReader(beam=1, runtime="onnx", onnx_folder=exported.folder)
    assert on_onnx.describe()["runtime"] == "onnx"
    for a, b in zip(on_torch, on_onnx.read(images)):
        assert a.tokens == b.tokens and a.confidence == pytest.approx(b.confidence, abs=1e-3)
