"""Data-parallel training on N processes that follows one process: ranks, global loss terms, and BatchNorm whose
statistics are those of the global batch.

Under ``torchrun`` each rank takes its slice of the same global batch (gloo on CPU, nccl on GPU). DDP averages the
gradients; that alone equals one process only for layers that treat samples independently. BatchNorm does not: on
each rank it would normalise with the statistics of that rank's slice. :class:`GlobalBatchNorm2d` all-reduces the
sums (differentiably) so every rank normalises with the global batch's mean and variance, on the CPU too (torch's
``SyncBatchNorm`` runs on accelerators only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Distributed:
    """This process's rank in a world of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def global_terms(terms: dict[str, torch.Tensor], share: float, dist: Distributed) -> dict[str, torch.Tensor]:
    """The loss terms over the whole global batch (each rank's mean weighted by its share of the batch)."""
    values = {k: v.detach().float() for k, v in terms.items()}
    if dist.world == 1:
        return values
    import torch.distributed

    stacked = torch.stack([values[k] * share for k in sorted(values)])
    torch.distributed.all_reduce(stacked)
    return dict(zip(sorted(values), stacked, strict=True))


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training under an initialised process group, normalises with the mean and variance of
    the global batch: per-channel count, sum and sum of squares are all-reduced with autograd, so gradients match
    one process holding the whole batch. Otherwise (eval, or one process) exactly ``nn.BatchNorm2d``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        all_reduce = _AllReduceSum.apply
        # In float32 whatever the input's precision (train.precision fp16/bf16): the element count and the sums of a
        # global batch pass float16's largest number (65,504: batch 32 at 64 x 64 px), which made the mean and the
        # variance inf and NaN, and bfloat16 rounded the count (helper-237). The output is the input's precision.
        given, input = input.dtype, input.float()

        dims, channels, shape = (0, 2, 3), input.shape[1], (1, input.shape[1], 1, 1)
        count = torch.tensor([input.shape[0] * input.shape[2] * input.shape[3]], dtype=input.dtype, device=input.device)
        sums = all_reduce(torch.cat([input.sum(dims), count]))
        n = sums[-1]
        mean = sums[:channels] / n
        # Two passes (centre, then square) like nn.BatchNorm2d: E[x^2] - E[x]^2 loses digits to cancellation.
        centred = input - mean.view(shape)
        variance = all_reduce(centred.square().sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = variance * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred / torch.sqrt(variance.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(given)


class _AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over every rank, differentiable: each rank's output is the sum of all ranks' inputs, so the
    gradient of an input is the sum of every rank's output gradient. (torch's ``torch.distributed.nn.functional.
    all_reduce`` did the same and printed a FutureWarning, deprecated, twice per batch-norm layer and rank on a
    user's terminal at a `torchrun` training's first step; its replacement is a private module.)"""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` turned into a :class:`GlobalBatchNorm2d` in place (same parameters and
    buffers, so checkpoints are unchanged)."""
    for batchnorm in [m for m in module.modules() if type(m) is nn.BatchNorm2d]:
        batchnorm.__class__ = GlobalBatchNorm2d
    return module
