"""Checkpoints: safetensors + metadata that rebuild the model from the file alone."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mtaffect.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from mtaffect.errors import InputFormatError
from mtaffect.labels import EXPRESSIONS
from mtaffect.models import CNNGRU, CNNConfig, GRUConfig, MultitaskCNN, Preprocessing, TemporalModel
from mtaffect.testing import trained_like


@pytest.mark.parametrize("kind", ["cnn", "gru", "cnn_gru"])
def test_round_trip_rebuilds_the_same_model(tmp_path, kind):
    torch.manual_seed(0)
    cnn = MultitaskCNN(CNNConfig(backbone="resnet_tiny", va_decoding="centres"))
    gru = TemporalModel(GRUConfig(hidden=32))
    model = trained_like({"cnn": cnn, "gru": gru, "cnn_gru": CNNGRU(cnn, gru, chunk_frames=8)}[kind])
    path = tmp_path / f"{kind}.safetensors"
    pre = Preprocessing(size=64)
    save_checkpoint(
        path, model, preprocessing=pre, stage="teacher", metrics={"score": 0.5}, train={"lr": 1e-4}
    )
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert meta["kind"] == kind and meta["stage"] == "teacher" and meta["metrics"] == {"score": 0.5}
    assert meta["labels"] == list(EXPRESSIONS) and meta["preprocessing"] == pre
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    if kind == "gru":
        x = {"EXPR": torch.randn(1, 6, 128), "VA": torch.randn(1, 6, 128)}
    elif kind == "cnn":
        x = torch.randn(2, 3, 64, 64)
    else:
        x = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).valence, model(x).valence)
    if kind == "cnn_gru":
        assert loaded.chunk_frames == 8 and loaded.gru.config.hidden == 32


def test_metadata_is_plain_json_in_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, MultitaskCNN(CNNConfig(backbone="resnet_tiny")))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["mtaffect"])
    assert meta["format"] == 1 and meta["kind"] == "cnn"
    assert meta["model"]["cnn"]["backbone"] == "resnet_tiny"
    assert meta["preprocessing"]["mean"] == [131.0912, 103.8827, 91.4953]  # FER+ for caffe trunks
    assert read_metadata(path)["kind"] == "cnn"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_mismatched_weights_are_refused_with_a_list(tmp_path):
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny"))
    path = tmp_path / "bad.safetensors"
    save_checkpoint(path, model)
    meta = read_metadata(path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["heads.EXPR.fc_1.bias"]
    state["heads.VA.fc_1.weight"] = torch.zeros(41, 128)
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path), metadata={"mtaffect": json.dumps(meta)})
    with pytest.raises(InputFormatError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert str(path) in text
    assert "1 missing: heads.EXPR.fc_1.bias" in text
    assert "1 unexpected: extra.weight" in text
    assert "heads.VA.fc_1.weight: expected [40, 128], file has [41, 128]" in text


def test_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(InputFormatError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    pth = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, pth)
    with pytest.raises(InputFormatError, match="mtaffect convert"):
        load_checkpoint(pth)
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(InputFormatError, match="not an mtaffect checkpoint"):
        load_checkpoint(plain)
    wrong = tmp_path / "wrong.safetensors"
    save_file(
        {"a": torch.zeros(1)}, str(wrong), metadata={"mtaffect": json.dumps({"format": 1, "kind": "x"})}
    )
    with pytest.raises(InputFormatError, match="cannot rebuild"):
        load_checkpoint(wrong)
