"""The key/shape tables of the authors' and FER+ checkpoints (../shared/reference/), and random
weights in those layouts: files shaped like the ones users download, without the weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
if not REFERENCE.is_dir():  # the shared folder sits next to the working tree
    REFERENCE = Path("/work/shared/reference")


def key_table(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of one ``*_keys.tsv`` table."""
    table = {}
    for line in (REFERENCE / name).read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        table[key] = tuple(json.loads(shape))
    return table


def random_state(table: dict[str, tuple[int, ...]], seed: int, *, batches_tracked: bool = True) -> dict:
    """Random tensors for a key table, scaled so activations stay O(1) through 50 layers."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in table.items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            if batches_tracked:
                state[key] = torch.tensor(123)
            continue
        if leaf == "running_var":
            t = torch.rand(shape, generator=g) + 0.5
        elif leaf == "running_mean":
            t = torch.randn(shape, generator=g) * 0.1
        elif "GRU_layer" in key:
            t = (torch.rand(shape, generator=g) - 0.5) / 4
        elif leaf == "weight" and len(shape) == 1:  # BatchNorm scale
            t = torch.rand(shape, generator=g) * 0.5 + 0.25
        elif leaf == "weight":
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
            if key.endswith("conv1_7x7_s2.weight"):
                t = t / 64  # inputs are 0–255 minus the mean
        else:
            t = torch.randn(shape, generator=g) * 0.1
        state[key] = t
    return state


def write_ferplus_file(path: Path, seed: int = 0) -> Path:
    """A ``resnet50_ferplus_dag.pth`` in the FER+ layout with random weights."""
    torch.save(random_state(key_table("ferplus_backbone_keys.tsv"), seed, batches_tracked=False), path)
    return path
