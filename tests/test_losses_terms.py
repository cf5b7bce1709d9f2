"""Loss terms (eq. 1–6) on tiny tensors: hand-computed values, bin edges, degenerate CCC, KD scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtaffect import metrics
from mtaffect.losses import (
    ccc_torch,
    distillation_kl,
    expression_ce,
    va_bin_targets,
    va_ce,
    va_dimension_loss,
    va_distillation,
    va_supervision,
)
from mtaffect.losses.objectives import LossConfig
from mtaffect.models.cnn import CNNConfig
from mtaffect.models.outputs import va_decoding, va_values
from mtaffect.testing import approx32

# ----------------------------------------------------------------------------- expression CE


def test_expression_ce_hand_computed() -> None:
    logits = torch.zeros(2, 7)
    assert expression_ce(logits, torch.tensor([0, 3])).item() == pytest.approx(math.log(7))
    logits = torch.tensor([[2.0, 0, 0, 0, 0, 0, 0], [0.0] * 7])
    expected = -math.log(math.exp(2) / (math.exp(2) + 6))
    mask = torch.tensor([True, False])
    assert expression_ce(logits, torch.tensor([0, 5]), mask).item() == pytest.approx(expected)


def test_expression_ce_empty_selection_is_attached_zero() -> None:
    logits = torch.randn(3, 7, requires_grad=True)
    loss = expression_ce(logits, torch.tensor([0, 1, 9]), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 7))


def test_masked_out_labels_may_hold_anything() -> None:
    logits = torch.randn(2, 7)
    mask = torch.tensor([True, False])
    value = expression_ce(logits, torch.tensor([2, 99]), mask)  # 99 is never looked at
    assert value.item() == pytest.approx(F.cross_entropy(logits[:1], torch.tensor([2])).item())


# ----------------------------------------------------------------------------- VA bins


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (-1.0, torch.float32, 0),
        (-0.95, torch.float32, 0),  # a bin centre, inside bin 0
        (-0.9, torch.float32, 1),  # on an inner edge: the bin above
        (-0.9, torch.float64, 1),
        (0.0, torch.float32, 10),
        (0.1, torch.float32, 11),  # float32 0.1 = 0.100000001 > edge 0.10000000000000009
        (0.1, torch.float64, 10),  # float64 0.1 < that edge
        (0.95, torch.float32, 19),
        (1.0, torch.float32, 19),  # digitize gives 20, clipped to the last bin
        (1.5, torch.float32, 19),  # outside [-1, 1]: clipped
        (-1.5, torch.float32, 0),
    ],
)
def test_va_bin_targets_on_edges(value: float, dtype: torch.dtype, expected: int) -> None:
    assert va_bin_targets(torch.tensor([value], dtype=dtype)).tolist() == [expected]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_va_bin_targets_match_np_digitize(dtype: torch.dtype) -> None:
    grid = np.linspace(-1, 1, 201)  # every edge and centre, plus points in between
    rng_values = np.random.default_rng(0).uniform(-1, 1, 1000)
    values = torch.tensor(np.concatenate([grid, rng_values, [-1 + k / 10 for k in range(21)]]), dtype=dtype)
    expected = np.clip(np.digitize(values.numpy(), np.linspace(-1, 1, 21)) - 1, 0, 19)
    np.testing.assert_array_equal(va_bin_targets(values).numpy(), expected)


def test_va_bin_targets_reject_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        va_bin_targets(torch.tensor([0.1, float("nan")]))


def test_va_ce_hand_computed() -> None:
    logits = torch.zeros(3, 20)
    assert va_ce(logits, torch.tensor([-1.0, 0.0, 1.0])).item() == pytest.approx(math.log(20))
    logits = torch.zeros(1, 20)
    logits[0, 10] = 3.0
    expected = -math.log(math.exp(3) / (math.exp(3) + 19))
    assert va_ce(logits, torch.tensor([0.05])).item() == pytest.approx(expected)


# ----------------------------------------------------------------------------- CCC


def _authors_ccc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The authors' loss CCC: Pearson rho from centred sums and torch.std (unbiased)."""
    vx, vy = x - x.mean(), y - y.mean()
    rho = (vx * vy).sum() / (torch.sqrt((vx**2).sum()) * torch.sqrt((vy**2).sum()))
    sx, sy = torch.std(x), torch.std(y)
    return 2 * rho * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(4))
def test_ccc_unbiased_matches_authors_and_population_matches_metric(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(50, generator=g, dtype=torch.float64) * 2 - 1
    y = 0.6 * x + 0.2 * torch.randn(50, generator=g, dtype=torch.float64)
    assert ccc_torch(x, y, eps=0).item() == pytest.approx(_authors_ccc(x, y).item(), abs=1e-12)
    population = ccc_torch(x, y, unbiased=False, eps=0).item()
    assert population == pytest.approx(metrics.ccc(x.numpy(), y.numpy()), abs=1e-12)
    assert population != pytest.approx(ccc_torch(x, y, eps=0).item(), abs=1e-6)  # the estimators differ


def test_ccc_hand_computed() -> None:
    x, y = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0])
    # population: cov 0.5, var 1 and 0.25, mean gap² 0.25 → 1 / 1.5
    assert ccc_torch(x, y, unbiased=False, eps=0).item() == pytest.approx(2 / 3)
    # unbiased: cov 1, var 2 and 0.5, mean gap² 0.25 → 2 / 2.75
    assert ccc_torch(x, y, eps=0).item() == pytest.approx(2 / 2.75)


@pytest.mark.parametrize("eps", [1e-8, 0.0])
@pytest.mark.parametrize(
    ("pred", "target"),
    [
        ([], []),
        ([0.3], [0.1]),  # unbiased std of one sample is NaN in torch.std
        ([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]),  # both constant and equal: 0/0 without eps
        ([0.2, 0.2, 0.2], [0.1, 0.5, -0.3]),  # constant prediction: CCC 0, defined
    ],
)
def test_ccc_degenerate_cases_are_zero_with_finite_gradient(pred, target, eps: float) -> None:
    p = torch.tensor(pred, requires_grad=True)
    value = ccc_torch(p, torch.tensor(target), eps=eps)
    assert value.item() == 0.0
    (1 - value).backward()
    assert torch.isfinite(p.grad).all()


def test_ccc_gradient_finite_for_identical_series() -> None:
    p = torch.tensor([0.1, 0.4, -0.2], requires_grad=True)
    value = ccc_torch(p, p.detach().clone())
    assert value.item() == pytest.approx(1.0, abs=1e-6)
    value.backward()
    assert torch.isfinite(p.grad).all()


# ----------------------------------------------------------------------------- VA supervision (eq. 2)


def test_va_values_one_vocabulary() -> None:
    # one home for the two decodings: models, losses and prediction all call models.outputs
    assert va_values("linspace", 20)[[0, -1]].tolist() == [-1.0, 1.0]
    centres = va_values("centres", 20)
    assert centres[[0, -1]].tolist() == pytest.approx([-0.95, 0.95])
    assert torch.equal(va_values("authors", 20), va_values("linspace", 20))  # older names translated
    assert torch.equal(va_values("bin_centres", 20), centres)
    assert va_decoding("authors") == "linspace" and va_decoding("bin_centres") == "centres"
    assert LossConfig(va_decode="bin_centres").va_decode == "centres"
    assert CNNConfig(backbone="resnet_tiny", va_decoding="authors").va_decoding == "linspace"
    with pytest.raises(ValueError, match="va_decode must be one of"):
        LossConfig(va_decode="mean")
    with pytest.raises(ValueError, match="va_decoding must be one of"):
        va_values("mean", 20)


def test_va_dimension_loss_hand_computed() -> None:
    # uniform logits → every expectation is 0 → constant prediction → CCC 0 → CE + 1
    target = torch.tensor([-0.5, 0.0, 0.5, 0.9])
    assert va_dimension_loss(torch.zeros(4, 20), target).item() == pytest.approx(math.log(20) + 1.0)
    half = va_dimension_loss(torch.zeros(4, 20), target, lambda_ccc=0.5)
    assert half.item() == pytest.approx(math.log(20) + 0.5)


def test_va_dimension_loss_decoding_matters() -> None:
    logits = torch.full((2, 20), -30.0)
    logits[0, 19] = logits[1, 0] = 30.0  # one-hot on the end bins: values ±1 (authors) or ±0.95 (centres)
    target = torch.tensor([0.95, -0.95])
    ce = va_ce(logits, target)
    authors = va_dimension_loss(logits, target, unbiased=False, eps=0)
    centres = va_dimension_loss(logits, target, unbiased=False, eps=0, decode="bin_centres")
    assert centres.item() == pytest.approx(ce.item(), abs=1e-6)  # prediction == target: CCC 1
    expected_ccc = 2 * 0.95 / (1 + 0.95**2)  # pred ±1 vs target ±0.95, population statistics
    assert authors.item() == pytest.approx(ce.item() + 1 - expected_ccc, abs=1e-6)


def test_va_supervision_is_both_dimensions() -> None:
    g = torch.Generator().manual_seed(1)
    lv, la = torch.randn(6, 20, generator=g), torch.randn(6, 20, generator=g)
    v, a = torch.rand(6, generator=g) * 2 - 1, torch.rand(6, generator=g) * 2 - 1
    mask = torch.tensor([True, True, False, True, True, False])
    out = va_supervision(lv, la, v, a, mask)
    assert set(out) == {"valence", "arousal"}
    assert out["valence"].item() == pytest.approx(va_dimension_loss(lv[mask], v[mask]).item())
    assert out["arousal"].item() == pytest.approx(va_dimension_loss(la[mask], a[mask]).item())


def test_va_loss_with_one_labelled_frame_is_finite() -> None:
    logits = torch.randn(3, 20, requires_grad=True)
    mask = torch.tensor([False, True, False])
    loss = va_dimension_loss(logits, torch.tensor([0.0, 0.3, 0.0]), mask)
    assert loss.item() == pytest.approx(va_ce(logits[1:2], torch.tensor([0.3])).item() + 1.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------- distillation (eq. 4–6)


def test_kd_hand_computed_two_classes() -> None:
    teacher = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    student = torch.tensor([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert distillation_kl(student, teacher, 1.0).item() == pytest.approx(expected)


def test_kd_of_identical_distributions_is_zero() -> None:
    logits = torch.randn(5, 7)
    assert distillation_kl(logits, logits.clone(), 1.5).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_t_squared_scales_by_t_squared_and_matches_kldiv() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(8, 20, generator=g), torch.randn(8, 20, generator=g)
    plain = distillation_kl(s, t, 1.5, t_squared=False)
    reference = F.kl_div(F.log_softmax(s / 1.5, -1), F.softmax(t / 1.5, -1), reduction="batchmean")
    assert plain.item() == approx32(reference.item())
    assert distillation_kl(s, t, 1.5).item() == approx32(2.25 * plain.item())


def test_kd_trains_the_student_only() -> None:
    s = torch.randn(4, 7, requires_grad=True)
    t = torch.randn(4, 7, requires_grad=True)
    distillation_kl(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_kd_mask_and_empty() -> None:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    mask = torch.tensor([True, False, True, False])
    assert distillation_kl(s, t, mask=mask).item() == pytest.approx(distillation_kl(s[mask], t[mask]).item())
    assert distillation_kl(s, t, mask=torch.zeros(4, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        distillation_kl(s, t, mask=torch.ones(3, dtype=torch.bool))


def test_va_distillation_per_dimension() -> None:
    g = torch.Generator().manual_seed(4)
    sv, sa, tv, ta = (torch.randn(3, 20, generator=g) for _ in range(4))
    out = va_distillation(sv, sa, tv, ta, 2.0, False)
    assert out["valence"].item() == pytest.approx(distillation_kl(sv, tv, 2.0, False).item())
    assert out["arousal"].item() == pytest.approx(distillation_kl(sa, ta, 2.0, False).item())


def test_masked_mean_and_unselected_garbage() -> None:
    from mtaffect.losses import masked_mean

    values = torch.tensor([1.0, float("nan"), 3.0])
    assert masked_mean(values, torch.tensor([True, False, True])).item() == 2.0
    assert masked_mean(values, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    assert masked_mean(torch.zeros(0)).item() == 0.0
    logits = torch.randn(3, 20, requires_grad=True)
    loss = va_dimension_loss(
        logits, torch.tensor([0.2, float("nan"), -0.4]), torch.tensor([True, False, True])
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("unbiased", [True, False])
def test_ccc_with_mask_equals_ccc_of_the_selected_frames(unbiased: bool) -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(20, generator=g, dtype=torch.float64), torch.rand(20, generator=g, dtype=torch.float64)
    mask = torch.rand(20, generator=g) > 0.4
    y_garbage = torch.where(mask, y, torch.full_like(y, float("nan")))
    expected = ccc_torch(x[mask], y[mask], unbiased=unbiased)
    assert ccc_torch(x, y_garbage, mask, unbiased=unbiased).item() == pytest.approx(
        expected.item(), abs=1e-12
    )


def test_authors_edges_are_numpys_linspace_bit_for_bit() -> None:
    # the bins of eq. 2 depend on the last bit of each edge (docstring of va_bin_targets)
    from mtaffect.losses.terms import authors_edges

    for bins in (1, 2, 7, 20, 21, 40, 99, 256):
        assert np.array_equal(np.asarray(authors_edges(bins)), np.linspace(-1, 1, bins + 1)), bins
