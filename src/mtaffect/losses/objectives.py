"""Batch objectives: the teacher (eq. 7) and the student without (eq. 9) and with (eq. 10) shared labels.

A training step has one batch per task set ("EXPR", "VA", "EXPR_VA"; any subset), each with its own
forward pass (METHOD.md §2.3), so objectives take ``dict[task_set, Outputs]`` and
``dict[task_set, Targets]``. Outputs of the temporal model (B, T, ·) are flattened to frames here.

Which frames count
------------------
* A batch's **primary** head(s) follow from its task set: EXPR → expression head, VA → VA head,
  EXPR_VA → both. Supervision and distillation on a primary head use the frames carrying that
  head's label (``has_expression`` / ``has_va``); padded window steps arrive with both masks False
  and count nowhere.
* The **members** of an EXPR (VA) batch are its frames with an expression (VA) label. The
  **secondary** head of such a batch sees the members only, split into *labelled* members (the
  secondary label is present too: a shared Aff-Wild2 frame) and *unlabelled* ones.
* ``targets.extra["valid"]`` (bool, optional) further restricts every mask.

Teacher (eq. 7, authors' ``optimize_parameters``)
    EXPR-head list: CE on the EXPR and EXPR_VA batches; VA-head list: L_v + L_a on the VA and EXPR_VA
    batches; loss = mean(EXPR list) + mean(VA list) (``head_average=True``) or the sum of all terms
    (False, eq. 7 as written). Secondary labels are ignored.

Student (eq. 8–10, authors' ``optimize_parameters_kd_v2``), with λ = ``lambda_supervision``:
    * primary head: λ·L + (1 − λ)·H over the frames with its label (EXPR_VA: on both heads);
    * secondary head, ``shared_labels=False`` (eq. 9): H over all members, weight 1;
    * secondary head, ``shared_labels=True`` (eq. 10): H on unlabelled members, λ·L + (1 − λ)·H on
      labelled ones, combined per ``group_average``:
        - "authors": each group's batch-mean loss, then the mean over the non-empty groups (each group
          gets ½ when both exist, whatever their sizes; per VA dimension, then v + a);
        - "paper": the per-frame mean over all members of eq. 10's per-sample choice,
          ``(|U|·H_U + |L|·G_L) / |M|`` with H_U, G_L the groups' batch-mean losses. For VA the CCC
          term is one statistic of the labelled group, so it enters with weight |L|/|M|.
      The two agree when all or none of the members are labelled, and whenever the groups are equal
      in size.
    * loss = mean per head over the batches' head terms (+ over heads), or their sum
      (``head_average=False``).

A batch term over zero frames (e.g. a batch whose frames are all padding) is left out of its head's
mean; a group over zero frames is left out of the "authors" group mean.

Returned dicts: ``"loss"`` (attached to the graph) and detached named parts
``"<term>/<task_set>"`` with term in expr, valence, arousal (supervision; on the secondary head:
labelled members only), kd_expr, kd_valence, kd_arousal (distillation over the frames the head
term covers), head_expr, head_va (the head's term entering the total). The set of keys depends only
on the task sets and ``shared_labels``, never on the labels present, so logs have stable columns; a
part over zero frames is 0.

Cost: masks weight per-frame values (no boolean indexing, no ``.item()``), so an objective never
synchronises with an accelerator; logits are computed on in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from mtaffect.labels import TASK_SETS
from mtaffect.losses.terms import (
    DEFAULT_CCC_EPS,
    distillation_per_frame,
    expression_ce,
    masked_mean,
    va_dimension_loss,
    zero_like,
)
from mtaffect.models.outputs import Outputs, Targets, flatten_outputs, va_decoding

__all__ = ["LossConfig", "student_objective", "teacher_objective"]

GROUP_AVERAGES = ("authors", "paper")
HEAD_DIMENSIONS = {"expr": ("expr",), "va": ("valence", "arousal")}
PRIMARY_HEADS = {"EXPR": ("expr",), "VA": ("va",), "EXPR_VA": ("expr", "va")}
SECONDARY_HEAD = {"EXPR": "va", "VA": "expr"}


@dataclass(frozen=True)
class LossConfig:
    """Loss options. Defaults follow the authors' code; the paper's forms are options (METHOD.md §2).

    lambda_supervision: λ, weight of the ground truth in eq. 8; distillation gets 1 − λ.
    temperature: T of the distillation softmax. t_squared: multiply KD by T² (code: on; paper: off).
    ccc_unbiased: N − 1 statistics in the loss's CCC (code: torch.std); False = population.
    group_average: "authors" | "paper": how eq. 10's labelled/unlabelled frames are combined.
    head_average: mean over each head's batch terms (code); False = the sums of eq. 7/9/10.
    va_decode: "linspace" (the authors' linspace(-1, 1, 20)) | "centres" (bin centres): values for the
        CCC's expectation, in :data:`mtaffect.models.outputs.VA_DECODINGS` (the older names "authors" |
        "bin_centres" are translated). The stages set it to the model's ``va_decoding`` so that the CCC
        trains the value the model reports.
    lambda_ccc: weight of (1 − CCC) in the VA loss. ccc_eps: added to the CCC denominator.
    """

    lambda_supervision: float = 0.6
    temperature: float = 1.5
    t_squared: bool = True
    ccc_unbiased: bool = True
    group_average: str = "authors"
    head_average: bool = True
    va_decode: str = "linspace"
    lambda_ccc: float = 1.0
    ccc_eps: float = DEFAULT_CCC_EPS

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_supervision <= 1.0:
            raise ValueError(f"lambda_supervision must be in [0, 1], got {self.lambda_supervision}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.group_average not in GROUP_AVERAGES:
            raise ValueError(f"group_average must be one of {GROUP_AVERAGES}, got {self.group_average!r}")
        object.__setattr__(self, "va_decode", va_decoding(self.va_decode, "va_decode"))  # one vocabulary
        if self.lambda_ccc < 0 or self.ccc_eps < 0:
            raise ValueError("lambda_ccc and ccc_eps must be >= 0")


# ----------------------------------------------------------------------------- per-head pieces


def _frames(outputs: Outputs, targets: Targets, name: str) -> tuple[Outputs, Targets]:
    if outputs.expression.dim() == 3:  # temporal model: (B, T, C) → (B·T, C)
        outputs = flatten_outputs(outputs)
    if outputs.expression.dtype in (torch.float16, torch.bfloat16):  # autocast: losses in float32
        outputs = Outputs(outputs.expression.float(), outputs.valence.float(), outputs.arousal.float())
    if targets.expression.dim() == 2:
        targets = targets.flatten()
    n = outputs.expression.shape[0]
    for field in ("expression", "has_expression", "valence", "arousal", "has_va"):
        if getattr(targets, field).shape[0] != n:
            raise ValueError(
                f"{name}: targets.{field} has {getattr(targets, field).shape[0]} frames, outputs {n}"
            )
    return outputs, targets


def _label_mask(targets: Targets, head: str, device: torch.device) -> torch.Tensor:
    mask = targets.has_expression if head == "expr" else targets.has_va
    mask = mask.to(device=device, dtype=torch.bool).reshape(-1)
    valid = targets.extra.get("valid")
    if valid is not None:
        mask = mask & valid.to(device=device, dtype=torch.bool).reshape(-1)
    return mask


def _supervision(head: str, out: Outputs, tg: Targets, mask: torch.Tensor, cfg: LossConfig) -> dict:
    if head == "expr":
        return {"expr": expression_ce(out.expression, tg.expression, mask)}
    options = {
        "lambda_ccc": cfg.lambda_ccc,
        "unbiased": cfg.ccc_unbiased,
        "eps": cfg.ccc_eps,
        "decode": cfg.va_decode,
    }
    return {
        "valence": va_dimension_loss(out.valence, tg.valence, mask, **options),
        "arousal": va_dimension_loss(out.arousal, tg.arousal, mask, **options),
    }


def _distillation_frames(head: str, student: Outputs, teacher: Outputs, cfg: LossConfig) -> dict:
    """Per-frame KD (N,) per dimension of a head, computed once and reduced over several masks."""
    fields = {"expr": "expression", "valence": "valence", "arousal": "arousal"}
    return {
        dim: distillation_per_frame(
            getattr(student, fields[dim]), getattr(teacher, fields[dim]), cfg.temperature, cfg.t_squared
        )
        for dim in HEAD_DIMENSIONS[head]
    }


def _head_loss(terms: list[tuple[torch.Tensor, torch.Tensor]], average: bool) -> torch.Tensor | None:
    """Combine one head's (term, present) pairs: mean over the present terms (authors) or their sum."""
    if not terms:
        return None
    values = torch.stack([value for value, _ in terms])
    if not average:
        return values.sum()  # an absent term is an attached 0
    present = torch.stack([flag for _, flag in terms]).to(values.dtype)
    return (values * present).sum() / present.sum().clamp_min(1)


def _total(head_terms: Mapping[str, list], cfg: LossConfig, anchor: torch.Tensor) -> torch.Tensor:
    losses = [
        t for t in (_head_loss(terms, cfg.head_average) for terms in head_terms.values()) if t is not None
    ]
    return torch.stack(losses).sum() if losses else zero_like(anchor)


def _check_names(names, *dicts: Mapping) -> None:
    for name in names:
        if name not in TASK_SETS:
            raise ValueError(f"unknown task set {name!r}; expected a subset of {TASK_SETS}")
        for d in dicts:
            if name not in d:
                raise ValueError(f"task set {name!r} has outputs but no matching entry in every input dict")


# ----------------------------------------------------------------------------- teacher (eq. 7)


def teacher_objective(
    outputs: Mapping[str, Outputs], targets: Mapping[str, Targets], config: LossConfig | None = None
) -> dict[str, torch.Tensor]:
    """Eq. 7 as the authors' code computes it (module docstring). Returns "loss" + detached parts."""
    cfg = config or LossConfig()
    _check_names(outputs, targets)
    parts: dict[str, torch.Tensor] = {}
    head_terms: dict[str, list] = {"expr": [], "va": []}
    anchor = None
    for name, raw in outputs.items():
        out, tg = _frames(raw, targets[name], name)
        anchor = out.expression if anchor is None else anchor
        for head in PRIMARY_HEADS[name]:
            mask = _label_mask(tg, head, out.expression.device)
            sup = _supervision(head, out, tg, mask, cfg)
            term = sum(sup.values())
            parts.update({f"{dim}/{name}": value for dim, value in sup.items()})
            parts[f"head_{head}/{name}"] = term
            head_terms[head].append((term, mask.any()))
    if anchor is None:
        raise ValueError("teacher_objective needs at least one task set")
    loss = _total(head_terms, cfg, anchor)
    return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}


# ----------------------------------------------------------------------------- student (eq. 8–10)


def _mix(sup: Mapping[str, torch.Tensor], kd: Mapping[str, torch.Tensor], lam: float) -> dict:
    """Eq. 8 per dimension: λ·L + (1 − λ)·H."""
    return {dim: lam * sup[dim] + (1.0 - lam) * kd[dim] for dim in kd}


def _secondary_term(
    head: str,
    out: Outputs,
    teacher: Outputs,
    tg: Targets,
    members: torch.Tensor,
    shared_labels: bool,
    cfg: LossConfig,
    record: Callable[[str, torch.Tensor], None],
) -> torch.Tensor:
    """Eq. 9/10 for the secondary head of an EXPR or VA batch (the module docstring's rules)."""
    kd_frames = _distillation_frames(head, out, teacher, cfg)
    for dim, values in kd_frames.items():
        record(f"kd_{dim}", masked_mean(values, members))
    if not shared_labels:  # eq. 9: pure distillation, weight 1
        return sum(masked_mean(values, members) for values in kd_frames.values())
    labelled = members & _label_mask(tg, head, members.device)
    unlabelled = members & ~labelled
    sup = _supervision(head, out, tg, labelled, cfg)  # attached zeros when no member is labelled
    for dim, value in sup.items():
        record(dim, value)
    kd_u = {dim: masked_mean(values, unlabelled) for dim, values in kd_frames.items()}
    kd_l = {dim: masked_mean(values, labelled) for dim, values in kd_frames.items()}
    g_l = _mix(sup, kd_l, cfg.lambda_supervision)
    dtype = out.expression.dtype
    if cfg.group_average == "authors":  # mean over the non-empty groups
        w_u, w_l = unlabelled.any().to(dtype), labelled.any().to(dtype)
    else:  # per-frame mean over the members
        w_u, w_l = unlabelled.sum().to(dtype), labelled.sum().to(dtype)
    norm = (w_u + w_l).clamp_min(1)
    return sum((w_u * kd_u[dim] + w_l * g_l[dim]) / norm for dim in kd_frames)


def student_objective(
    student: Mapping[str, Outputs],
    teacher: Mapping[str, Outputs],
    targets: Mapping[str, Targets],
    config: LossConfig | None = None,
    shared_labels: bool = True,
) -> dict[str, torch.Tensor]:
    """Student loss: eq. 10 (``shared_labels=True``, default as in the authors' code) or eq. 9.

    student/teacher: per task set, the two models' outputs on the *same* (augmented) inputs; the
    teacher's are detached here. Returns "loss" + detached parts (module docstring).
    """
    cfg = config or LossConfig()
    _check_names(student, teacher, targets)
    lam = cfg.lambda_supervision
    parts: dict[str, torch.Tensor] = {}
    head_terms: dict[str, list] = {"expr": [], "va": []}
    anchor = None
    for name, raw in student.items():
        out, tg = _frames(raw, targets[name], name)
        t_out, _ = _frames(teacher[name].detach(), targets[name], f"{name} (teacher)")
        anchor = out.expression if anchor is None else anchor

        def record(term: str, value: torch.Tensor, name: str = name) -> None:
            parts[f"{term}/{name}"] = value

        for head in PRIMARY_HEADS[name]:
            mask = _label_mask(tg, head, out.expression.device)
            sup = _supervision(head, out, tg, mask, cfg)
            kd = {d: masked_mean(v, mask) for d, v in _distillation_frames(head, out, t_out, cfg).items()}
            for dim in sup:
                record(dim, sup[dim])
                record(f"kd_{dim}", kd[dim])
            term = sum(_mix(sup, kd, lam).values())
            record(f"head_{head}", term)
            head_terms[head].append((term, mask.any()))
        if name in SECONDARY_HEAD:
            head = SECONDARY_HEAD[name]
            members = _label_mask(tg, PRIMARY_HEADS[name][0], out.expression.device)
            term = _secondary_term(head, out, t_out, tg, members, shared_labels, cfg, record)
            record(f"head_{head}", term)
            head_terms[head].append((term, members.any()))
    if anchor is None:
        raise ValueError("student_objective needs at least one task set")
    loss = _total(head_terms, cfg, anchor)
    return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}
