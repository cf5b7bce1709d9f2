"""Converters for the weights users bring: the FER+ ResNet-50 and the authors' CNN / CNN+GRU checkpoints.

Key layouts: ``../shared/reference/`` (``ferplus_backbone_keys.tsv``, ``cnn_checkpoint_keys.tsv``,
``gru_checkpoint_keys.tsv``). Files are read with ``torch.load(weights_only=True)`` (never a full
unpickle), with or without ``num_batches_tracked`` buffers and with or without DataParallel's
``module.`` prefix, or from the single ``.pth``/``.pt`` inside a ``.zip`` download (:func:`zip_member`).
The layout is recognised from the keys (:func:`detect_source`) unless the caller names it. A file
whose keys or shapes differ from the layout is refused with the list of differences.

The FER+ network's Caffe names map onto our caffe-layout :class:`~mtaffect.models.resnet.ResNet`:
``conv1_7x7_s2[_bn]`` → ``conv1``/``bn1``; ``conv{S}_{B}_1x1_reduce`` → ``layer{S-1}.{B-1}.conv1``,
``_3x3`` → ``conv2``, ``_1x1_increase`` → ``conv3``, ``_1x1_proj`` → ``downsample.0`` (each ``_bn``
to the matching BatchNorm); the 1×1 ``classifier`` conv (8 FER+ classes) → ``fc``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from mtaffect.checkpoint import save_checkpoint, state_dict_differences
from mtaffect.errors import InputFormatError
from mtaffect.models.cnn import CNNConfig, MultitaskCNN
from mtaffect.models.gru import CNNGRU, GRUConfig, TemporalModel
from mtaffect.models.preprocessing import FERPLUS
from mtaffect.runtime import file_sha256

SOURCES = ("ferplus", "authors-cnn", "authors-gru")

_BLOCK_PART = {"1x1_reduce": "conv1", "3x3": "conv2", "1x1_increase": "conv3", "1x1_proj": "downsample.0"}
_BN_PART = {"conv1": "bn1", "conv2": "bn2", "conv3": "bn3", "downsample.0": "downsample.1"}
_OUR_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)$")


def ferplus_name(key: str) -> str:
    """Our caffe-layout key → the FER+ key (``layer2.0.bn1.weight`` → ``conv3_1_1x1_reduce_bn.weight``)."""
    if key.startswith("conv1."):
        return "conv1_7x7_s2." + key[len("conv1.") :]
    if key.startswith("bn1."):
        return "conv1_7x7_s2_bn." + key[len("bn1.") :]
    if key.startswith("fc."):
        return "classifier." + key[len("fc.") :]
    match = _OUR_BLOCK.match(key)
    if not match:
        raise KeyError(f"no FER+ name for {key!r}")
    stage, block, part, leaf = match.groups()
    stem = f"conv{int(stage) + 1}_{int(block) + 1}_"
    for caffe, ours in _BLOCK_PART.items():
        if part == ours:
            return f"{stem}{caffe}.{leaf}"
        if part == _BN_PART[ours]:
            return f"{stem}{caffe}_bn.{leaf}"
    raise KeyError(f"no FER+ name for {key!r}")  # pragma: no cover - the regex admits only mapped parts


def ferplus_module_name(module: str) -> str:
    """Our module path → the FER+ module name (``layer4.2.conv2`` → ``conv5_3_3x3``), e.g. for traces."""
    return ferplus_name(module + ".weight")[: -len(".weight")]


def _backbone_key(key: str) -> str:
    return "backbone.model." + ferplus_name(key[len("backbone.") :])


def authors_cnn_name(key: str) -> str:
    """Our :class:`MultitaskCNN` key → the authors' CNN checkpoint key (``cnn_checkpoint_keys.tsv``)."""
    if key.startswith("backbone."):
        return _backbone_key(key)
    for task, index in (("EXPR", 0), ("VA", 1)):
        prefix = f"heads.{task}."
        if key.startswith(prefix):
            return f"classifier.{index}." + key[len(prefix) :]
    raise KeyError(f"no authors' CNN name for {key!r}")


def authors_gru_name(key: str) -> str:
    """Our :class:`CNNGRU` key → the authors' CNN+GRU checkpoint key (``gru_checkpoint_keys.tsv``)."""
    if key.startswith("cnn."):
        return "backbone." + authors_cnn_name(key[len("cnn.") :])
    for task, index in (("EXPR", 0), ("VA", 1)):
        prefix = f"gru.heads.{task}."
        if key.startswith(prefix + "gru."):
            return f"classifier.{index}.GRU_layer." + key[len(prefix + "gru.") :]
        if key.startswith(prefix + "fc."):
            return f"classifier.{index}.fc_1." + key[len(prefix + "fc.") :]
    raise KeyError(f"no authors' GRU name for {key!r}")


WEIGHT_SUFFIXES = (".pth", ".pt")


def zip_member(path: str | Path, member: str | None = None) -> str | None:
    """The ``.pth``/``.pt`` file inside a ``.zip`` download that holds the weights; None when ``path``
    is a weights file itself (PyTorch's own format is a zip too: it holds ``data.pkl``, no ``.pth``).

    ``member`` picks one by name (or base name) when the archive holds several.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    weights = [
        n
        for n in names
        if n.lower().endswith(WEIGHT_SUFFIXES)
        and not n.startswith("__MACOSX/")
        and not PurePosixPath(n).name.startswith("._")
    ]
    if not weights and any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return None  # a PyTorch file (zip format), whatever its suffix
    if member is not None:
        chosen = [n for n in weights if member in (n, PurePosixPath(n).name)]
        if len(chosen) != 1:
            raise InputFormatError(
                path,
                f"--member {member!r}: not one of the .pth/.pt files inside ({', '.join(weights) or 'none'})",
            )
        return chosen[0]
    if len(weights) == 1:
        return weights[0]
    if not weights:
        shown = ", ".join(names[:8]) + (f", … (+{len(names) - 8})" if len(names) > 8 else "")
        raise InputFormatError(path, f"the zip holds no .pth/.pt file (it holds: {shown or 'nothing'})")
    raise InputFormatError(
        path, f"the zip holds {len(weights)} weight files ({', '.join(weights)}): pick one with --member NAME"
    )


def read_foreign_state(path: str | Path, *, member: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a foreign ``.pth`` file (or of the one ``.pth``/``.pt`` inside a ``.zip``:
    :func:`zip_member`), loaded with ``weights_only=True``; ``module.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "file not found")
    inner = zip_member(path, member)
    where = f"{path}!{inner}" if inner else path
    try:
        if inner is None:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read(inner))
            obj = torch.load(data, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise InputFormatError(
            where, f"cannot read as a weights-only PyTorch file (nothing else is unpickled): {err}"
        ) from err
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputFormatError(where, "expected a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _convert_state(
    model: nn.Module,
    foreign: dict[str, torch.Tensor],
    name_of: Callable[[str], str],
    path: str | Path,
    *,
    skip: Callable[[str], bool] = lambda key: False,
) -> dict[str, torch.Tensor]:
    """Map ``foreign`` onto ``model``'s keys, checking every key and shape first."""
    ours = {k: v for k, v in model.state_dict().items() if not skip(k)}
    mapping = {name_of(k): k for k in ours}
    expected = {}
    for theirs, key in mapping.items():
        shape = tuple(ours[key].shape)
        if key.endswith("fc.weight") and theirs.endswith("classifier.weight"):
            shape = (*shape, 1, 1)  # the FER+ classifier is a 1×1 conv
        expected[theirs] = shape
    found = {k: tuple(v.shape) for k, v in foreign.items()}
    for theirs, key in mapping.items():  # old files lack num_batches_tracked: accept both
        if key.endswith("num_batches_tracked") and theirs not in found:
            expected.pop(theirs)
    problems = state_dict_differences(expected, found)
    if problems:
        raise InputFormatError(
            path, "keys or shapes do not match the expected layout:\n  " + "\n  ".join(problems)
        )
    state = {}
    for theirs, key in mapping.items():
        if theirs in foreign:
            state[key] = foreign[theirs].reshape(ours[key].shape).to(ours[key].dtype)
        else:
            state[key] = torch.zeros_like(ours[key])
    return state


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_ferplus_backbone(
    path: str | Path,
    *,
    keep_classifier: bool = True,
    seed: int = 0,
    state: dict[str, torch.Tensor] | None = None,
) -> MultitaskCNN:
    """A caffe-layout :class:`MultitaskCNN` with the FER+ trunk loaded and freshly initialised heads.

    The FER+ 8-class classifier is kept as ``backbone.fc`` (``backbone_classes=8``) unless
    ``keep_classifier`` is False; the multitask heads never use it. Returned in eval mode.
    ``state``: the file's tensors when already read (``path`` then only names it in errors).
    """
    config = CNNConfig(backbone="resnet50_caffe", backbone_classes=8 if keep_classifier else 0)
    model = _seeded(seed, lambda: MultitaskCNN(config))
    foreign = read_foreign_state(path) if state is None else state
    if not keep_classifier:
        foreign = {k: v for k, v in foreign.items() if not k.startswith("classifier.")}
    converted = _convert_state(model.backbone, foreign, ferplus_name, path)
    model.backbone.load_state_dict(converted, strict=True)
    return model.eval()


def load_authors_cnn(path: str | Path, *, state: dict[str, torch.Tensor] | None = None) -> MultitaskCNN:
    """The authors' CNN checkpoint (``net_epoch_*_id_resnet50.pth``) as a :class:`MultitaskCNN`, eval mode."""
    model = MultitaskCNN(CNNConfig(backbone="resnet50_caffe"))
    foreign = read_foreign_state(path) if state is None else state
    model.load_state_dict(_convert_state(model, foreign, authors_cnn_name, path), strict=True)
    return model.eval()


def load_authors_gru(path: str | Path, *, state: dict[str, torch.Tensor] | None = None) -> CNNGRU:
    """The authors' CNN+GRU checkpoint (``..._id_resnet50_GRU.pth``) as our :class:`CNNGRU`, eval mode."""
    model = CNNGRU(MultitaskCNN(CNNConfig(backbone="resnet50_caffe")), TemporalModel(GRUConfig()))
    foreign = read_foreign_state(path) if state is None else state
    model.load_state_dict(_convert_state(model, foreign, authors_gru_name, path), strict=True)
    return model.eval()


def detect_source(state: dict[str, torch.Tensor]) -> str | None:
    """Which layout a foreign state dict is in ("ferplus", "authors-cnn", "authors-gru"), or None."""
    if any(k.startswith("backbone.backbone.model.") for k in state):
        return "authors-gru"
    if any(k.startswith("backbone.model.") for k in state):
        return "authors-cnn"
    if "conv1_7x7_s2.weight" in state:
        return "ferplus"
    return None


def load_authors_checkpoint(path: str | Path, *, member: str | None = None) -> nn.Module:
    """The authors' released CNN or CNN+GRU checkpoint (layout detected from the keys), in eval mode.

    Feed it (B, 3, 112, 112) float tensors preprocessed as the FER+ weights expect: RGB 0–255 minus
    (131.0912, 103.8827, 91.4953), no resize (``mtaffect.models.preprocessing.FERPLUS.apply``); a CNN+GRU
    takes (B, T, 3, 112, 112). Outputs: expression logits (…, 7), valence and arousal bin logits (…, 20).
    A ``.zip`` download is read in place (:func:`zip_member`; ``member`` picks a file inside).
    """
    state = read_foreign_state(path, member=member)
    source = detect_source(state)
    if source == "authors-cnn":
        return load_authors_cnn(path, state=state)
    if source == "authors-gru":
        return load_authors_gru(path, state=state)
    raise InputFormatError(
        path,
        "not one of the authors' checkpoints (no 'backbone.model.' or 'backbone.backbone.model.' keys)"
        + (
            "; it is the FER+ backbone: use load_ferplus_backbone / --from ferplus"
            if source == "ferplus"
            else ""
        ),
    )





AUTHORS_REPOSITORY = "https://github.com/glmanhtu/multitask-abaw-2021"
# What `mtaffect info` says about converted weights (stored in their metadata under "about").
ABOUT: dict[str, dict[str, str]] = {
    "ferplus": {
        "model": "ResNet-50 (Caffe layout) trained for the 8 FER+ classes; the paper's starting point",
        "training_data": "FER+ (FER2013 faces relabelled by crowd-sourcing); not trained on valence/arousal",
        "licence": "the FER+ weights keep the terms of their publisher; FER2013 is for research use",
        "reference": "resnet50_ferplus_dag from the pytorch-benchmarks model zoo (S. Albanie)",
    },
    "authors-cnn": {
        "model": "the authors' multitask CNN student (ResNet-50 FER+ trunk, EXPR head + VA bins)",
        "training_data": "Aff-Wild2 (ABAW 2021 EXPR and VA sets, cropped_aligned) with ExpW, AFEW-VA "
        "and an EXPR_VA set (AffectNet in the paper; docs/models.md)",
        "licence": "no licence is stated for the weights; they inherit the research-only terms of "
        "Aff-Wild2 and AffectNet: research use, cite Vu & Beurton-Aimar (ABAW 2021)",
        "reference": AUTHORS_REPOSITORY,
    },
    "authors-gru": {
        "model": "the authors' CNN+GRU student: their frozen CNN student feeding two bidirectional GRU heads",
        "training_data": "CNN as authors-cnn; GRU heads on 32-frame windows of Aff-Wild2 only",
        "licence": "no licence is stated for the weights; they inherit the research-only terms of "
        "Aff-Wild2 and AffectNet: research use, cite Vu & Beurton-Aimar (ABAW 2021)",
        "reference": AUTHORS_REPOSITORY,
    },
}


def convert(
    source: str,
    src: str | Path,
    out: str | Path,
    *,
    keep_classifier: bool = True,
    member: str | None = None,
) -> dict:
    """Convert ``src`` (a FER+ or authors' ``.pth``, or a ``.zip`` holding one) into an mtaffect
    checkpoint ``out``; returns its meta.

    ``source``: "auto" recognises the layout from the keys (:func:`detect_source`); "ferplus",
    "authors-cnn", "authors-gru" insist on one (a file in another layout is refused with the list of
    differences). The metadata records where the weights came from (file, zip member, sha256 of
    each), what they were trained on and under which terms (``about``), for ``mtaffect info``.
    """
    if source not in ("auto", *SOURCES):
        raise ValueError(f"unknown source {source!r}; expected 'auto' or one of {SOURCES}")
    src = Path(src)
    state = read_foreign_state(src, member=member)
    detected = detect_source(state)
    if source == "auto":
        if detected is None:
            shown = ", ".join(list(state)[:5])
            raise InputFormatError(
                src,
                "keys match none of the known layouts (the FER+ ResNet-50, the authors' CNN, the authors' "
                f"CNN+GRU; first keys: {shown or 'none'}); see docs/models.md",
            )
        source = detected
    if source == "ferplus":
        model: nn.Module = load_ferplus_backbone(src, keep_classifier=keep_classifier, state=state)
        stage = "ferplus_init"
    elif source == "authors-cnn":
        model, stage = load_authors_cnn(src, state=state), "authors_cnn"
    else:
        model, stage = load_authors_gru(src, state=state), "authors_gru"
    origin = {"source": source, "detected": detected == source, "file": src.name, "sha256": file_sha256(src)}
    inner = zip_member(src, member)
    if inner is not None:
        with zipfile.ZipFile(src) as archive:
            origin.update(member=inner, member_sha256=hashlib.sha256(archive.read(inner)).hexdigest())
    # FERPLUS: the FER+ normalisation at 112 px and eval_resize 1.2, the authors' evaluation transform
    # (Resize(134) then CenterCrop(112), METHOD.md §4.4), so their checkpoints are fed as they were
    return save_checkpoint(
        out, model, preprocessing=FERPLUS, stage=stage, converted_from=origin, about=ABOUT[source]
    )
