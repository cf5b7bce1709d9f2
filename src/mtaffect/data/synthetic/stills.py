"""Synthetic AffectNet (CSV release) and ExpW: full-scene photos with face boxes and landmarks.

AffectNet (DATASETS.md §2): ``Manually_Annotated_file_lists/training.csv`` (header) and
``validation.csv`` (no header), images ``Manually_Annotated_Images/<subdir>/<56 hex>.<ext>`` with
mixed extensions; codes 0–10 with VA -2 for Uncertain/No-face; one listed image missing, one corrupt
file, and (optional quirk ``malformed_line``) one truncated CSV line.

ExpW (§3): ``label/label.lst`` (``name face_id top left right bottom confidence label``) and
``image/origin/<keyword>_<occupation>_<n>.jpg`` scenes holding one to three faces; one listed photo
missing; one box running past the image border.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from mtaffect.data.synthetic._table import TableBuilder
from mtaffect.data.synthetic.affect import background, finish, still_affect, va_around
from mtaffect.data.synthetic.drawing import Appearance, draw_face, similarity
from mtaffect.labels import AFFECTNET_TO_ABAW, EXPW_TO_ABAW

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)
_ABAW_TO_AFFECTNET = {v: k for k, v in AFFECTNET_TO_ABAW.items()}
_ABAW_TO_EXPW = {v: k for k, v in EXPW_TO_ABAW.items()}
_EXTENSIONS = (".jpg", ".jpg", ".jpg", ".jpg", ".jpeg", ".JPG", ".png")
CORRUPT_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
"""The deliberately corrupt AffectNet file: a JPEG header and no image."""


def encode(img: np.ndarray, name: str, quality: int = 90) -> bytes:
    """Encode an RGB image for the file name's extension (PNG or JPEG)."""
    if name.lower().endswith(".png"):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
            raise RuntimeError(f"cannot encode {name}")
        return buf.tobytes()
    return simplejpeg.encode_jpeg(img, quality, "RGB", "420")


def _draw(img: np.ndarray, rng: np.random.Generator, e: int, v: float, a: float, scale: float,
          centre: tuple[float, float]) -> np.ndarray:
    m = similarity(scale, rng.uniform(-12, 12), centre)
    return draw_face(img, e, v + rng.normal(0, 0.04), a + rng.normal(0, 0.04), Appearance.random(rng), m,
                     yaw=float(rng.uniform(-0.7, 0.7)))


def _fmt(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _affectnet_code(rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.86:
        return int(rng.integers(0, 7))
    return 7 + int((r - 0.86) / 0.035)  # 7 contempt, 8 none, 9 uncertain, 10 no-face


def write_affectnet(root: Path, n_train: int, n_validation: int, seed: int, table: TableBuilder, *,
                    quirks: tuple[str, ...] = ()) -> None:
    """Write the AffectNet tree under ``root`` and add its truth rows to ``table``."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    files = (("train", n_train, "training.csv"), ("validation", n_validation, "validation.csv"))
    for split, n, filename in files:
        rng = np.random.default_rng([seed, 2, 0 if split == "train" else 1])
        lines = [AFFECTNET_HEADER] if split == "train" else []
        for i in range(n):
            code = _affectnet_code(rng)
            if code <= 6:
                e = AFFECTNET_TO_ABAW[code]
                v, a = va_around(rng, e)
            else:  # contempt is drawn as a neutral face; none/uncertain/no-face as any face
                e, v, a = still_affect(rng)
                e = 0 if code == 7 else e
            h, w = int(rng.integers(180, 300)), int(rng.integers(180, 300))
            img = background(rng, h, w)
            scale = min(h, w) * rng.uniform(0.22, 0.30)
            centre = (w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.08, 0.05) * h)
            canvas = img if code != 10 else img.copy()  # no-face rows: landmarks, but no face drawn
            marks = _draw(canvas, rng, e, float(v), float(a), scale, centre)
            img = finish(img, rng)
            x0, y0 = np.floor(marks.min(0) - 0.08 * scale).astype(int)
            x1, y1 = np.ceil(marks.max(0) + 0.08 * scale).astype(int)
            x0, y0 = max(0, int(x0)), max(0, int(y0))
            bw, bh = int(x1) - x0, int(y1) - y0
            name = f"{int(rng.integers(1, 1300))}/{rng.bytes(28).hex()}{_EXTENSIONS[int(rng.integers(0, 7))]}"
            marks_text = ";".join(f"{c:.2f}" for c in marks.reshape(-1))
            if code >= 9:
                vt, at = "-2", "-2"
            else:
                vt, at = _fmt(float(v), 6), _fmt(float(a), 6)
            lines.append(f"{name},{x0},{y0},{bw},{bh},{marks_text},{code},{vt},{at}")
            missing = split == "train" and i == 3
            corrupt = split == "train" and i == 5
            path = root / "Manually_Annotated_Images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not missing:
                path.write_bytes(CORRUPT_BYTES if corrupt else encode(img, name))
            if split == "train" and i == 7 and "malformed_line" in quirks:
                lines.append(f"{name.split('/')[0]}/{rng.bytes(28).hex()}.jpg,{x0},{y0},NULL")
            has_e, has_va = code <= 6, code <= 8
            if missing or not (has_e or has_va):
                continue
            table.add(1, database="affectnet", split=split, track=name,
                      image=f"Manually_Annotated_Images/{name}",
                      expression=AFFECTNET_TO_ABAW[code] if has_e else None,
                      valence=float(vt) if has_va else None, arousal=float(at) if has_va else None,
                      source_code=str(code), box_x0=float(x0), box_y0=float(y0), box_x1=float(x0 + bw),
                      box_y1=float(y0 + bh), landmarks=[np.array([float(t) for t in marks_text.split(";")])])
        (lists / filename).write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


_KEYWORDS = ("angry", "amazed", "happy", "sad", "smiling", "shocked", "calm", "furious", "crying", "scared")
_OCCUPATIONS = ("actor", "teacher", "student", "mother", "doctor", "farmer", "singer", "player")


def write_expw(root: Path, n_images: int, seed: int, table: TableBuilder) -> None:
    """Write the ExpW tree under ``root`` and add its truth rows to ``table``."""
    rng = np.random.default_rng([seed, 3])
    origin = root / "image" / "origin"
    origin.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    used: set[str] = set()
    for i in range(n_images):
        name = f"{rng.choice(_KEYWORDS)}_{rng.choice(_OCCUPATIONS)}_{int(rng.integers(1, 999))}.jpg"
        if name in used:
            continue
        used.add(name)
        h, w = int(rng.integers(200, 320)), int(rng.integers(260, 420))
        n_faces = int(rng.choice((1, 1, 2, 3)))
        img = background(rng, h, w)
        slot = w / n_faces
        for face_id in range(n_faces):
            e, v, a = still_affect(rng)
            scale = min(slot * 0.32, h * 0.26) * rng.uniform(0.8, 1.0)
            centre = (slot * (face_id + 0.5) + rng.uniform(-0.05, 0.05) * slot, h * rng.uniform(0.4, 0.55))
            if i == 2 and face_id == n_faces - 1:  # a face cut by the right border: its box runs past it
                centre = (w - 0.6 * scale, centre[1])
            marks = _draw(img, rng, e, v, a, scale, centre)
            top = int(np.floor(marks[:, 1].min() - 0.35 * scale))
            left, right = int(np.floor(marks[:, 0].min())), int(np.ceil(marks[:, 0].max()))
            bottom = int(np.ceil(marks[:, 1].max() + 0.05 * scale))
            conf = _fmt(float(rng.uniform(1.0, 60.0)), 4)
            code = _ABAW_TO_EXPW[e]
            lines.append(f"{name} {face_id} {top} {left} {right} {bottom} {conf} {code}")
            if i == 4:
                continue  # listed photo whose file is missing
            table.add(1, database="expw", split="train", track=f"{name}#{face_id}",
                      image=f"image/origin/{name}", expression=e, source_code=str(code), face_id=face_id,
                      box_x0=float(left),
                      box_y0=float(top), box_x1=float(right), box_y1=float(bottom))
        if i != 4:
            (origin / name).write_bytes(encode(finish(img, rng), name))
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "label" / "label.lst").write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
