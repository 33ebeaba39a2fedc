"""The ``arcface-onnx`` encoder: an insightface ONNX recognition model run with onnxruntime (not differentiable)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facekit.errors import FacekitError
from facekit.types import RebuiltOnUnpickle
from facekit_insightface.cards import ARCFACE_ONNX_CARD, W600K_R50, ArcFaceOnnxParams
from facekit_insightface.session import open_session, resolve


def normalises_in_model(path: Any) -> bool:
    """Whether the ONNX graph at ``path`` subtracts a mean and scales its input itself (MXNet-converted insightface
    models: ``_minus``/``_mul`` nodes, Sub and Mul, among the first 8), insightface's own test in its model zoo."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    found = {"sub": False, "mul": False}
    for node in nodes:
        name = node.name.lower()
        found["sub"] |= node.op_type == "Sub" or name.startswith(("sub", "_minus"))
        found["mul"] |= node.op_type == "Mul" or name.startswith(("mul", "_mul"))
    return found["sub"] and found["mul"]


class ArcFaceOnnxEncoder(RebuiltOnUnpickle):
    """``(B, 3, 112, 112)`` RGB in ``[0, 1]`` aligned to ``card.template`` -> ``embed`` ``(B, 512)`` L2-normalised,
    ``features`` ``(B, 512)`` the raw network output. Runs on the CPU with onnxruntime; returns float32 tensors on
    the input's device."""

    differentiable = False
    #: An onnxruntime session cannot be pickled ("cannot pickle '...InferenceSession' object": no process pool, no
    #: deep copy of a Normalizer with this encoder): the copy opens the weight file again, verified as on first load.
    _REBUILT = ("session", "_path")

    def __init__(self, params: ArcFaceOnnxParams) -> None:
        self.params = params
        self.card = ARCFACE_ONNX_CARD
        what = "arcface-onnx"
        self._rebuild()
        path = self._path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(inputs) != 1 or len(shape) != 4 or shape[1:] != [3, 112, 112]:
            raise FacekitError(
                f"{what}: {path} is not a 112x112 recognition model: inputs "
                f"{[(i.name, i.shape) for i in inputs]} (expected one (N, 3, 112, 112) input)"
            )
        if len(outputs) != 1 or outputs[0].shape[-1] != 512:
            raise FacekitError(
                f"{what}: {path} does not output one 512-D embedding: outputs {[(o.name, o.shape) for o in outputs]}"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        # A graph with a fixed batch (some exports say 1) is run one image at a time.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.in_model = params.input_scaling == "in-model" or (
            params.input_scaling == "auto" and normalises_in_model(path)
        )
        # In [0, 1] units: insightface's (255 x - 127.5) / 127.5 is mean 0.5, std 0.5 (the card); a model that
        # subtracts and scales itself takes 255 x (mean 0, std 1/255), or it would be normalised twice.
        mean = np.zeros(3, np.float32) if self.in_model else np.asarray(self.card.mean, np.float32)
        std = np.full(3, 1 / 255, np.float32) if self.in_model else np.asarray(self.card.std, np.float32)
        self._mean, self._std = mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)

    def _rebuild(self) -> None:
        """The session of the weight file ``params`` name, its sha256 checked (the card's, or ``params.sha256``)."""
        self._path = resolve(W600K_R50, self.params.weights, self.params.sha256, "arcface-onnx")
        self.session = open_session(self._path, "arcface-onnx", self.params.threads)

    def _run(self, images: Any) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, 112, 112):
            raise ValueError(
                f"arcface-onnx: expected (B, 3, 112, 112) RGB tensors, got {getattr(images, 'shape', images)}"
            )
        blob = (images.detach().float().cpu().numpy() - self._mean) / self._std
        step = self.fixed_batch or max(len(blob), 1)
        chunks = [
            self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(blob[i : i + step])})[0]
            for i in range(0, len(blob), step)
        ]
        out = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 512), np.float32)
        return torch.from_numpy(out.reshape(len(blob), -1).astype(np.float32)).to(images.device)

    def features(self, images: Any) -> torch.Tensor:
        """``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, 512)`` raw embedding (not normalised)."""
        return self._run(images)

    def embed(self, images: Any) -> torch.Tensor:
        """``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, 512)`` L2-normalised embedding."""
        return torch.nn.functional.normalize(self._run(images), p=2, dim=1)
