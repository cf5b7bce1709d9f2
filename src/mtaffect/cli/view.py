"""``mtaffect view DIR``: the web app over existing ``mtaffect predict --out DIR`` results (no jobs).

DIR is one ``--out`` folder or a folder of them. Nothing is recomputed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtaffect.cli.serve import add_common, start

EXAMPLES = """examples:
  mtaffect view results/
  mtaffect view out/ --media clips/      # also show the original videos kept in clips/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("dir", metavar="DIR", help="an `mtaffect predict --out` folder, or a folder of them")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from mtaffect.errors import UserError
    from mtaffect.serve.app import create_app

    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    runs = [p for p in (root, *root.iterdir()) if (p / "report.json").is_file()]
    if not runs:
        raise UserError(f"{root}: no report.json in it or in its sub-folders (is it a predict --out folder?)")
    print(f"results: {root.resolve()} ({len(runs)} run{'s' if len(runs) > 1 else ''})", flush=True)

    def factory(**kw):  # noqa: ANN003, ANN202
        return create_app(root, media_roots=args.media, **kw)

    return start(factory, args, "view")
