"""`mtaffect index` on the synthetic databases reproduces the generator's ground truth exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtaffect.cli import main
from mtaffect.data.index import build_index, read_index
from mtaffect.data.synthetic import SORT_KEY, write_databases

DATABASES = ("affwild2", "affectnet", "expw", "afew_va")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "db"
    truth = write_databases(root, preset="tiny", seed=0)
    return root, truth


def _assert_same(index: pd.DataFrame, truth: pd.DataFrame) -> None:
    got = index.sort_values(list(SORT_KEY)).reset_index(drop=True)
    assert list(got.columns) == list(truth.columns)
    pd.testing.assert_frame_equal(got.drop(columns="landmarks"), truth.drop(columns="landmarks"))
    for a, b in zip(got["landmarks"], truth["landmarks"]):
        if a is None or b is None:
            assert a is None and b is None
        else:
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_build_index_equals_truth(synthetic):
    root, truth = synthetic
    index, meta = build_index({name: root / name for name in DATABASES})
    _assert_same(index, truth)
    assert set(truth["database"]) == set(DATABASES)
    assert meta["summary"]["rows"] == len(truth)


def test_cli_index_equals_truth(synthetic, tmp_path, capsys):
    root, truth = synthetic
    out = tmp_path / "index.parquet"
    argv = ["index", "--out", str(out)]
    for name in DATABASES:
        argv += [f"--{name.replace('_', '-')}", str(root / name)]
    assert main(argv) == 0
    assert "frames per database" in capsys.readouterr().out
    index, meta = read_index(out)
    _assert_same(index, truth)
    assert meta["roots"]["affwild2"] == str((root / "affwild2").resolve())


def test_malformed_quirk_strict_and_lenient(tmp_path):
    from mtaffect.errors import InputFormatError

    root = tmp_path / "db"
    truth = write_databases(root, preset="tiny", seed=1, quirks=("malformed_line",))
    roots = {name: root / name for name in DATABASES}
    with pytest.raises(InputFormatError) as err:
        build_index(roots)
    assert err.value.path.endswith("training.csv") and err.value.line is not None
    index, meta = build_index(roots, lenient=True)
    assert meta["summary"]["skipped"]["affectnet"]["malformed_line"] == 1
    _assert_same(index, truth)
