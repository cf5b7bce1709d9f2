"""Benchmark: indexing an Aff-Wild2-sized tree, ours (``build_index``) vs the authors' approach.

    # once: the full-size tree (≈550 tracks, ≈2.8 M rows per task) and a 10 % subset
    python benchmarks/affwild2_tree.py /tmp/aw2_bench --tracks 550 --rows 2800000
    python benchmarks/affwild2_tree.py /tmp/aw2_bench_10pc --tracks 55 --rows 280000
    # timings (quiet repetitions, benchmarks/_timing.py)
    python benchmarks/bench_index.py ours /tmp/aw2_bench --reps 3
    python benchmarks/bench_index.py authors /tmp/aw2_bench_10pc --reps 3
    python benchmarks/bench_index.py ours /tmp/aw2_bench_10pc --reps 3

Each run also checks that both approaches keep the same labelled frames (EXPR and VA counts), so
the two timings describe the same work. Results are printed as JSON: the median wall time of
the quiet repetitions (or of the least loaded ones, ``quiet_reps`` says how many were quiet) and
the process CPU time of every timed run (user + system, all threads), which foreign load on the
shared cores inflates far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import time_quiet  # noqa: E402
from authors_index import build_authors  # noqa: E402
from mtaffect.data.index import build_index  # noqa: E402


def _tree_size(tree: Path) -> dict[str, int]:
    rows = {}
    for task in ("EXPR_Set", "VA_Set"):
        n = 0
        for split in ("Train_Set", "Validation_Set"):
            folder = tree / "annotations" / task / split
            for name in os.listdir(folder):
                with open(folder / name, "rb") as handle:
                    n += handle.read().rstrip().count(b"\n")
        rows[task] = n
    rows["tracks"] = len(os.listdir(tree / "cropped_aligned"))
    return rows


def run_ours(tree: Path) -> dict[str, int]:
    index, meta = build_index({"affwild2": tree})
    frames = meta["summary"]["frames"]["affwild2"]
    return {
        "rows": len(index),
        "EXPR": sum(frames[s]["expression_rows"] for s in ("train", "validation") if s in frames),
        "VA": sum(frames[s]["va_rows"] for s in ("train", "validation") if s in frames),
    }


def run_authors(tree: Path) -> dict[str, int]:
    data = build_authors(str(tree / "annotations"), str(tree / "cropped_aligned"))
    return {
        "EXPR": sum(len(df) for split in data["EXPR_Set"].values() for df in split.values()),
        "VA": sum(len(df) for split in data["VA_Set"].values() for df in split.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("approach", choices=("ours", "authors"))
    parser.add_argument("tree", type=Path)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (warm file-system cache)")
    parser.add_argument("--max-tries", type=int, help="timed runs at most, quiet or not (default 2 × reps)")
    args = parser.parse_args()
    fn = run_ours if args.approach == "ours" else run_authors
    counts: dict[str, int] = {}
    cpu: list[float] = []

    def once() -> None:
        c0 = time.process_time()
        counts.update(fn(args.tree))
        cpu.append(time.process_time() - c0)

    t0 = time.perf_counter()
    timing = time_quiet(once, reps=args.reps, warmup=args.warmup, max_tries=args.max_tries or 2 * args.reps)
    result = {
        "approach": args.approach,
        "tree": str(args.tree),
        "tree_size": _tree_size(args.tree),
        "kept_frames": counts,
        "median_s": round(timing.median_s, 2),
        "samples_s": [round(s, 2) for s in timing.samples],
        "quiet_reps": f"{timing.kept}/{timing.total}",
        "process_cpu_s": [round(c, 2) for c in cpu[args.warmup :]],
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
