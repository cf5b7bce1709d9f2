"""The local web app: ``mtaffect serve`` (run predictions, watch them) and ``mtaffect view DIR``.

``app.create_app`` builds the Starlette app over a results root; ``results`` reads the
``predict --out`` layout (series downsampled per zoom level, summaries); ``jobs`` runs the CLI's
:class:`~mtaffect.predict.predictor.Predictor` in background threads; ``uploads`` checks uploaded
files and caps those waiting for a job; ``guard`` decides who may talk to the app (Host check,
cross-site writes refused, token); ``server`` binds the socket and runs uvicorn. The page
(``static/``) draws its charts with uPlot, vendored into ``static/vendor`` by ``make setup``
(docs/serve.md).
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):  # lazy: `mtaffect --help` stays fast
    if name == "create_app":
        from mtaffect.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'mtaffect.serve' has no attribute {name!r}")
