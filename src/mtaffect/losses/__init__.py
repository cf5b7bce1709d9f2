"""The paper's losses (eq. 1–10): pure loss terms and the teacher/student batch objectives.

Conventions
-----------
* Expression logits (N, 7) in :data:`mtaffect.labels.EXPRESSIONS` order; valence and arousal as
  (N, 20) bin logits each; labels with boolean masks (:class:`mtaffect.models.outputs.Targets`),
  never sentinel values.
* The VA loss per dimension is bin cross-entropy + λ_ccc · (1 − CCC) of the softmax expectation
  (eq. 2); distillation is KL(teacher ‖ student) at temperature T, batch mean (eq. 4–6).
* Where the paper and the authors' code differ, the default follows the code and the paper's form
  is an option of :class:`LossConfig`: T² on KD, unbiased std in the loss's CCC, per-head averaging,
  equal-weight group averaging in eq. 10, linspace decoding of the VA bins.
* No function returns NaN: empty selections give an attached zero, and the CCC of fewer than two
  frames or of two equal constant series is 0 (its loss term 1 − CCC is then a constant).

``terms`` holds the small functions, ``objectives`` the batch objectives; both are re-exported here.
"""

from mtaffect.losses.objectives import LossConfig, student_objective, teacher_objective
from mtaffect.losses.terms import (
    ccc_torch,
    distillation_kl,
    distillation_per_frame,
    expression_ce,
    masked_mean,
    va_bin_targets,
    va_ce,
    va_dimension_loss,
    va_distillation,
    va_supervision,
)

__all__ = [
    "LossConfig",
    "ccc_torch",
    "distillation_kl",
    "distillation_per_frame",
    "expression_ce",
    "masked_mean",
    "student_objective",
    "teacher_objective",
    "va_bin_targets",
    "va_ce",
    "va_dimension_loss",
    "va_distillation",
    "va_supervision",
]
