"""A small ONNX -> torch converter for feed-forward CNNs with (block-)quantised weights.

Written for OpenCV Zoo's ``*_int8bq.onnx`` files, whose weights are stored as int8 blocks (``DequantizeLinear`` with
``block_size``, opset 21) while every activation stays float32: such a graph is a float network whose weight tensors
are computed from constants. The converter

1. folds every node whose inputs are all constants (``DequantizeLinear``, ``Reshape``, ``Constant``...) into float32
   tensors with numpy, which dequantises the weights exactly as ONNX defines it: ``(q - zero_point) * scale`` with
   one scale per block of ``block_size`` elements along ``axis``;
2. turns each remaining node into a frozen torch module (``Conv``, ``BatchNormalization``, ``PRelu``, ``Gemm``,
   ``Flatten``, elementwise arithmetic with a constant, ...) and runs them in graph order.

Nothing is guessed: kernel sizes, strides, pads, groups and epsilons are the graph's attributes. An op the converter
does not know is an :class:`UnsupportedOnnxGraph` error naming it. The result is differentiable w.r.t. its input;
its constants are buffers (no trainable parameters), so an optimiser never touches them.

Written here rather than taken from ``onnx2torch``/``onnx2pytorch``: neither handles blocked ``DequantizeLinear``
(opset 21), and the graphs we need use a dozen ops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facekit.errors import FacekitError

__all__ = [
    "OnnxGraphModule",
    "UnsupportedOnnxGraph",
    "convert_onnx",
    "dequantize_linear",
    "fold_constants",
    "ort_session",
]

logger = logging.getLogger(__name__)


class UnsupportedOnnxGraph(FacekitError):
    """The ONNX graph uses an op or attribute this converter does not implement."""


# --------------------------------------------------------------------------------------------
# constant folding (numpy)


def dequantize_linear(
    quantized: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None = None,
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21): ``(quantized - zero_point) * scale`` in float32.

    ``scale``/``zero_point`` are scalars (per tensor), 1-D along ``axis`` (per axis) or, when ``block_size > 0``, of
    the input's shape with ``axis`` divided into ``ceil(n / block_size)`` blocks (blocked quantisation).
    """
    q = np.asarray(quantized)
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point)
    values = q.astype(np.float32)
    zero = zero.astype(np.float32)
    if scale.size == 1 and block_size == 0:
        return ((values - zero.reshape(())) * scale.reshape(())).astype(np.float32)
    axis = axis % q.ndim
    if block_size > 0:
        length = q.shape[axis]
        blocks = -(-length // block_size)
        if scale.shape[axis] != blocks:
            raise UnsupportedOnnxGraph(
                f"DequantizeLinear: scale shape {scale.shape} does not match {blocks} blocks of {block_size} along "
                f"axis {axis} of {q.shape}"
            )
        scale = np.repeat(scale, block_size, axis=axis).take(range(length), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(range(length), axis=axis)
    else:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero) * scale).astype(np.float32)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _fold_node(node: Any, inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    from onnx import numpy_helper

    op = node.op_type
    if op == "Constant":
        if "value" not in attrs:
            raise UnsupportedOnnxGraph(f"Constant {node.name!r}: only the 'value' attribute is supported")
        return np.asarray(numpy_helper.to_array(attrs["value"]))
    if op == "DequantizeLinear":
        quantized, scale = inputs[0], inputs[1]
        zero = inputs[2] if len(inputs) > 2 else None
        assert quantized is not None and scale is not None
        return dequantize_linear(quantized, scale, zero, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
    if op == "Reshape":
        data, shape = inputs
        assert data is not None and shape is not None
        target = [data.shape[i] if s == 0 and not attrs.get("allowzero", 0) else int(s) for i, s in enumerate(shape)]
        return data.reshape(target)
    if op == "Cast":
        from onnx import helper

        assert inputs[0] is not None
        return inputs[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Identity":
        assert inputs[0] is not None
        return inputs[0]
    raise UnsupportedOnnxGraph(f"cannot fold constant node {op} ({node.name!r})")


def fold_constants(model: Any) -> tuple[dict[str, np.ndarray], list[Any]]:
    """Evaluate every node whose inputs are all constants; returns (name -> array, the remaining nodes in order)."""
    from onnx import numpy_helper

    constants: dict[str, np.ndarray] = {
        init.name: np.asarray(numpy_helper.to_array(init)) for init in model.graph.initializer
    }
    remaining = []
    for node in model.graph.node:
        ins = [name for name in node.input if name]
        if all(name in constants for name in ins) and node.op_type != "Dropout":
            values: list[np.ndarray | None] = [constants[name] if name else None for name in node.input]
            result = _fold_node(node, values, _attributes(node))
            if len(node.output) != 1:
                raise UnsupportedOnnxGraph(f"constant node {node.op_type} with {len(node.output)} outputs")
            constants[node.output[0]] = result
        else:
            remaining.append(node)
    return constants, remaining


# --------------------------------------------------------------------------------------------
# frozen torch ops


def _buffer(module: nn.Module, name: str, array: np.ndarray) -> None:
    module.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))


class _Conv(nn.Module):
    weight: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, attrs: dict[str, Any]) -> None:
        super().__init__()
        if weight.ndim != 4:
            raise UnsupportedOnnxGraph(f"Conv: only 2-D convolutions are supported, weight {weight.shape}")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOnnxGraph(f"Conv: auto_pad={attrs['auto_pad']!r} is not supported")
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        if kernel != tuple(weight.shape[2:]):
            raise UnsupportedOnnxGraph(f"Conv: kernel_shape {kernel} != weight {weight.shape}")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        self.stride = tuple(attrs.get("strides", [1, 1]))
        self.dilation = tuple(attrs.get("dilations", [1, 1]))
        self.groups = int(attrs.get("group", 1))
        # ONNX pads are (top, left, bottom, right); torch pads symmetric (y, x) inside conv2d, else F.pad first.
        self.symmetric = pads[0] == pads[2] and pads[1] == pads[3]
        self.padding = (pads[0], pads[1]) if self.symmetric else (0, 0)
        self.explicit_pad = (pads[1], pads[3], pads[0], pads[2])
        _buffer(self, "weight", weight)
        self.bias: torch.Tensor | None
        if bias is not None:
            _buffer(self, "bias", bias)
        else:
            self.register_buffer("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            x = F.pad(x, self.explicit_pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        out, inp, kh, kw = self.weight.shape
        return f"{inp * self.groups}->{out}, kernel={kh}x{kw}, stride={self.stride}, groups={self.groups}"


class _BatchNorm(nn.Module):
    """Inference-mode BatchNormalization (running statistics always: the network is frozen), as ``x * a + b``."""

    a: torch.Tensor
    b: torch.Tensor

    def __init__(self, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> None:
        super().__init__()
        inv = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(eps))
        _buffer(self, "a", inv)
        _buffer(self, "b", bias.astype(np.float64) - mean.astype(np.float64) * inv)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.a.view(shape) + self.b.view(shape)

    def extra_repr(self) -> str:
        return f"{self.a.numel()}, eps={self.eps:g}"


class _PRelu(nn.Module):
    slope: torch.Tensor

    def __init__(self, slope: np.ndarray) -> None:
        super().__init__()
        _buffer(self, "slope", slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim >= 2 and self.slope.numel() == x.shape[1] and self.slope.shape[1:].numel() == 1:
            return F.prelu(x, self.slope.reshape(-1))  # per-channel slope (C, 1, 1): the native kernel
        return torch.where(x >= 0, x, x * self.slope)


class _Gemm(nn.Module):
    weight: torch.Tensor

    def __init__(self, b: np.ndarray, c: np.ndarray | None, attrs: dict[str, Any]) -> None:
        super().__init__()
        if attrs.get("transA", 0):
            raise UnsupportedOnnxGraph("Gemm: transA=1 is not supported")
        weight = b if attrs.get("transB", 0) else b.T  # stored (out, in) as for F.linear
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        _buffer(self, "weight", weight * alpha)
        self.bias: torch.Tensor | None
        if c is not None:
            _buffer(self, "bias", c * beta)
        else:
            self.register_buffer("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}->{self.weight.shape[0]}"


class _Flatten(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.ndim if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis])), -1)


class _Elementwise(nn.Module):
    """A binary arithmetic op; either operand may be a constant (stored as a buffer)."""

    OPS: ClassVar[dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
        "Add": torch.add,
        "Sub": torch.sub,
        "Mul": torch.mul,
        "Div": torch.div,
    }

    def __init__(self, op: str, constants: Sequence[np.ndarray | None]) -> None:
        super().__init__()
        self.op = op
        self.constant_at = [i for i, c in enumerate(constants) if c is not None]
        for i, array in enumerate(constants):
            if array is not None:
                _buffer(self, f"const{i}", array)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        it = iter(inputs)
        operands = [getattr(self, f"const{i}") if i in self.constant_at else next(it) for i in range(2)]
        return self.OPS[self.op](operands[0], operands[1])

    def extra_repr(self) -> str:
        return self.op


class _Unary(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class _MaxPool(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3] or attrs.get("ceil_mode", 0):
            raise UnsupportedOnnxGraph(f"MaxPool: asymmetric pads / ceil_mode not supported ({attrs})")
        self.kernel = tuple(attrs["kernel_shape"])
        self.stride = tuple(attrs.get("strides", [1] * len(self.kernel)))
        self.padding = (pads[0], pads[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _make_op(node: Any, constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    """The torch module of ``node`` and the names of its non-constant inputs (fed at run time, in order)."""
    op, attrs = node.op_type, _attributes(node)
    names = list(node.input)

    def const(i: int) -> np.ndarray | None:
        return constants.get(names[i]) if i < len(names) and names[i] else None

    def dynamic(*positions: int) -> list[str]:
        out = [names[i] for i in positions if i < len(names) and names[i] and names[i] not in constants]
        if not out:
            raise UnsupportedOnnxGraph(f"{op} {node.name!r}: no non-constant input")
        return out

    def need(i: int) -> np.ndarray:
        value = const(i)
        if value is None:
            raise UnsupportedOnnxGraph(f"{op} {node.name!r}: input {i} ({names[i]!r}) must be a constant")
        return value

    if op == "Conv":
        return _Conv(need(1), const(2), attrs), dynamic(0)
    if op == "BatchNormalization":
        if len(node.output) > 1 and any(node.output[1:]):
            raise UnsupportedOnnxGraph("BatchNormalization in training mode is not supported")
        return _BatchNorm(need(1), need(2), need(3), need(4), attrs.get("epsilon", 1e-5)), dynamic(0)
    if op == "PRelu":
        return _PRelu(need(1)), dynamic(0)
    if op == "Gemm":
        return _Gemm(need(1), const(2), attrs), dynamic(0)
    if op == "Flatten":
        return _Flatten(int(attrs.get("axis", 1))), dynamic(0)
    if op in _Elementwise.OPS:
        operands = [const(0), const(1)]
        if all(o is not None for o in operands):
            raise UnsupportedOnnxGraph(f"{op} {node.name!r}: both operands constant (should have been folded)")
        return _Elementwise(op, operands), dynamic(0, 1)
    if op == "Dropout":  # inference: identity (ratio and training_mode inputs ignored)
        if len(node.output) > 1 and any(node.output[1:]):
            raise UnsupportedOnnxGraph("Dropout with a mask output is not supported")
        return _Unary(_identity, "Dropout (identity at inference)"), dynamic(0)
    if op == "Identity":
        return _Unary(_identity, "Identity"), dynamic(0)
    if op == "Relu":
        return _Unary(torch.relu, "Relu"), dynamic(0)
    if op == "Sigmoid":
        return _Unary(torch.sigmoid, "Sigmoid"), dynamic(0)
    if op == "MaxPool":
        return _MaxPool(attrs), dynamic(0)
    if op == "GlobalAveragePool":
        return _Unary(lambda x: x.mean(dim=(2, 3), keepdim=True), "GlobalAveragePool"), dynamic(0)
    raise UnsupportedOnnxGraph(f"ONNX op {op} ({node.name or node.output[0]!r}) is not supported by this converter")


# --------------------------------------------------------------------------------------------
# the module


class OnnxGraphModule(nn.Module):
    """The converted graph: ``forward(x)`` returns the graph output; ``run(x, names)`` any intermediate tensors.

    ``input_name``/``output_names`` are the ONNX names; ``layers`` holds one module per node, in graph order, with
    ``sources[i]`` the tensor names it reads and ``targets[i]`` the name it writes.
    """

    def __init__(
        self,
        layers: Iterable[tuple[str, nn.Module, list[str]]],
        input_name: str,
        output_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.sources: list[list[str]] = []
        self.targets: list[str] = []
        for target, module, sources in layers:
            self.layers.append(module)
            self.sources.append(sources)
            self.targets.append(target)
        self.input_name = input_name
        self.output_names = list(output_names)
        self._last_use = self._compute_last_use()

    def _compute_last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, sources in enumerate(self.sources):
            for name in sources:
                last[name] = i
        return last

    def run(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Run the graph on ``x``; returns the tensors called ``names`` (default: the graph outputs)."""
        wanted = set(names or self.output_names)
        unknown = wanted - set(self.targets) - {self.input_name}
        if unknown:
            raise KeyError(f"no tensor called {sorted(unknown)} in the graph")
        env: dict[str, torch.Tensor] = {self.input_name: x}
        out = {name: x for name in wanted if name == self.input_name}
        for i, (layer, sources, target) in enumerate(zip(self.layers, self.sources, self.targets, strict=True)):
            env[target] = layer(*(env[name] for name in sources))
            if target in wanted:
                out[target] = env[target]
            for name in sources:  # free what is no longer needed
                if self._last_use.get(name) == i and name not in wanted:
                    env.pop(name, None)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.output_names[:1])[self.output_names[0]]


def _fuse_conv_batchnorm(layers: list[tuple[str, nn.Module, list[str]]], keep: set[str]) -> int:
    """Fold each BatchNormalization into the Conv before it (when nothing else reads the Conv's output and it is
    not in ``keep``), as onnxruntime and OpenCV do at load time. Returns how many were folded."""
    readers: dict[str, int] = {}
    for _, _, sources in layers:
        for name in sources:
            readers[name] = readers.get(name, 0) + 1
    producer = {target: i for i, (target, _, _) in enumerate(layers)}
    folded = 0
    for i, (target, module, sources) in enumerate(layers):
        if not isinstance(module, _BatchNorm) or len(sources) != 1:
            continue
        j = producer.get(sources[0])
        if j is None or readers.get(sources[0]) != 1 or sources[0] in keep:
            continue
        conv = layers[j][1]
        if not isinstance(conv, _Conv) or not isinstance(module, _BatchNorm):
            continue
        a, b = module.a.double(), module.b.double()
        weight = conv.weight.double() * a.view(-1, 1, 1, 1)
        bias = (conv.bias.double() * a if conv.bias is not None else torch.zeros_like(a)) + b
        conv.weight = weight.float()
        conv.bias = bias.float()
        layers[j] = (target, conv, layers[j][2])
        layers[i] = ("", module, [])
        folded += 1
    layers[:] = [layer for layer in layers if layer[0]]
    return folded


def convert_onnx(model_or_path: Any, fuse: bool = True, keep: Sequence[str] = ()) -> OnnxGraphModule:
    """Convert an ONNX model (a ``ModelProto`` or a file path) with one float input into an :class:`OnnxGraphModule`
    in eval mode. Quantised weights are dequantised to float32. ``fuse`` folds BatchNormalization into the preceding
    Conv (same function, ~2x faster on CPU); tensors named in ``keep`` stay readable with ``run``."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, str | Path) else model_or_path
    constants, nodes = fold_constants(model)
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    used = {name for node in nodes for name in node.input}
    dynamic_inputs = [name for name in inputs if name in used]
    if len(dynamic_inputs) != 1:
        raise UnsupportedOnnxGraph(f"expected one non-constant graph input, got {dynamic_inputs}")
    layers = []
    for node in nodes:
        if len([o for o in node.output if o]) != 1:
            raise UnsupportedOnnxGraph(f"{node.op_type} {node.name!r}: nodes with several outputs are not supported")
        module, sources = _make_op(node, constants)
        layers.append((node.output[0], module, sources))
    folded = _fuse_conv_batchnorm(layers, set(keep)) if fuse else 0
    module = OnnxGraphModule(layers, dynamic_inputs[0], [o.name for o in model.graph.output])
    logger.debug("converted ONNX graph: %d ops (%d BatchNorms folded into convs)", len(layers), folded)
    return module.eval()


def ort_session(path: str | Path) -> Any:
    """An onnxruntime CPU session on ``path`` after dropping graph inputs that no node reads.

    OpenCV Zoo's int8bq files keep the float weights' names as graph inputs although the graph reads the
    dequantised copies; onnxruntime would demand them. Used as the reference in parity tests and benchmarks.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    initializers = {init.name for init in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.input if i.name in used and i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
