"""Several processes training one run: the Accelerator a launcher asked for, and BatchNorm over the global batch.

``torchrun`` and ``accelerate launch`` set ``WORLD_SIZE``. On a machine without a GPU, Accelerate 1.x sets up
a distributed run only when told to use the CPU; otherwise every process trains alone, each believing it is
the only one. :func:`accelerator` tells it, and refuses to go on when the processes still do not form one run.
"""

from __future__ import annotations

import copy
import os
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn

from ganxfer.errors import GanxferError

LAUNCH = ("torchrun --nproc_per_node N -m ganxfer train RECIPE, or accelerate launch --multi_gpu "
          "--num_processes N -m ganxfer train RECIPE")


class LaunchError(GanxferError):
    """The processes a launcher started do not form one distributed run."""


def launched_world() -> int:
    """How many processes the launcher started (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def native_precision() -> str:
    """The autocast precision the hardware computes natively: bf16 on a GPU that has it and on a CPU with
    AVX512-BF16 or AMX-BF16 (Linux flags), else no (elsewhere bf16 autocast is emulated and slower than fp32)."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return "no"
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "no"


def resolve_precision(precision: str) -> str:
    """``train.mixed_precision`` as Accelerate takes it: ``auto`` becomes :func:`native_precision`."""
    return native_precision() if precision == "auto" else precision


def fresh_state(mixed_precision: str | None) -> None:
    """Let one process train runs of different precisions one after another (the Python API, notebooks, tests).

    Accelerate keeps one state per process and refuses an Accelerator of another precision once it exists;
    with a single process there is no process group to lose, so the old state is dropped (Accelerate's own
    tests do the same).
    """
    from accelerate.state import AcceleratorState

    shared = getattr(AcceleratorState, "_shared_state", {})
    if shared and mixed_precision and shared.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state()


def accelerator(**kwargs) -> Accelerator:
    """An Accelerator whose processes are those the launcher started: gloo on CPUs, nccl on GPUs.

    DDP does not broadcast buffers before each forward. The only buffers that change in training are BatchNorm
    statistics, which no training-mode forward reads; and broadcasting them in place between the discriminator's
    forwards of one step breaks the step's backward where BatchNorm saved them for it (cuDNN on GPUs:
    pytorch/pytorch#175024; the CPU kernel does not save them, so CPU runs cannot show it).
    """
    world = launched_world()
    cpu = world > 1 and not torch.cuda.is_available()
    # torch 2.13 renamed it forward_sync_buffers, which Accelerate 1.15 does not pass on; False also skips the
    # sync at start, which every process's same seed (or the same checkpoint) makes unnecessary
    warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
    if world == 1:
        fresh_state(kwargs.get("mixed_precision"))
    try:
        acc = Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)], **kwargs)
    except (ValueError, RuntimeError) as e:  # e.g. WORLD_SIZE set by hand, with no launcher and no MASTER_ADDR
        if world == 1:
            raise
        raise LaunchError(f"WORLD_SIZE={world}, but the processes could not meet ({str(e).splitlines()[0][:160]}); "
                          f"launch with {LAUNCH}") from None
    if acc.num_processes != world:
        raise LaunchError(f"the launcher started {world} processes but they did not join one run (Accelerate set "
                          f"up {acc.distributed_type.value} with {acc.num_processes}); launch with {LAUNCH}")
    return acc


@contextmanager
def main_process_first(acc: Accelerator):
    """The block runs in the main process first, then in the main process of each other machine, then in the
    rest: what it writes to a cache (shared by the machines, or each machine's own) is written by one process,
    and the others find it there."""
    with acc.main_process_first(), acc.local_main_process_first():
        yield


class _AllReduce(torch.autograd.Function):
    """Sum over processes; the gradient of each process's input is the sum of every process's output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduce.apply(grad)  # itself differentiable: R1 takes a gradient of a gradient


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d normalising by the statistics of the global batch, summed over the processes with a
    differentiable all-reduce. Unlike ``torch.nn.SyncBatchNorm`` it runs on every backend, gloo (CPU) included.
    With one process, or in eval mode, it is plain BatchNorm2d (same parameters and buffers).

    Every process normalises a batch of the same size (the loop gives each ``batch_size / N`` images), so the
    global count is a Python number, this process's times N: only the sums travel, and nothing is copied from
    the host in a forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf, dims = x.float(), (0, 2, 3)
        count = xf.numel() // xf.shape[1] * dist.get_world_size()
        mean = _AllReduce.apply(xf.sum(dims)) / count
        centred = xf - mean[None, :, None, None]
        var = _AllReduce.apply(centred.square().sum(dims)) / count  # two passes, as precise as one process's BatchNorm
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * (count / max(count - 1, 1)), m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def _swap(module: nn.Module, make) -> nn.Module:
    """``module`` with each BatchNorm2d or SyncBatchNorm child (recursively) replaced by ``make(child)``."""
    for name, child in module.named_children():
        if type(child) in (nn.BatchNorm2d, SyncBatchNorm):  # not subclasses such as timm's BatchNormAct2d
            setattr(module, name, make(child))
        else:
            _swap(child, make)
    return module


def _as(cls: type[nn.BatchNorm2d]):
    def make(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        new.train(bn.training)
        if bn.affine:
            new.weight.requires_grad_(bn.weight.requires_grad)
            new.bias.requires_grad_(bn.bias.requires_grad)
        return new.to(bn.weight.device if bn.affine else bn.running_mean.device)

    return make


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` (changed in place) with its BatchNorm2d layers as :class:`SyncBatchNorm`; same state dict.
    Eval-mode layers (a frozen backbone's) are converted too, and stay plain in eval mode."""
    return _swap(module, lambda bn: bn if isinstance(bn, SyncBatchNorm) else _as(SyncBatchNorm)(bn))


def local_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with plain BatchNorm2d layers: for what one process runs alone in train mode (the
    EMA's BatchNorm recalibration), where a synchronised layer would wait for the others forever."""
    return _swap(copy.deepcopy(module), lambda bn: _as(nn.BatchNorm2d)(bn) if isinstance(bn, SyncBatchNorm) else bn)
