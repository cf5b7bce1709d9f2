"""Checkpoints: one ``.safetensors`` file that rebuilds its model alone.

Weights are safetensors tensors (never pickle); metadata key ``mtaffect`` holds JSON
``{"format": 1, "kind": "cnn"|"gru"|"cnn_gru", "model": {config}, "preprocessing": {...},
"labels": [...], "stage": ..., "train": {...}, "metrics": {...}, ...}`` (docs/design.md).

A GRU-only checkpoint (a GRU stage's ``best.safetensors``) runs on the embeddings of a separate CNN
checkpoint: :func:`load_model` joins the two for every consumer (predict, ``Predictor``, export,
evaluate), finding the CNN with :func:`find_cnn_checkpoint`; :func:`join_checkpoints` writes the
joined CNN+GRU file (``mtaffect join``, the demo). The GRU stages write :data:`CNN_GRU_CHECKPOINT`.

The ``preprocessing`` block says how to feed the model, evaluation resize included
(:class:`~mtaffect.models.preprocessing.Preprocessing`); :func:`stored_preprocessing` reads it, also
from files written before the block had ``eval_resize``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mtaffect.errors import InputFormatError
from mtaffect.io import atomic_path
from mtaffect.labels import EXPRESSIONS
from mtaffect.models import create_model, model_config
from mtaffect.models.preprocessing import EVAL_RESIZE, Preprocessing, default_preprocessing
from mtaffect.runtime import file_sha256, resolve_device

FORMAT_VERSION = 1
METADATA_KEY = "mtaffect"


def _default_preprocessing(model: nn.Module) -> Preprocessing:
    cnn = getattr(model, "cnn", model)
    backbone = getattr(getattr(cnn, "config", None), "backbone", "resnet50_caffe")
    return default_preprocessing(backbone)


def stored_preprocessing(meta: dict) -> Preprocessing:
    """The :class:`Preprocessing` of checkpoint metadata ``meta`` (as :func:`read_metadata` returns it).

    A block without ``eval_resize`` (files written before it was stored) takes the evaluation resize
    its consumers used then: the recorded training config's ``data.resize_factor``, else 1.2
    (:data:`~mtaffect.models.preprocessing.EVAL_RESIZE`, the authors' transform).
    """
    block = meta.get("preprocessing") or {}
    if isinstance(block, Preprocessing):
        return block
    if "eval_resize" not in block:
        data = (meta.get("train") or {}).get("data") or {}
        block = {**block, "eval_resize": data.get("resize_factor", EVAL_RESIZE)}
    return Preprocessing.from_dict(block)


def save_checkpoint(path: str | Path, model: nn.Module, **meta: Any) -> dict:
    """Write ``model``'s weights and everything needed to rebuild it to ``path`` (atomically).

    ``meta`` goes into the JSON metadata: typically ``preprocessing`` (a :class:`Preprocessing` or
    dict, written whole, ``eval_resize`` included; default: what the backbone's weights expect and
    the authors' evaluation resize), ``stage``, ``train`` (the resolved training
    config), ``metrics``; anything JSON-serialisable. Returns the metadata written.
    """
    preprocessing = meta.pop("preprocessing", None) or _default_preprocessing(model)
    if isinstance(preprocessing, Preprocessing):
        preprocessing = preprocessing.to_dict()
    header = {
        "format": FORMAT_VERSION,
        "kind": model.kind,
        "model": model_config(model),
        "preprocessing": preprocessing,
        "labels": list(meta.pop("labels", EXPRESSIONS)),
        **meta,
    }
    text = json.dumps(header, default=str)
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    return json.loads(text)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputFormatError(
            path, f"not a safetensors checkpoint ({err}); convert foreign .pth files with `mtaffect convert`"
        ) from err
    if raw is None:
        raise InputFormatError(
            path, f"safetensors file without '{METADATA_KEY}' metadata: not an mtaffect checkpoint"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputFormatError(path, f"unreadable checkpoint metadata: {err}") from err
    if meta.get("format") != FORMAT_VERSION:
        raise InputFormatError(path, f"checkpoint format {meta.get('format')!r} is not {FORMAT_VERSION}")
    return meta


def state_dict_differences(
    expected: dict[str, torch.Size | tuple], found: dict[str, torch.Size | tuple], *, limit: int = 12
) -> list[str]:
    """Human-readable lines listing missing keys, unexpected keys and shape mismatches (empty if none)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: expected {list(expected[k])}, file has {list(found[k])}"
        for k in expected
        if k in found and tuple(expected[k]) != tuple(found[k])
    ]
    lines = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = "; ".join(items[:limit]) + (
                f"; … (+{len(items) - limit} more)" if len(items) > limit else ""
            )
            lines.append(f"{len(items)} {label}: {shown}")
    return lines


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` into ``model`` only if keys and shapes match exactly; else list the differences."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = state_dict_differences(expected, found)
    if problems:
        raise InputFormatError(path, "weights do not match the model:\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in ``path`` (a cnn, a gru, or a cnn_gru) in eval mode on ``device``
    (``auto`` and ``cuda`` as :func:`mtaffect.runtime.resolve_device` reads them).

    Returns ``(model, meta)``; ``meta["preprocessing"]`` is a :class:`Preprocessing`.
    """
    meta = read_metadata(path)
    try:
        model = create_model(meta["kind"], meta["model"])
    except (KeyError, ValueError, TypeError) as err:
        raise InputFormatError(path, f"cannot rebuild the model from the checkpoint metadata: {err}") from err
    load_state_strict(model, load_file(str(path)), path)
    model.to(resolve_device(device)).eval()  # "auto" as everywhere else
    meta = dict(meta)
    meta["preprocessing"] = stored_preprocessing(meta)
    return model, meta


# ---------------------------------------------------------------------------------------------
# A GRU stage's checkpoint holds the GRU alone; it runs on the embeddings of the CNN it was trained
# on. Every consumer (predict, the Python Predictor, export, evaluate, join, the demo) finds that
# CNN through :func:`find_cnn_checkpoint` and joins the two through :func:`load_model`.

CNN_GRU_CHECKPOINT = "cnn_gru.safetensors"
"""The self-contained CNN+GRU checkpoint a GRU stage writes beside its ``best.safetensors``."""

SEARCH_LEVELS = 4
"""How many folders above a GRU checkpoint's own folder are searched for a moved CNN."""


def recorded_cnn(meta: dict) -> tuple[list[str], str | None]:
    """The CNN a GRU checkpoint was trained on: ``(paths as recorded, sha256 or None)``.

    Paths: ``meta["cnn"]["checkpoint"]`` (absolute, written by the GRU stages) and the training
    config's ``model.cnn_checkpoint`` (as the user typed it, often relative to where training ran).
    """
    cnn = meta.get("cnn") or {}
    train_model = (meta.get("train") or {}).get("model") or {}
    paths = [str(p) for p in (cnn.get("checkpoint"), train_model.get("cnn_checkpoint")) if p]
    return list(dict.fromkeys(paths)), cnn.get("sha256")


def _candidates(recorded: list[str], gru_path: Path) -> list[Path]:
    """Where a recorded CNN path may be now: as recorded (absolute, or relative to the working
    folder), then every tail of it (``cnn_student/best.safetensors``, ``best.safetensors``) under the
    GRU checkpoint's folder and up to :data:`SEARCH_LEVELS` folders above it (a moved or copied run
    keeps its runs side by side), nearest folder and longest tail first."""
    folder = gru_path.resolve().parent
    bases = [folder, *list(folder.parents)[:SEARCH_LEVELS]]
    out: list[Path] = [Path(p) for p in recorded]
    for base in bases:
        for text in recorded:
            parts = [
                p for p in Path(text).parts[1 if Path(text).is_absolute() else 0 :] if p not in (".", "")
            ]
            out += [base.joinpath(*parts[-k:]) for k in range(len(parts), 0, -1)]
    seen, unique = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _cnn_problem(path: Path, gru_meta: dict) -> str | None:
    """Why ``path`` cannot be the CNN of a GRU with ``gru_meta`` (None if it can)."""
    try:
        meta = read_metadata(path)
    except InputFormatError as err:
        return str(err)
    if meta.get("kind") != "cnn":
        return f"{path}: a {meta.get('kind')!r} checkpoint, not a CNN"
    hidden = ((meta.get("model") or {}).get("cnn") or {}).get("hidden", 128)
    wanted = ((gru_meta.get("model") or {}).get("gru") or {}).get("input_size", 128)
    if hidden != wanted:
        return f"{path}: its heads give {hidden}-d embeddings, the GRU reads {wanted}-d"
    return None


def find_cnn_checkpoint(
    gru_path: str | Path, meta: dict | None = None, cnn: str | Path | None = None
) -> Path:
    """The CNN checkpoint whose embeddings the GRU-only checkpoint ``gru_path`` reads.

    ``cnn`` (``--cnn PATH``) overrides; otherwise the recorded path (:func:`recorded_cnn`) is tried
    as recorded, then relative to the GRU's run (:func:`_candidates`). A candidate must be a CNN
    checkpoint with the embedding size the GRU reads and, when the GRU records the CNN's sha256,
    exactly that file. Raises :class:`InputFormatError` naming what is missing and how to fix it.
    """
    gru_path = Path(gru_path)
    meta = meta if meta is not None else read_metadata(gru_path)
    recorded, sha = recorded_cnn(meta)
    if cnn is not None:
        path = Path(cnn)
        if not path.is_file():
            raise InputFormatError(path, "CNN checkpoint (--cnn) not found")
        problem = _cnn_problem(path, meta)
        if problem:
            raise InputFormatError(gru_path, f"--cnn {problem}")
        if sha and file_sha256(path) != sha:
            warnings.warn(
                f"{path} is not the CNN {gru_path} was trained on (sha256 differs from {sha[:12]}…); "
                "its predictions come from embeddings the GRU never saw",
                stacklevel=2,
            )
        return path
    rejected = []
    for path in _candidates(recorded, gru_path):
        if not path.is_file() or path.resolve() == gru_path.resolve():
            continue
        problem = _cnn_problem(path, meta)
        if problem is None and sha and file_sha256(path) != sha:
            problem = f"{path}: sha256 differs from the CNN the GRU was trained on ({sha[:12]}…)"
        if problem is None:
            return path
        rejected.append(problem)
    where = f"model.cnn_checkpoint={recorded[-1]!r}" if recorded else "no model.cnn_checkpoint"
    tried = "; rejected " + "; ".join(rejected) if rejected else ""
    raise InputFormatError(
        gru_path,
        f"a GRU-only checkpoint runs on the embeddings of its CNN, which was not found (its training "
        f"config records {where}; searched as recorded and under the run's folders{tried}). "
        f"Pass --cnn CNN.safetensors (Python: cnn=...), or use the {CNN_GRU_CHECKPOINT} its stage "
        "wrote beside it, or join them once: mtaffect join CNN GRU --out FILE",
    )


def load_model(
    path: str | Path, *, cnn: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """A model that runs on face crops: a ``cnn`` or ``cnn_gru`` checkpoint as stored, a GRU-only
    checkpoint joined with its CNN (:func:`find_cnn_checkpoint`; ``cnn`` overrides) into a
    :class:`~mtaffect.models.gru.CNNGRU`. Eval mode on ``device``; returns ``(model, meta)``.

    For a joined GRU, ``meta`` is the GRU's (stage, train config, metrics) with ``kind`` "cnn_gru",
    the CNN's preprocessing with the GRU's ``eval_resize`` (the GRU was trained and validated on
    embeddings of crops warped with it), and ``joined = {"cnn": path, "gru": path, "gru_kind": "gru"}``.
    """
    from mtaffect.errors import UserError
    from mtaffect.models.gru import CNNGRU

    header = read_metadata(path)
    if header.get("kind") != "gru":
        if cnn is not None:
            raise UserError(
                f"{path}: --cnn applies to GRU-only checkpoints, this one is {header.get('kind')!r}"
            )
        return load_checkpoint(path, device=device)
    cnn_path = find_cnn_checkpoint(path, header, cnn)
    cnn_model, cnn_meta = load_checkpoint(cnn_path, device=device)
    gru_model, meta = load_checkpoint(path, device=device)
    try:
        model = CNNGRU(cnn_model, gru_model)
    except ValueError as err:
        raise InputFormatError(path, f"cannot join with {cnn_path}: {err}") from err
    meta.update(
        kind="cnn_gru",
        preprocessing=replace(cnn_meta["preprocessing"], eval_resize=meta["preprocessing"].eval_resize),
        joined={"cnn": str(cnn_path), "gru": str(path), "gru_kind": "gru"},
    )
    return model.eval(), meta


def join_checkpoints(
    cnn: str | Path | None, gru: str | Path, out: str | Path, *, overwrite: bool = False, **meta: Any
) -> dict:
    """Write the self-contained CNN+GRU checkpoint ``out`` of a GRU-only checkpoint and its CNN
    (``cnn``; None: the one :func:`find_cnn_checkpoint` finds). Atomic; refuses to replace ``out``
    unless ``overwrite``. ``meta`` adds to or overrides the GRU's metadata. Returns the metadata."""
    from mtaffect.errors import ExistingRunError, UserError

    out = Path(out)
    if out.exists() and not overwrite:
        raise ExistingRunError(f"{out} exists; pass --overwrite to replace it")
    kind = read_metadata(gru).get("kind")
    if kind != "gru":
        raise UserError(f"{gru}: expected a GRU-only checkpoint (kind 'gru'), this one is {kind!r}")
    model, joined = load_model(gru, cnn=cnn)
    sources = {
        part: {"file": str(Path(p).resolve()), "sha256": file_sha256(p)}
        for part, p in (("cnn", joined["joined"]["cnn"]), ("gru", gru))
    }
    keep = {k: v for k, v in joined.items() if k not in ("format", "kind", "model", "joined")}
    return save_checkpoint(out, model, **{**keep, "sources": sources, **meta})
