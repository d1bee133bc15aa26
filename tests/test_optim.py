"""Learning-rate and teacher-forcing schedules; optimisers (AdamP)."""
import pytest
import torch

from ocrlib.optim import AdamP, build_optimizer, get_lr, get_tf_ratio


def test_lr_schedules():
    assert get_lr(0, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert get_lr(10, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert get_lr(55, 100, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.55)
    assert get_lr(100, 100, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.1)
    assert get_lr(0, 100, 1.0, "onecycle") == pytest.approx(1 / 25)
    assert get_lr(30, 100, 1.0, "onecycle") == pytest.approx(1.0)
    assert get_lr(100, 100, 1.0, "onecycle") == pytest.approx(1 / 25e4)
    assert [get_lr(s, 100, 1.0, "step", step_size=10, gamma=0.5) for s in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]
    with pytest.raises(ValueError, match="known"):
        get_lr(0, 10, 1.0, "bogus")


def test_teacher_forcing_schedules():
    assert get_tf_ratio(50, 100, "constant", start=0.8) == 0.8
    assert get_tf_ratio(50, 100, "linear", start=1.0, end=0.5) == pytest.approx(0.75)
    assert [get_tf_ratio(s, 90, "step") for s in (0, 29, 30, 60, 89)] == [0.5, 0.5, 0.4, 0.3, 0.3]


def test_adamp_equals_adam_on_vectors_and_slows_norm_growth_on_scale_invariant_weights():
    torch.manual_seed(0)
    bias = torch.randn(5, requires_grad=True)
    bias_ref = bias.detach().clone().requires_grad_(True)
    opt, ref = AdamP([bias], lr=0.1), torch.optim.Adam([bias_ref], lr=0.1)
    for _ in range(5):
        for p, o in ((bias, opt), (bias_ref, ref)):
            o.zero_grad()
            ((p - 3) ** 2).sum().backward()
            o.step()
    assert torch.allclose(bias, bias_ref, atol=1e-6)

    target = torch.randn(4, 8)
    norms = {}
    for name in ("adam", "adamp"):
        weight = torch.nn.Parameter(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))
        optimizer = build_optimizer(name, [weight], lr=0.05)
        for _ in range(50):  # the loss depends on the direction only: scale-invariant
            optimizer.zero_grad()
            (-(torch.nn.functional.normalize(weight, dim=1) * target).sum()).backward()
            optimizer.step()
        norms[name] = weight.norm().item()
    assert norms["adamp"] < norms["adam"]
    with pytest.raises(ValueError, match="known"):
        build_optimizer("sgdx", [weight], lr=0.1)
