"""From uint8 face crops to the float tensors a model takes, as its weights expect.

The normalisation belongs to the weights, so every checkpoint stores its :class:`Preprocessing`.
FER+ weights (the paper): RGB in 0–255 minus mean (131.0912, 103.8827, 91.4953), std 1, 112×112
crops as Aff-Wild2's ``cropped_aligned`` frames. torchvision/timm ImageNet weights: the usual
ImageNet mean/std, written here on the 0–255 scale.

Images stay uint8 until they are on the model's device (4× less to copy), then ``apply`` converts.

The evaluation resize belongs to the training, so it is stored here too (``eval_resize``): a crop is
seen as training validated it, resized to ``int(eval_resize · size)`` and centre-cropped back to
``size`` (METHOD.md §4.4; the warp itself is :func:`mtaffect.data.augment.eval_batch`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

FERPLUS_MEAN = (131.0912, 103.8827, 91.4953)
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # (0.485, 0.456, 0.406) × 255
IMAGENET_STD = (58.395, 57.12, 57.375)  # (0.229, 0.224, 0.225) × 255
EVAL_RESIZE = 1.2
"""The authors' evaluation resize (``Resize(134)`` then ``CenterCrop(112)``, METHOD.md §4.4): what a
checkpoint without an ``eval_resize`` and every signature that needs a default take."""


@dataclass(frozen=True)
class Preprocessing:
    """Input size, per-channel mean/std on the 0–255 RGB scale, and the face-crop convention.

    crop: the name of how faces are cut out, so a user's crops can match the training crops
        ("affwild2_cropped_aligned": the organisers' 112×112 aligned faces; others come from
        ``mtaffect.data.faces``).
    eval_resize: the evaluation transform the weights were validated with: resize ×``eval_resize``
        then the centre ``size`` crop (training's ``data.resize_factor``; 1.0 = none). Evaluation,
        the feature cache and prediction all read it here.
    """

    size: int = 112
    mean: tuple[float, float, float] = FERPLUS_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: str = "affwild2_cropped_aligned"
    eval_resize: float = EVAL_RESIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "eval_resize", float(self.eval_resize))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.size < 8:
            raise ValueError(f"input size {self.size} is too small")
        if not self.eval_resize > 0:
            raise ValueError(f"eval_resize must be positive, got {self.eval_resize}")

    def to_dict(self) -> dict:
        """JSON-ready: ``{"size", "mean", "std", "crop", "eval_resize"}`` (lists for the tuples)."""
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """The block as stored; a key it lacks takes the field's default (``eval_resize``: 1.2)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def apply(
        self,
        images: torch.Tensor | np.ndarray,
        *,
        channels_last: bool = False,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """uint8 RGB (N, H, W, 3) or sequences (B, T, H, W, 3) → float32 (N, 3, S, S) or (B, T, 3, S, S).

        Runs on the tensor's device (or ``device``). Images whose side differs from ``size`` are
        resized (bilinear, antialiased); give crops of the right size to avoid the cost.
        ``channels_last`` returns 4-D output in ``torch.channels_last`` memory format (faster convs on CPU).
        """
        x = torch.as_tensor(images)
        if device is not None:
            x = x.to(device, non_blocking=True)
        if x.dim() not in (4, 5) or x.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 RGB images (N, H, W, 3) or (B, T, H, W, 3), got {tuple(x.shape)}"
            )
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std if self.std != (1.0, 1.0, 1.0) else x - mean
        if len(lead) == 1:
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        return x.reshape(*lead, *x.shape[1:]).contiguous()

    def apply_numpy(self, images: np.ndarray) -> np.ndarray:
        """Same as :meth:`apply` for numpy in/out (the onnxruntime path): float32, channels first."""
        return self.apply(np.ascontiguousarray(images)).numpy()


FERPLUS = Preprocessing()
IMAGENET = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="affwild2_cropped_aligned")


def default_preprocessing(backbone: str, size: int = 112) -> Preprocessing:
    """The normalisation the weights of ``backbone`` expect: FER+ for caffe-layout trunks, else ImageNet."""
    from mtaffect.models.resnet import BACKBONE_SPECS

    layout = BACKBONE_SPECS[backbone][1] if backbone in BACKBONE_SPECS else "caffe"
    base = FERPLUS if layout == "caffe" else IMAGENET
    return replace(base, size=size)
