"""CPU threads for prediction: OpenMP threads that sleep when idle, one torch thread on small machines.

Prediction overlaps video decoding, face detection and the model. OpenMP threads that busy-wait
between the model's calls take the cores the decoder and the detector need, and on a machine with
two cores two such torch threads are slower than one. This module imports nothing heavy, so a
command can apply the policy before torch is first imported (OpenMP reads its wait policy then).
"""

from __future__ import annotations

import os

__all__ = ["prediction_threads"]


def prediction_threads() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` (unless set already) and, on machines with at most two cores,
    one torch thread.

    OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it: the wait policy counts in this
    process only if this runs before the first ``import torch`` (the ``predict`` command calls it
    first thing); later it still reaches child processes. The thread count applies whenever it runs,
    so :func:`mtaffect.predict.runner.predict_inputs` applies it for API users too.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if (os.cpu_count() or 1) <= 2:
        import torch

        torch.set_num_threads(1)
