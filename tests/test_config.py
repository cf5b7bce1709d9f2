"""Typed config: recipes as diffs (_base_), YAML-typed overrides, named errors, resolve round trip."""

from __future__ import annotations

import pytest

from mtaffect.config import (
    CONFIG_DIR,
    Config,
    apply_overrides,
    config_from_resolved,
    load_config,
    load_yaml_tree,
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
        ("model.cnn.backbon=resnet_tiny", "model.cnn.backbon; did you mean backbone"),
        ("loss.temprature=2", "loss.temprature; did you mean temperature"),
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("data.index=[1]", "data.index: expected a string"),
        ("stage.shared_labels=3", "expected true/false"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_config("cnn_teacher", [override])


def test_owner_dataclass_rejects_bad_values_as_user_errors():
    with pytest.raises(UserError, match="model.cnn"):
        load_config("cnn_teacher", ["model.cnn.backbone=resnet51"])


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
    assert _loss_config(config).va_decode in ("centres", "bin_centres")
    default = load_config("cnn_teacher", [])
    assert _loss_config(default).va_decode in ("authors", "linspace")
    clash = load_config("cnn_teacher", ["model.cnn.va_decoding=centres", "loss.va_decode=authors"])
    with pytest.raises(UserError, match="disagrees"):
        _loss_config(clash)
