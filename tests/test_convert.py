"""Converters: random-weight files in the FER+ / authors' layouts (built from the key tables in
../shared/reference/) convert and match a forward pass written here, independently, from the
FER+ layer table (functional conv/bn/pool calls in table order)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import zipfile
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtaffect.checkpoint import load_checkpoint
from mtaffect.cli import main
from mtaffect.convert import (
    AUTHORS_REPOSITORY,
    convert,
    ferplus_module_name,
    load_authors_checkpoint,
    load_ferplus_backbone,
    read_foreign_state,
)
from mtaffect.errors import InputFormatError
from mtaffect.models import CNNGRU, CNNConfig, MultitaskCNN, build_backbone
from mtaffect.models.preprocessing import FERPLUS
from mtaffect.runtime import file_sha256
from readme_blocks import commands, readme_block
from reference_tables import REFERENCE, key_table, random_state

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference key tables not available")


def layer_table() -> list[tuple[str, str, dict]]:
    rows = []
    for line in (REFERENCE / "ferplus_backbone_layers.tsv").read_text().splitlines()[1:]:
        name, kind, params = line.split("\t")
        rows.append((name, kind, json.loads(params)))
    return rows


# ------------------------------------------------------------------ independent reference forward
def reference_backbone(state: dict, x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """Run the FER+ layer table on ``x``: every layer in table order, eval mode; pool5 → global mean
    (the authors' AdaptiveAvgPool2d(1)); the classifier left out (the authors' Identity)."""
    w = lambda name, leaf: state[f"{prefix}{name}.{leaf}"]  # noqa: E731
    block_input = shortcut = None
    block = None
    for name, kind, p in layer_table():
        this_block = name.split("_")[0] + "_" + name.split("_")[1] if name.startswith("conv") else None
        if this_block != block and this_block is not None and not this_block.startswith("conv1"):
            block, block_input, shortcut = this_block, x, None
        on_shortcut = "_proj" in name
        if kind == "Conv2d":
            if name == "classifier":
                break
            source = block_input if on_shortcut else x
            y = F.conv2d(
                source, w(name, "weight"), None, p["stride"], p["padding"], p["dilation"], p["groups"]
            )
        elif kind == "BatchNorm2d":
            source = shortcut if on_shortcut else x
            y = F.batch_norm(
                source,
                w(name, "running_mean"),
                w(name, "running_var"),
                w(name, "weight"),
                w(name, "bias"),
                False,
                0.0,
                p["eps"],
            )
        elif kind == "ReLU":
            is_block_end = block is not None and name == f"{block}_relu"
            x = F.relu(x + (shortcut if shortcut is not None else block_input)) if is_block_end else F.relu(x)
            continue
        elif kind == "MaxPool2d":
            x = F.max_pool2d(
                x, p["kernel"], p["stride"], p["padding"], p["dilation"], ceil_mode=p["ceil_mode"]
            )
            continue
        elif kind == "Dropout":
            continue  # eval mode
        elif kind == "AvgPool2d":
            x = x.mean(dim=(2, 3))
            continue
        else:
            raise AssertionError(f"layer type {kind} not handled")
        if on_shortcut:
            shortcut = y
        else:
            x = y
    return x


def reference_head(state: dict, prefix: str, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def bn(name, t):
        s = lambda leaf: state[f"{prefix}{name}.{leaf}"]  # noqa: E731
        return F.batch_norm(t, s("running_mean"), s("running_var"), s("weight"), s("bias"), False, 0.0, 1e-5)

    emb = bn(
        "bn1", F.relu(F.linear(bn("bn0", f), state[f"{prefix}fc_0.weight"], state[f"{prefix}fc_0.bias"]))
    )
    return F.linear(emb, state[f"{prefix}fc_1.weight"], state[f"{prefix}fc_1.bias"]), emb


def reference_gru(state: dict, prefix: str, seq: torch.Tensor) -> torch.Tensor:
    """Bidirectional GRU written from its equations, gates stacked (r, z, n); then ReLU."""

    def direction(suffix: str, steps: torch.Tensor) -> torch.Tensor:
        wi, wh = state[f"{prefix}weight_ih_l0{suffix}"], state[f"{prefix}weight_hh_l0{suffix}"]
        bi, bh = state[f"{prefix}bias_ih_l0{suffix}"], state[f"{prefix}bias_hh_l0{suffix}"]
        h = torch.zeros(steps.shape[0], wh.shape[1], dtype=steps.dtype)
        outs = []
        for t in range(steps.shape[1]):
            gi, gh = F.linear(steps[:, t], wi, bi), F.linear(h, wh, bh)
            r = torch.sigmoid(gi[:, :64] + gh[:, :64])
            z = torch.sigmoid(gi[:, 64:128] + gh[:, 64:128])
            n = torch.tanh(gi[:, 128:] + r * gh[:, 128:])
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1)

    forward = direction("", seq)
    backward = direction("_reverse", seq.flip(1)).flip(1)
    return F.relu(torch.cat([forward, backward], -1))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return FERPLUS.apply(torch.randint(0, 256, (n, 112, 112, 3), generator=g, dtype=torch.uint8))


def _double(state: dict) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


# ----------------------------------------------------------------------------------------- tests
def test_key_tables_are_what_our_models_map_to():
    assert len(key_table("ferplus_backbone_keys.tsv")) == 320
    assert len(key_table("cnn_checkpoint_keys.tsv")) == 346
    assert len(key_table("gru_checkpoint_keys.tsv")) == 366


@pytest.mark.parametrize("size", [224, 112])
def test_caffe_layout_matches_the_ferplus_shape_trace(size):
    trace = json.loads((REFERENCE / "ferplus_shape_trace.json").read_text())[str(size)]
    net = build_backbone("resnet50_caffe", num_classes=8).eval()
    names = {
        "maxpool": "pool1_3x3_s2",
        "avgpool": "pool5_7x7_s1",
        "fc": "classifier",
        "layer4.2.drop2": "conv5_3_3x3_drop",
        "layer4.2.drop3": "conv5_3_1x1_increase_drop",
    }
    for module_name, module in net.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            names[module_name] = ferplus_module_name(module_name)
    seen: dict[str, tuple] = {}
    for module_name, caffe_name in names.items():
        net.get_submodule(module_name).register_forward_hook(
            lambda _m, _i, out, n=caffe_name: seen.__setitem__(n, tuple(out.shape))
        )
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    checked = 0
    for entry in trace:
        name, shape = entry
        if not isinstance(shape, list):  # the bare model's AvgPool2d(7) fails at 112: recorded as an error
            continue
        assert math.prod(seen[name]) == math.prod(shape) and seen[name][:2] == tuple(shape[:2]), name
        if len(shape) == 4 and name not in ("pool5_7x7_s1", "classifier"):
            assert seen[name] == tuple(shape), name
        checked += 1
    assert checked == len(trace) - (size == 112)


@pytest.mark.parametrize("variant", ["plain", "no_num_batches_tracked", "dataparallel"])
def test_authors_cnn_converts_and_matches_reference_forward(tmp_path, variant):
    table = key_table("cnn_checkpoint_keys.tsv")
    state = random_state(table, seed=1, batches_tracked=variant != "no_num_batches_tracked")
    saved = {f"module.{k}": v for k, v in state.items()} if variant == "dataparallel" else state
    src = tmp_path / "net_epoch_student_0_id_resnet50.pth"
    torch.save(saved, src)
    model = load_authors_checkpoint(src)
    assert isinstance(model, MultitaskCNN) and not model.training
    x = _images(2)
    with torch.no_grad():
        ours = model.double()(x.double())
        ref = _double(state)
        features = reference_backbone(ref, x.double(), "backbone.model.")
        expr, expr_emb = reference_head(ref, "classifier.0.", features)
        va, _ = reference_head(ref, "classifier.1.", features)
    assert ours.expression.shape == (2, 7) and ours.valence.shape == (2, 20)
    assert expr.abs().max() > 1e-2  # the check is not trivially about zeros
    assert (ours.expression - expr).abs().max() <= 1e-5
    assert (ours.valence - va[:, :20]).abs().max() <= 1e-5
    assert (ours.arousal - va[:, 20:]).abs().max() <= 1e-5
    assert (ours.embeddings["EXPR"] - expr_emb).abs().max() <= 1e-5
    # float32, as users run it: same within float32 rounding.
    with torch.no_grad():
        single = model.float()(x)
    assert (single.expression.double() - expr).abs().max() <= 1e-4
    if variant == "plain":  # the reference is sensitive to the layout: torchvision's computes otherwise
        torchvision_layout = MultitaskCNN(CNNConfig(backbone="resnet50")).double().eval()
        torchvision_layout.load_state_dict(model.double().state_dict())
        with torch.no_grad():
            assert (torchvision_layout(x.double()).expression - expr).abs().max() > 1e-4


def test_authors_gru_converts_and_matches_reference_forward(tmp_path):
    table = key_table("gru_checkpoint_keys.tsv")
    state = random_state(table, seed=2)
    src = tmp_path / "net_epoch_student_0_id_resnet50_GRU.pth"
    torch.save(state, src)
    model = load_authors_checkpoint(src)
    assert isinstance(model, CNNGRU) and not model.training
    frames = _images(6, seed=3).reshape(2, 3, 3, 112, 112)
    with torch.no_grad():
        ours = model.double()(frames.double())
        ref = _double(state)
        features = reference_backbone(
            ref, frames.double().reshape(6, 3, 112, 112), "backbone.backbone.model."
        )
        _, emb_expr = reference_head(ref, "backbone.classifier.0.", features)
        _, emb_va = reference_head(ref, "backbone.classifier.1.", features)
        h_expr = reference_gru(ref, "classifier.0.GRU_layer.", emb_expr.reshape(2, 3, 128))
        h_va = reference_gru(ref, "classifier.1.GRU_layer.", emb_va.reshape(2, 3, 128))
        expr = F.linear(h_expr, ref["classifier.0.fc_1.weight"], ref["classifier.0.fc_1.bias"])
        va = F.linear(h_va, ref["classifier.1.fc_1.weight"], ref["classifier.1.fc_1.bias"])
    assert ours.expression.shape == (2, 3, 7) and ours.valence.shape == (2, 3, 20)
    assert (ours.expression - expr).abs().max() <= 1e-5
    assert (ours.valence - va[..., :20]).abs().max() <= 1e-5
    assert (ours.arousal - va[..., 20:]).abs().max() <= 1e-5


def test_ferplus_backbone_converts_with_its_classifier(tmp_path):
    table = key_table("ferplus_backbone_keys.tsv")
    state = random_state(table, seed=4, batches_tracked=False)
    src = tmp_path / "resnet50_ferplus_dag.pth"
    torch.save(state, src)
    model = load_ferplus_backbone(src)
    x = _images(2, seed=5)
    with torch.no_grad():
        features = reference_backbone(_double(state), x.double())
        logits = F.linear(
            features, state["classifier.weight"].double().flatten(1), state["classifier.bias"].double()
        )
        ours = model.double().backbone(x.double())
    assert ours.shape == (2, 8)
    assert (ours - logits).abs().max() <= 1e-5
    dropped = load_ferplus_backbone(src, keep_classifier=False)
    assert dropped.config.backbone_classes == 0


def test_mismatched_file_is_refused_with_the_differences(tmp_path):
    state = random_state(key_table("cnn_checkpoint_keys.tsv"), seed=6)
    del state["classifier.0.fc_1.bias"]
    state["classifier.1.fc_1.weight"] = torch.zeros(42, 128)
    state["classifier.2.fc_1.weight"] = torch.zeros(3, 128)
    src = tmp_path / "bad.pth"
    torch.save(state, src)
    with pytest.raises(InputFormatError) as err:
        load_authors_checkpoint(src)
    text = str(err.value)
    assert "bad.pth" in text
    assert "1 missing: classifier.0.fc_1.bias" in text
    assert "1 unexpected: classifier.2.fc_1.weight" in text
    assert "classifier.1.fc_1.weight: expected [40, 128], file has [42, 128]" in text


def test_unsafe_or_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"x": Fraction(1, 3)}, evil)  # any non-tensor object: weights_only must refuse it
    with pytest.raises(InputFormatError, match="weights-only"):
        read_foreign_state(evil)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(InputFormatError, match="not one of the authors' checkpoints"):
        load_authors_checkpoint(other)
    ferplus = tmp_path / "ferplus.pth"
    torch.save(random_state(key_table("ferplus_backbone_keys.tsv"), seed=0), ferplus)
    with pytest.raises(InputFormatError, match="--from ferplus"):
        load_authors_checkpoint(ferplus)


def test_cli_convert_writes_a_checkpoint_that_loads(tmp_path, capsys):
    state = random_state(key_table("cnn_checkpoint_keys.tsv"), seed=7)
    src = tmp_path / "net.pth"
    torch.save(state, src)
    out = tmp_path / "authors_cnn.safetensors"
    assert main(["convert", "--from", "authors-cnn", str(src), "--out", str(out)]) == 0
    assert "kind=cnn backbone=resnet50_caffe" in capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert meta["stage"] == "authors_cnn" and meta["converted_from"]["source"] == "authors-cnn"
    assert meta["preprocessing"] == FERPLUS
    direct = load_authors_checkpoint(src)
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x).expression, direct(x).expression)
    assert (
        main(["convert", "--from", "authors-cnn", str(src), "--out", str(out)]) == 2
    )  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "--from", "authors-gru", str(src), "--out", str(out), "--overwrite"]) == 2
    assert "keys or shapes do not match" in capsys.readouterr().err


def test_convert_api_for_ferplus(tmp_path):
    src = tmp_path / "ferplus.pth"
    torch.save(random_state(key_table("ferplus_backbone_keys.tsv"), seed=8), src)
    meta = convert("ferplus", src, tmp_path / "init.safetensors")
    assert meta["kind"] == "cnn" and meta["model"]["cnn"]["backbone_classes"] == 8
    model, _ = load_checkpoint(tmp_path / "init.safetensors")
    assert model.backbone.fc.weight.shape == (8, 2048)


# ------------------------------------------------------------------ the authors' download as it comes
@pytest.fixture(scope="module")
def authors_files(tmp_path_factory) -> dict[str, Path]:
    """Random-weight files in the layouts of the authors' CNN and CNN+GRU, and of the FER+ trunk."""
    folder = tmp_path_factory.mktemp("authors")
    files = {}
    for name, table, seed in (
        ("authors-cnn", "cnn_checkpoint_keys.tsv", 11),
        ("authors-gru", "gru_checkpoint_keys.tsv", 12),
        ("ferplus", "ferplus_backbone_keys.tsv", 13),
    ):
        files[name] = folder / f"{name}.pth"
        torch.save(random_state(key_table(table), seed=seed), files[name])
    return files


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    theirs = second.state_dict()
    assert set(theirs) == set(first.state_dict())
    for key, value in first.state_dict().items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(("source", "kind"), [("authors-cnn", "cnn"), ("authors-gru", "cnn_gru")])
def test_convert_recognises_the_authors_cnn_and_cnn_gru(tmp_path, authors_files, capsys, source, kind):
    out = tmp_path / "authors.safetensors"
    assert main(["convert", str(authors_files[source]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{source} (recognised from its keys)" in printed and f"kind={kind}" in printed
    model, meta = load_checkpoint(out)
    assert meta["kind"] == kind and meta["converted_from"]["source"] == source
    assert meta["converted_from"]["detected"] is True
    assert "Aff-Wild2" in meta["about"]["training_data"] and meta["about"]["licence"]
    _same_weights(model, load_authors_checkpoint(authors_files[source]))


def test_convert_recognises_ferplus_and_refuses_unknown_layouts(tmp_path, authors_files):
    meta = convert("auto", authors_files["ferplus"], tmp_path / "f.safetensors")
    assert meta["converted_from"]["source"] == "ferplus" and meta["stage"] == "ferplus_init"
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(InputFormatError, match="none of the known layouts.*fc.weight"):
        convert("auto", other, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_convert_reads_the_weights_from_a_zip(tmp_path, authors_files, capsys):

    pth = authors_files["authors-gru"]
    download = tmp_path / "pretrained_model.zip"
    with zipfile.ZipFile(download, "w", zipfile.ZIP_STORED) as archive:
        archive.write(pth, "model/net_epoch_student_0_id_resnet50_GRU.pth")
        archive.writestr("model/README.txt", "weights")
        archive.writestr("__MACOSX/model/._net_epoch_student_0_id_resnet50_GRU.pth", b"\0")
    out = tmp_path / "authors.safetensors"
    assert main(["convert", str(download), "--out", str(out)]) == 0
    assert "pretrained_model.zip!model/net_epoch_student_0_id_resnet50_GRU.pth" in capsys.readouterr().out
    _, meta = load_checkpoint(out)
    origin = meta["converted_from"]
    assert origin["file"] == "pretrained_model.zip" and origin["source"] == "authors-gru"
    assert origin["member"] == "model/net_epoch_student_0_id_resnet50_GRU.pth"
    assert origin["member_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    assert origin["sha256"] == hashlib.sha256(download.read_bytes()).hexdigest()
    direct = load_authors_checkpoint(download)  # the Python API reads the zip too
    assert isinstance(direct, CNNGRU)
    _same_weights(load_checkpoint(out)[0], direct)


def test_zip_without_or_with_several_weight_files(tmp_path, authors_files, capsys):

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no weights here")
    assert main(["convert", str(empty), "--out", str(tmp_path / "e.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "empty.zip" in err and "no .pth/.pt file" in err and "readme.txt" in err
    both = tmp_path / "both.zip"
    with zipfile.ZipFile(both, "w", zipfile.ZIP_STORED) as archive:
        archive.write(authors_files["authors-cnn"], "cnn.pth")
        archive.write(authors_files["authors-gru"], "gru.pt")
    assert main(["convert", str(both), "--out", str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "2 weight files (cnn.pth, gru.pt)" in err and "--member" in err
    out = tmp_path / "b.safetensors"
    assert main(["convert", str(both), "--member", "gru.pt", "--out", str(out)]) == 0
    assert load_checkpoint(out)[1]["kind"] == "cnn_gru"
    assert main(["convert", str(both), "--member", "x.pth", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not one of the .pth/.pt files inside" in capsys.readouterr().err


def test_a_pytorch_file_named_zip_is_read_as_weights(tmp_path, authors_files):
    renamed = tmp_path / "net.zip"  # PyTorch's own format is a zip archive (data.pkl inside)
    shutil.copy(authors_files["authors-cnn"], renamed)
    meta = convert("auto", renamed, tmp_path / "r.safetensors")
    assert meta["kind"] == "cnn" and "member" not in meta["converted_from"]


def _info_text(capsys, path, *flags) -> str:
    assert main(["info", str(path), *flags]) == 0
    return capsys.readouterr().out


def test_info_of_the_authors_model_converted_from_a_zip(tmp_path, capsys):
    pth = tmp_path / "net_epoch_student_0_id_resnet50_GRU.pth"
    torch.save(random_state(key_table("gru_checkpoint_keys.tsv"), seed=21), pth)
    download = tmp_path / "model.zip"
    with zipfile.ZipFile(download, "w", zipfile.ZIP_STORED) as archive:
        archive.write(pth, pth.name)
    out = tmp_path / "authors.safetensors"
    assert main(["convert", str(download), "--out", str(out)]) == 0
    capsys.readouterr()
    text = _info_text(capsys, out)
    sha_zip = hashlib.sha256(download.read_bytes()).hexdigest()
    sha_pth = hashlib.sha256(pth.read_bytes()).hexdigest()
    for expected in (
        "kind: cnn_gru: CNN+GRU",
        "backbone: resnet50_caffe",
        "input: 112x112 px, RGB 0-255 minus mean, divided by std: mean [131.0912, 103.8827, 91.4953]",
        "crops: affwild2_cropped_aligned: faces aligned as Aff-Wild2's cropped_aligned",
        "stage: authors_gru",
        f"converted (authors-gru) from model.zip!{pth.name} (member sha256 {sha_pth}); file sha256 {sha_zip}",
        "training data: CNN as authors-cnn; GRU heads on 32-frame windows of Aff-Wild2 only",
        "licence: no licence is stated for the weights",
        f"reference: {AUTHORS_REPOSITORY}",
        f"sha256 {file_sha256(out)}",
    ):
        assert expected in text, expected
    info = json.loads(_info_text(capsys, out, "--json"))
    assert info["kind"] == "cnn_gru" and info["backbone"] == "resnet50_caffe"
    assert info["input"]["size"] == 112 and info["crop"]["convention"] == "affwild2_cropped_aligned"
    assert info["source"]["converted_from"]["member_sha256"] == sha_pth
    assert info["gru"]["hidden"] == 64 and info["cnn"]["hidden"] == 128


def test_readme_section_on_the_authors_model_runs_as_written(tmp_path, monkeypatch, capsys, media_dir):
    """The README's "Use the authors' published model" block, command by command, on a random-weight
    CNN+GRU in the authors' layout zipped under the README's file name, and a stand-in interview.mp4."""
    block = commands(readme_block("## Use the authors' published model"))
    assert [c[:2] for c in block] == [["mtaffect", "convert"], ["mtaffect", "info"], ["mtaffect", "predict"]]
    _first_frames(media_dir / "single_face.mp4", tmp_path / "interview.mp4", 12)  # a ResNet-50 per frame
    monkeypatch.chdir(tmp_path)
    download = Path(block[0][2])
    assert download.suffix == ".zip"
    pth = tmp_path / "net_epoch_student_0_id_resnet50_GRU.pth"
    torch.save(random_state(key_table("gru_checkpoint_keys.tsv"), seed=31), pth)
    with zipfile.ZipFile(download, "w", zipfile.ZIP_STORED) as archive:
        archive.write(pth, pth.name)
    fast = ["--backend", "torch", "--no-overlay", "--no-plots", "--quiet"]  # speed only: same numbers
    for command in block:
        extra = fast if command[1] == "predict" else []
        assert main([*command[1:], *extra]) == 0, command
    printed = capsys.readouterr().out
    assert "authors-gru (recognised from its keys)" in printed and "kind: cnn_gru" in printed
    out = Path(block[2][block[2].index("--out") + 1]) / "interview" / "predictions.csv"
    table = pd.read_csv(out)
    assert len(table) >= 12 and table["face_found"].any()
    assert table.loc[table["face_found"], "valence"].between(-1, 1).all()


def _first_frames(src: Path, dst: Path, n: int) -> None:
    import av

    with av.open(str(src)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), container.decode(video=0))]
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = frame[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.copy(), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
