"""A re-implementation of the authors' Aff-Wild2 annotation step, for timing only.

What it re-implements (METHOD.md §3.1, §8.2; the authors' ``create_train_val_annotation_file.py``
then the label-merging half of ``create_train_val_with_shared_annotation.py``), in our own code:

1. for each task (EXPR, VA) and split, for each label file: read every line after the header with
   a Python loop (``int`` per line for EXPR, ``float`` per field for VA);
2. list ``cropped_aligned/<track>/*.jpg`` with ``glob`` and sort the paths;
3. ``frames_to_label``: frame ids from the path stems; the ids of rows holding the discard value
   collected in a *list*; frame ids filtered by ``id not in drop_list``; the kept-label mask
   built as ``[i in frame_id_list for i in range(rows)]`` (list membership: quadratic per track);
   image paths rebuilt from the ids; one DataFrame (label, path, frames_ids) per track;
4. shared labels: for each split and each track present in both tasks, ``pandas.merge`` of the
   VA table onto the EXPR table and of the EXPR table onto the VA table (left joins on
   (path, frames_ids), missing filled with -2).

Not re-implemented: the AU task, the audio/timestamp extraction of the shared-annotation script
(ffmpeg, mkvmerge) and the pickling. One deviation is needed to run at all: image numbers beyond
the last label row are removed before step 3, otherwise the authors' assertion fails on such
tracks (DATASETS.md §1.6).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd

SPLITS = ("Train_Set", "Validation_Set")


def _read_expr(path: str) -> np.ndarray:
    with open(path) as handle:
        lines = handle.readlines()[1:]
    return np.array([int(line.strip()) for line in lines])


def _read_va(path: str) -> np.ndarray:
    with open(path) as handle:
        lines = handle.readlines()[1:]
    return np.array([[float(v) for v in line.strip().split(",")] for line in lines])


def _frames_to_label(label_array: np.ndarray, frames: list[str], discard_value: float):
    frames_ids = [int(f.split("/")[-1].split(".")[0]) - 1 for f in frames]
    n = label_array.shape[0]
    frames_ids = [i for i in frames_ids if i < n]  # deviation: see the module docstring
    label_array = label_array.reshape((n, -1))
    to_drop = (label_array == discard_value).sum(-1)
    drop_ids = [i for i in range(len(to_drop)) if to_drop[i]]
    frames_ids = [i for i in frames_ids if i not in drop_ids]
    kept = [i in frames_ids for i in range(n)]
    label_array = label_array[kept]
    prefix = "/".join(frames[0].split("/")[:-1])
    paths = [prefix + f"/{i + 1:05d}.jpg" for i in frames_ids]
    return label_array, paths, frames_ids


def build_authors(annotation_dir: str, image_dir: str) -> dict:
    """{task: {split: {track: DataFrame}}} with the shared labels merged in (steps 1-4)."""
    data: dict = {}
    for task, reader, discard in (("EXPR_Set", _read_expr, -1), ("VA_Set", _read_va, -5.0)):
        data[task] = {}
        for split in SPLITS:
            data[task][split] = {}
            for txt in glob.glob(os.path.join(annotation_dir, task, split, "*.txt")):
                name = os.path.basename(txt).split(".")[0]
                labels = reader(txt)
                frames = sorted(glob.glob(os.path.join(image_dir, name, "*.jpg")))
                if not frames:
                    continue
                labels, paths, ids = _frames_to_label(labels, frames, discard)
                if task == "EXPR_Set":
                    table = {"label": labels.reshape(-1), "path": paths, "frames_ids": ids}
                else:
                    table = {
                        "valence": labels[:, 0],
                        "arousal": labels[:, 1],
                        "path": paths,
                        "frames_ids": ids,
                    }
                data[task][split][name] = pd.DataFrame(table)
    shared: dict = {"EXPR_Set": {}, "VA_Set": {}}
    for split in SPLITS:
        expr, va = data["EXPR_Set"][split], data["VA_Set"][split]
        both = set(expr) & set(va)
        shared["EXPR_Set"][split] = {
            t: pd.merge(df, va[t], how="left", on=["path", "frames_ids"]).fillna(value=-2)
            if t in both
            else df
            for t, df in expr.items()
        }
        shared["VA_Set"][split] = {
            t: pd.merge(df, expr[t], how="left", on=["path", "frames_ids"]).fillna(value=-2)
            if t in both
            else df
            for t, df in va.items()
        }
    return shared
