"""The task heads: the CNN's per-task MLP head and the GRU stage's per-task recurrent head.

CNN head (METHOD.md §1.2, the authors' ``Head``): BatchNorm1d(F) → Linear(F→128) → ReLU →
BatchNorm1d(128) [= the 128-d embedding the GRU reads] → Dropout(0.5) → Linear(128→n_out).

GRU head (METHOD.md §1.3, ``GRU_Head``): bidirectional GRU(128 → 64 per direction) over the
embedding sequence → ReLU → Linear(128 → n_out), one output per frame.
"""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """One CNN task head on pooled features (B, in_features).

    Parameter names follow the authors' ``Head`` (``bn0``, ``fc_0``, ``bn1``, ``fc_1``), which keeps
    their checkpoints a rename of the prefix only.
    """

    def __init__(
        self, in_features: int, out_features: int, *, hidden: int = 128, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm1d(in_features)
        self.fc_0 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_1 = nn.Linear(hidden, out_features)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_features) → (B, hidden): the embedding after ReLU and the second BatchNorm."""
        return self.bn1(self.relu(self.fc_0(self.bn0(features))))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, hidden) → (B, out_features) logits (dropout is active in train mode only)."""
        return self.fc_1(self.dropout(embedding))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_features) → (logits (B, out_features), embedding (B, hidden))."""
        embedding = self.embed(features)
        return self.classify(embedding), embedding


class GRUHead(nn.Module):
    """One temporal task head: (B, T, input_size) embeddings → per-frame logits (B, T, out_features).

    PyTorch's GRU stacks gates as (r, z, n) in ``weight_ih_l0``/``weight_hh_l0`` rows, the same order
    as the authors' checkpoints, so their GRU weights copy over unchanged.
    """

    def __init__(self, input_size: int, out_features: int, *, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * hidden, out_features)

    def forward(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, input_size) → (logits (B, T, out_features), features (B, T, 2·hidden) after ReLU)."""
        states, _ = self.gru(sequence)
        features = self.relu(states)
        return self.fc(features), features
