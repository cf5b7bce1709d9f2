"""The README's quick start, run as written: every command of its block, in its order, with its flags.

The commands are read from README.md (so the two cannot drift apart) and run through the same
``mtaffect`` entry point a shell would call. Only three things differ from a user's run: ``/data/...``
points at the synthetic databases (written in the real native formats), the files a user brings
(``interview.mp4``, the FER+ ``.pth``, the organisers' test list) are stand-ins with the same names,
and ``mtaffect train`` gets extra overrides for a tiny network and two steps per epoch.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mtaffect.cli import main
from mtaffect.data.index import read_index
from readme_blocks import commands, readme_block, readme_section
from reference_tables import REFERENCE, write_ferplus_file

SECTION = "## Quick start on your data"

# appended to every `mtaffect train` command: a tiny network, 48 px, two steps per epoch, one epoch
TINY = [
    "model.cnn.backbone=resnet_tiny",
    "model.init_from=",  # the FER+ ResNet-50 does not fit the tiny network
    "data.image_size=48",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_per_task=4",
    "train.threads=1",
    "train.progress=false",
    "train.tensorboard=false",
]


def test_commands_are_read_like_a_shell_reads_them():
    block = "# comment\nmtaffect a --x 1 \\\n    --y 'two words'\n\nmtaffect b\n"
    assert commands(block) == [["mtaffect", "a", "--x", "1", "--y", "two words"], ["mtaffect", "b"]]


def _databases(root: Path) -> Path:
    """The synthetic databases under the names the README uses, and what a user would bring."""
    from mtaffect.data.synthetic import write_databases, write_video

    synthetic = root / "synthetic"
    write_databases(synthetic, preset="tiny", seed=0)
    data = root / "data"
    data.mkdir()
    for name, readme_name in (("affwild2", "Aff-Wild2"), ("affectnet", "AffectNet"), ("expw", "ExpW"),
                              ("afew_va", "AFEW-VA")):
        (synthetic / name).rename(data / readme_name)
    # the organisers' test list, and the raw videos of its tracks (only their frame counts are read)
    tests = (data / "Aff-Wild2" / "test_set_VA_Challenge.txt").read_text().split()
    shutil.copy(data / "Aff-Wild2" / "test_set_VA_Challenge.txt", root / "test_set_VA_Challenge.txt")
    for track in tests:
        base = track.removesuffix("_left").removesuffix("_right")
        frames = max(int(p.stem) for p in (data / "Aff-Wild2" / "cropped_aligned" / track).glob("*.jpg"))
        video = data / "Aff-Wild2" / "videos" / f"{base}.mp4"
        if not video.exists():
            video.parent.mkdir(exist_ok=True)
            write_video(video, n_frames=frames + 3, seed=1, size=64)
    return data


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory, media_dir) -> Path:
    """The quick start block run once, command by command, in a fresh folder; returns that folder."""
    if not REFERENCE.is_dir():
        pytest.skip("reference key tables not available")
    root = tmp_path_factory.mktemp("quick_start")
    block = commands(readme_block(SECTION))
    assert all(argv[0] == "mtaffect" for argv in block)
    data = _databases(root)
    shutil.copy(media_dir / "single_face.mp4", root / "interview.mp4")
    write_ferplus_file(root / "resnet50_ferplus_dag.pth")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for argv in block:
            argv = [str(data) + a[len("/data"):] if a.startswith("/data/") else a for a in argv[1:]]
            if argv[0] == "train":  # overrides go before the options, as the README writes its own
                first_option = next(i for i, a in enumerate(argv) if a.startswith("--"))
                argv[first_option:first_option] = TINY
            code = main(argv)
            assert code == 0, f"`mtaffect {shlex.join(argv)}` exited {code}"
    return root


def test_the_quick_start_runs_as_written(quick_start):
    root = quick_start
    names = [argv[1] for argv in commands(readme_block(SECTION))]
    assert names == ["index", "cache", "convert", "train", "train", "train", "train", "evaluate",
                     "predict", "predict", "submit", "submit", "export"]
    # the GRU student made every output the block promises
    assert (root / "runs/gru_student/cnn_gru.safetensors").is_file()
    scores = pd.read_csv(root / "eval/scores.csv")
    assert "affwild2" in set(scores["database"])
    video = pd.read_csv(root / "results/interview/predictions.csv")
    assert sorted(video["frame"].unique()) == list(range(72))  # every frame of the 72-frame video
    assert video["face_found"].astype(bool).mean() > 0.9
    tracks = sorted(p.name for p in (root / "data/Aff-Wild2/cropped_aligned").iterdir())
    assert sorted(p.parent.name for p in (root / "val").glob("*/predictions.csv")) == tracks
    test_tracks = (root / "test_set_VA_Challenge.txt").read_text().split()
    written = sorted((root / "submission/VA_Set").glob("*.txt"))
    assert [p.stem for p in written] == sorted(test_tracks)
    assert (root / "gru_student.onnx").stat().st_size > 0
    # step 2's decode-once frame stores, finished and listed in the index for every consumer
    for split in ("train", "validation"):
        assert json.loads((root / f"store/{split}-112/store.json").read_text())["complete"] is True
    assert len(read_index(root / "index.parquet")[1]["frame_stores"]) == 2


def test_the_prediction_section_runs_as_written(quick_start, tmp_path, monkeypatch, media_dir, capsys):
    """Its commands, on the quick start's GRU student copied as the README says, in a fresh folder."""
    block = commands(readme_block("## Prediction on your own videos and images"))
    shutil.copy(quick_start / "runs/gru_student/cnn_gru.safetensors", tmp_path / "gru_student.safetensors")
    shutil.copy(media_dir / "single_face.mp4", tmp_path / "interview.mp4")
    (tmp_path / "photos").mkdir()
    for name in ("single_face.jpg", "multi_face.jpg"):
        shutil.copy(media_dir / name, tmp_path / "photos" / name)
    (tmp_path / "videos").mkdir()
    shutil.copy(media_dir / "single_face.mp4", tmp_path / "videos" / "clip.mp4")
    (tmp_path / "Aff-Wild2").symlink_to(quick_start / "data/Aff-Wild2", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for argv in block:
        argv = [str(p) for a in argv[1:] for p in (sorted(Path().glob(a)) if "*" in a else [a])]  # globs
        if "--help" in argv:
            with pytest.raises(SystemExit) as done:
                main(argv)
            assert done.value.code == 0 and "--validate" in capsys.readouterr().out
            continue
        assert main(argv) == 0, f"`mtaffect {shlex.join(argv)}` failed"
    assert len(pd.read_csv("results/interview/predictions.csv")) >= 72
    photos = pd.read_csv("results/images/predictions.csv")
    assert set(photos["input"].map(lambda s: Path(s).name)) >= {"single_face.jpg", "multi_face.jpg"}
    tracks = list(Path("Aff-Wild2/cropped_aligned").iterdir())
    assert len(list(Path("val").glob("*/predictions.csv"))) == len(tracks)
    assert len(list(Path("cropped_aligned/clip").glob("*.jpg"))) > 60


def test_the_python_example_runs_as_written(quick_start, monkeypatch):
    code = readme_block("## Prediction on your own videos and images", "python")
    monkeypatch.chdir(quick_start)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    frames = scope["frames"]
    assert isinstance(frames, pd.DataFrame) and sorted(frames["frame"].unique()) == list(range(72))
    assert frames["valence"].dropna().between(-1, 1).all()


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference key tables not available")
def test_the_authors_weights_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python example on the authors' CNN, on a random-weight file in their layout."""
    import numpy as np
    import torch

    from reference_tables import key_table, random_state

    code = readme_block("## Use the authors' published model", "python")
    name = code.split('load_authors_checkpoint("', 1)[1].split('"', 1)[0]
    torch.save(random_state(key_table("cnn_checkpoint_keys.tsv"), seed=3), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    scope: dict = {"crops": crops}  # the README's placeholder: the user's aligned face crops
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["out"].expression.shape == (2, 7) and scope["out"].valence.shape == (2, 20)


def test_the_ablations_command_runs_as_written(quick_start, monkeypatch):
    """`mtaffect reproduce` as the README writes it (3 seeds, Tables 1-3), tiny-network overrides added."""
    (argv,) = commands(readme_block("The paper's ablations (Tables 1–3), three seeds each:"))
    monkeypatch.chdir(quick_start)
    args = argv[1:]
    args[1:1] = [o for o in TINY if not o.startswith("model.init_from")]
    assert main(args) == 0
    tables = (quick_start / "runs/reproduce/ablations.md").read_text()
    assert all(f"Table {k}" in tables for k in (1, 2, 3)) and "3 seed(s)" in tables


def test_the_demo_section_shows_a_measured_range_not_one_machines_digits():
    """README's demo table (one row per measured configuration) spans exactly the range the demo prints
    (`mtaffect.demo.MEASURED_RANGE`), above the bar; the output shown is one of its rows and prints it."""
    import re

    from mtaffect.demo import MEASURED_RANGE, THRESHOLD

    section = readme_section("## The demo (`make demo`)")
    _, output, prose = section.split("\n```\n", 2)  # before the shown output, the output, after it
    rows = [line.split("|")[1:-1] for line in prose.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0]]
    expr, mean = header.index("EXPR score"), header.index("mean CCC")
    scores = [(float(r[expr]), float(r[mean])) for r in rows[1:]]
    assert len(scores) >= 4, "the demo table lists a few configurations"
    for column, key in ((0, "expr_score"), (1, "ccc_mean")):
        values = [s[column] for s in scores]
        assert (min(values), max(values)) == MEASURED_RANGE[key], key
        assert min(values) >= THRESHOLD
    shown = re.search(r"final GRU student .*: EXPR score ([\d.]+), mean CCC ([\d.]+)", output)
    assert shown and (float(shown[1]), float(shown[2])) in scores
    (e0, e1), (c0, c1) = MEASURED_RANGE["expr_score"], MEASURED_RANGE["ccc_mean"]
    assert f"measured EXPR score {e0:.3f}-{e1:.3f}, mean CCC {c0:.3f}-{c1:.3f}" in output


def test_the_synthetic_databases_section_runs_as_written(tmp_path, monkeypatch):
    block = commands(readme_block("### The synthetic databases on their own"))
    assert [argv[1] for argv in block] == ["synthetic", "index", "synthetic"]
    monkeypatch.chdir(tmp_path)
    for argv in block:
        assert main(argv[1:]) == 0, f"`mtaffect {shlex.join(argv[1:])}` failed"
    index, _ = read_index(tmp_path / "synthetic_index.parquet")
    truth, _ = read_index(tmp_path / "synthetic/truth.parquet")
    assert set(index["database"]) == {"affwild2", "affectnet", "expw", "afew_va"}
    assert len(index) > 0 and set(truth["database"]) == set(index["database"])
    assert len(pd.read_csv(tmp_path / "video/clip.truth.csv")) == 100
    assert (tmp_path / "video/clip.mp4").stat().st_size > 0
