"""Learning-rate and teacher-forcing schedules; optimisers (AdamP)."""
import pytest
import torch

from ocrlib.optim import AdamP, build_optimizer, get_lr, get_tf_ratio, training_progress


def test_progress_is_the_fraction_of_whichever_limit_ends_the_run_first():
    assert training_progress(30, 100, elapsed_s=9999.0, budget_min=None) == pytest.approx(0.3)  # steps only
    assert training_progress(30, 100, elapsed_s=60.0, budget_min=10.0) == pytest.approx(0.3)  # 10% of the time
    assert training_progress(30, 100, elapsed_s=300.0, budget_min=10.0) == pytest.approx(0.5)  # time-limited
    assert training_progress(30, 100, elapsed_s=900.0, budget_min=10.0) == 1.0  # over budget: capped
    assert training_progress(100, 100, elapsed_s=0.0, budget_min=10.0) == 1.0  # all steps done


def test_lr_schedules_follow_progress_after_warm_up_in_steps():
    assert get_lr(0, 0.0, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert get_lr(9, 0.9, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)  # warm-up: steps, not progress
    assert get_lr(20, 0.5, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.55)  # midpoint
    assert get_lr(20, 0.75, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.5 * (1 - 0.5 ** 0.5))
    assert get_lr(20, 1.0, 1.0, "cosine", warmup_steps=10, min_lr=0.1) == pytest.approx(0.1)
    assert get_lr(0, 0.0, 1.0, "onecycle") == pytest.approx(1 / 25)
    assert get_lr(0, 0.15, 1.0, "onecycle") == pytest.approx(1 / 25 + (1 - 1 / 25) / 2)
    assert get_lr(0, 0.3, 1.0, "onecycle") == pytest.approx(1.0)
    assert get_lr(0, 1.0, 1.0, "onecycle") == pytest.approx(1 / 25e4)
    assert get_lr(50, 0.9, 1.0, "constant", warmup_steps=10) == 1.0
    # step: on steps whatever the progress
    assert [get_lr(s, 0.99, 1.0, "step", step_size=10, gamma=0.5) for s in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]
    with pytest.raises(ValueError, match="known"):
        get_lr(0, 0.0, 1.0, "bogus")


def test_teacher_forcing_schedules():
    assert get_tf_ratio(0.5, "constant", start=0.8) == 0.8
    assert get_tf_ratio(0.5, "linear", start=1.0, end=0.5) == pytest.approx(0.75)
    assert get_tf_ratio(1.0, "linear", start=1.0, end=0.5) == pytest.approx(0.5)
    assert [get_tf_ratio(p, "step") for p in (0, 0.32, 1 / 3, 2 / 3, 0.99)] == [0.5, 0.5, 0.4, 0.3, 0.3]
    with pytest.raises(ValueError, match="known"):
        get_tf_ratio(0.5, "bogus")


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
