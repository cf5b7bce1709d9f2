"""Pictures of a prediction table: valence/arousal over time, expression timeline, circumplex.

Each function takes the per-frame table of one input (``tables.COLUMNS``) and writes one PNG
atomically; :func:`plot_all` writes the three. Rows without a face are left out (gaps in the lines);
the time plots span the whole video, with the frames where no face was found shaded grey, and
keep their legends under the axes, where they cannot hide a line.
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


def _timeline(df: pd.DataFrame) -> tuple[pd.Series, np.ndarray, str]:
    """Per decoded frame, in order: its x position (indexed by frame) and whether a face was found."""
    x, label = _axis(df)
    per_frame = (
        pd.DataFrame({"frame": df["frame"].astype(float), "x": x.to_numpy(float), "face": df["face_found"]})
        .assign(face=lambda d: d["face"].fillna(False).astype(bool))
        .groupby("frame", sort=True)
        .agg(x=("x", "first"), face=("face", "any"))
    )
    return per_frame["x"], per_frame["face"].to_numpy(bool), label


def _track_x(xs: pd.Series, part: pd.DataFrame) -> np.ndarray:
    """The x positions of a track's rows on the whole video's axis."""
    return xs.loc[part["frame"].astype(float).to_numpy()].to_numpy(float)


def _no_face_spans(x: np.ndarray, face: np.ndarray) -> list[tuple[float, float]]:
    """``(start, end)`` of every run of frames without a face; a frame lasts until the next one."""
    if not len(x):
        return []
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    ends = np.append(x[1:], x[-1] + step)
    spans, start = [], None
    for i, has_face in enumerate(face):
        if not has_face and start is None:
            start = x[i]
        if start is not None and (has_face or i == len(face) - 1):
            spans.append((float(start), float(x[i] if has_face else ends[i])))
            start = None
    return spans


def _whole_video(axes, df: pd.DataFrame) -> str:
    """Shade the no-face frames on ``axes`` and set their x range to the whole video; the x label."""
    if not len(df):
        return "frame"
    xs, face, label = _timeline(df)
    x = xs.to_numpy(float)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    for ax in axes:
        for k, (a, b) in enumerate(_no_face_spans(x, face)):
            ax.axvspan(a, b, color="0.88", lw=0, zorder=0, label="no face" if k == 0 else None)
        ax.set_xlim(x[0], x[-1] + step)
    return label


def _legend_below(ax, fig) -> None:
    """The legend of ``ax`` in a row under the plots (outside every axes, so it hides no line; the
    figure's constrained layout makes room for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8,
                   frameon=False)  # fmt: skip


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_va(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Valence and arousal over time, one line per track (a gap wherever the face is missing)."""
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True, layout="constrained")
    xlabel = _whole_video(axes, df)
    faces = _faces(df)
    xs = _timeline(df)[0] if len(df) else None
    for tid, part in faces.groupby("track_id"):
        full = part.set_index(_track_x(xs, part))
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
    axes[-1].set_xlabel(xlabel)
    _legend_below(axes[0], fig)
    fig.suptitle(title or "valence and arousal")
    return _save(fig, Path(path))


def plot_expressions(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per track, the stacked expression probabilities over time (the timeline of the 7 classes)."""
    faces = _faces(df)
    tracks = sorted(faces["track_id"].dropna().unique().tolist()) or [None]
    fig, axes = plt.subplots(
        len(tracks),
        1,
        figsize=(10, 1.8 + 1.6 * len(tracks)),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    xlabel = _whole_video(axes[:, 0], df)
    xs = _timeline(df)[0] if len(df) else None
    for ax, tid in zip(axes[:, 0], tracks):
        part = faces[faces["track_id"] == tid] if tid is not None else faces
        if len(part):
            x = _track_x(xs, part)
            probs = part[list(EXPRESSIONS)].astype(float).to_numpy().T
            # one stack per run of consecutive frames: no band is drawn across a gap
            runs = np.cumsum(np.diff(part["frame"].to_numpy(), prepend=part["frame"].iloc[0]) > 1)
            for k in np.unique(runs):
                sel = runs == k
                ax.stackplot(x[sel], probs[:, sel], colors=COLOURS, lw=0,
                             labels=EXPRESSIONS if k == 0 else ())  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_ylabel("p" if tid is None else f"track {tid}")
    axes[-1, 0].set_xlabel(xlabel)
    _legend_below(axes[0, 0], fig)
    fig.suptitle(title or "expressions")
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
