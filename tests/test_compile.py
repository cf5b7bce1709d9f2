"""The compiled training step (``train.compile``): same losses and weights as eager, eager fallback.

torch.compile on CPU runs here with the ``aot_eager`` backend (dynamo tracing + AOTAutograd's joint
forward/backward graph, no C compiler): it exercises the whole wrapping — the task's per-task-set
forwards, the frozen teacher, the losses, DDP-free and resumable — in a few seconds. The inductor
backend on CPU (C++ code generation) takes minutes for these graphs and stays out of ``make test``;
``benchmarks/bench_gpu.py --compile default`` times it on a GPU.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import pandas as pd
import pytest
import torch

from mtaffect.errors import UserError
from mtaffect.losses import LossConfig
from mtaffect.testing import approx32, assert_close32, tiny_cnn
from mtaffect.train import compiled, loop
from mtaffect.train.loop import FitOptions, fit
from mtaffect.train.tasks import DistillationTask, SupervisedTask
from support import FRAME_PREPARER, make_data

pytest.importorskip("torch._dynamo")


@pytest.fixture(autouse=True)
def _own_compile_cache(tmp_path, monkeypatch):
    """compile_step points torch's caches at a folder, process-wide: a test's own, restored after."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    monkeypatch.setenv(compiled.COMPILE_CACHE_ENV, str(tmp_path / "compile-cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    switches = inductor_config.fx_graph_cache, functorch_config.enable_autograd_cache
    yield
    inductor_config.fx_graph_cache, functorch_config.enable_autograd_cache = switches


def _use_backend(monkeypatch, backend: str) -> None:
    """fit's compile_step with a CPU-cheap backend (inductor needs minutes on CPU)."""
    monkeypatch.setattr(loop, "compile_step", functools.partial(compiled.compile_step, backend=backend))
    torch._dynamo.reset()


def _train(run_dir, task_factory, mode: str):
    model, task = task_factory()
    optimizer = compiled.adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999), device="cpu")
    fit(
        task,
        make_data(),
        optimizer,
        run_dir=run_dir,
        options=FitOptions(epochs=2, compile=mode, progress=False, tensorboard=False),
        to_device=FRAME_PREPARER,
    )
    return model.state_dict(), pd.read_csv(run_dir / "metrics.csv")


def _without_dropout(model):
    # Dropout draws its masks in a different order once AOTAutograd traces the step as one graph (and
    # inductor draws its own Philox numbers): the same random stream is not part of compile's promise,
    # the same arithmetic is. Dropout-free models make the two runs comparable number for number.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _teacher():
    model = _without_dropout(tiny_cnn(0, hidden=16))
    return model, SupervisedTask(model, LossConfig())


def _student():
    teacher = tiny_cnn(5, hidden=16).eval()
    model = _without_dropout(tiny_cnn(1, hidden=16))
    return model, DistillationTask(model, teacher, LossConfig(), shared_labels=True)


# the teacher through AOTAutograd's compiled backward (13 s; 50 s when the 2 cores are busy);
# the student (teacher forward inside the traced step) through dynamo's graphs only (11 s)
@pytest.mark.parametrize(
    ("factory", "backend"), [(_teacher, "aot_eager"), (_student, "eager")], ids=["teacher", "student"]
)
def test_compiled_step_trains_like_eager(tmp_path, monkeypatch, capsys, factory, backend):
    _use_backend(monkeypatch, backend)
    eager_w, eager_m = _train(tmp_path / "eager", factory, "off")
    assert "compiling" not in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error", compiled.CompileFallbackWarning)  # a fallback would hide compile
        comp_w, comp_m = _train(tmp_path / "compiled", factory, "default")
    # the start-up lines, once per run (rank 0): what is compiled where, then how long it took
    err = capsys.readouterr().err
    cache = tmp_path / "compile-cache"
    assert err.count(f"compiling the train step (mode=default, cache={cache})…") == 1, err
    assert len(re.findall(r"train: compiled in \d+\.\d s \(not cached\)", err)) == 1, err  # no inductor
    losses = [c for c in eager_m.columns if c.startswith("train_")]
    assert len(losses) >= 3
    for column in losses:
        assert comp_m[column].tolist() == approx32(eager_m[column].tolist()), column
    initial = factory()[0].state_dict()
    moved = [k for k, v in eager_w.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert moved, "training changed no weight"
    for name, value in eager_w.items():
        if value.is_floating_point():
            assert_close32(comp_w[name], value, msg=name)
        else:
            assert torch.equal(comp_w[name], value), name  # BatchNorm batch counts: one forward per set


def test_a_compile_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken(module, **options):
        def fail(batch):
            raise RuntimeError("backend exploded\nsecond line")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    eager_w, eager_m = _train(tmp_path / "eager", _teacher, "off")
    with pytest.warns(compiled.CompileFallbackWarning, match="backend exploded.*eager mode") as record:
        fell_w, fell_m = _train(tmp_path / "fallback", _teacher, "reduce-overhead")
    assert len([w for w in record if w.category is compiled.CompileFallbackWarning]) == 1  # warned once
    pd.testing.assert_frame_equal(
        fell_m.drop(columns="seconds"), eager_m.drop(columns="seconds")
    )  # eager from the first step on: bit-identical
    for name, value in eager_w.items():
        assert torch.equal(fell_w[name], value), name


def test_compile_unavailable_at_setup_returns_the_eager_module(monkeypatch):
    def missing(module, **options):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", missing)
    task = _teacher()[1]
    with pytest.warns(compiled.CompileFallbackWarning, match="unavailable"):
        assert compiled.compile_step(task, "default", "cpu") is task


def test_compile_modes_are_checked():
    from mtaffect.errors import UserError

    task = _teacher()[1]
    assert compiled.compile_step(task, "off", "cpu") is task
    assert compiled.compile_step(task, False, "cpu") is task  # YAML's bare off
    with pytest.raises(UserError, match="train.compile='max'"):
        compiled.compile_step(task, "max", "cpu")


def test_adam_is_fused_only_on_cuda():
    params = [torch.nn.Parameter(torch.zeros(3))]
    cpu = compiled.adam(params, lr=1e-4, betas=(0.5, 0.999), device="cpu")
    assert not cpu.param_groups[0].get("fused")
    assert cpu.param_groups[0]["betas"] == (0.5, 0.999) and cpu.param_groups[0]["lr"] == 1e-4
    if torch.cuda.is_available():
        cuda = compiled.adam([torch.nn.Parameter(torch.zeros(3, device="cuda"))], lr=1e-4,
                             betas=(0.5, 0.999), device="cuda")
        assert cuda.param_groups[0]["fused"]


def test_the_config_key_reaches_the_typed_config():
    from mtaffect.config import load_config

    assert load_config("cnn_teacher").train.compile in ("off", False)
    assert load_config("cnn_teacher", ["train.compile=reduce-overhead"]).train.compile == "reduce-overhead"


@pytest.mark.parametrize("factory", [_teacher, _student], ids=["teacher", "student"])
def test_the_whole_training_step_traces_into_one_graph(factory):
    # Every graph break is a separate compile and a host round trip per step. The step of both
    # objectives (three task-set forwards, the frozen teacher, eq. 7 / eq. 10) is one graph; at
    # 6a1ae49 the CPU trace had 11 (teacher) and 19 (student) graphs, split by the losses' eager checks.
    _, task = factory()
    batch = FRAME_PREPARER(next(iter(make_data().epoch(0))), torch.device("cpu"))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(task)(batch)
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_a_failure_in_the_compiled_backward_falls_back_to_eager(tmp_path, monkeypatch):
    # AOTAutograd builds the backward graph lazily, at the first loss.backward(): a compiler error
    # there must fall back like one in the forward (warn once, redo the batch eagerly), not end the run
    class ExplodingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("backward graph failed to compile")

    def lazily_broken(module, **options):
        def run(batch):
            losses = dict(module(batch))
            losses["loss"] = ExplodingBackward.apply(losses["loss"])
            return losses

        return run

    eager_w, eager_m = _train(tmp_path / "eager", _teacher, "off")
    monkeypatch.setattr(torch, "compile", lazily_broken)
    with pytest.warns(compiled.CompileFallbackWarning, match="backward graph failed.*eager mode") as record:
        fell_w, fell_m = _train(tmp_path / "fallback", _teacher, "default")
    assert len([w for w in record if w.category is compiled.CompileFallbackWarning]) == 1
    assert len(fell_m) == len(eager_m) == 2  # both epochs ran
    # the forward already ran once before the failing backward: BatchNorm's running statistics saw the
    # first batch twice, but no gradient was counted twice, so every trained weight matches eager
    for name, value in eager_w.items():
        if value.is_floating_point() and "running_" not in name:
            assert_close32(fell_w[name], value, msg=name)


class _Toy(torch.nn.Module):
    """A step with a forward and a backward graph, small enough for inductor's C++ backend."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Linear(8, 3, bias=False)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.model(batch).square().mean()}


def _first_step(step, batch):
    losses = step(batch)
    return step.first_backward(batch, losses, lambda loss: loss.backward(), torch.enable_grad)


def test_the_start_up_lines_say_what_is_compiled_and_how_long_it_took(tmp_path):
    lines: list[str] = []
    step = compiled.compile_step(_Toy(), "default", "cpu", backend="eager", name="toy", log=lines.append)
    _first_step(step, torch.randn(4, 8))
    step(torch.randn(4, 8))  # later steps say nothing
    assert len(lines) == 2, lines
    assert lines[0] == f"compiling the toy step (mode=default, cache={tmp_path / 'compile-cache'})…"
    assert re.fullmatch(r"toy: compiled in \d+\.\d s \(not cached\)", lines[1]), lines[1]
    assert step.startup.seconds > 0 and not step.startup.failed
    assert oct((tmp_path / "compile-cache").stat().st_mode & 0o777) == oct(0o700)  # private: pickles


def test_a_failed_compile_says_so_in_its_closing_line(tmp_path, monkeypatch):
    def broken(module, **options):
        def fail(batch):
            raise RuntimeError("no compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    lines: list[str] = []
    step = compiled.compile_step(_Toy(), "default", "cpu", name="toy", cache="off", log=lines.append)
    with pytest.warns(compiled.CompileFallbackWarning):
        _first_step(step, torch.randn(4, 8))
    assert lines[0] == "compiling the toy step (mode=default, cache=off)…"
    assert re.fullmatch(r"toy: torch.compile failed after \d+\.\d s; the step runs eagerly", lines[1])
    assert step.startup.state == "cache off"


def test_the_compile_cache_folder_is_chosen_and_checked(tmp_path, monkeypatch):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    monkeypatch.delenv(compiled.COMPILE_CACHE_ENV)
    monkeypatch.setenv("MTAFFECT_CACHE", str(tmp_path / "mt"))
    assert compiled.compile_cache_dir() == tmp_path / "mt" / "compile"  # the default: $MTAFFECT_CACHE
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch-own"))
    assert compiled.compile_cache_dir() == tmp_path / "torch-own"  # the user's own torch setting
    monkeypatch.setenv(compiled.COMPILE_CACHE_ENV, str(tmp_path / "env"))
    assert compiled.compile_cache_dir() == tmp_path / "env"
    assert compiled.compile_cache_dir(tmp_path / "given") == tmp_path / "given"  # FitOptions.compile_cache
    assert compiled.use_compile_cache(tmp_path / "given") == tmp_path / "given"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "given")
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    assert compiled.use_compile_cache("off") is None
    assert not inductor_config.fx_graph_cache and not functorch_config.enable_autograd_cache
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    if hasattr(os, "getuid"):
        with pytest.raises(UserError, match=r"compile cache .*shared.*writable by anyone"):
            compiled.use_compile_cache(shared)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes only")
def test_a_compile_cache_others_may_write_is_refused(tmp_path):
    # torch loads pickles from the folder: a group member who may write there could plant code
    folder = tmp_path / "team"
    folder.mkdir()
    folder.chmod(0o775)
    with pytest.raises(UserError, match=r"compile cache .*team: writable by its group \(mode 775\)"
                                        r".*run chmod go-w .*team"):
        compiled.use_compile_cache(folder)
    folder.chmod(0o755)  # readable by others is fine: only writing lets them plant code
    assert compiled.use_compile_cache(folder) == folder


# the child: one compiled step (inductor, C++ on CPU) with the cache of MTAFFECT_COMPILE_CACHE
_REUSE_CHILD = textwrap.dedent(
    """
    import json, torch
    from mtaffect.train import compiled
    torch.set_num_threads(1)
    torch.manual_seed(0)
    class Toy(torch.nn.Module):  # as _Toy: importing this test module would cost seconds per run
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(8, 3, bias=False)
        def forward(self, batch):
            return {"loss": self.model(batch).square().mean()}
    step = compiled.compile_step(Toy(), "default", "cpu", name="toy", log=print)
    batch = torch.randn(4, 8)
    step.first_backward(batch, step(batch), lambda loss: loss.backward(), torch.enable_grad)
    s = step.startup
    print(json.dumps({"seconds": s.seconds, "loaded": s.loaded, "compiled": s.compiled, "failed": s.failed}))
    """
)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")),
    reason="inductor's CPU backend needs a C++ compiler",
)
def test_a_second_run_loads_the_compiled_step_from_the_cache(tmp_path):
    # two processes (no in-memory cache between them), one cache folder: the first compiles the
    # forward and backward graphs and stores them, the second loads both and compiles nothing
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1", OMP_NUM_THREADS="1")
    env[compiled.COMPILE_CACHE_ENV] = str(tmp_path / "cache")
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _REUSE_CHILD], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        lines = out.stdout.strip().splitlines()
        runs.append((lines, json.loads(lines[-1])))
    (cold_lines, cold), (warm_lines, warm) = runs
    assert not cold["failed"] and not warm["failed"]
    assert cold["compiled"] >= 2 and cold["loaded"] == 0, cold  # forward + backward graphs
    assert warm["compiled"] == 0 and warm["loaded"] == cold["compiled"], warm
    assert re.search(r"toy: compiled in \d+\.\d s \(cache miss\)", "\n".join(cold_lines)), cold_lines
    assert re.search(r"toy: compiled in \d+\.\d s \(cache hit\)", "\n".join(warm_lines)), warm_lines
    assert warm["seconds"] < cold["seconds"], (cold, warm)  # no C++ compilation the second time
    for kind in ("fxgraph", "aotautograd"):  # in the folder the run chose, not torch's /tmp default
        assert any((tmp_path / "cache" / kind).rglob("*")), kind
    print(f"first step: {cold['seconds']:.2f} s cold, {warm['seconds']:.2f} s warm")
