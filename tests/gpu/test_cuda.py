"""Checks that need CUDA (skipped on CPU-only machines such as CI): the warp and the decoder agree with the CPU."""

from __future__ import annotations

import pytest
import torch

import facekit
from facekit.warp import sparse_image_warp

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_warp_on_cuda_matches_cpu() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 64, 64, generator=generator)
    source = torch.rand(4, 20, 2, generator=generator) * 50 + 7
    destination = source + torch.randn(4, 20, 2, generator=generator)
    cpu, cpu_flow = sparse_image_warp(image, source, destination)
    gpu, gpu_flow = sparse_image_warp(image.cuda(), source.cuda(), destination.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu_flow.cpu(), cpu_flow, atol=1e-3, rtol=0)


def test_decoder_bf16_autocast_on_cuda() -> None:
    decoder = facekit.get_registry("decoder").get("paper").build({"image_size": 56, "feature_size": 32, "hidden": 64})
    decoder = decoder.cuda()
    features = torch.randn(8, 32, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = decoder.decode(features)
    out.image.float().sum().backward()
    assert torch.isfinite(out.image.float()).all() and features.grad is not None


def test_the_warp_keeps_its_precision_under_cuda_autocast() -> None:
    """As on the CPU (tests/unit/test_warp.py): CUDA autocast also runs bmm/matmul in bf16/fp16, which put flows
    pixels off at 224 px before the warp turned autocast off for itself."""
    generator = torch.Generator().manual_seed(1)
    source = torch.rand(2, 68, 2, generator=generator, dtype=torch.float64) * 150 + 37
    destination = source + 3 * torch.randn(2, 68, 2, generator=generator, dtype=torch.float64)
    image = torch.rand(2, 3, 224, 224, generator=generator)
    exact = sparse_image_warp(image.double(), source, destination, regularization=0.01)[1]
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype):
            flow = sparse_image_warp(
                image.cuda(), source.float().cuda(), destination.float().cuda(), regularization=0.01
            )[1]
        assert flow.dtype == torch.float32 and (flow.double().cpu() - exact).abs().max() < 1e-2


def test_an_app_and_the_evaluation_judge_run_on_the_gpu() -> None:
    """`facekit attributes|adjust|explore|eval --device cuda`: the app's normalizer is loaded on the GPU and measures
    what the CPU's does; an evaluation judge that is the model's own encoder (on the GPU) embeds the CPU's crops there
    and hands the embeddings back (before: a device mismatch inside the encoder)."""
    import numpy as np

    from facekit.apps.attributes import FaceAttributes
    from facekit.evaluate import Judge
    from facekit.testing import real_face

    photo = real_face().image
    gpu = FaceAttributes(device="cuda")
    assert {p.device.type for p in gpu.normalizer.decoder.parameters()} == {"cuda"}
    on_gpu, on_cpu = gpu.measure(photo), FaceAttributes(device="cpu").measure(photo)
    assert on_gpu is not None and on_cpu is not None
    assert abs(on_gpu["ita_degrees"] - on_cpu["ita_degrees"]) < 2.0
    face = gpu.normalizer.normalize(photo)
    embedded = Judge("own", gpu.normalizer.encoder).embed([face.image], face.landmarks[None])
    assert embedded.shape[0] == 1 and np.isfinite(embedded).all()
