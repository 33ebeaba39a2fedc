"""Opening an ONNX model from a verified weight file with onnxruntime (CPU unless the runner says otherwise)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from facekit.errors import FacekitError
from facekit.models import resolve_weights
from facekit.types import WeightsSource


def resolve(source: WeightsSource, weights: str | None, sha256: str | None, what: str) -> Path:
    """The verified path of ``source`` (``weights`` if given), with ``sha256`` overriding the card's checksum."""
    if sha256 is not None:
        source = dataclasses.replace(source, sha256=sha256)
    return resolve_weights(source, weights, what=what)


def open_session(path: Path, what: str, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` of the model at ``path``; a file onnxruntime cannot read is a
    :class:`~facekit.errors.FacekitError`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except (RuntimeError, ValueError) as exc:  # onnxruntime's InvalidGraph/InvalidProtobuf derive from these
        raise FacekitError(f"{what}: onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
