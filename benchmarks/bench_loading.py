"""Benchmark (b): the CNN input pipeline alone, images/s on one core.

Ours: :class:`mtaffect.data.loading.FrameTaskData` over the real
:class:`mtaffect.data.faces.FaceReader` reading 112² JPEG face crops (simplejpeg decode), batched
uint8 augmentation (one ``cv2.warpAffine`` per image = resize 134 + random crop 112 + flip), collation
into a uint8 tensor and mask Targets; three task sets × N = 64 per step, as in training.

Reference: a faithful re-implementation of the authors' per-sample design (PERFORMANCE.md §3, §6):
a map-style Dataset whose ``__getitem__`` opens the file with PIL, converts to RGB, Resize(134)
(bilinear), RandomCrop(112), RandomHorizontalFlip, ToTensor, ×255, Normalize(mean, std 1), and returns
a dict with the path and index; a DataLoader (batch 64, random sampler, ``default_collate``).

Both run in this process with 1 torch thread and no worker processes, on the same JPEG files, so
the figures are per core. Timing with ``benchmarks/_timing.py::time_quiet`` (quiet reps only).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_loading.py [--images 2000] [--reps 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import simplejpeg
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import time_quiet  # noqa: E402
from mtaffect.data.faces import FaceReader  # noqa: E402
from mtaffect.data.loading import FrameTaskData, LabelArrays, TaskSource  # noqa: E402

MEAN = (131.0912, 103.8827, 91.4953)
BATCH = 64


def face_like(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A smooth face-like RGB crop (background gradient, skin ellipse, eyes, mouth, blur, noise)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 200, 3)
    img = base + 60 * np.stack([xx, yy, xx * yy], -1) * rng.uniform(-1, 1, 3)
    img = img.astype(np.uint8).copy()
    c = (size // 2 + int(rng.integers(-6, 7)), size // 2 + int(rng.integers(-6, 7)))
    skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 190, 160]))
    cv2.ellipse(img, c, (int(size * 0.3), int(size * 0.4)), 0, 0, 360, skin, -1)
    for dx in (-1, 1):
        cv2.circle(img, (c[0] + dx * size // 8, c[1] - size // 10), size // 28, (40, 30, 30), -1)
    cv2.ellipse(img, (c[0], c[1] + size // 6), (size // 8, size // 20), 0, 0, 180, (120, 40, 50), 2)
    img = cv2.GaussianBlur(img, (5, 5), 1.5).astype(np.float64) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"{i:05d}.jpg"
        (folder / name).write_bytes(simplejpeg.encode_jpeg(face_like(rng), quality=90, colorspace="RGB"))
        names.append(name)
    return names


# ------------------------------------------------------------------------- the authors' design


class ReferenceDataset(Dataset):
    """Per-sample PIL pipeline of the authors' CNN datasets (own code, same operations)."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        self.paths, self.labels = paths, labels
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.ones(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        img = Image.open(self.paths[i]).convert("RGB")
        img = img.resize((134, 134), Image.BILINEAR)  # Resize(int(1.2 * 112)) of a square crop
        x0, y0 = random.randint(0, 134 - 112), random.randint(0, 134 - 112)  # RandomCrop(112)
        img = img.crop((x0, y0, x0 + 112, y0 + 112))
        if random.random() < 0.5:  # RandomHorizontalFlip
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = (
            torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
        )  # ToTensor
        x = x * 255  # the MatConvNet model's std is 1: the authors scale back to 0-255
        x = (x - self.mean) / self.std  # Normalize
        return {"image": x, "label": int(self.labels[i]), "path": self.paths[i], "index": i}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4, help="steps of 3 x 64 images per timed call (ours)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = write_jpegs(root, args.images)
        sizes = [(root / n).stat().st_size for n in names]
        rng = np.random.default_rng(1)
        index = pd.DataFrame(
            {
                "database": "affwild2",
                "split": "train",
                "track": "bench",
                "frame": pd.array(np.arange(1, len(names) + 1), dtype="Int64"),
                "image": names,
                "expression": pd.array(rng.integers(0, 7, len(names)), dtype="Int64"),
                "valence": pd.array(rng.uniform(-1, 1, len(names)), dtype="Float64"),
                "arousal": pd.array(rng.uniform(-1, 1, len(names)), dtype="Float64"),
                "face_id": pd.array([pd.NA] * len(names), dtype="Int64"),
                "landmarks": [None] * len(names),
                **{
                    k: pd.array([pd.NA] * len(names), dtype="Float64")
                    for k in ("box_x0", "box_y0", "box_x1", "box_y1")
                },
            }
        )
        meta = {"roots": {"affwild2": str(root)}}
        reader = FaceReader(index, meta, 112)
        labels = LabelArrays.from_frame(index)
        sources = {t: TaskSource(reader, labels, np.ones(len(index))) for t in ("EXPR", "VA", "EXPR_VA")}
        data = FrameTaskData(sources, batch_per_task=BATCH, size=112, seed=0, max_steps=args.steps)
        per_call = args.steps * 3 * BATCH

        def ours() -> None:
            for batch in data.epoch(0):
                for images, targets in batch.values():
                    assert images.dtype == torch.uint8 and targets.expression.shape[0] == BATCH

        ref_ds = ReferenceDataset([str(root / n) for n in names], index["expression"].to_numpy())
        ref_loader = DataLoader(
            ref_ds,
            batch_size=BATCH,
            shuffle=True,
            num_workers=0,
            drop_last=True,
            generator=torch.Generator().manual_seed(0),
        )
        ref_batches = min(len(ref_loader), args.steps * 3)

        def reference() -> None:
            for i, batch in enumerate(ref_loader):
                assert batch["image"].shape == (BATCH, 3, 112, 112)
                if i + 1 >= ref_batches:
                    break

        def cpu_rate(fn, items: int) -> float:
            """Median images per CPU-second of this process (other processes cannot inflate it)."""
            rates = []
            for _ in range(args.reps):
                t0 = time.process_time()
                fn()
                rates.append(items / (time.process_time() - t0))
            return statistics.median(rates)

        t_ours = time_quiet(ours, reps=args.reps, min_seconds=0.5)
        t_ref = time_quiet(reference, reps=args.reps, min_seconds=0.5)
        cpu_ours, cpu_ref = cpu_rate(ours, per_call), cpu_rate(reference, ref_batches * BATCH)
        ours_rate = t_ours.rate(per_call)
        ref_rate = t_ref.rate(ref_batches * BATCH)
        print(f"JPEGs: {len(names)} x 112x112, quality 90, mean {np.mean(sizes) / 1024:.1f} KiB")
        print(
            f"ours (FaceReader simplejpeg + warpAffine aug + uint8 collate): {ours_rate:,.0f} img/s/core "
            f"[{t_ours.kept}/{t_ours.total} quiet reps]"
        )
        print(
            f"reference (PIL per sample + Resize/RandomCrop/Flip/ToTensor/Normalize, DataLoader): "
            f"{ref_rate:,.0f} img/s/core [{t_ref.kept}/{t_ref.total} quiet reps]"
        )
        print(f"ratio ours/reference (wall): {ours_rate / ref_rate:.2f}x")
        print(
            f"per CPU-second: ours {cpu_ours:,.0f} img/s, reference {cpu_ref:,.0f} img/s, "
            f"ratio {cpu_ours / cpu_ref:.2f}x"
        )
        print("target: >= 2,500 img/s per core and >= 3x the reference")


if __name__ == "__main__":
    main()
