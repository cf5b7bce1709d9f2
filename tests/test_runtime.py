"""mtaffect.runtime: the one home of device resolution, the AMP policy, the inference context, hashing."""

from __future__ import annotations

import pytest
import torch

from mtaffect.errors import UserError
from mtaffect.runtime import amp_dtype, file_sha256, inference, resolve_device, weights_sha256
from mtaffect.testing import tiny_checkpoint, tiny_cnn


def test_devices_by_name(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("meta")) == torch.device("meta")  # a device passes through
    assert resolve_device("meta") == torch.device("meta")  # other device types torch knows, as given
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_cuda_means_this_processs_gpu_under_torchrun(monkeypatch) -> None:
    # evaluation or the feature cache called with "cuda" inside a torchrun process: its own GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("cuda") == torch.device("cuda:2")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:3") == torch.device("cuda:3")
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(UserError, match="process 4 of this machine has no GPU"):
        resolve_device("auto")


def test_amp_is_off_on_cpu_whatever_is_asked() -> None:
    for request in ("auto", "bf16", "fp16", "off", True, False):
        assert amp_dtype("cpu", request) is None
    with pytest.raises(UserError, match="amp must be one of"):
        amp_dtype("cpu", "int8")


def test_inference_restores_each_models_own_mode() -> None:
    training, evaluating = tiny_cnn(0).train(), tiny_cnn(1).eval()
    with inference(training, evaluating):
        assert not training.training and not evaluating.training
        assert not torch.is_grad_enabled()
    assert training.training and not evaluating.training
    with pytest.raises(RuntimeError, match="inside"), inference(training):
        raise RuntimeError("inside")
    assert training.training  # given back on an error too


def test_weights_hash_names_the_weights_not_the_object(tmp_path) -> None:
    assert weights_sha256(tiny_cnn(0)) == weights_sha256(tiny_cnn(0))
    changed = tiny_cnn(0)
    with torch.no_grad():
        changed.heads["VA"].fc_1.bias[0] += 1e-6  # one float32 step is another model
    assert weights_sha256(changed) != weights_sha256(tiny_cnn(0))
    path = tiny_checkpoint(tmp_path / "a.safetensors", "cnn")
    assert file_sha256(path) == file_sha256(path) and len(file_sha256(path)) == 64


def test_prediction_resolves_auto_like_everything_else(tmp_path) -> None:
    from mtaffect.predict.runtime import FaceModel

    path = tiny_checkpoint(tmp_path / "cnn.safetensors", "cnn")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert FaceModel.from_checkpoint(path, device="auto", backend="torch").device == expected
