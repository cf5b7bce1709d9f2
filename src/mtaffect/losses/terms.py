"""The paper's loss terms (eq. 1–6) as small pure functions over logits, labels and masks.

Every function takes frames on the first axis ``(N, ...)`` and an optional boolean ``mask`` (N,)
selecting the frames that count; values of unselected frames are never looked at (they may hold
garbage or NaN). Over zero selected frames a term is a zero that is still connected to the logits
(so ``backward()`` works and adds nothing). Nothing here returns NaN for finite logits.

Masks are applied by weighting per-frame values, never by boolean indexing, so a loss costs no
host–device synchronisation on an accelerator (the one exception: the NaN check of
:func:`va_bin_targets`, done on CPU tensors only).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from mtaffect.labels import VA_BINS, VA_MAX, VA_MIN
from mtaffect.models.outputs import decode_va, va_decoding, va_values

__all__ = [
    "DEFAULT_CCC_EPS",
    "ccc_torch",
    "distillation_kl",
    "distillation_per_frame",
    "expression_ce",
    "masked_mean",
    "va_bin_targets",
    "va_ce",
    "va_dimension_loss",
    "va_distillation",
    "va_supervision",
    "zero_like",
]

DEFAULT_CCC_EPS = 1e-8


def zero_like(tensor: torch.Tensor) -> torch.Tensor:
    """A scalar 0 attached to ``tensor``'s graph (its gradient is 0, and finite)."""
    return tensor.sum() * 0.0


def _bool_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask.to(dtype=torch.bool, device=like.device).reshape(-1)
    if mask.shape[0] != like.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} entries for {like.shape[0]} frames")
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-frame values (N,) over the frames where ``mask`` is True; 0 (attached) over none."""
    mask = _bool_mask(mask, values)
    if mask is None:
        return values.mean() if values.numel() else zero_like(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)


def _fill(values: torch.Tensor, mask: torch.Tensor | None, fill) -> torch.Tensor:
    """Replace the unselected entries by ``fill`` (their labels are meaningless, maybe NaN)."""
    if mask is None:
        return values
    return torch.where(mask.reshape(values.shape), values, torch.full_like(values, fill))


# ----------------------------------------------------------------------------- supervision (eq. 1–3)


def expression_ce(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 1: cross-entropy of expression logits (N, 7) against class indices (N,), mean over frames."""
    mask = _bool_mask(mask, logits)
    labels = _fill(labels.to(device=logits.device, dtype=torch.long).reshape(-1), mask, 0)
    return masked_mean(F.cross_entropy(logits, labels, reduction="none"), mask)


def authors_edges(bins: int) -> list[float]:
    """The authors' float64 bin edges ``np.linspace(-1, 1, bins + 1)``, in plain Python arithmetic (the
    same IEEE operations as numpy: ``start + i * step``, the last edge exactly ``stop``), so that
    torch.compile folds them into a constant instead of tracing numpy through its emulation."""
    step = (VA_MAX - VA_MIN) / bins
    return [VA_MIN + i * step for i in range(bins)] + [float(VA_MAX)]


@functools.lru_cache(maxsize=16)
def _bin_edges(bins: int, device: torch.device) -> torch.Tensor:
    """:func:`authors_edges` on ``device``, copied once (a host-to-device copy per call would synchronise)."""
    return torch.tensor(authors_edges(bins), dtype=torch.float64, device=device)


def va_bin_targets(values: torch.Tensor, bins: int = VA_BINS) -> torch.Tensor:
    """Class index (N,) int64 of each valence/arousal value for the bin cross-entropy.

    As the authors' code: ``np.digitize(y, edges) - 1`` with ``edges = np.linspace(-1, 1, bins + 1)``
    (float64), and index ``bins`` clipped to ``bins - 1``. So a value on an inner edge goes to the bin
    above it (-1 → 0, -0.9 → 1, 0 → 10) and 1 goes to the last bin. The comparison is made on the value
    as stored: float64 ``0.1`` lies below the float64 edge ``linspace(-1, 1, 21)[11] =
    0.10000000000000009`` (bin 10) while float32 ``0.1 = 0.100000001…`` lies above it (bin 11).
    Values outside [-1, 1] are clipped into the end bins. Non-finite values raise ValueError on CPU
    in eager mode; on an accelerator (it would synchronise) and inside torch.compile (a data-dependent
    branch splits the compiled graph in three) the check is skipped, and such a value makes the CCC
    term, hence the loss, NaN — which the training loop's loss check reports.
    """
    checked = values.device.type == "cpu" and not torch.compiler.is_compiling()
    if checked and values.numel() and not torch.isfinite(values).all():
        raise ValueError("valence/arousal targets contain NaN or inf: mask frames without a VA label")
    device = values.device if values.device.type != "mps" else torch.device("cpu")  # MPS has no float64
    # inside torch.compile the edges are a constant of the graph (dynamo would bypass the lru_cache)
    if torch.compiler.is_compiling():
        edges = torch.tensor(authors_edges(bins), dtype=torch.float64, device=device)
    else:
        edges = _bin_edges(bins, device)
    index = torch.bucketize(values.detach().to(device, torch.float64), edges, right=True) - 1
    return index.clamp_(0, bins - 1).to(values.device)


def va_ce(logits: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of one dimension's bin logits (N, bins) against the bins of values (N,)."""
    mask = _bool_mask(mask, logits)
    values = _fill(values.to(logits.device).reshape(-1), mask, 0.0)
    targets = va_bin_targets(values, logits.shape[-1])
    return masked_mean(F.cross_entropy(logits, targets, reduction="none"), mask)


def ccc_torch(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    unbiased: bool = True,
    eps: float = DEFAULT_CCC_EPS,
) -> torch.Tensor:
    """Concordance correlation coefficient of two (N,) series over the masked frames, never NaN.

    ``2·cov / (var_pred + var_target + (mean_pred − mean_target)² + eps)``. ``unbiased=True`` divides
    cov and variances by n − 1 (the authors' loss uses ``torch.std``); False gives the population CCC
    of :func:`mtaffect.metrics.ccc`. Undefined cases give 0 with a zero, finite gradient: n < 2, or a
    zero denominator (both series constant and equal) when ``eps`` is 0.
    """
    pred = pred.reshape(-1)
    mask = _bool_mask(mask, pred)
    target = _fill(target.reshape(-1).to(dtype=pred.dtype, device=pred.device), mask, 0.0)
    if mask is None:
        weight = torch.ones_like(pred)
    else:
        weight = mask.to(pred.dtype)
        pred = torch.where(mask, pred, torch.zeros_like(pred))
    n = weight.sum()
    mean_pred = pred.sum() / n.clamp_min(1)
    mean_target = target.sum() / n.clamp_min(1)
    d_pred, d_target = (pred - mean_pred) * weight, (target - mean_target) * weight
    divisor = (n - 1 if unbiased else n).clamp_min(1)
    covariance = (d_pred * d_target).sum() / divisor
    denominator = (d_pred * d_pred).sum() / divisor + (d_target * d_target).sum() / divisor
    denominator = denominator + (mean_pred - mean_target) ** 2 + eps
    defined = (n >= 2) & (denominator > 0)
    safe = torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, 2.0 * covariance / safe, torch.zeros_like(denominator))


def va_dimension_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    lambda_ccc: float = 1.0,
    unbiased: bool = True,
    eps: float = DEFAULT_CCC_EPS,
    decode: str = "linspace",
) -> torch.Tensor:
    """One dimension of eq. 2: bin CE (mean over frames) + λ_ccc · (1 − CCC(expected value, label)).

    The CCC is one statistic over the selected frames (the paper's (1/B)(1 − CCC) summed over the B
    instances of a batch is exactly one (1 − CCC) per batch, METHOD.md §2.1).
    """
    mask = _bool_mask(mask, logits)
    decoding = va_decoding(decode, "va_decode")
    centres = va_values(decoding, logits.shape[-1], device=logits.device, dtype=logits.dtype)
    concordance = ccc_torch(decode_va(logits, centres), values, mask, unbiased=unbiased, eps=eps)
    if logits.shape[0] == 0:
        return zero_like(logits)
    present = mask.any() if mask is not None else torch.ones((), dtype=torch.bool, device=logits.device)
    ccc_term = torch.where(present, 1.0 - concordance, torch.zeros_like(concordance))
    return va_ce(logits, values, mask) + lambda_ccc * ccc_term


def va_supervision(
    valence_logits: torch.Tensor,
    arousal_logits: torch.Tensor,
    valence: torch.Tensor,
    arousal: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    lambda_ccc: float = 1.0,
    unbiased: bool = True,
    eps: float = DEFAULT_CCC_EPS,
    decode: str = "linspace",
) -> dict[str, torch.Tensor]:
    """Eq. 2: ``{"valence": L_v, "arousal": L_a}`` (the caller adds them, as the authors do)."""
    options = {"lambda_ccc": lambda_ccc, "unbiased": unbiased, "eps": eps, "decode": decode}
    return {
        "valence": va_dimension_loss(valence_logits, valence, mask, **options),
        "arousal": va_dimension_loss(arousal_logits, arousal, mask, **options),
    }


# ----------------------------------------------------------------------------- distillation (eq. 4–6)


def distillation_per_frame(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.5,
    t_squared: bool = True,
) -> torch.Tensor:
    """Per-frame KL(softmax(t/T) ‖ softmax(s/T)) (N,), × T² if asked; the teacher is detached."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    return kl * (temperature * temperature) if t_squared else kl


def distillation_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.5,
    t_squared: bool = True,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 4: KL(softmax(t/T) ‖ softmax(s/T)) summed over classes, mean over frames (× T² if asked).

    This is ``KLDivLoss(reduction="batchmean")`` of the authors. The teacher's logits are detached:
    distillation never trains the teacher. ``t_squared`` keeps the gradient scale independent of T
    (Hinton et al.); the authors' code has it, the paper not.
    """
    mask = _bool_mask(mask, student_logits)
    return masked_mean(distillation_per_frame(student_logits, teacher_logits, temperature, t_squared), mask)


def va_distillation(
    student_valence: torch.Tensor,
    student_arousal: torch.Tensor,
    teacher_valence: torch.Tensor,
    teacher_arousal: torch.Tensor,
    temperature: float = 1.5,
    t_squared: bool = True,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 5: per-dimension KL over the 20 bins: ``{"valence": KD_v, "arousal": KD_a}``."""
    return {
        "valence": distillation_kl(student_valence, teacher_valence, temperature, t_squared, mask),
        "arousal": distillation_kl(student_arousal, teacher_arousal, temperature, t_squared, mask),
    }
