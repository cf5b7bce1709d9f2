"""Our own bottleneck ResNet in two layouts, with torchvision's parameter names in both.

* ``layout="torchvision"`` (ResNet v1.5): stride on the 3×3 conv, stem max-pool 3×3/2 with padding 1.
  Parameter names and shapes are exactly torchvision's ``resnet50`` (``conv1``, ``bn1``,
  ``layer1.0.conv1`` … ``layer4.2.bn3``, ``fc``), so a torchvision/timm state dict loads as is.
* ``layout="caffe"`` (ResNet v1, the MatConvNet-imported FER+ network of the paper, METHOD.md §1.1):
  stride 2 on the first 1×1 "reduce" conv of a stage and on the projection; stem max-pool 3×3/2,
  padding 0, ``ceil_mode=True``; two ``Dropout(0.5)`` in the last block (``conv5_3``), each between a
  conv and its BatchNorm (after the 3×3 conv and after the 1×1 increase conv, as the FER+ layer
  table and shape trace order them). The FER+ 8-class 1×1 classifier becomes the optional ``fc``
  (a 1×1 conv after global pooling is a Linear layer).

The global pool is ``AdaptiveAvgPool2d(1)`` in both layouts (the FER+ ``pool5_7x7_s1`` would fail on
the 4×4 map a 112×112 input gives). Both layouts have identical parameter shapes; only the
arithmetic differs, so FER+ weights in the torchvision layout "load" but compute something else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LAYOUTS = ("torchvision", "caffe")


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 increase (×4 channels), with a projection shortcut where shapes change.

    ``drop_mid``/``drop_out``: dropout probability after the 3×3 conv / after the 1×1 increase conv,
    applied *before* their BatchNorm (FER+ ``conv5_3_3x3_drop`` and ``conv5_3_1x1_increase_drop``).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        layout: str,
        drop_mid: float = 0.0,
        drop_out: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        stride_reduce, stride_mid = (stride, 1) if layout == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_reduce, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_mid, padding=1, bias=False)
        self.drop2 = nn.Dropout(drop_mid) if drop_mid > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.drop3 = nn.Dropout(drop_out) if drop_out > 0 else nn.Identity()
        self.bn3 = nn.BatchNorm2d(out_channels, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, eps=eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 4·width, H/s, W/s)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.drop2(self.conv2(out))))
        out = self.bn3(self.drop3(self.conv3(out)))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet trunk: ``forward_features`` → (B, feature_dim) pooled features.

    ``blocks``: bottlenecks per stage (ResNet-50: (3, 4, 6, 3)); ``base_width``: width of the first
    stage (64 for ResNet-50; the feature dim is ``base_width · 8 · 4``); ``num_classes``: 0 for no
    classifier (the multitask CNN), 1000 for torchvision's ImageNet ``fc``, 8 for the FER+ classifier;
    ``last_block_dropout``: the caffe layout's conv5_3 dropouts (0 disables them).
    """

    def __init__(
        self,
        blocks: Sequence[int] = (3, 4, 6, 3),
        *,
        layout: str = "caffe",
        base_width: int = 64,
        num_classes: int = 0,
        last_block_dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown ResNet layout {layout!r}; expected one of {LAYOUTS}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must give 4 stages of at least 1 block each, got {tuple(blocks)}")
        self.layout = layout
        self.blocks = tuple(int(b) for b in blocks)
        self.base_width = base_width
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        if layout == "caffe":
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = base_width
        drop = last_block_dropout if layout == "caffe" else 0.0
        for stage, n_blocks in enumerate(self.blocks):
            width = base_width * 2**stage
            layers = []
            for index in range(n_blocks):
                last = stage == 3 and index == n_blocks - 1
                layers.append(
                    Bottleneck(
                        channels,
                        width,
                        stride=2 if (stage > 0 and index == 0) else 1,
                        layout=layout,
                        drop_mid=drop if last else 0.0,
                        drop_out=drop if last else 0.0,
                    )
                )
                channels = width * Bottleneck.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
        self.feature_dim = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → last feature map (B, feature_dim, H', W') (4×4 at 112² for ResNet-50)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → globally average-pooled features (B, feature_dim)."""
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features through the optional classifier: (B, num_classes), or (B, feature_dim) without one."""
        return self.fc(self.forward_features(x))


# name -> (blocks, layout, base_width). The "_caffe" networks take FER+ weights, the others torchvision's.
BACKBONE_SPECS: dict[str, tuple[tuple[int, int, int, int], str, int]] = {
    "resnet50_caffe": ((3, 4, 6, 3), "caffe", 64),
    "resnet50": ((3, 4, 6, 3), "torchvision", 64),
    # Small trunks for CPU demos and tests: same code, fewer and narrower blocks.
    "resnet_small": ((1, 2, 2, 1), "caffe", 16),  # 512-d features, 0.6 M parameters
    "resnet_tiny": ((1, 1, 1, 1), "caffe", 8),  # 256-d features, 0.13 M parameters
}


def build_backbone(name: str, *, num_classes: int = 0, last_block_dropout: float = 0.5) -> ResNet:
    """A trunk by name (see :data:`BACKBONE_SPECS`); ``num_classes=0`` leaves the classifier out."""
    if name not in BACKBONE_SPECS:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_SPECS)}")
    blocks, layout, width = BACKBONE_SPECS[name]
    return ResNet(
        blocks,
        layout=layout,
        base_width=width,
        num_classes=num_classes,
        last_block_dropout=last_block_dropout,
    )


def fold_batchnorm(net: ResNet) -> ResNet:
    """An inference-only copy of ``net`` with every BatchNorm2d folded into the conv before it.

    Each ``conv → bn`` pair becomes one conv with a bias (``W' = W·γ/σ``, ``b' = β − μ·γ/σ``), which
    saves a pass over every activation map. Valid in eval mode only (BN uses its running stats and
    the caffe layout's conv5_3 dropouts are identities there); the copy is put in eval mode.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(net).eval()
    pairs = [(folded, "conv1", "bn1")]
    for stage in (folded.layer1, folded.layer2, folded.layer3, folded.layer4):
        for block in stage:
            pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())
    return folded
