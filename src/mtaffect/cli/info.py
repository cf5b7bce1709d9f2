"""``mtaffect info CKPT [--json]``: what a checkpoint is, from its metadata alone (no weights loaded).

Kind, backbone and heads, input size and preprocessing, crop convention, stage and validation
metrics, training data, where the weights came from (for converted files: the source file, zip
member and their sha256) and a licence note. A GRU-only checkpoint also says which CNN it reads and
whether that CNN is found (:func:`mtaffect.checkpoint.find_cnn_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  mtaffect info authors.safetensors
  mtaffect info runs/gru_student/best.safetensors --json
"""

KINDS = {
    "cnn": "CNN: one prediction per face crop",
    "cnn_gru": "CNN+GRU: per-frame predictions from 32-frame windows of a face track",
    "gru": "GRU only: runs on the embeddings of a separate CNN checkpoint",
}
CROPS = {
    "affwild2_cropped_aligned": "faces aligned as Aff-Wild2's cropped_aligned frames (5-point template "
    "'affwild2'); `mtaffect predict` and `mtaffect extract-faces` cut crops this way",
}
TRAINED_LICENCE = (
    "trained with mtaffect: the weights inherit the terms of the databases they were trained on "
    "(Aff-Wild2 and AffectNet are research-only) and of the weights they started from"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("checkpoint", type=Path, help="an mtaffect checkpoint (.safetensors)")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def _training_data(train: dict, kind: str) -> str:
    """The training data of a checkpoint trained with mtaffect, from its stored training config."""
    data = train.get("data") or {}
    parts = [f"frame index {data.get('index') or '?'}"]
    if kind == "cnn":
        parts.append("task sets " + ", ".join(data.get("use_task_sets") or []))
    else:
        sequences = data.get("sequences") or {}
        databases = sequences.get("databases") or ["affwild2"]
        parts.append(f"{sequences.get('length', 32)}-frame windows of {', '.join(databases)} videos")
    teacher = (train.get("stage") or {}).get("teacher")
    if teacher:
        parts.append(f"distilled from {teacher}")
    init = (train.get("model") or {}).get("init_from")
    if init:
        parts.append(f"initialised from {init}")
    return "; ".join(parts)


def describe(path: str | Path) -> dict[str, Any]:
    """The facts ``mtaffect info`` prints, as a JSON-ready dict."""
    from mtaffect.checkpoint import find_cnn_checkpoint, read_metadata, stored_preprocessing
    from mtaffect.errors import UserError
    from mtaffect.runtime import file_sha256

    path = Path(path)
    meta = read_metadata(path)
    kind = meta.get("kind", "?")
    model = meta.get("model") or {}
    pre = meta.get("preprocessing") or {}
    about = meta.get("about") or {}
    train = meta.get("train") or {}
    info: dict[str, Any] = {
        "file": str(path),
        "sha256": file_sha256(path),
        "kind": kind,
        "kind_meaning": KINDS.get(kind, kind),
        "backbone": (model.get("cnn") or {}).get("backbone"),
        "cnn": model.get("cnn"),
        "gru": model.get("gru"),
        "labels": meta.get("labels"),
        "input": {
            "size": pre.get("size"),
            "mean": pre.get("mean"),
            "std": pre.get("std"),
            "meaning": "RGB 0-255 minus mean, divided by std",
            "eval_resize": stored_preprocessing(meta).eval_resize,
        },
        "crop": {"convention": pre.get("crop"), "meaning": CROPS.get(pre.get("crop"), "see docs/predict.md")},
        "stage": meta.get("stage"),
        "epoch": meta.get("epoch"),
        "metrics": meta.get("metrics"),
        "model_note": about.get("model"),
        "training_data": about.get("training_data") or (_training_data(train, kind) if train else None),
        "source": None,
        "licence": about.get("licence") or (TRAINED_LICENCE if train else "not recorded"),
        "reference": about.get("reference"),
    }
    if meta.get("converted_from"):
        info["source"] = {"converted_from": meta["converted_from"]}
    elif meta.get("sources"):
        info["source"] = {"joined_from": meta["sources"]}
    elif train:
        info["source"] = {"trained": f"mtaffect train {(train.get('stage') or {}).get('name', '?')}"}
    if kind == "gru":
        recorded = meta.get("cnn") or {"checkpoint": (train.get("model") or {}).get("cnn_checkpoint")}
        try:
            found: str | None = str(find_cnn_checkpoint(path, meta))
            problem = None
        except UserError as err:
            found, problem = None, str(err)
        info["needs_cnn"] = {**recorded, "found": found, "problem": problem}
    return info


def _metrics(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    keys = ("expr_score", "ccc_valence", "ccc_arousal", "abaw_sum")
    shown = [f"{k} {metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), (int, float))]
    return ", ".join(shown) or ", ".join(f"{k} {v}" for k, v in metrics.items())


def format_info(info: dict[str, Any]) -> str:
    """The description as aligned ``field: value`` lines."""
    cnn, gru, inp = info.get("cnn") or {}, info.get("gru") or {}, info["input"]
    rows = [
        ("file", f"{info['file']} (sha256 {info['sha256']})"),
        ("kind", f"{info['kind']}: {info['kind_meaning']}"),
        ("backbone", info.get("backbone") or "- (in the separate CNN checkpoint)"),
    ]
    if cnn:
        rows.append(
            (
                "CNN heads",
                f"{cnn.get('hidden')}-d embeddings, 7 expressions, {cnn.get('va_bins')} VA bins "
                f"({cnn.get('va_decoding')} decoding)",
            )
        )
    if gru:
        rows.append(
            ("GRU", f"bidirectional, {gru.get('hidden')} units per direction on {gru.get('input_size')}-d")
        )
    if info.get("model_note"):
        rows.append(("model", info["model_note"]))
    rows += [
        ("input", f"{inp['size']}x{inp['size']} px, {inp['meaning']}: mean {inp['mean']}, std {inp['std']}"),
        ("evaluation", f"resize x{inp['eval_resize']:g}, centre {inp['size']}x{inp['size']} crop"),
        ("crops", f"{info['crop']['convention']}: {info['crop']['meaning']}"),
        ("labels", ", ".join(info.get("labels") or [])),
        ("stage", f"{info.get('stage') or '-'}" + (f" (epoch {info['epoch']})" if info.get("epoch") else "")),
        ("validation", _metrics(info.get("metrics"))),
        ("training data", info.get("training_data") or "not recorded"),
    ]
    source = info.get("source") or {}
    if "converted_from" in source:
        c = source["converted_from"]
        inside = (
            f"{c['file']}!{c['member']} (member sha256 {c['member_sha256']})"
            if c.get("member")
            else c["file"]
        )
        rows.append(("source", f"converted ({c['source']}) from {inside}; file sha256 {c['sha256']}"))
    elif "joined_from" in source:
        j = source["joined_from"]
        rows.append(("source", "joined: " + "; ".join(f"{k} {v.get('file')}" for k, v in j.items())))
    elif "trained" in source:
        rows.append(("source", source["trained"]))
    if "needs_cnn" in info:
        need = info["needs_cnn"]
        state = f"found at {need['found']}" if need["found"] else f"NOT FOUND ({need['problem']})"
        rows.append(("needs CNN", f"{need.get('checkpoint')}: {state}"))
    rows.append(("licence", info["licence"]))
    if info.get("reference"):
        rows.append(("reference", info["reference"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.rjust(width)}: {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    info = describe(args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
