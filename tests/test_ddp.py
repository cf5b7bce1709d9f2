"""DDP: two CPU processes on the gloo backend train the same model on disjoint shares of the draws
and end with identical weights (gradients are averaged by DDP during backward)."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from mtaffect import distributed
from mtaffect.losses import LossConfig
from mtaffect.testing import tiny_cnn
from mtaffect.train.loop import FitOptions, fit
from mtaffect.train.tasks import SupervisedTask
from support import FRAME_PREPARER, free_port, make_data


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    try:
        model = tiny_cnn(0, hidden=16)
        task = SupervisedTask(model, LossConfig())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
        data = make_data(rank=ctx.rank, world=ctx.world)
        calls = []

        def validate(m):
            calls.append(1)
            return {"abaw_sum": float(len(calls))}

        result = fit(
            task,
            data,
            optimizer,
            run_dir=out_dir,
            options=FitOptions(epochs=2, progress=False, tensorboard=False),
            validate=validate,
            to_device=FRAME_PREPARER,
            dist=ctx,
        )
        torch.save(
            {
                "state": model.state_dict(),
                "steps": data.steps_per_epoch(),
                "validated": len(calls),
                "best_epoch": result.best_epoch,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        distributed.cleanup(ctx)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == (24 // 2) // 8
    assert (r0["validated"], r1["validated"]) == (2, 0)  # rank 0 validates and broadcasts
    assert r0["best_epoch"] == r1["best_epoch"] == 2
    for name, a in r0["state"].items():
        torch.testing.assert_close(a, r1["state"][name], rtol=0, atol=0, msg=name)
    initial = tiny_cnn(0, hidden=16).state_dict()
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, r0["state"][k])]
    assert changed, "training changed no weight"
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "last_state.pt").exists()


def _resume_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from mtaffect.errors import UserError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    run_dir = os.path.join(out_dir, f"node{rank}")  # two machines without a shared folder
    os.makedirs(run_dir, exist_ok=True)
    if rank == 0:  # only the first "machine" holds the state rank 0 wrote
        with open(os.path.join(run_dir, "last_state.pt"), "wb") as f:
            f.write(b"a state")
    try:
        model = tiny_cnn(0, hidden=16)
        task = SupervisedTask(model, LossConfig())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        try:
            fit(task, make_data(rank=ctx.rank, world=ctx.world), optimizer, run_dir=run_dir,
                options=FitOptions(epochs=1, resume=True, progress=False, tensorboard=False),
                to_device=FRAME_PREPARER, dist=ctx)
            message = "trained"
        except UserError as error:
            message = str(error)
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(message)
    finally:
        distributed.cleanup(ctx)


def test_a_resume_that_not_every_rank_can_read_stops_on_every_rank(tmp_path):
    mp.spawn(_resume_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank, seen in ((0, "found"), (1, "missing")):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "exists on some ranks only" in message and f"rank {rank}: {seen}" in message, message
        assert "shared file system" in message
