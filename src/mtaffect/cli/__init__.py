"""The ``mtaffect`` command: a thin shell over the Python API.

Each subcommand lives in its own module ``mtaffect.cli.<module>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; the module is imported only when its
subcommand runs, so ``mtaffect --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mtaffect.errors import OutputError, UserError, describe_os_error

# name -> (module under mtaffect.cli, one-line help). Order = the pipeline's order.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "index": ("index", "read native databases into one frame index (Parquet) and print a summary"),
    "cache": ("cache", "build the aligned face cache for the databases of a frame index"),
    "synthetic": ("synthetic", "write the built-in synthetic databases in their native formats"),
    "convert": ("convert", "convert FER+ / the authors' checkpoints into mtaffect checkpoints"),
    "info": ("info", "what a checkpoint is: kind, backbone, input, crops, training data, source, licence"),
    "join": ("join", "join a CNN checkpoint and a GRU-only checkpoint into one CNN+GRU checkpoint"),
    "export": ("export", "export a checkpoint to ONNX"),
    "train": ("train", "train one stage (CNN/GRU teacher/student) from a YAML recipe"),
    "evaluate": ("evaluate", "ABAW metrics of a checkpoint on the validation frames of an index"),
    "reproduce": ("reproduce", "the paper's ablations (Tables 1-3) over several seeds"),
    "extract-faces": ("extract_faces", "write cropped_aligned-style face folders from raw videos"),
    "predict": ("predict", "per-frame expressions and valence/arousal on videos and images"),
    "live": ("live", "a stream, camera or file analysed as it happens, recorded as a result folder"),
    "submit": ("submit", "write or validate ABAW submission files"),
    "serve": ("serve", "local web app: upload videos, run predictions, watch emotions beside the video"),
    "view": ("view", "the web app over existing `mtaffect predict --out` results"),
    "demo": ("demo", "the whole recipe on the built-in synthetic databases, on a CPU, in minutes"),
}

EPILOG = """examples:
  mtaffect demo --out runs/demo
  mtaffect index --affwild2 /data/Aff-Wild2 --affectnet /data/AffectNet --out index.parquet
  mtaffect train configs/cnn_teacher.yaml data.index=index.parquet
  mtaffect predict video.mp4 --checkpoint gru_student.safetensors --out results/
"""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtaffect",
        description="Multitask multi-database emotion recognition: 7 expressions + valence/arousal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    """The full parser of one subcommand (imports its module)."""
    module_name, help_text = SUBCOMMANDS[command]
    module = importlib.import_module(f"mtaffect.cli.{module_name}")
    parser = argparse.ArgumentParser(
        prog=f"mtaffect {command}",
        description=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        args = _top_parser().parse_args(argv)
        if args.version:
            from mtaffect import __version__

            print(__version__)
            return 0
        _top_parser().print_help()
        return 0 if not argv else 2
    parser = build_parser(argv[0])
    args = parser.parse_args(argv[1:])
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work was kept (rerun the same command to resume)", file=sys.stderr)
        return 130
    except OutputError as err:  # read-only folder, full disk: the path and the reason, one line
        print(f"mtaffect {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    except UserError as err:  # bad input: a clear message, no traceback
        print(f"mtaffect {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:  # an OS error no writer wrapped (mkdir of a run folder...)
        if isinstance(err, RuntimeError) and not describe_os_error(err).startswith("the file could not"):
            raise  # a genuine bug: keep its traceback
        where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
        print(f"mtaffect {argv[0]}: error: {where}{describe_os_error(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
