"""``mtaffect serve``: the local web app: upload videos or photos, run predictions, watch the results.

Binds 127.0.0.1 by default; any other ``--host``, or ``--token``, requires the token printed at
start-up. Other sites' pages cannot write through the user's browser (docs/serve.md, Threat model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  mtaffect serve --checkpoint gru_student.safetensors --results results/
  mtaffect serve --models checkpoints/ --results results/ --port 0 --workers 2
  mtaffect serve --checkpoint cnn.safetensors --host 0.0.0.0      # prints an address with a token
  mtaffect serve --checkpoint cnn.safetensors --token             # a token on loopback too (shared machine)
"""


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``mtaffect view``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (8765; 0 = any free port)")
    parser.add_argument(
        "--media", action="append", default=[], metavar="DIR",
        help="a folder whose original videos/photos the page may show (repeatable; the results root "
        "always is one)",
    )
    parser.add_argument("--open", action="store_true", help="open the address in the default browser")
    parser.add_argument(
        "--token", action="store_true",
        help="require a random token on loopback too (machines with other users: they can reach 127.0.0.1)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("--results", default="results", help="results root: jobs write here (results/)")
    parser.add_argument("--checkpoint", help="the default checkpoint (.safetensors)")
    parser.add_argument("--models", help="a folder of .safetensors checkpoints offered in the page")
    parser.add_argument("--workers", type=int, default=1, help="jobs run at the same time (1)")
    parser.add_argument("--max-upload-mb", type=float, default=2048, help="size cap per uploaded file (2048)")
    parser.add_argument("--max-pending", type=int, default=200, metavar="N",
                        help="uploads that may wait for Start at once (200)")
    parser.add_argument("--max-pending-mb", type=float, default=8192, metavar="MB",
                        help="MB that uploads waiting for Start may hold in all (8192)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"), help="model backend")
    parser.add_argument("--device", default="cpu", help="torch device for backend torch")
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "haar"), help="face detector")
    parser.add_argument("--detect-every", type=int, default=5, metavar="N", help="detection every N frames")
    parser.add_argument("--min-face", type=float, default=40.0, metavar="PX", help="smallest face side (40)")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per model call (16)")
    parser.add_argument("--no-plots", action="store_true", help="jobs skip the PNG plots")
    parser.add_argument("--no-overlay", action="store_true", help="jobs skip the overlay video")
    add_common(parser)


def checkpoints_of(checkpoint: str | None, models: str | None) -> tuple[dict[str, Path], str | None]:
    """name → file for the page's checkpoint menu, and the default name."""
    from mtaffect.errors import UserError

    found: dict[str, Path] = {}
    default = None
    if models:
        folder = Path(models)
        if not folder.is_dir():
            raise UserError(f"{folder}: --models must be a folder of .safetensors files")
        for p in sorted(folder.glob("*.safetensors")):
            found[p.name] = p.resolve()
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint")
        found.setdefault(path.name, path.resolve())
        default = path.name
    if not found:
        raise UserError("give --checkpoint FILE or --models DIR (with .safetensors files) to run jobs")
    return found, default or next(iter(found))


def start(app_factory, args: argparse.Namespace, label: str) -> int:  # noqa: ANN001
    """Bind, print the address (with a token off loopback), serve until Ctrl-C."""
    from mtaffect.serve.server import address, bind, is_loopback, new_token, serve

    loopback = is_loopback(args.host)
    token = new_token() if getattr(args, "token", False) or not loopback else None
    sock = bind(args.host, args.port)
    app = app_factory(token=token, loopback=loopback)
    url = address(sock, args.host, token)
    print(f"mtaffect {label}: {url}", flush=True)
    if token:
        why = "a token was asked for" if loopback else "not a loopback address"
        print(f"  {why}: the token above is required (keep it private)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        serve(app, sock)
    finally:
        sock.close()
    return 0


def run(args: argparse.Namespace) -> int:
    from mtaffect.predict.threads import prediction_threads

    prediction_threads()  # as `predict`, before torch loads OpenMP
    from mtaffect.serve.app import create_app, vendor_ready

    checkpoints, default = checkpoints_of(args.checkpoint, args.models)
    options = {
        "backend": args.backend,
        "device": args.device,
        "detector": args.detector,
        "detect_every": args.detect_every,
        "min_face": args.min_face,
        "batch_size": args.batch_size,
    }
    if not vendor_ready():
        print("mtaffect serve: charts unavailable: the uPlot files are missing; run `make setup` "
              "(see docs/serve.md)", flush=True)
    print(f"results: {Path(args.results).resolve()}", flush=True)

    def factory(**kw):  # noqa: ANN003, ANN202
        return create_app(
            args.results, checkpoints=checkpoints, default_checkpoint=default, workers=args.workers,
            predictor_options=options, max_upload_mb=args.max_upload_mb, media_roots=args.media,
            plots=not args.no_plots, overlay=not args.no_overlay, max_pending=args.max_pending,
            max_pending_mb=args.max_pending_mb, **kw,
        )

    return start(factory, args, "serve")
