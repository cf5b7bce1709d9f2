"""Procedural affect databases written in the four native formats, with their real quirks.

>>> truth = write_databases("synthetic", preset="tiny", seed=0)   # doctest: +SKIP

writes ``synthetic/{affwild2,affectnet,expw,afew_va}`` exactly as the real databases are laid out
(docs/synthetic.md lists every quirk) and returns the frame table a correct reader must produce
from them (the frame-index schema of docs/design.md, sorted by database, split, track, frame).

The faces carry a learnable signal, the same in every database: the expression is drawn by
discrete cues (brow shape, mouth type, marks), valence by mouth curvature, arousal by eye opening
and brow height (:mod:`mtaffect.data.synthetic.drawing`). Within a track the expression changes in
segments and valence/arousal follow a smooth walk (:mod:`mtaffect.data.synthetic.affect`).
Everything is deterministic by ``seed``: the same seed writes the same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect.data.synthetic._table import COLUMNS, SORT_KEY, TableBuilder
from mtaffect.data.synthetic.afew_va import write_afew_va
from mtaffect.data.synthetic.affwild2 import plan_tracks, write_affwild2
from mtaffect.data.synthetic.stills import write_affectnet, write_expw
from mtaffect.data.synthetic.video import write_video
from mtaffect.errors import UserError
from mtaffect.io import prepare_output_dir

__all__ = ["SyntheticSpec", "PRESETS", "QUIRKS", "write_databases", "write_video", "COLUMNS", "SORT_KEY"]

QUIRKS = ("malformed_line",)
"""Optional quirks (off in the presets): ``malformed_line`` adds a truncated row to AffectNet's
training.csv, which a strict reader must reject and a lenient one must skip and count."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of the synthetic databases. The named Aff-Wild2 quirk tracks are always written."""

    affwild2_tracks: int  # generated Aff-Wild2 tracks on top of the 13 quirk tracks
    affwild2_frames: tuple[int, int]  # video length range per track (annotation rows)
    affectnet_train: int
    affectnet_validation: int
    expw_images: int
    afew_va_clips: int
    afew_va_frames: tuple[int, int]
    afew_va_size: tuple[int, int] = (320, 256)  # film frame (width, height)
    crop_size: int = 112  # Aff-Wild2 cropped_aligned size
    render: str = "full"  # "pool": Aff-Wild2 images are hard links to a small rendered pool (benchmarks)
    quirks: tuple[str, ...] = ()


PRESETS: dict[str, SyntheticSpec] = {
    # tests: a few hundred frames in a couple of seconds
    "tiny": SyntheticSpec(0, (16, 30), 30, 10, 14, 3, (8, 12), (240, 192)),
    # the CPU demo: a few thousand frames per database, generated in well under a minute
    "demo": SyntheticSpec(30, (120, 300), 2000, 500, 800, 16, (60, 100)),
    # benchmarks at Aff-Wild2 scale (≈2.6 M frames; images hard-linked from a rendered pool)
    "large": SyntheticSpec(560, (500, 8700), 20000, 2000, 5000, 40, (60, 160), render="pool"),
}


def write_databases(out_dir: str | Path, *, preset: str = "tiny", seed: int = 0,
                    spec: SyntheticSpec | None = None, quirks: tuple[str, ...] | None = None,
                    overwrite: bool = False, verbose: bool = False) -> pd.DataFrame:
    """Write ``out_dir/{affwild2,affectnet,expw,afew_va}`` in their native formats; return the truth.

    ``spec`` overrides the preset's sizes; ``quirks`` adds optional quirks (see :data:`QUIRKS`).
    ``out_dir`` must be empty or absent unless ``overwrite``. The returned DataFrame has the frame
    index columns (:data:`COLUMNS`) and dtypes, sorted by :data:`SORT_KEY`, index 0..n-1.
    """
    if spec is None:
        if preset not in PRESETS:
            raise UserError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)}")
        spec = PRESETS[preset]
    if quirks is not None:
        unknown = sorted(set(quirks) - set(QUIRKS))
        if unknown:
            raise UserError(f"unknown synthetic quirks {unknown}; known: {', '.join(QUIRKS)}")
        spec = replace(spec, quirks=tuple(quirks))
    out = prepare_output_dir(out_dir, overwrite=overwrite)
    table = TableBuilder()
    steps = (
        ("affwild2", lambda root: write_affwild2(
            root, plan_tracks(np.random.default_rng([seed, 0]), spec.affwild2_tracks, spec.affwild2_frames),
            seed, table, size=spec.crop_size, render=spec.render)),
        ("affectnet", lambda root: write_affectnet(
            root, spec.affectnet_train, spec.affectnet_validation, seed, table, quirks=spec.quirks)),
        ("expw", lambda root: write_expw(root, spec.expw_images, seed, table)),
        ("afew_va", lambda root: write_afew_va(
            root, spec.afew_va_clips, spec.afew_va_frames, spec.afew_va_size, seed, table)),
    )
    for name, step in steps:
        t0 = time.perf_counter()
        step(out / name)
        if verbose:
            print(f"  {name}: written in {time.perf_counter() - t0:.1f} s")
    return table.frame()
