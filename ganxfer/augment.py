"""DiffAugment (Zhao et al., 2020): differentiable colour, translation and cutout, for real and fake alike.

The same policy is applied to every image the discriminator sees, so D cannot tell real from fake by the
augmentation, and gradients flow through it to G. Randomness comes from an explicit ``torch.Generator``,
which makes a run reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Op = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _rand(x: torch.Tensor, gen: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)


def brightness(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return x + (_rand(x, gen, 1, 1, 1) - 0.5)


def saturation(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, gen, 1, 1, 1) * 2) + mean


def contrast(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, gen, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the side, filling with zeros (the DiffAugment reference behaviour)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen, device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + ty + 1).clamp(0, h + 1)
    gx = (gx[None] + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    flat = padded.permute(0, 2, 3, 1).reshape(b, (h + 2) * (w + 2), -1)
    idx = (gy * (w + 2) + gx).reshape(b, -1, 1).expand(-1, -1, x.shape[1])
    return flat.gather(1, idx).reshape(b, h, w, -1).permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` times the side per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    rows, cols = gy[None] - oy + ch // 2, gx[None] - ox + cw // 2
    inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, list[Op]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


class DiffAugment:
    """Callable ``aug(x, gen)`` applying a comma-separated policy such as ``"color,translation,cutout"``."""

    def __init__(self, policy: str = "") -> None:
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [n for n in names if n not in POLICIES]
        if unknown:
            raise ValueError(f"augment.policy: unknown '{unknown[0]}'; use a comma list of {', '.join(POLICIES)}")
        self.ops = [op for n in names for op in POLICIES[n]]

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x.contiguous()
