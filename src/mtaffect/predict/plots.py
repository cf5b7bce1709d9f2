"""Pictures of a prediction table: valence/arousal over time, expression timeline, circumplex.

Each function takes the per-frame table of one input (``tables.COLUMNS``) and writes one PNG
atomically; :func:`plot_all` writes the three. Rows without a face are left out (gaps in the lines).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mtaffect.io import atomic_path  # noqa: E402
from mtaffect.labels import EXPRESSIONS  # noqa: E402

__all__ = ["plot_va", "plot_expressions", "plot_circumplex", "plot_all"]

COLOURS = ("#7f7f7f", "#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e")


def _axis(df: pd.DataFrame) -> tuple[pd.Series, str]:
    t = df["time"].astype("Float64")
    if t.notna().all() and len(t):
        return t.astype(float), "time (s)"
    return df["frame"].astype(float), "frame"


def _faces(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["face_found"].fillna(False).astype(bool)]


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_va(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Valence and arousal over time, one line per track (a gap wherever the face is missing)."""
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    faces = _faces(df)
    for tid, part in faces.groupby("track_id"):
        x, label = _axis(part)
        full = part.set_index(x.values)
        for ax, col in zip(axes, ("valence", "arousal")):
            y = full[col].astype(float)
            gaps = np.diff(part["frame"].to_numpy(), prepend=part["frame"].iloc[0]) > 1
            y[gaps] = np.nan  # break the line where the track skipped frames
            ax.plot(y.index, y.values, lw=1.2, label=f"track {tid}")
    for ax, col in zip(axes, ("valence", "arousal")):
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(_axis(df)[1] if len(df) else "frame")
    if faces["track_id"].nunique() > 1:
        axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "valence and arousal")
    return _save(fig, Path(path))


def plot_expressions(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per track, the stacked expression probabilities over time (the timeline of the 7 classes)."""
    faces = _faces(df)
    tracks = sorted(faces["track_id"].dropna().unique().tolist()) or [None]
    fig, axes = plt.subplots(len(tracks), 1, figsize=(10, 1.8 + 1.6 * len(tracks)), squeeze=False)
    for ax, tid in zip(axes[:, 0], tracks):
        part = faces[faces["track_id"] == tid] if tid is not None else faces
        if len(part):
            x, label = _axis(part)
            probs = part[list(EXPRESSIONS)].astype(float).to_numpy().T
            ax.stackplot(x.to_numpy(), probs, colors=COLOURS, labels=EXPRESSIONS, lw=0)
            ax.set_xlabel(label)
        ax.set_ylim(0, 1)
        ax.set_ylabel("p" if tid is None else f"track {tid}")
    if len(faces):
        axes[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, 1.45), ncol=7, fontsize=8, frameon=False)
    fig.suptitle(title or "expressions", y=1.02)
    return _save(fig, Path(path))


def plot_circumplex(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Valence–arousal plane (Russell's circumplex): every frame a dot coloured by time."""
    faces = _faces(df)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k", lw=0.6))
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    if len(faces):
        x, label = _axis(faces)
        sc = ax.scatter(
            faces["valence"].astype(float), faces["arousal"].astype(float), c=x, s=8, cmap="viridis"
        )
        fig.colorbar(sc, ax=ax, label=label)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title(title or "valence-arousal circumplex")
    return _save(fig, Path(path))


def plot_all(df: pd.DataFrame, folder: str | Path, title: str = "") -> list[Path]:
    """``va.png``, ``expressions.png`` and ``circumplex.png`` in ``folder``."""
    folder = Path(folder)
    return [
        plot_va(df, folder / "va.png", title),
        plot_expressions(df, folder / "expressions.png", title),
        plot_circumplex(df, folder / "circumplex.png", title),
    ]
