"""Typed training configuration: one dataclass per component, YAML recipes written as diffs.

A recipe is a YAML file whose optional ``_base_:`` key names another recipe (relative to the
file) that it modifies; ``key.sub=value`` overrides from the command line are applied last and
parsed with YAML typing (``train.epochs=3``, ``train.amp=false``, ``x=null`` is None,
``optim.betas=[0.9,0.999]``) by :func:`apply_overrides`, the one override parser of ``mtaffect
train``, ``reproduce`` and ``demo``. :func:`recipe_path` finds a recipe by file path or packaged name
and :func:`merge` is the one deep merge of recipe diffs. Every key of the sections typed here is
checked against the dataclasses below; an unknown key is an error that names it and suggests the
closest known keys. :func:`resolve` turns a config back into a plain dict, which is saved inside
every checkpoint so that the weights always travel with the recipe that made them.

Sections owned by other modules (``model.cnn`` → :class:`mtaffect.models.cnn.CNNConfig`,
``model.gru`` → :class:`mtaffect.models.gru.GRUConfig`, ``loss`` →
:class:`mtaffect.losses.LossConfig`, ``data.task_sets`` → :class:`mtaffect.data.tasks.TaskSetConfig`,
``data.sequences`` → :class:`mtaffect.data.sequences.SequenceConfig`) are kept as mappings here and
checked, always, where the stage builds the component: the builder calls
``component(OwnerConfig, section, "dotted.path")``, which rejects an unknown key by its dotted path
exactly as :func:`from_dict` does. Why there and not here: this module sits below models, losses and
data in the layer order (docs/design.md), so it cannot import their dataclasses; importing them by
name at run time (and skipping the check when that failed) made validation depend on what happened
to import, and a registry filled by the owners on import would depend on import order the same way.
The builder is the one place that both knows the owner's class and always runs before the section
is used, so this file never duplicates another module's defaults or field names.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from mtaffect.errors import InputFormatError, UserError

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "StageConfig",
    "load_config",
    "from_dict",
    "apply_overrides",
    "resolve",
    "component",
    "merge",
    "recipe_path",
    "packaged_recipes",
    "load_yaml_tree",
    "config_from_resolved",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The packaged recipes (the repository's ``configs/`` is a link to this folder)."""


@dataclass
class DataConfig:
    """Where the frames come from and how they are cut into task sets, batches and windows."""

    index: str = ""
    """Frame index (Parquet) written by ``mtaffect index``; relative paths are relative to the CWD."""
    image_size: int = 112
    """Side of the square face crop the network sees (the paper: 112)."""
    resize_factor: float = 1.2
    """Augmentation and eval transform: resize to ``int(factor · size)``, then crop ``size``."""
    task_sets: dict = field(default_factory=dict)
    """Options of :class:`mtaffect.data.tasks.TaskSetConfig` (which task sets, static balancing);
    checked by the CNN stages' data builder."""
    use_task_sets: list = field(default_factory=lambda: ["EXPR", "VA", "EXPR_VA"])
    """Task sets trained on (Table 1 of the paper compares {EXPR, VA} with all three)."""
    sequences: dict = field(default_factory=dict)
    """GRU stages: window/feature-cache options passed to :mod:`mtaffect.features` (F2)."""
    features: str = ""
    """GRU stages: feature-cache folder; empty = ``<run>/../features`` next to the run folder."""


@dataclass
class ModelConfig:
    """Which network a stage trains and how it starts."""

    cnn: dict = field(default_factory=dict)
    """Options of :class:`mtaffect.models.cnn.CNNConfig`; checked when the CNN is built."""
    gru: dict = field(default_factory=dict)
    """Options of :class:`mtaffect.models.gru.GRUConfig`; checked when the GRU is built."""
    init_from: str = ""
    """Checkpoint whose matching weights initialise the model (e.g. a converted FER+ backbone).
    Empty = random initialisation. The student is a fresh model, not the teacher (METHOD.md §5)."""
    cnn_checkpoint: str = ""
    """GRU stages: the frozen CNN (the CNN student) whose embeddings feed the GRU."""


@dataclass
class OptimConfig:
    """Adam with the authors' constants (METHOD.md §5): lr 1e-4, betas (0.5, 0.999), constant lr."""

    lr: float = 1e-4
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0


@dataclass
class TrainConfig:
    """How the loop runs: epochs, early stopping, batches, device, reproducibility."""

    epochs: int = 40
    patience: int = 5
    """Stop after this many epochs without improvement of EXPR score + CCC_V + CCC_A (paper: 5,
    the authors' code: 6)."""
    seed: int = 0
    batch_per_task: int = 64
    """N samples per task set per step (64 frames for the CNN, 16 windows for the GRU)."""
    concat_task_sets: bool = False
    """False (authors): forward each task set separately, so BatchNorm statistics are per source."""
    max_steps_per_epoch: int = 0
    """Cap on steps per epoch (0 = the shortest task set decides, METHOD.md §4.2)."""
    save_every_steps: int = 1000
    """Also write the resume state every this many steps inside an epoch (0 = at epoch ends only):
    an interrupted epoch then continues from there, with the same result, instead of starting over."""
    workers: int = 0
    """DataLoader worker processes reading and augmenting batches (0 = in the training process)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    amp: Any = "auto"
    """auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 | fp16 | off (YAML's bare
    ``off``/``false`` reads as False and means off)."""
    channels_last: bool = True
    """Memory format of the CNN input and weights on CUDA (and on CPU, where it is 1.5× faster)."""
    compile: Any = "off"
    """off | default | reduce-overhead: run the training step through ``torch.compile`` (CUDA graphs
    with reduce-overhead); falls back to eager with a warning where compile fails
    (:mod:`mtaffect.train.compiled`). YAML's bare ``off``/``false`` reads as False and means off."""
    threads: int = 0
    """torch threads on CPU (0 = leave torch's default)."""
    progress: bool = True
    """Show a progress bar with ETA."""
    tensorboard: bool = True
    """Also write TensorBoard scalars when the package is installed."""


@dataclass
class StageConfig:
    """Which of the four stages this is, and for students, the teacher they learn from."""

    name: str = "cnn_teacher"
    """cnn_teacher | cnn_student | gru_teacher | gru_student (see mtaffect.train.stages.STAGES)."""
    teacher: str = ""
    """Student stages: the teacher checkpoint (frozen, eval mode, same augmented batch)."""
    shared_labels: bool = True
    """Student stages: eq. 10 (True: ground truth wherever a frame has it) or eq. 9 (False)."""


@dataclass
class Config:
    """One training recipe: every knob of one stage."""

    stage: StageConfig = field(default_factory=StageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict = field(default_factory=dict)
    """Options of :class:`mtaffect.losses.LossConfig`; checked when the stage builds its objective."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise InputFormatError(path, f"not valid YAML: {err}", None if line is None else line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFormatError(path, "a config file must be a mapping of sections")
    return data


def merge(base: Mapping, diff: Mapping) -> dict:
    """Deep merge of two recipe trees: mappings merge key by key, anything else in ``diff`` replaces
    ``base``. Returns a new tree whose mappings are all new dicts (lists and scalars are shared), so
    that editing the result, as :func:`apply_overrides` does, never changes ``base`` or ``diff``."""
    out = {key: merge({}, value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in diff.items():
        if isinstance(value, Mapping):
            out[key] = merge(out[key] if isinstance(out.get(key), Mapping) else {}, value)
        else:
            out[key] = value
    return out


def load_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The merged mapping of a recipe and its ``_base_`` chain (bases first)."""
    path = Path(path).resolve()
    if path in _seen:
        raise UserError(f"{path}: _base_ cycle ({' -> '.join(str(p) for p in (*_seen, path))})")
    data = _read_yaml(path)
    base_name = data.pop("_base_", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise InputFormatError(path, "_base_ must be a file name")
    base_path = (path.parent / base_name).resolve()
    return merge(load_yaml_tree(base_path, (*_seen, path)), data)


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped in the package (``cnn_teacher``, ``demo``, ...), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """The recipe file meant by ``name_or_path``: an existing file as given, else the packaged recipe
    of that name (``cnn_teacher`` → ``mtaffect/configs/cnn_teacher.yaml``). A user's own file wins
    over a packaged recipe of the same name; anything else is an error listing the packaged names."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{path.name}.yaml"
    if not path.suffix and len(path.parts) == 1 and packaged.is_file():
        return packaged
    raise UserError(
        f"{path}: config file not found, and not a packaged recipe ({', '.join(packaged_recipes())})"
    )


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=c`` overrides (YAML-typed values) to a config mapping; returns a new mapping."""
    out = merge({}, tree)
    for text in overrides:
        keys, value = _parse_override(text)
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return out


def _unknown_key(where: str, key: str, known: Sequence[str]) -> UserError:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return UserError(f"unknown config key {where + '.' if where else ''}{key}{hint}")


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """Check (and gently coerce, int → float) one value against its annotation."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is not None and type(None) in get_args(hint):  # Optional[...]
        if value is None:
            return None
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _check_type(where, value, inner[0])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    expected = origin or hint
    if expected is bool and not isinstance(value, bool):
        raise UserError(f"config key {where}: expected true/false, got {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"config key {where}: expected an integer, got {value!r}")
    if expected in (list, tuple) and not isinstance(value, (list, tuple)):
        raise UserError(f"config key {where}: expected a list, got {value!r}")
    if expected is dict and not isinstance(value, dict):
        raise UserError(f"config key {where}: expected a mapping, got {value!r}")
    if expected is str and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config key {where}: expected a string, got {value!r}")
    if expected is float and not isinstance(value, float):
        raise UserError(f"config key {where}: expected a number, got {value!r}")
    return list(value) if expected in (list, tuple) else value


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursively, rejecting unknown keys by name."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown_key(where, key, list(fields))
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise UserError(f"config key {path}: expected a mapping, got {value!r}")
            kwargs[name] = from_dict(hint, value, path)
        else:
            kwargs[name] = _check_type(path, value, hint)
    return cls(**kwargs)


def component(cls: type, values: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build another module's config dataclass from a dict section, with the same key checks.

    ``where`` is the section's dotted path (``"model.cnn"``): an unknown key is reported as
    ``unknown config key model.cnn.<key>``, a value the owner rejects as ``config section model.cnn: ...``.
    Every builder of a dict section of :class:`Config` calls this (see the module docstring)."""
    values = dict(values or {})
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise _unknown_key(where, key, known)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise UserError(f"config section {where}: {err}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a recipe (with its ``_base_`` chain), apply overrides, validate, return a :class:`Config`.

    ``path`` may be a file or the name of a packaged recipe (see :func:`recipe_path`).
    """
    tree = load_yaml_tree(recipe_path(path)) if path is not None else {}
    tree = apply_overrides(tree, overrides)
    return from_dict(Config, tree)


def resolve(config: Config) -> dict:
    """The config as a plain, JSON-serialisable dict (what checkpoints and run folders store)."""
    return dataclasses.asdict(config)


def config_from_resolved(resolved: Mapping[str, Any]) -> Config:
    """Inverse of :func:`resolve` (e.g. the config stored in a checkpoint)."""
    return from_dict(Config, resolved)
