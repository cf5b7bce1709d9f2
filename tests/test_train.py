"""The one loop and the teacher/student tasks on tiny models and in-memory data (fast, CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mtaffect.config import CONFIG_DIR
from mtaffect.data.loading import FrameTaskData
from mtaffect.losses import LossConfig
from mtaffect.models.cnn import CNNConfig, MultitaskCNN
from mtaffect.models.gru import GRUConfig, TemporalModel
from mtaffect.models.outputs import Targets
from mtaffect.testing import tiny_cnn
from mtaffect.train.loop import FitOptions, fit
from mtaffect.train.stages import STAGES
from mtaffect.train.state import STATE_FILE, EarlyStopping, load_state
from mtaffect.train.tasks import DistillationTask, SupervisedTask
from support import FRAME_PREPARER, make_data


def first_batch(data: FrameTaskData):
    return FRAME_PREPARER(next(iter(data.epoch(0))), torch.device("cpu"))


def test_stage_table_has_the_four_stages_and_their_recipes():
    assert list(STAGES) == ["cnn_teacher", "cnn_student", "gru_teacher", "gru_student"]
    assert [(s.model, s.data, s.objective) for s in STAGES.values()] == [
        ("cnn", "frames", "teacher"),
        ("cnn", "frames", "student"),
        ("gru", "windows", "teacher"),
        ("gru", "windows", "student"),
    ]
    for stage in STAGES.values():
        assert (CONFIG_DIR / stage.recipe).is_file()


def test_teacher_step_returns_named_losses_and_trains():
    model = tiny_cnn(0, hidden=16)
    task = SupervisedTask(model, LossConfig())
    batch = first_batch(make_data())
    losses = task(batch)
    assert {"loss"} < set(losses) and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_separate_forwards_differ_from_concatenation_through_batchnorm():
    batch = first_batch(make_data())
    separate = SupervisedTask(tiny_cnn(0, hidden=16), LossConfig())(batch)["loss"]
    concat = SupervisedTask(tiny_cnn(0, hidden=16), LossConfig(), concat_task_sets=True)(batch)["loss"]
    assert not torch.isclose(separate, concat)


def test_student_wraps_a_frozen_teacher_in_eval_mode():
    teacher = tiny_cnn(1, hidden=16)
    task = DistillationTask(tiny_cnn(2, hidden=16), teacher, LossConfig())
    task.train()
    assert not teacher.training and task.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    losses = task(first_batch(make_data()))
    losses["loss"].backward()
    assert any(k.startswith("kd_") for k in losses)
    for k, v in teacher.state_dict().items():  # BatchNorm running stats untouched
        torch.testing.assert_close(v, before[k])


def test_eq9_and_eq10_switch_reaches_the_loss():
    batch = first_batch(make_data())
    teacher = tiny_cnn(1, hidden=16)
    eq10 = DistillationTask(tiny_cnn(2, hidden=16), teacher, LossConfig(), shared_labels=True)(batch)["loss"]
    eq9 = DistillationTask(tiny_cnn(2, hidden=16), teacher, LossConfig(), shared_labels=False)(batch)["loss"]
    assert torch.isfinite(eq9) and torch.isfinite(eq10)
    assert not torch.isclose(eq9, eq10)


def test_gru_task_on_embedding_windows():
    torch.manual_seed(0)
    gru = TemporalModel(GRUConfig(input_size=16, hidden=8))
    b, t = 4, 32
    targets = Targets(
        torch.randint(0, 7, (b, t)),
        torch.ones(b, t, dtype=torch.bool),
        torch.rand(b, t) * 2 - 1,
        torch.rand(b, t) * 2 - 1,
        torch.ones(b, t, dtype=torch.bool),
    )
    batch = {
        name: ({"EXPR": torch.randn(b, t, 16), "VA": torch.randn(b, t, 16)}, targets)
        for name in ("EXPR", "VA")
    }
    losses = SupervisedTask(gru, LossConfig())(batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    student = DistillationTask(TemporalModel(GRUConfig(input_size=16, hidden=8)), gru, LossConfig())
    assert torch.isfinite(student(batch)["loss"])


def _validator(calls: list, interrupt_at: int | None = None):
    """Deterministic validation score: minus the loss of the model on a fixed eval batch."""
    batch = FRAME_PREPARER(
        make_data(seed=99, augment=False).make_batch(make_data(seed=99).epoch_draws(0), 0, 0),
        torch.device("cpu"),
    )

    def validate(model) -> dict[str, float]:
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            loss = SupervisedTask(model, LossConfig())(batch)["loss"].item()
        return {"abaw_sum": -loss}

    return validate


class _CutAt:
    """The test data, but the process "dies" (KeyboardInterrupt) before step ``step`` of ``epoch``."""

    def __init__(self, data, epoch: int, step: int) -> None:
        self.data, self.cut_epoch, self.cut_step = data, epoch, step

    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch()

    def epoch(self, epoch: int, start_step: int = 0):
        for step, batch in enumerate(self.data.epoch(epoch, start_step), start=start_step):
            if (epoch, step) == (self.cut_epoch, self.cut_step):
                raise KeyboardInterrupt
            yield batch


def _run(run_dir, *, resume=False, interrupt_at=None, epochs=3, validate=None, data=None, **kw):
    torch.manual_seed(0)
    model = tiny_cnn(0, hidden=16)
    task = SupervisedTask(model, LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    saved = []
    result = fit(
        task,
        data or make_data(),
        optimizer,
        run_dir=run_dir,
        options=FitOptions(epochs=epochs, patience=5, resume=resume, progress=False, tensorboard=False, **kw),
        validate=validate or _validator([], interrupt_at),
        to_device=FRAME_PREPARER,
        save_best=lambda metrics, epoch: saved.append(epoch),
    )
    return model, result, saved


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path):
    reference, ref_result, _ = _run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", interrupt_at=3)  # killed during the third epoch's validation
    assert load_state(tmp_path / "cut" / STATE_FILE)["epoch"] == 2
    resumed, result, _ = _run(tmp_path / "cut", resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.history[-1]["val_abaw_sum"] == pytest.approx(ref_result.history[-1]["val_abaw_sum"])
    csv = pd.read_csv(tmp_path / "cut" / "metrics.csv")
    assert list(csv["epoch"]) == [1, 2, 3] and "train_loss" in csv


def test_resume_inside_an_epoch_gives_the_same_weights_and_losses(tmp_path):
    assert make_data().steps_per_epoch() == 3
    reference, ref_result, _ = _run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):  # killed before the last step of the second epoch
        _run(tmp_path / "cut", data=_CutAt(make_data(), epoch=1, step=2), save_every_steps=1)
    state = load_state(tmp_path / "cut" / STATE_FILE)
    assert (state["epoch"], state["step"]) == (1, 2) and set(state["sums"]) >= {"loss"}
    resumed, result, _ = _run(tmp_path / "cut", resume=True, save_every_steps=1)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [r["steps"] for r in result.history] == [3, 3, 3]
    for ref_row, row in zip(ref_result.history, result.history):  # the epoch means include the saved sums
        assert row["train_loss"] == ref_row["train_loss"]
        assert row["val_abaw_sum"] == pytest.approx(ref_row["val_abaw_sum"])


def _as_if_written_on_a_gpu(path) -> None:
    """Rewrite a resume state as a CUDA run writes it: every tensor's storage tagged ``cuda:0``,
    plus the CUDA RNG states of two GPUs (torch records where each storage lived)."""
    import torch.serialization as serialization

    state = torch.load(path, map_location="cpu", weights_only=True)
    state["rng"]["cuda"] = [torch.get_rng_state(), torch.get_rng_state()]
    real_tag = serialization.location_tag
    serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(state, path)
    finally:
        serialization.location_tag = real_tag


def test_a_state_written_on_a_gpu_resumes_anywhere_with_the_same_weights(tmp_path):
    reference, _, _ = _run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", data=_CutAt(make_data(), epoch=1, step=2), save_every_steps=1)
    state_path = tmp_path / "cut" / STATE_FILE
    _as_if_written_on_a_gpu(state_path)
    if not torch.cuda.is_available():  # the file really names a device this machine lacks
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(state_path, weights_only=True)
    state = load_state(state_path)
    tensors = [state["rng"]["torch"], *state["rng"]["cuda"], *state["model"].values()]
    assert all(t.device.type == "cpu" for t in tensors)
    resumed, _, _ = _run(tmp_path / "cut", resume=True, save_every_steps=1)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_finished_run_resumes_to_nothing_new(tmp_path):
    _run(tmp_path / "r", epochs=2)
    model, result, saved = _run(tmp_path / "r", epochs=2, resume=True)
    assert result.epochs_run == 2 and saved == []


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.1, 0.0])

    def validate(model):
        return {"abaw_sum": next(scores), "expr_score": 0.0}

    torch.manual_seed(0)
    model = tiny_cnn(0, hidden=16)
    saved: list[int] = []
    result = fit(
        SupervisedTask(model, LossConfig()),
        make_data(max_steps=1),
        torch.optim.Adam(model.parameters()),
        run_dir=tmp_path,
        options=FitOptions(epochs=10, patience=3, progress=False, tensorboard=False),
        validate=validate,
        to_device=FRAME_PREPARER,
        save_best=lambda m, e: saved.append(e),
    )
    assert saved == [1, 2]
    assert result.best_epoch == 2 and result.epochs_run == 5 and result.stopped_early
    assert result.best_metrics["abaw_sum"] == pytest.approx(0.9)


def test_early_stopping_state_round_trips():
    stop = EarlyStopping(patience=2)
    assert stop.update(1.0, 1) and not stop.update(float("nan"), 2)
    again = EarlyStopping(patience=2)
    again.load_state_dict(stop.state_dict())
    assert not again.update(0.5, 3) and again.should_stop


def test_nan_loss_stops_with_a_named_error(tmp_path):
    model = tiny_cnn(0, hidden=16)

    class NaNTask(SupervisedTask):
        def forward(self, batch):
            out = super().forward(batch)
            return {**out, "loss": out["loss"] * float("nan")}

    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(
            NaNTask(model, LossConfig()),
            make_data(),
            torch.optim.Adam(model.parameters()),
            run_dir=tmp_path,
            options=FitOptions(epochs=1, progress=False, tensorboard=False),
            to_device=FRAME_PREPARER,
        )


def test_init_from_copies_matching_tensors_only(tmp_path):
    from mtaffect.checkpoint import save_checkpoint
    from mtaffect.config import load_config
    from mtaffect.errors import UserError
    from mtaffect.train.components import build_cnn, init_weights

    source = tiny_cnn(5, hidden=16)
    save_checkpoint(tmp_path / "src.safetensors", source)
    config = load_config(
        "cnn_student",
        [
            "model.cnn.backbone=resnet_tiny",
            "model.cnn.hidden=16",
            f"model.init_from={tmp_path / 'src.safetensors'}",
        ],
    )
    model = build_cnn(config)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    # a different head width: the trunk is copied, the heads' mismatching tensors are left alone
    wider = MultitaskCNN(CNNConfig(backbone="resnet_tiny", hidden=32))
    copied, total = init_weights(wider, tmp_path / "src.safetensors")
    assert 0 < copied < total
    torch.testing.assert_close(
        wider.backbone.state_dict()["conv1.weight"], source.backbone.state_dict()["conv1.weight"]
    )
    other = MultitaskCNN(CNNConfig(backbone="resnet_small"))
    with pytest.raises(UserError, match="no tensor"):
        init_weights(other.heads["EXPR"], tmp_path / "src.safetensors")
