"""Networks: layouts, shapes, the model surface, the GRU stage and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtaffect.models import (
    CNNGRU,
    CNNConfig,
    GRUConfig,
    MultitaskCNN,
    Preprocessing,
    TemporalModel,
    build_backbone,
    create_model,
    default_preprocessing,
    list_backbones,
    model_config,
)
from mtaffect.models.cnn import decoded
from mtaffect.models.outputs import Outputs
from mtaffect.runtime import amp_dtype


def _torchvision_resnet50_keys() -> list[str]:
    """torchvision's resnet50 state-dict keys, written out from its architecture (not imported)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{s}" for s in bn)]
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}."
            for i in (1, 2, 3):
                keys += [f"{prefix}conv{i}.weight", *(f"{prefix}bn{i}.{s}" for s in bn)]
            if block == 0:
                keys += [f"{prefix}downsample.0.weight", *(f"{prefix}downsample.1.{s}" for s in bn)]
    return [*keys, "fc.weight", "fc.bias"]


def test_torchvision_layout_has_torchvision_keys_and_shapes():
    net = build_backbone("resnet50", num_classes=1000)
    state = net.state_dict()
    expected = _torchvision_resnet50_keys()
    assert len(expected) == 320
    assert sorted(state) == sorted(expected)
    assert state["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)
    assert state["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert state["fc.weight"].shape == (1000, 2048)
    assert sum(p.numel() for p in net.parameters()) == 25_557_032  # torchvision's published count
    # A torchvision-style state dict (here: another instance's) loads strictly.
    other = build_backbone("resnet50", num_classes=1000)
    other.load_state_dict(state, strict=True)


def test_layouts_differ_where_the_caffe_network_does():
    caffe, tv = build_backbone("resnet50_caffe"), build_backbone("resnet50")
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    assert caffe.maxpool.ceil_mode and caffe.maxpool.padding == 0
    assert not tv.maxpool.ceil_mode and tv.maxpool.padding == 1
    last = caffe.layer4[-1]
    assert isinstance(last.drop2, nn.Dropout) and isinstance(last.drop3, nn.Dropout)
    assert last.drop2.p == 0.5 and last.drop3.p == 0.5
    assert not any(isinstance(m, nn.Dropout) for m in tv.modules())
    assert not any(isinstance(m, nn.Dropout) for block in caffe.layer4[:-1] for m in block.modules())
    # Same parameter shapes, different arithmetic: the same weights give different features.
    tv.load_state_dict(caffe.state_dict())
    caffe.eval(), tv.eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert not torch.allclose(caffe.forward_features(x), tv.forward_features(x), atol=1e-3)


def test_caffe_maps_at_odd_sizes_follow_ceil_mode_pool():
    caffe, tv = build_backbone("resnet_tiny").eval(), build_backbone("resnet_tiny").eval()
    tv_net = build_backbone("resnet50")
    # 100 px: conv1 → 50, ceil pool → 25 (torchvision: floor((50 + 2 - 3) / 2) + 1 = 25), then
    # caffe stride-2 1×1 convs: 25 → 13 → 7 → 4; torchvision 3×3/2 pad 1: 25 → 13 → 7 → 4.
    # 98 px: conv1 → 49; caffe pool ceil((49 - 3) / 2) + 1 = 24; torchvision floor((49 - 1) / 2) + 1 = 25.
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        assert caffe.maxpool(caffe.conv1(x)).shape[-1] == 24
        assert tv_net.maxpool(tv_net.conv1(torch.randn(1, 3, 98, 98))).shape[-1] == 25
    del tv


def test_dropout_sits_between_conv_and_batchnorm_in_last_block():
    net = build_backbone("resnet_tiny").train()
    block = net.layer4[-1]
    order: list[str] = []
    for name in ("conv2", "drop2", "bn2", "conv3", "drop3", "bn3"):
        getattr(block, name).register_forward_hook(lambda *_, n=name: order.append(n))
    net(torch.randn(2, 3, 64, 64))
    assert order == ["conv2", "drop2", "bn2", "conv3", "drop3", "bn3"]


@pytest.mark.parametrize("backbone", list_backbones())
def test_model_surface(backbone):
    torch.manual_seed(0)
    model = MultitaskCNN(CNNConfig(backbone=backbone)).eval()
    size = 112 if backbone.startswith("resnet50") else 64
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        out = model.forward_heads(features)
        again = model(x)
    assert features.shape == (3, model.feature_dim)
    assert out.expression.shape == (3, 7) and out.valence.shape == (3, 20) and out.arousal.shape == (3, 20)
    assert out.embeddings["EXPR"].shape == (3, 128) and out.embeddings["VA"].shape == (3, 128)
    torch.testing.assert_close(again.expression, out.expression)
    # The embedding is post-ReLU then BatchNorm: in eval with fresh running stats (mean 0, var 1) it is ≥ 0.
    assert (out.embeddings["EXPR"] >= -1e-4).all()
    pred = model.predict(x)
    assert set(pred) == {"expression_probabilities", "expression", "valence", "arousal"}
    torch.testing.assert_close(pred["expression_probabilities"].sum(-1), torch.ones(3))
    assert pred["valence"].shape == (3,) and pred["valence"].abs().max() <= 1


def test_small_backbones_feature_dims_and_heads_adapt():
    assert MultitaskCNN(CNNConfig(backbone="resnet_tiny")).feature_dim == 256
    assert MultitaskCNN(CNNConfig(backbone="resnet_small")).feature_dim == 512
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny", hidden=32))
    assert model.heads["VA"].bn0.num_features == 256 and model.heads["VA"].fc_1.out_features == 40
    assert model.heads["EXPR"].fc_0.out_features == 32


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny")).train()
    out = model(torch.randn(4, 3, 48, 48))
    loss = out.expression.logsumexp(-1).mean() + out.valence.square().mean() + out.arousal.mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_va_split_and_decoding():
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny")).eval()
    features = torch.randn(2, 256)
    with torch.no_grad():
        out = model.forward_heads(features)
        raw = model.heads["VA"](features)[0]
    torch.testing.assert_close(out.valence, raw[:, :20])
    torch.testing.assert_close(out.arousal, raw[:, 20:])
    # All mass on the last bin decodes to +1 with the authors' linspace values, 0.95 with centres.
    peaked = Outputs(torch.zeros(1, 7), torch.full((1, 20), -1e4), torch.full((1, 20), -1e4))
    peaked.valence[0, -1] = 0
    peaked.arousal[0, 0] = 0
    assert decoded(peaked)["valence"].item() == pytest.approx(1.0)
    assert decoded(peaked)["arousal"].item() == pytest.approx(-1.0)
    assert decoded(peaked, "centres")["valence"].item() == pytest.approx(0.95)


def test_keep_backbone_classifier_optional():
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny", backbone_classes=8)).eval()
    assert model.backbone.fc.weight.shape == (8, 256)
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 3, 64, 64)).shape == (1, 8)
        assert model(torch.randn(1, 3, 64, 64)).expression.shape == (1, 7)


def test_temporal_model_per_frame_outputs():
    torch.manual_seed(0)
    gru = TemporalModel(GRUConfig()).eval()
    emb = {"EXPR": torch.randn(2, 32, 128), "VA": torch.randn(2, 32, 128)}
    out = gru(emb)
    assert out.expression.shape == (2, 32, 7) and out.valence.shape == (2, 32, 20)
    assert out.arousal.shape == (2, 32, 20) and out.embeddings["VA"].shape == (2, 32, 128)
    assert gru.heads["EXPR"].gru.weight_ih_l0.shape == (192, 128)
    assert gru.heads["EXPR"].gru.weight_hh_l0_reverse.shape == (192, 64)
    # Bidirectional: changing the last frame changes the first frame's output.
    short = {k: v[:, :3].clone() for k, v in emb.items()}
    first = gru(short).expression[:, 0]
    short["EXPR"][:, -1] += 5
    assert (gru(short).expression[:, 0] - first).abs().max() > 1e-4
    with pytest.raises(KeyError, match="VA"):
        gru({"EXPR": emb["EXPR"]})
    pred = gru.predict(emb)
    assert pred["valence"].shape == (2, 32) and pred["expression"].shape == (2, 32)


def test_cnn_gru_runs_the_frozen_cnn_per_frame():
    torch.manual_seed(0)
    cnn = MultitaskCNN(CNNConfig(backbone="resnet_tiny"))
    model = CNNGRU(cnn, TemporalModel(), chunk_frames=4).train()
    assert not cnn.training and not any(p.requires_grad for p in cnn.parameters())
    frames = torch.randn(2, 5, 3, 48, 48)
    out = model(frames)
    assert out.expression.shape == (2, 5, 7) and out.arousal.shape == (2, 5, 20)
    # Embeddings equal the CNN's, frame by frame, whatever the chunking.
    with torch.no_grad():
        direct = cnn.embed(frames.reshape(10, 3, 48, 48))["VA"].reshape(2, 5, 128)
    torch.testing.assert_close(model.embed(frames)["VA"], direct)
    out.expression.sum().backward()
    assert model.gru.heads["EXPR"].gru.weight_ih_l0.grad is not None
    with pytest.raises(ValueError, match="128"):
        CNNGRU(MultitaskCNN(CNNConfig(backbone="resnet_tiny", hidden=32)), TemporalModel())


def test_registry_round_trip_and_errors():
    model = create_model("cnn_gru", {"cnn": {"backbone": "resnet_tiny"}, "gru": {}})
    assert isinstance(model, CNNGRU)
    rebuilt = create_model(model.kind, model_config(model))
    assert sorted(rebuilt.state_dict()) == sorted(model.state_dict())
    with pytest.raises(ValueError, match="did you mean 'cnn'"):
        create_model("cnnn")
    with pytest.raises(ValueError, match="unknown backbone"):
        CNNConfig(backbone="resnet18")
    with pytest.raises(ValueError, match="unknown CNNConfig keys"):
        CNNConfig.from_dict({"backbone": "resnet_tiny", "width": 3})


def test_preprocessing_ferplus_and_layouts():
    pre = Preprocessing()
    images = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    x = pre.apply(torch.from_numpy(images))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 112, 112)
    expected = images.astype(np.float32).transpose(0, 3, 1, 2) - np.array(pre.mean, np.float32)[:, None, None]
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)
    cl = pre.apply(images, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, x)
    np.testing.assert_allclose(pre.apply_numpy(images), expected, atol=1e-4)
    seq = pre.apply(np.stack([images, images]))
    assert seq.shape == (2, 2, 3, 112, 112)
    resized = pre.apply(np.zeros((1, 64, 64, 3), np.uint8))
    assert resized.shape == (1, 3, 112, 112)
    with pytest.raises(ValueError, match="uint8 RGB"):
        pre.apply(np.zeros((64, 64, 3), np.uint8))
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    imagenet = default_preprocessing("resnet50")
    assert imagenet.std[0] == pytest.approx(58.395)
    assert default_preprocessing("resnet_tiny", size=64).mean == pre.mean


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = MultitaskCNN(CNNConfig(backbone="resnet_small")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).expression
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl.expression, ref, atol=1e-4, rtol=1e-4)


def test_amp_dtype_choice():
    assert amp_dtype("cpu") is None
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        assert amp_dtype("cuda") in (torch.bfloat16, torch.float16)


def test_fold_batchnorm_keeps_eval_outputs():
    from mtaffect.models.resnet import fold_batchnorm

    torch.manual_seed(0)
    net = build_backbone("resnet_small").eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded.forward_features(x), net.forward_features(x), atol=1e-4, rtol=1e-4)
