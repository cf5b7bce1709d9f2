"""The label vocabulary, the CLI shell and the safe-output helpers."""

from __future__ import annotations

import socket

import pytest

from mtaffect import labels
from mtaffect.cli import SUBCOMMANDS, main
from mtaffect.errors import ExistingRunError
from mtaffect.io import atomic_path, prepare_output_dir, write_text


def test_expressions_are_in_abaw_order():
    assert labels.EXPRESSIONS == ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
    assert labels.EXPRESSIONS_8[labels.OTHER_INDEX] == "Other"


@pytest.mark.parametrize(
    ("mapping", "native", "name"),
    [
        (labels.AFFECTNET_TO_ABAW, 1, "Happiness"),
        (labels.AFFECTNET_TO_ABAW, 5, "Disgust"),
        (labels.AFFECTNET_TO_ABAW, 6, "Anger"),
        (labels.EXPW_TO_ABAW, 0, "Anger"),
        (labels.EXPW_TO_ABAW, 6, "Neutral"),
        (labels.EXPW_TO_ABAW, 3, "Happiness"),
    ],
)
def test_native_code_maps_land_on_the_right_names(mapping, native, name):
    assert labels.EXPRESSIONS[mapping[native]] == name


def test_code_maps_are_bijections_onto_the_seven_classes():
    for mapping in (labels.AFFECTNET_TO_ABAW, labels.EXPW_TO_ABAW):
        assert sorted(mapping.values()) == list(range(7))


def test_va_validity():
    assert labels.is_valid_va(-1.0) and labels.is_valid_va(1.0)
    assert not labels.is_valid_va(-2.0) and not labels.is_valid_va(float("nan"))


def test_cli_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_cli_unknown_command_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_text(target, "done")
    assert target.read_text() == "done"
    assert target.stat().st_mode & 0o044, "finished files are readable by others, as with open()"


def test_prepare_output_dir_never_overwrites_silently(tmp_path):
    run = prepare_output_dir(tmp_path / "run")
    (run / "weights").write_text("x")
    with pytest.raises(ExistingRunError, match="--overwrite"):
        prepare_output_dir(run)
    assert prepare_output_dir(run, resume=True) == run and (run / "weights").exists()
    prepare_output_dir(run, overwrite=True)
    assert not (run / "weights").exists()


def test_network_is_blocked():
    with pytest.raises(RuntimeError, match="network access blocked"):
        socket.create_connection(("198.51.100.1", 80), timeout=1)
