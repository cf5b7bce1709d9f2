"""The one label vocabulary of mtaffect.

Every tensor, file and table in the project speaks this vocabulary; each database reader
translates its native codes once, at the border (docs/DATASETS.md §5), and nothing downstream
knows a native code.

Conventions
-----------
* Expression index ``i`` means ``EXPRESSIONS[i]`` (the ABAW order). Aff-Wild2 from ABAW3 on adds
  an eighth class "Other" (index 7): it is kept in the frame index but excluded from the
  7-class tasks.
* Valence and arousal are floats in ``[-1, 1]``.
* A missing label is a missing value (pandas NA, NaN, or a boolean mask next to a tensor),
  never a magic number such as the authors' ``-2``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

EXPRESSIONS: Final = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
"""The seven basic expressions in ABAW order: index i of every expression output means EXPRESSIONS[i]."""

OTHER: Final = "Other"
EXPRESSIONS_8: Final = (*EXPRESSIONS, OTHER)
"""ABAW3+ vocabulary: the seven basic expressions and "Other" (index 7)."""

NUM_EXPRESSIONS: Final = len(EXPRESSIONS)
OTHER_INDEX: Final = 7

VA_MIN: Final = -1.0
VA_MAX: Final = 1.0
VA_NAMES: Final = ("valence", "arousal")

VA_BINS: Final = 20
"""Each of valence and arousal is classified into 20 bins of width 0.1 (METHOD.md §1.2, §2.1)."""

TASK_SETS: Final = ("EXPR", "VA", "EXPR_VA")
"""The paper's three training task sets (tasks T = 1, 2, 3): Mixed EXPR, Mixed VA, Affect EXPR_VA."""

HEAD_TASKS: Final = ("EXPR", "VA")
"""The model has two output heads; the task set EXPR_VA reuses both."""

DATABASES: Final = ("affwild2", "affectnet", "expw", "afew_va")
SPLITS: Final = ("train", "validation", "test")

# --- native code maps (native code -> ABAW index); codes not in a map are not expressions ---

AFFWILD2_TO_ABAW: Final = MappingProxyType({i: i for i in range(8)})
"""Aff-Wild2 uses the ABAW order natively; 7 ("Other") only exists from ABAW3 on."""

AFFECTNET_TO_ABAW: Final = MappingProxyType({0: 0, 1: 4, 2: 5, 3: 6, 4: 3, 5: 2, 6: 1})
"""AffectNet 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger."""

AFFECTNET_EXCLUDED: Final = MappingProxyType({7: "contempt", 8: "none", 9: "uncertain", 10: "no_face"})
"""AffectNet codes with no ABAW equivalent: excluded from the 7-class tasks and counted."""

EXPW_TO_ABAW: Final = MappingProxyType({0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 0})
"""ExpW 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral."""

AFEW_VA_SCALE: Final = 10.0
"""AFEW-VA stores integer valence/arousal in -10..10; divide by this to get [-1, 1]."""

# Native "unannotated" sentinels, for the readers only.
AFFWILD2_EXPR_MISSING: Final = -1
AFFWILD2_VA_MISSING: Final = -5.0
AFFECTNET_VA_MISSING: Final = -2.0


def expression_name(index: int) -> str:
    """Name of an ABAW expression index (0..7)."""
    return EXPRESSIONS_8[index]


def is_valid_va(value: float) -> bool:
    """True when ``value`` is a usable valence/arousal label (finite and inside [-1, 1])."""
    return value == value and VA_MIN <= value <= VA_MAX  # value == value rejects NaN
