"""GlobalBatchNorm2d on two gloo ranks, each holding half a batch, gives nn.BatchNorm2d's outputs, input gradients,
parameter gradients and running statistics on the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from facekit.distributed import global_batchnorm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, port: int, folder: str) -> None:
    import warnings

    import torch.distributed as dist

    # Any warning fails the rank: torch's deprecated torch.distributed.nn.functional.all_reduce printed a FutureWarning
    # per batch-norm layer on a `torchrun` training's terminal (seen in stop 60's run under torchrun).
    warnings.simplefilter("error")

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    layer = global_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))
    inputs = torch.randn(6, 3, 5, 4, generator=torch.Generator().manual_seed(1)) * 3 + 2
    weights = torch.randn(6, 3, 5, 4, generator=torch.Generator().manual_seed(2))
    mine = inputs[rank * 3 : rank * 3 + 3].clone().requires_grad_(True)
    out = layer(mine)
    (out * weights[rank * 3 : rank * 3 + 3]).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    for grad in grads:
        dist.all_reduce(grad)  # what DDP does with parameter gradients (summed here: the loss is a sum)
    # In half precision (train.precision fp16) over a global batch of more elements a channel than float16 holds
    # (2 x 16 x 64 x 64 = 131,072 > 65,504): the count and sums were kept in float16, inf, and the output NaN.
    halves = global_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))
    wide = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    half_out = halves(wide[rank * 16 : rank * 16 + 16].half())
    torch.save(
        {
            "out": out.detach(),
            "grad": mine.grad,
            "params": grads,
            "state": layer.state_dict(),
            "half": (half_out.dtype, half_out.detach().float()),
        },
        f"{folder}/{rank}.pt",
    )
    dist.barrier()  # neither rank tears gloo down while the other still talks to it (an abort at exit otherwise)
    dist.destroy_process_group()
    # The results are on disk; leave without the interpreter's teardown, where gloo's C++ threads still ended a rank
    # now and then in "terminate called without an active exception" (SIGABRT; about 1 run in 30, stop 51's CI).
    os._exit(0)


def test_global_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    reference = nn.Sequential(nn.BatchNorm2d(3))
    inputs = (torch.randn(6, 3, 5, 4, generator=torch.Generator().manual_seed(1)) * 3 + 2).requires_grad_(True)
    weights = torch.randn(6, 3, 5, 4, generator=torch.Generator().manual_seed(2))
    out = reference(inputs)
    (out * weights).sum().backward()
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach(), atol=1e-5, rtol=1e-5)
    wide = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    whole = nn.BatchNorm2d(3)(wide).detach()
    torch.testing.assert_close(torch.cat([r["half"][1] for r in ranks]), whole, atol=1e-2, rtol=1e-2)
    assert all(r["half"][0] == torch.float16 for r in ranks)  # (the input's precision out)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), inputs.grad, atol=1e-5, rtol=1e-5)
    for got, want in zip(ranks[0]["params"], [p.grad for p in reference.parameters()], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ranks[1]["state"][key], value, atol=1e-5, rtol=1e-5)


def test_under_torchrun_only_rank_zero_says_what_each_stage_wrote(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`torchrun --nproc_per_node=2 -m facekit run demo --stage train` printed each warning and each stage's line
    once per rank, and rank 1's train line (its checkpoint read before rank 0 saved the last step) said "step 0 of
    train.steps 4" among rank 0's true one (stop 60, run here): rank 0 alone speaks, as it alone writes."""
    import facekit.pipeline
    from facekit.cli import main
    from facekit.pipeline import StageResult

    def stages(plan: Any, stage: Any, options: Any, said: Any) -> list[StageResult]:
        done = StageResult("train", Path("runs/x"), "step 4 of train.steps 4")
        said(done)
        return [done]

    monkeypatch.setattr(facekit.pipeline, "run_plan", stages)
    for rank, printed in (("1", ""), ("0", "train: step 4 of train.steps 4\n")):
        monkeypatch.setenv("RANK", rank)
        assert main(["run", "demo", "--stage", "train", "--set", "train.loss.identity=0"]) == 0
        out, err = capsys.readouterr()
        assert out == printed, (rank, out)
        assert ("warning: train.identity_jitter: not used" in err) == (rank == "0"), (rank, err)
