"""Does a generator draw readable digits? An independent MNIST classifier reads its samples, against real digits.

The classifier is a small CNN trained on MNIST's training split (2 epochs, about a minute on 2 CPU cores) and
kept in ``benchmarks/mnist_classifier.safetensors``; it must reach 98% on the test split. It reads 28 px
digits that went through the round trip a 64 px generator's samples take (up to 64 px, then down to 28 px
with antialiasing), so real digits are read as confidently as they should be. A generator passes when at
least 90% of 500 samples (seed 0) are read with confidence above 0.9 and every class takes at least 5% of the
confident reads.

    source ../shared/env.sh && python benchmarks/mnist_check.py dcgan-mnist-64
    python benchmarks/mnist_check.py runs/mnist_dcgan --num 500 --retrain
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

CONFIDENT_FLOOR = 0.9  # the bundled generator reads 0.908 (docs/results.md); a floor against regressions
WEIGHTS = Path(__file__).with_name("mnist_classifier.safetensors")
CONFIDENCE, READ, CLASS_SHARE = 0.9, 0.9, 0.05


def classifier() -> nn.Sequential:
    """28x28 grayscale in [-1, 1] -> 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def to28(images: torch.Tensor) -> torch.Tensor:
    """Any side down (or up) to 28 px, antialiased: how the classifier sees a generator's samples."""
    return F.interpolate(images.float(), size=28, mode="bilinear", antialias=True, align_corners=False)


def round_trip(x28: torch.Tensor) -> torch.Tensor:
    """28 px digits as a 64 px generator would draw them, read back at 28 px."""
    return to28(F.interpolate(x28, size=64, mode="bicubic", align_corners=False).clamp(-1, 1))


def mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images in [-1, 1] (N, 1, 28, 28) and labels, from ``$GANXFER_DATA/mnist``."""
    from torchvision.datasets import MNIST

    from ganxfer.cache import mnist_root

    ds = MNIST(str(mnist_root()), train=train, download=False)
    return ds.data[:, None].float() / 127.5 - 1, ds.targets


def train_classifier(epochs: int = 2, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    x, y = mnist(train=True)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(net(round_trip(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def load_classifier(path: Path = WEIGHTS) -> nn.Sequential:
    net = classifier()
    safetensors.torch.load_model(net, str(path))
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module) -> float:
    x, y = mnist(train=False)
    return float((torch.cat([net(round_trip(b)).argmax(1) for b in x.split(1000)]) == y).float().mean())


@torch.no_grad()
def read(net: nn.Module, images: torch.Tensor) -> dict:
    """How the classifier reads images in [-1, 1] (N, 1, H, W): the confident share and the class mix, plus
    the share of pixels that are pure black once saved (MNIST's background is: ~75% of its pixels; a dim grey
    background that the classifier ignores costs Inception-based FID dearly, see docs/research/bundle-mnist.md)."""
    x = to28(images)
    probs = torch.cat([net(b).softmax(1) for b in x.split(500)])
    conf, label = probs.max(1)
    confident = conf > CONFIDENCE
    counts = torch.bincount(label[confident], minlength=10)
    shares = (counts / max(1, int(confident.sum()))).tolist()
    black = float((images.float().add(1).mul(127.5).round() <= 0).float().mean())  # as saved: uint8 zeros
    return {"num": len(x), "confident": float(confident.float().mean()), "class_shares": [round(s, 3) for s in shares],
            "black_pixels": round(black, 3),
            "passes": bool(confident.float().mean() >= READ and min(shares) >= CLASS_SHARE)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", default="dcgan-mnist-64", help="generator source (bundled, folder, run)")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--retrain", action="store_true", help="train the classifier again and overwrite its weights")
    args = ap.parse_args()
    if args.retrain or not WEIGHTS.is_file():
        net = train_classifier()
        safetensors.torch.save_model(net, str(WEIGHTS))
    net = load_classifier()
    import ganxfer

    out = {"source": args.source, "classifier_test_accuracy": accuracy(net),
           **read(net, ganxfer.load_generator(args.source).sample(args.num, seed=0))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
