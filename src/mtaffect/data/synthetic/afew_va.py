"""Synthetic AFEW-VA (DATASETS.md §4): nested part folders ``01/001/`` holding ``001.json`` and
0-based ``00000.png`` film frames; integer VA in -10..10 and 68 landmarks per frame; one frame
listed in the JSON whose PNG is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtaffect.data.synthetic._table import TableBuilder
from mtaffect.data.synthetic.affect import affect_sequence, background, finish, random_light
from mtaffect.data.synthetic.drawing import Appearance, draw_face, similarity
from mtaffect.data.synthetic.stills import encode

_ACTORS = ("Ada Lane", "Ben Ortiz", "Chloe Marsh", "Dev Patel", "Eva Stone", "Femi Cole", "Gus Hart")


def clip_folder(clip: int) -> str:
    """``PP/CCC`` for clip number ``clip`` (parts of 50 clips: clip 51 is in part 02)."""
    return f"{(clip - 1) // 50 + 1:02d}/{clip:03d}"


def write_afew_va(root: Path, n_clips: int, frames: tuple[int, int], size: tuple[int, int], seed: int,
                  table: TableBuilder) -> None:
    """Write ``n_clips`` clips of ``frames`` (min, max) frames at ``size`` (width, height)."""
    width, height = size
    for k in range(n_clips):
        rng = np.random.default_rng([seed, 4, k])
        clip = 1 + 26 * k  # spaced so that small sets still use two part folders
        folder = root / clip_folder(clip)
        folder.mkdir(parents=True, exist_ok=True)
        n = int(rng.integers(frames[0], frames[1] + 1))
        expr, val, aro = affect_sequence(rng, n)
        look, bg, light = Appearance.random(rng), background(rng, height, width), random_light(rng)
        scale = height * rng.uniform(0.13, 0.2)
        start = np.array([rng.uniform(0.3, 0.7) * width, rng.uniform(0.35, 0.6) * height])
        drift = rng.normal(0, 0.6, 2)
        missing = int(rng.integers(1, n)) if k == 0 else -1
        entries: dict[str, dict] = {}
        frame_ids, vals, aros, marks_all = [], [], [], []
        for t in range(n):
            centre = start + drift * t
            roll = 6.0 * np.sin(t / 15.0 + k)
            img = bg.copy()
            v_draw = float(np.clip(val[t] + rng.normal(0, 0.04), -1, 1))
            a_draw = float(np.clip(aro[t] + rng.normal(0, 0.04), -1, 1))
            marks = draw_face(img, int(expr[t]), v_draw, a_draw, look, similarity(scale, roll, tuple(centre)),
                              yaw=0.3 * np.sin(t / 20.0 + k))
            v_int = int(np.clip(round(val[t] * 10), -10, 10))
            a_int = int(np.clip(round(aro[t] * 10), -10, 10))
            rounded = [[round(float(x), 3), round(float(y), 3)] for x, y in marks]
            key = f"{t:05d}"
            entries[key] = {"valence": v_int, "arousal": a_int, "landmarks": rounded}
            if t == missing:
                continue
            (folder / f"{key}.png").write_bytes(encode(finish(img, rng, light=light), ".png"))
            frame_ids.append(t)
            vals.append(v_int / 10.0)
            aros.append(a_int / 10.0)
            marks_all.append(np.array(rounded, dtype=np.float64).reshape(-1))
        doc = {"actor": _ACTORS[k % len(_ACTORS)], "video_id": f"{clip:03d}", "frames": entries}
        (folder / f"{clip:03d}.json").write_text(json.dumps(doc), encoding="utf-8")
        table.add(len(frame_ids), database="afew_va", split="train", track=f"{clip:03d}", frame=frame_ids,
                  image=[f"{clip_folder(clip)}/{t:05d}.png" for t in frame_ids], valence=vals, arousal=aros,
                  landmarks=marks_all)
