"""Typed config: recipes as diffs (_base_), YAML-typed overrides, named errors, resolve round trip,
recipe lookup by name or path, and the owners' sections checked where the stage builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtaffect.config import (
    CONFIG_DIR,
    Config,
    apply_overrides,
    config_from_resolved,
    load_config,
    load_yaml_tree,
    merge,
    packaged_recipes,
    recipe_path,
    resolve,
)
from mtaffect.errors import InputFormatError, UserError


def test_packaged_recipes_load_and_name_their_stage():
    for name in ("cnn_teacher", "cnn_student", "gru_teacher", "gru_student"):
        config = load_config(name)
        assert config.stage.name == name
    assert load_config("gru_teacher").train.batch_per_task == 16  # 16 windows per task set
    assert load_config("cnn_teacher").train.batch_per_task == 64
    student = load_config(CONFIG_DIR / "cnn_student.yaml")
    assert student.stage.shared_labels is True
    assert student.optim.betas == [0.5, 0.999] and student.optim.lr == pytest.approx(1e-4)
    assert student.train.patience == 5 and student.train.epochs == 40


def test_base_chain_is_relative_to_the_file_and_diffs_merge_deeply(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("train:\n  epochs: 7\n  seed: 3\nmodel:\n  cnn:\n    hidden: 64\n")
    (tmp_path / "sub" / "child.yaml").write_text("_base_: ../root.yaml\ntrain:\n  seed: 9\n")
    config = load_config(tmp_path / "sub" / "child.yaml")
    assert (config.train.epochs, config.train.seed) == (7, 9)
    assert config.model.cnn == {"hidden": 64}


def test_overrides_are_yaml_typed():
    overrides = [
        "train.epochs=3",
        "stage.shared_labels=false",
        "optim.betas=[0.9, 0.99]",
        "train.amp=bf16",
        "optim.lr=3e-4",
        "model.cnn.backbone=resnet_tiny",
    ]
    config = load_config("cnn_teacher", overrides)
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.stage.shared_labels is False
    assert config.optim.betas == [0.9, 0.99]
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.model.cnn["backbone"] == "resnet_tiny"


def test_int_is_accepted_for_a_float_key():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "train.epoch; did you mean epochs"),
        ("trian.epochs=3", "trian; did you mean train"),
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("data.index=[1]", "data.index: expected a string"),
        ("stage.shared_labels=3", "expected true/false"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_config("cnn_teacher", [override])


def _build_section(section: str, config: Config, tmp_path) -> None:
    """Build the component that owns ``section`` the way a stage does, up to its config check."""
    import pandas as pd

    from mtaffect.train import components
    from mtaffect.train.stages import _loss_config, run_stage

    if section == "model.cnn":
        components.build_cnn(config)
    elif section == "model.gru":
        components.build_gru(config)
    elif section == "loss":
        _loss_config(config)
    elif section == "data.task_sets":
        components.build_frame_data(config, pd.DataFrame(), {})  # the check comes before the index is read
    else:  # data.sequences: checked by the GRU stages' data builder, before the index is read
        run_stage(config, tmp_path / "run", device="cpu")


OWNED_SECTION_TYPOS = [
    ("cnn_teacher", "model.cnn.backbon=resnet_tiny", "model.cnn.backbon; did you mean backbone"),
    ("gru_teacher", "model.gru.hiden=32", "model.gru.hiden; did you mean hidden"),
    ("cnn_teacher", "loss.temprature=2", "loss.temprature; did you mean temperature"),
    ("cnn_teacher", "data.task_sets.va_evry=3", "data.task_sets.va_evry; did you mean va_every"),
    ("gru_teacher", "data.sequences.lenght=8", "data.sequences.lenght; did you mean length"),
]


@pytest.mark.parametrize(("stage", "override", "message"), OWNED_SECTION_TYPOS)
def test_unknown_key_of_each_owned_section_is_named_by_its_builder(stage, override, message, tmp_path):
    *section, key = override.split("=")[0].split(".")
    config = load_config(stage, [override, "train.progress=false", "model.cnn_checkpoint=missing.pt"])
    node = resolve(config)
    for part in section:
        node = node[part]
    assert key in node  # loading keeps an owner's section as given: its builder is the one check
    with pytest.raises(UserError, match=f"unknown config key {message}"):
        _build_section(".".join(section), config, tmp_path)


@pytest.mark.parametrize("override", [case[1] for case in OWNED_SECTION_TYPOS])
def test_every_owned_section_is_checked_before_a_run_starts(override, tmp_path, capsys):
    # check_config builds each section up front: a typo in loss or data.sequences must not wait for
    # the data pipeline or the feature cache; `mtaffect train --print-config` refuses it too
    from mtaffect.cli import main
    from mtaffect.train.stages import check_config

    stage = next(case[0] for case in OWNED_SECTION_TYPOS if case[1] == override)
    key = override.split("=")[0]
    with pytest.raises(UserError, match=f"unknown config key {key}"):
        check_config(load_config(stage, [override]))
    out = tmp_path / "run"
    assert main(["train", stage, override, "--out", str(out), "--print-config"]) == 2
    captured = capsys.readouterr()
    assert key in captured.err and captured.out == ""
    assert not out.exists()
    check_config(load_config(stage))  # the packaged recipe itself passes


def test_owner_dataclass_rejects_bad_values_as_user_errors():
    from mtaffect.train.components import build_cnn

    with pytest.raises(UserError, match="config section model.cnn"):
        build_cnn(load_config("cnn_teacher", ["model.cnn.backbone=resnet51"]))


def test_recipes_are_found_by_packaged_name_or_path(tmp_path, monkeypatch):
    stages = {"cnn_teacher", "cnn_student", "gru_teacher", "gru_student"}
    assert stages | {"base", "demo"} <= set(packaged_recipes())
    assert recipe_path("demo") == CONFIG_DIR / "demo.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  epochs: 2\n")
    assert recipe_path(own) == own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn_teacher").mkdir()  # e.g. a run folder named like the stage does not hide the recipe
    assert recipe_path("cnn_teacher") == CONFIG_DIR / "cnn_teacher.yaml"
    (tmp_path / "demo").write_text("train:\n  epochs: 5\n")  # a user's own file wins over a packaged name
    assert recipe_path("demo") == Path("demo") and load_config("demo").train.epochs == 5
    with pytest.raises(UserError, match=r"cnn_techer: config file not found.*\(base, cnn_student"):
        recipe_path("cnn_techer")


def test_merge_is_deep_and_leaves_its_inputs_alone():
    base = {"train": {"epochs": 3, "seed": 1}, "model": {"cnn": {"hidden": 8}}}
    diff = {"train": {"seed": 2}, "data": {"sequences": {"length": 8}}}
    merged = merge(base, diff)
    assert merged == {
        "train": {"epochs": 3, "seed": 2},
        "model": {"cnn": {"hidden": 8}},
        "data": {"sequences": {"length": 8}},
    }
    apply_overrides(merged, ["model.cnn.hidden=16", "data.sequences.length=4"])
    changed = apply_overrides(base, ["model.cnn.hidden=16"])
    assert changed["model"]["cnn"]["hidden"] == 16
    assert base["model"]["cnn"]["hidden"] == 8 and diff["data"]["sequences"]["length"] == 8
    assert merged["model"]["cnn"]["hidden"] == 8


def test_override_values_are_typed_like_yaml():
    tree = apply_overrides({}, ["train.epochs=3", "stage.teacher=null", "train.amp=off", "data.index="])
    assert tree == {"train": {"epochs": 3, "amp": False}, "stage": {"teacher": None}, "data": {"index": ""}}


def test_malformed_override_and_yaml_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="key.sub=value"):
        apply_overrides({}, ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(InputFormatError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_yaml_tree(tmp_path / "a.yaml")


def test_resolve_round_trips_and_is_json_serialisable():
    import json

    config = load_config("gru_student", ["stage.teacher=t.safetensors", "train.seed=5"])
    resolved = resolve(config)
    json.dumps(resolved)
    again = config_from_resolved(json.loads(json.dumps(resolved)))
    assert again == config
    assert isinstance(again, Config)


def test_loss_decoding_follows_the_model():
    from mtaffect.train.stages import _loss_config

    config = load_config("cnn_teacher", ["model.cnn.va_decoding=centres"])
    assert _loss_config(config).va_decode == "centres"
    default = load_config("cnn_teacher", [])
    assert _loss_config(default).va_decode == "linspace"
    # one vocabulary: an older name on one model section and the current one on the other agree
    aliases = load_config("gru_teacher", ["model.cnn.va_decoding=authors", "model.gru.va_decoding=linspace"])
    assert _loss_config(aliases).va_decode == "linspace"
    clash = load_config("cnn_teacher", ["model.cnn.va_decoding=centres", "loss.va_decode=authors"])
    with pytest.raises(UserError, match="disagrees"):
        _loss_config(clash)
