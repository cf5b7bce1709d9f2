"""The paper's three training task sets from the frame index, and their balanced samplers.

METHOD.md §3–4.1. From the index (``mtaffect.data.index``):

* **Mixed EXPR** (T=1): Aff-Wild2 EXPR train frames, statically undersampled (default: keep
  Neutral rows whose position in the concatenated array is a multiple of 10, then — positions
  recounted — Happiness 1 in 2, then Sadness 1 in 2, exactly as the authors' script), plus every
  ExpW face.
* **Mixed VA** (T=2): every 5th Aff-Wild2 VA train frame (positions over the concatenated
  array) plus every AFEW-VA frame.
* **EXPR_VA** (T=3): AffectNet faces with both labels (train and validation lists, as the
  authors), as the paper says; ``expr_va_source="affwild2_shared"`` uses Aff-Wild2 train frames
  carrying both labels, every 3rd (the released script), ``"both"`` concatenates the two.
* **validation**: the validation rows of ``validation_database`` (Aff-Wild2).

Every task-set DataFrame is a subset of index rows **keeping the index's row labels** (positions
in the Parquet table, what ``FaceReader.read(rows)`` takes) and every column, so each row carries
whatever secondary label the shared-annotation join found (the authors' ``sub`` label).

Samplers (``--force_balance``): EXPR weight 1/count(class); VA 1/count(cell) of a 20×20
valence/arousal histogram (bins over the data's own range as the authors' ``np.histogram2d``,
or over the fixed [-1, 1] square with ``va_range="fixed"``); EXPR_VA 1/count(VA cell) +
1/count(class), divided by the maximum. :class:`BalancedSampler` draws with replacement from a
seeded generator; ``set_epoch`` changes the draw deterministically.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from mtaffect import labels
from mtaffect.data.records import has_expression, has_va
from mtaffect.errors import UserError

__all__ = [
    "TaskSetConfig",
    "TaskSets",
    "build_task_sets",
    "undersample",
    "sampling_weights",
    "BalancedSampler",
]

EXPR_VA_SOURCES = ("affectnet", "affwild2_shared", "both")


@dataclass
class TaskSetConfig:
    """How the three training sets are drawn from the index (defaults = the paper / authors)."""

    primary_database: str = "affwild2"
    """The video database whose train frames start Mixed EXPR / Mixed VA."""
    validation_database: str = "affwild2"
    undersample: Sequence[tuple[str, int]] = (("Neutral", 10), ("Happiness", 2), ("Sadness", 2))
    """(class, keep 1 in k) applied in order by position over the concatenated train frames."""
    va_every: int = 5
    """Mixed VA keeps every ``va_every``-th primary VA train frame."""
    expr_databases: Sequence[str] = ("expw",)
    """Databases added in full to Mixed EXPR (every split)."""
    va_databases: Sequence[str] = ("afew_va",)
    """Databases added in full to Mixed VA (every split)."""
    expr_va_source: str = "affectnet"
    """'affectnet' (paper), 'affwild2_shared' (authors' released script) or 'both'."""
    expr_va_databases: Sequence[str] = ("affectnet",)
    """Still-image databases used as the EXPR_VA set (rows with both labels, every split)."""
    expr_va_every: int = 3
    """'affwild2_shared' keeps every ``expr_va_every``-th shared train frame."""
    seven_classes: bool = True
    """Drop the ABAW3+ 'Other' class (7) from the expression tasks (it is masked in validation)."""
    exclude_tracks: Sequence[str] = field(default_factory=tuple)
    """Primary-database tracks left out of training (e.g. the leakage report's tracks)."""

    va_sampling_range: str = "data"
    """VA cells of the balanced samplers: 'data' (each axis over its own min..max, the authors'
    ``np.histogram2d``) or 'fixed' ([-1, 1]²); used by :meth:`TaskSets.weights`."""

    def __post_init__(self) -> None:
        if isinstance(self.undersample, Mapping):  # {"Neutral": 10, ...} from YAML keeps its order
            self.undersample = tuple(self.undersample.items())
        self.undersample = tuple((str(name), int(k)) for name, k in self.undersample)
        for name in ("expr_databases", "va_databases", "expr_va_databases", "exclude_tracks"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.va_sampling_range not in ("data", "fixed"):
            raise UserError(f"va_sampling_range must be 'data' or 'fixed', not {self.va_sampling_range!r}")
        if self.expr_va_source not in EXPR_VA_SOURCES:
            raise UserError(f"expr_va_source must be one of {EXPR_VA_SOURCES}, not {self.expr_va_source!r}")
        for name, _ in self.undersample:
            if name not in labels.EXPRESSIONS:
                raise UserError(f"undersample class {name!r} is not one of {labels.EXPRESSIONS}")
        if self.va_every < 1 or self.expr_va_every < 1 or any(k < 1 for _, k in self.undersample):
            raise UserError("every-k factors must be >= 1")


@dataclass
class TaskSets:
    """``train[name]`` for name in EXPR, VA, EXPR_VA and the validation rows (index subsets)."""

    train: dict[str, pd.DataFrame]
    validation: pd.DataFrame
    config: TaskSetConfig = field(default_factory=TaskSetConfig)

    def weights(self, name: str) -> np.ndarray:
        """Balanced-sampler weights of ``train[name]`` (:func:`sampling_weights`, config's VA range)."""
        return sampling_weights(name, self.train[name], va_range=self.config.va_sampling_range)

    def sizes(self) -> dict[str, int]:
        out = {name: len(df) for name, df in self.train.items()}
        out["validation"] = len(self.validation)
        return out


def undersample(expression: np.ndarray, steps: Sequence[tuple[str, int]]) -> np.ndarray:
    """Positions kept by the authors' static undersampling of a concatenated label array.

    For each (class, k) in order: drop rows of that class whose position in the *current*
    array is not a multiple of k (positions are recounted after each step).
    """
    keep = np.arange(len(expression))
    current = np.asarray(expression)
    for name, k in steps:
        code = labels.EXPRESSIONS.index(name)
        position = np.arange(len(current))
        mask = ~((current == code) & (position % k != 0))
        keep, current = keep[mask], current[mask]
    return keep


def _check_finite(index: pd.DataFrame) -> None:
    """Refuse an index holding infinite VA labels (written before the readers refused them): they
    would make every validation score NaN and flatten the VA sampling weights."""
    va = index[["valence", "arousal"]].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(va).any(axis=1)
    if bad.any():
        first = index.iloc[int(np.flatnonzero(bad)[0])]
        raise UserError(
            f"the index holds {int(bad.sum())} rows with an infinite valence/arousal label (first: "
            f"{first['database']} {first['image']}); rebuild it with `mtaffect index`, which refuses them"
        )


def build_task_sets(index: pd.DataFrame, config: TaskSetConfig | None = None) -> TaskSets:
    """The Mixed EXPR / Mixed VA / EXPR_VA training sets and the validation rows of ``index``."""
    config = config or TaskSetConfig()
    _check_finite(index)
    database = index["database"].to_numpy(dtype=object)
    split = index["split"].to_numpy(dtype=object)
    primary_train = (database == config.primary_database) & (split == "train")
    if len(config.exclude_tracks):
        primary_train &= ~index["track"].isin(list(config.exclude_tracks)).to_numpy(dtype=bool)
    has_expr = has_expression(index, other=not config.seven_classes)
    with_va = has_va(index)
    labelled = split != "test"

    expr_rows = np.flatnonzero(primary_train & has_expr)
    codes = index["expression"].to_numpy(dtype=np.float64, na_value=np.nan)[expr_rows]
    expr_rows = expr_rows[undersample(codes, config.undersample)]
    expr_extra = np.flatnonzero(np.isin(database, list(config.expr_databases)) & has_expr & labelled)
    va_rows = np.flatnonzero(primary_train & with_va)[:: config.va_every]
    va_extra = np.flatnonzero(np.isin(database, list(config.va_databases)) & with_va & labelled)
    parts = []
    if config.expr_va_source in ("affectnet", "both"):
        parts.append(
            np.flatnonzero(np.isin(database, list(config.expr_va_databases)) & has_expr & with_va & labelled)
        )
    if config.expr_va_source in ("affwild2_shared", "both"):
        parts.append(np.flatnonzero(primary_train & has_expr & with_va)[:: config.expr_va_every])
    expr_va_rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)

    train = {
        "EXPR": index.iloc[np.concatenate([expr_rows, expr_extra])],
        "VA": index.iloc[np.concatenate([va_rows, va_extra])],
        "EXPR_VA": index.iloc[expr_va_rows],
    }
    validation = index[
        (database == config.validation_database) & (split == "validation") & (has_expr | with_va)
    ]
    if config.seven_classes:
        other = validation["expression"] >= labels.NUM_EXPRESSIONS
        if other.any():
            validation = validation.copy()
            validation.loc[other.fillna(False).to_numpy(dtype=bool), "expression"] = pd.NA
            validation = validation[has_expression(validation) | has_va(validation)]
    return TaskSets(train=train, validation=validation, config=config)


def _va_cells(df: pd.DataFrame, va_range: str, bins: int) -> np.ndarray:
    v = df["valence"].to_numpy(dtype=np.float64, na_value=np.nan)
    a = df["arousal"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(v).any() or np.isnan(a).any():
        raise ValueError("VA sampling weights need valence and arousal on every row")
    if va_range == "data":  # np.histogram2d's default: each axis over its own min..max
        ranges = [(v.min(), v.max()), (a.min(), a.max())]
    elif va_range == "fixed":
        ranges = [(labels.VA_MIN, labels.VA_MAX)] * 2
    else:
        raise ValueError(f"va_range must be 'data' or 'fixed', not {va_range!r}")
    cells = []
    for x, (lo, hi) in zip((v, a), ranges):
        if hi <= lo:  # one distinct value: a single bin, as numpy widens the range
            cells.append(np.zeros(len(x), np.int64))
            continue
        edges = np.linspace(lo, hi, bins + 1)
        cells.append(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1))
    return cells[0] * bins + cells[1]


def _inverse_count(keys: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def sampling_weights(
    task_set: str, df: pd.DataFrame, *, va_range: str = "data", bins: int = 20
) -> np.ndarray:
    """Per-row sampling weights (float64, shape (len(df),)) of the authors' balanced samplers.

    EXPR: 1/count(class). VA: 1/count(VA cell), 20×20 cells over the data range ('data', the
    authors) or over [-1, 1]² ('fixed'). EXPR_VA: (1/count(VA cell) + 1/count(class)) / max.
    """
    if len(df) == 0:
        return np.zeros(0, dtype=np.float64)
    if task_set == "EXPR":
        expr = df["expression"].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(expr).any():
            raise ValueError("EXPR sampling weights need an expression on every row")
        return _inverse_count(expr)
    if task_set == "VA":
        return _inverse_count(_va_cells(df, va_range, bins))
    if task_set == "EXPR_VA":
        expr = df["expression"].to_numpy(dtype=np.float64, na_value=np.nan)
        weights = _inverse_count(_va_cells(df, va_range, bins)) + _inverse_count(expr)
        return weights / weights.max() if len(weights) else weights
    raise ValueError(f"unknown task set {task_set!r}; expected one of {labels.TASK_SETS}")


class BalancedSampler(Sampler[int]):
    """Draws ``num_samples`` positions with replacement, proportionally to ``weights``.

    Seeded and reproducible: the draw of epoch e depends only on (seed, e); call ``set_epoch``
    before each epoch. With ``world_size > 1`` every rank computes the same global draw and
    takes its own interleaved slice (``num_samples`` is per rank).
    """

    def __init__(
        self,
        weights: np.ndarray | torch.Tensor,
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or len(w) == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                "weights must be a non-empty 1-D array of finite non-negative numbers, not all zero"
            )
        if len(w) > 2**24:
            raise ValueError("torch.multinomial draws from at most 2**24 categories; subsample the task set")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.weights = w
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        total = self.num_samples * self.world_size
        draw = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draw[self.rank :: self.world_size].tolist())
