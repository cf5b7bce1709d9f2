"""Teacher (eq. 7) and student (eq. 9/10) objectives: against an independent re-statement of the
authors' procedure, authors-vs-paper options, masks, degenerate batches, temporal outputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtaffect.losses import LossConfig, student_objective, teacher_objective
from mtaffect.models.outputs import Outputs, Targets
from mtaffect.testing import approx32

N = 8


def _outputs(seed: int, n: int = N, requires_grad: bool = True) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    fields = [
        torch.randn(n, 7, generator=g),
        torch.randn(n, 20, generator=g),
        torch.randn(n, 20, generator=g),
    ]
    return Outputs(*[f.requires_grad_(requires_grad) for f in fields])


def _targets(seed: int, has_expression, has_va) -> Targets:
    g = torch.Generator().manual_seed(100 + seed)
    n = len(has_expression)
    return Targets(
        torch.randint(0, 7, (n,), generator=g),
        torch.tensor(has_expression, dtype=torch.bool),
        torch.rand(n, generator=g) * 2 - 1,
        torch.rand(n, generator=g) * 2 - 1,
        torch.tensor(has_va, dtype=torch.bool),
    )


ALL = [True] * N
NONE = [False] * N
SOME = [True, False, False, True, False, False, False, False]  # 2 of 8 labelled: unequal groups


def _batch(secondary_expr=SOME, secondary_va=SOME):
    """One batch per task set; EXPR frames carry `secondary_va`, VA frames `secondary_expr`."""
    targets = {
        "EXPR": _targets(0, ALL, secondary_va),
        "VA": _targets(1, secondary_expr, ALL),
        "EXPR_VA": _targets(2, ALL, ALL),
    }
    student = {name: _outputs(i) for i, name in enumerate(targets)}
    teacher = {name: _outputs(10 + i, requires_grad=False) for i, name in enumerate(targets)}
    return student, teacher, targets


# ----------------------------------------------------------------------------- independent reference


def _ref_ccc_loss(logits, y):
    """Authors' CCCLoss: expectation over linspace(-1, 1, 20), rho from sums, torch.std."""
    x = (F.softmax(logits, -1) * torch.linspace(-1, 1, 20)).sum(-1)
    vx, vy = x - x.mean(), y - y.mean()
    rho = (vx * vy).sum() / (torch.sqrt((vx**2).sum()) * torch.sqrt((vy**2).sum()))
    sx, sy = torch.std(x), torch.std(y)
    return 1 - 2 * rho * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


def _ref_va(logits, y):
    bins = np.clip(np.digitize(y.numpy(), np.linspace(-1, 1, 21)) - 1, 0, 19)
    return F.cross_entropy(logits, torch.as_tensor(bins)) + _ref_ccc_loss(logits, y)


def _ref_kd(s, t, temperature=1.5):
    kl = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1)
    )
    return kl * temperature * temperature


def _mean(xs):
    return sum(xs) / len(xs)


def _ref_teacher(outputs, targets):
    expr, va = [], []
    for name, o in outputs.items():
        y = targets[name]
        if name in ("EXPR", "EXPR_VA"):
            expr.append(F.cross_entropy(o.expression, y.expression))
        if name in ("VA", "EXPR_VA"):
            va.append(_ref_va(o.valence, y.valence) + _ref_va(o.arousal, y.arousal))
    return _mean(expr) + _mean(va)


def _ref_student(student, teacher, targets, lam=0.6):
    """kd_v2 of the authors' code, restated with masks instead of the -2 sentinel."""
    ls, lt = lam, 1 - lam
    expr, va = [], []
    for name, s in student.items():
        t, y = teacher[name], targets[name]
        if name in ("EXPR", "EXPR_VA"):
            expr.append(
                ls * F.cross_entropy(s.expression, y.expression) + lt * _ref_kd(s.expression, t.expression)
            )
        if name in ("VA", "EXPR_VA"):
            va.append(
                ls * _ref_va(s.valence, y.valence)
                + lt * _ref_kd(s.valence, t.valence)
                + ls * _ref_va(s.arousal, y.arousal)
                + lt * _ref_kd(s.arousal, t.arousal)
            )
        if name == "EXPR":
            flag = y.has_va
            groups_v, groups_a = [], []
            if (~flag).any():
                groups_v.append(_ref_kd(s.valence[~flag], t.valence[~flag]))
                groups_a.append(_ref_kd(s.arousal[~flag], t.arousal[~flag]))
            if flag.any():
                groups_v.append(
                    ls * _ref_va(s.valence[flag], y.valence[flag])
                    + lt * _ref_kd(s.valence[flag], t.valence[flag])
                )
                groups_a.append(
                    ls * _ref_va(s.arousal[flag], y.arousal[flag])
                    + lt * _ref_kd(s.arousal[flag], t.arousal[flag])
                )
            va.append(_mean(groups_v) + _mean(groups_a))
        if name == "VA":
            flag = y.has_expression
            groups = []
            if (~flag).any():
                groups.append(_ref_kd(s.expression[~flag], t.expression[~flag]))
            if flag.any():
                groups.append(
                    ls * F.cross_entropy(s.expression[flag], y.expression[flag])
                    + lt * _ref_kd(s.expression[flag], t.expression[flag])
                )
            expr.append(_mean(groups))
    return _mean(expr) + _mean(va)


# ----------------------------------------------------------------------------- teacher


def test_teacher_matches_authors_procedure() -> None:
    student, _, targets = _batch()
    got = teacher_objective(student, targets)
    assert got["loss"].item() == approx32(_ref_teacher(student, targets).item())
    assert got["loss"].requires_grad
    assert {"expr/EXPR", "expr/EXPR_VA", "valence/VA", "arousal/VA", "valence/EXPR_VA"} <= set(got)
    assert got["head_va/VA"].item() == pytest.approx((got["valence/VA"] + got["arousal/VA"]).item())
    assert not any(v.requires_grad for k, v in got.items() if k != "loss")


def test_teacher_ignores_secondary_labels() -> None:
    student, _, with_shared = _batch(SOME, SOME)
    _, _, without = _batch(NONE, NONE)
    a = teacher_objective(student, with_shared)["loss"].item()
    assert a == pytest.approx(teacher_objective(student, without)["loss"].item(), abs=0)


def test_teacher_head_average_false_is_the_sum_of_eq7() -> None:
    student, _, targets = _batch()
    parts = teacher_objective(student, targets)
    total = sum(v for k, v in parts.items() if k.startswith("head_"))
    summed = teacher_objective(student, targets, LossConfig(head_average=False))["loss"]
    assert summed.item() == approx32(total.item())
    assert summed.item() != pytest.approx(parts["loss"].item(), rel=1e-3)


def test_teacher_on_a_subset_of_task_sets() -> None:
    student, _, targets = _batch()
    only = teacher_objective({"EXPR": student["EXPR"]}, {"EXPR": targets["EXPR"]})
    assert only["loss"].item() == pytest.approx(
        F.cross_entropy(student["EXPR"].expression, targets["EXPR"].expression).item()
    )


def test_padded_frames_do_not_change_the_teacher_loss() -> None:
    student, _, targets = _batch()
    padded_out, padded_tg = {}, {}
    for name, o in student.items():
        garbage = _outputs(99, 3)
        padded_out[name] = Outputs(
            *(torch.cat([getattr(o, f), getattr(garbage, f)]) for f in ("expression", "valence", "arousal"))
        )
        y = targets[name]
        padded_tg[name] = Targets(
            torch.cat([y.expression, torch.full((3,), -1)]),
            torch.cat([y.has_expression, torch.zeros(3, dtype=torch.bool)]),
            torch.cat([y.valence, torch.full((3,), float("nan"))]),
            torch.cat([y.arousal, torch.full((3,), float("nan"))]),
            torch.cat([y.has_va, torch.zeros(3, dtype=torch.bool)]),
        )
    a = teacher_objective(student, targets)["loss"].item()
    assert teacher_objective(padded_out, padded_tg)["loss"].item() == approx32(a)


# ----------------------------------------------------------------------------- student


@pytest.mark.parametrize("secondary", [SOME, ALL, NONE])
def test_student_matches_authors_kd_v2(secondary) -> None:
    student, teacher, targets = _batch(secondary, secondary)
    got = student_objective(student, teacher, targets)
    assert got["loss"].item() == approx32(_ref_student(student, teacher, targets).item())


def test_one_labelled_secondary_frame_is_nan_for_the_authors_but_finite_here() -> None:
    """METHOD.md §2.4 bug 4: torch.std of one value is NaN. Here that group's CCC is 0 (loss term 1)."""
    one = [True] + [False] * (N - 1)
    student, teacher, targets = _batch(one, one)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        assert torch.isnan(_ref_student(student, teacher, targets))
    got = student_objective(student, teacher, targets)
    assert torch.isfinite(got["loss"])
    s, y = student["EXPR"], targets["EXPR"]
    ce_v = F.cross_entropy(
        s.valence[:1], torch.as_tensor(np.digitize(y.valence[:1].numpy(), np.linspace(-1, 1, 21)) - 1)
    )
    assert got["valence/EXPR"].item() == approx32(ce_v.item() + 1.0)


def test_eq9_and_eq10_differ_exactly_when_a_secondary_label_is_present() -> None:
    student, teacher, targets = _batch(NONE, NONE)
    eq9 = student_objective(student, teacher, targets, shared_labels=False)["loss"].item()
    eq10 = student_objective(student, teacher, targets, shared_labels=True)["loss"].item()
    assert eq9 == pytest.approx(eq10, abs=0)
    student, teacher, targets = _batch(SOME, SOME)
    eq9 = student_objective(student, teacher, targets, shared_labels=False)["loss"].item()
    eq10 = student_objective(student, teacher, targets, shared_labels=True)["loss"].item()
    assert eq9 != pytest.approx(eq10, rel=1e-3)
    # eq. 9 ignores the secondary labels entirely
    _, _, bare = _batch(NONE, NONE)
    assert student_objective(student, teacher, bare, shared_labels=False)["loss"].item() == pytest.approx(
        eq9, abs=0
    )


def test_eq9_secondary_head_is_pure_kd_with_weight_one() -> None:
    student, teacher, targets = _batch(SOME, SOME)
    got = student_objective(student, teacher, targets, shared_labels=False)
    s, t = student["EXPR"], teacher["EXPR"]
    expected = _ref_kd(s.valence, t.valence) + _ref_kd(s.arousal, t.arousal)
    assert got["head_va/EXPR"].item() == approx32(expected.item())


def test_group_average_paper_vs_authors() -> None:
    cfg_paper = LossConfig(group_average="paper")
    for secondary in (ALL, NONE, [True, False] * (N // 2)):  # agree: one group, or equal group sizes
        student, teacher, targets = _batch(secondary, secondary)
        a = student_objective(student, teacher, targets)["loss"].item()
        assert student_objective(student, teacher, targets, cfg_paper)["loss"].item() == approx32(
            a)
    student, teacher, targets = _batch(SOME, SOME)  # 2 labelled vs 6 unlabelled
    authors = student_objective(student, teacher, targets)
    paper = student_objective(student, teacher, targets, cfg_paper)
    assert paper["loss"].item() != pytest.approx(authors["loss"].item(), rel=1e-3)
    # paper: size-weighted mean of the groups' losses (hand-assembled from the reference pieces)
    s, t, y = student["VA"], teacher["VA"], targets["VA"]
    flag = y.has_expression
    kd_u = _ref_kd(s.expression[~flag], t.expression[~flag])
    g_l = 0.6 * F.cross_entropy(s.expression[flag], y.expression[flag]) + 0.4 * _ref_kd(
        s.expression[flag], t.expression[flag]
    )
    assert paper["head_expr/VA"].item() == approx32(((6 * kd_u + 2 * g_l) / 8).item())
    assert authors["head_expr/VA"].item() == approx32(((kd_u + g_l) / 2).item())


def test_t_squared_scales_pure_distillation_by_t_squared() -> None:
    student, teacher, targets = _batch()
    kd_only = LossConfig(lambda_supervision=0.0, temperature=2.0)
    with_t2 = student_objective(student, teacher, targets, kd_only)["loss"].item()
    without = student_objective(student, teacher, targets, dataclasses.replace(kd_only, t_squared=False))[
        "loss"
    ].item()
    assert with_t2 == approx32(4.0 * without)


def test_student_equal_to_teacher_has_zero_distillation() -> None:
    student, _, targets = _batch()
    teacher = {k: v.detach() for k, v in student.items()}
    got = student_objective(student, teacher, targets, LossConfig(lambda_supervision=0.0))
    assert got["loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for k, v in got.items() if k.startswith("kd_"))


def test_lambda_one_with_all_labels_is_pure_supervision() -> None:
    student, teacher, targets = _batch(ALL, ALL)
    got = student_objective(student, teacher, targets, LossConfig(lambda_supervision=1.0))
    teacher_form = teacher_objective(student, targets)["loss"]  # same heads, but secondaries add terms
    assert got["loss"].item() > 0 and teacher_form.item() > 0
    assert got["head_expr/EXPR"].item() == approx32(got["expr/EXPR"].item())


def test_teacher_outputs_receive_no_gradient() -> None:
    student, _, targets = _batch()
    teacher = {name: _outputs(10 + i, requires_grad=True) for i, name in enumerate(targets)}
    student_objective(student, teacher, targets)["loss"].backward()
    assert all(o.expression.grad is None and o.valence.grad is None for o in teacher.values())
    assert all(o.expression.grad is not None for o in student.values())


@pytest.mark.parametrize("n_labelled", [0, 1, 2])
@pytest.mark.parametrize("objective", ["teacher", "student"])
def test_degenerate_batches_give_finite_loss_and_gradients(n_labelled: int, objective: str) -> None:
    """Subsets of size 0, 1, 2 and constant VA targets: the authors' NaN cases (METHOD.md §2.4 bug 4)."""
    secondary = [True] * n_labelled + [False] * (N - n_labelled)
    student, teacher, targets = _batch(secondary, secondary)
    for y in targets.values():
        y.valence[:] = 0.25  # zero variance in every VA target
    student["VA"].valence.data[:] = 0.0  # constant prediction as well
    if objective == "teacher":
        loss = teacher_objective(student, targets)["loss"]
    else:
        loss = student_objective(student, teacher, targets)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    grads = [f.grad for o in student.values() for f in (o.expression, o.valence, o.arousal)]
    assert all(g is None or torch.isfinite(g).all() for g in grads)  # the teacher leaves unused heads alone
    assert sum(g is not None for g in grads) >= 4


def test_batches_without_any_label_give_an_attached_zero() -> None:
    student, teacher, _ = _batch()
    empty = {name: _targets(0, NONE, NONE) for name in student}
    for loss in (
        teacher_objective(student, empty)["loss"],
        student_objective(student, teacher, empty)["loss"],
    ):
        assert loss.item() == 0.0
        loss.backward()


def test_ccc_population_option_changes_the_va_loss() -> None:
    student, _, targets = _batch()
    a = teacher_objective(student, targets)["valence/VA"].item()
    b = teacher_objective(student, targets, LossConfig(ccc_unbiased=False))["valence/VA"].item()
    c = teacher_objective(student, targets, LossConfig(va_decode="bin_centres"))["valence/VA"].item()
    assert abs(a - b) > 1e-5 and abs(a - c) > 1e-5
    assert teacher_objective(student, targets)["expr/EXPR"].item() == pytest.approx(
        teacher_objective(student, targets, LossConfig(ccc_unbiased=False))["expr/EXPR"].item(), abs=0
    )


def test_temporal_outputs_are_flattened() -> None:
    student, teacher, targets = _batch()
    flat = student_objective(student, teacher, targets)["loss"].item()

    def to_bt(o: Outputs) -> Outputs:
        return Outputs(*(getattr(o, f).reshape(2, N // 2, -1) for f in ("expression", "valence", "arousal")))

    def tg_bt(y: Targets) -> Targets:
        return Targets(
            *(
                getattr(y, f).reshape(2, N // 2)
                for f in ("expression", "has_expression", "valence", "arousal", "has_va")
            )
        )

    temporal = student_objective(
        {k: to_bt(v) for k, v in student.items()},
        {k: to_bt(v) for k, v in teacher.items()},
        {k: tg_bt(v) for k, v in targets.items()},
    )["loss"].item()
    assert temporal == approx32(flat)


def test_extra_valid_mask_excludes_frames() -> None:
    student, teacher, targets = _batch(ALL, ALL)
    keep = torch.tensor([True] * 6 + [False] * 2)
    masked = {k: dataclasses.replace(v, extra={"valid": keep}) for k, v in targets.items()}
    cut = {k: Outputs(v.expression[keep], v.valence[keep], v.arousal[keep]) for k, v in student.items()}
    cut_t = {k: Outputs(v.expression[keep], v.valence[keep], v.arousal[keep]) for k, v in teacher.items()}
    cut_y = {
        k: Targets(
            *(getattr(v, f)[keep] for f in ("expression", "has_expression", "valence", "arousal", "has_va"))
        )
        for k, v in targets.items()
    }
    a = student_objective(student, teacher, masked)["loss"].item()
    assert a == approx32(student_objective(cut, cut_t, cut_y)["loss"].item())


def test_bad_inputs_are_rejected() -> None:
    student, teacher, targets = _batch()
    with pytest.raises(ValueError, match="unknown task set"):
        teacher_objective({"AU": student["EXPR"]}, {"AU": targets["EXPR"]})
    with pytest.raises(ValueError, match="no matching entry"):
        student_objective(student, {"EXPR": teacher["EXPR"]}, targets)
    with pytest.raises(ValueError, match="frames"):
        teacher_objective({"EXPR": _outputs(0, 5)}, {"EXPR": targets["EXPR"]})
    with pytest.raises(ValueError, match="at least one"):
        teacher_objective({}, {})
    for bad in (
        {"lambda_supervision": 1.5},
        {"temperature": 0},
        {"group_average": "mean"},
        {"va_decode": "x"},
    ):
        with pytest.raises(ValueError):
            LossConfig(**bad)


def test_part_keys_do_not_depend_on_which_labels_are_present() -> None:
    keys = []
    for secondary in (ALL, NONE, SOME):
        student, teacher, targets = _batch(secondary, secondary)
        keys.append(sorted(student_objective(student, teacher, targets)))
    assert keys[0] == keys[1] == keys[2]
    student, teacher, targets = _batch(NONE, NONE)
    got = student_objective(student, teacher, targets)
    assert got["valence/EXPR"].item() == 0.0 and got["expr/VA"].item() == 0.0  # no labelled member


def test_half_precision_outputs_are_scored_in_float32() -> None:
    student, teacher, targets = _batch()
    half = {
        k: Outputs(v.expression.bfloat16(), v.valence.bfloat16(), v.arousal.bfloat16())
        for k, v in student.items()
    }
    exact = {k: Outputs(v.expression.float(), v.valence.float(), v.arousal.float()) for k, v in half.items()}
    got = student_objective(half, teacher, targets)["loss"]
    assert got.dtype == torch.float32
    assert got.item() == approx32(student_objective(exact, teacher, targets)["loss"].item())


def test_objectives_never_read_tensor_values_on_the_host() -> None:
    """On the meta device any data-dependent host read (.item(), bool(), boolean indexing) fails, so
    running there proves the objectives need no accelerator synchronisation."""

    def meta_outputs() -> Outputs:
        return Outputs(*(torch.empty(N, c, device="meta", requires_grad=True) for c in (7, 20, 20)))

    def meta_targets() -> Targets:
        flags = torch.empty(N, dtype=torch.bool, device="meta")
        values = torch.empty(N, device="meta")
        return Targets(torch.empty(N, dtype=torch.long, device="meta"), flags, values, values, flags)

    student = {name: meta_outputs() for name in ("EXPR", "VA", "EXPR_VA")}
    teacher = {name: meta_outputs() for name in student}
    targets = {name: meta_targets() for name in student}
    for config in (LossConfig(), LossConfig(group_average="paper", head_average=False)):
        assert teacher_objective(student, targets, config)["loss"].device.type == "meta"
        loss = student_objective(student, teacher, targets, config)["loss"]
        loss.backward()
        assert student["EXPR"].valence.grad.shape == (N, 20)
