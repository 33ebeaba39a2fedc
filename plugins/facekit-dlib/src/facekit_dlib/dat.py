"""Pure-Python reader for dlib's serialised ``dnn`` networks (``.dat`` files).

dlib writes a network with ``serialize(file) << net``. The byte stream is a depth-first dump of
the nested C++ template types, outermost (loss) layer first:

* ``add_loss_layer``: ``int version(1)``, the loss details, then the sub-network.
* ``add_layer<DETAILS, SUBNET>``: ``int version(2)``, the sub-network (recursively, so the
  *input* layer ends up first in the file), then the layer details, then training state
  (``bool``, ``bool``, ``bool``, ``x_grad``, ``cached_output``, ``params_grad`` tensors).
* ``add_layer<DETAILS, INPUT>`` (the bottom-most computational layer): ``int version(3)``, the
  input layer, the details, three ``bool``, ``x_grad``, ``cached_output``, ``grad_final``
  tensors and ``int sample_expansion_factor``.
* ``add_tag_layer`` / ``add_skip_layer`` (non-input): ``int version(1)`` then the sub-network.
  Tag and skip layers serialise identically and their tag ids are template arguments, so **the
  ids are not in the file**; they are reported here as ``kind == "tag_or_skip"`` markers.

Primitive encodings (``dlib/serialize.h``):

* integers: one control byte (``0x80`` = negative, low nibble = number of payload bytes) followed
  by the magnitude as little-endian bytes;
* ``float``/``double``: ``float_details`` = integer mantissa (int64) and integer exponent (int16),
  ``value = mantissa * 2**exponent`` (exponents 32000/32001/32002 mean +inf/-inf/NaN);
* ``bool``: the ASCII character ``'1'`` or ``'0'``;
* ``std::string``: integer length then raw bytes;
* ``resizable_tensor``: ``int version(2)``, ``num_samples, k, nr, nc`` as integers, then the
  values as raw little-endian IEEE float32 (not ``float_details``);
* ``alias_tensor``: ``int version(1)`` and the four dims only (offsets into ``params`` are
  implicit: the first alias starts at 0, the second right after the first).

Every layer's details start with a version string (``"con_4"``, ``"affine_"``, ``"relu_"``,
``"add_prev_"``, ``"max_pool_2"``, ``"avg_pool_2"``, ``"fc_2"``, ``"loss_metric_2"``,
``"input_rgb_image_sized"`` ...), which :func:`read_dlib_net` uses to dispatch.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DlibDatError", "DlibLayer", "DlibNet", "read_dlib_net"]

logger = logging.getLogger(__name__)

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class DlibDatError(ValueError):
    """Raised when the byte stream does not follow dlib's serialisation format."""


@dataclass
class DlibLayer:
    """One layer of a dlib network.

    Attributes:
        kind: normalised layer type: ``"con"``, ``"fc"``, ``"relu"``, ``"affine"``, ``"add_prev"``,
            ``"max_pool"``, ``"avg_pool"``, ``"tag_or_skip"``, ``"input_rgb_image_sized"``,
            ``"loss_metric"`` ...
        version: the raw version string found in the file (``"con_4"``; ``""`` for markers).
        attrs: scalar hyper-parameters (ints, floats, bools).
        arrays: float32 numpy arrays. ``con``: ``weight`` (out, in, kh, kw), ``bias`` (out,) if
            present. ``fc``: ``weight`` (num_inputs, num_outputs) exactly as dlib multiplies it
            (``y = x @ weight``), ``bias`` (num_outputs,) if present. ``affine``: ``gamma``, ``beta``
            with shape (k,) in conv mode (or the full (k*nr*nc,) in fc mode).
    """

    kind: str
    version: str
    attrs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:  # compact, arrays by shape only
        arr = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.arrays.items())
        return f"DlibLayer({self.version or self.kind}, {self.attrs}{', ' + arr if arr else ''})"


@dataclass
class DlibNet:
    """A parsed network.

    Attributes:
        loss: the loss layer (``layers`` does not contain it).
        input: the input layer.
        layers: computational layers and ``tag_or_skip`` markers in **forward order** (the layer
            closest to the input first, i.e. the reverse of dlib's ``layer<i>`` indexing).
    """

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibDatError(f"unexpected end of data at offset {self.pos} (wanted {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise DlibDatError("unexpected end of data")
        return self.data[self.pos]

    def int_(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size > 8:
            raise DlibDatError(f"bad integer control byte 0x{ctrl:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if ctrl & 0x80 else value

    def float_(self) -> float:
        if self.peek() & 0x70:
            raise DlibDatError(f"old ASCII float encoding at offset {self.pos} is not supported")
        mantissa = self.int_()
        exponent = self.int_()
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def bool_(self) -> bool:
        ch = self._take(1)
        if ch == b"1":
            return True
        if ch == b"0":
            return False
        raise DlibDatError(f"bad bool byte {ch!r} at offset {self.pos - 1}")

    def str_(self) -> str:
        n = self.int_()
        return self._take(n).decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int_()
        if version != 2:
            raise DlibDatError(f"unexpected resizable_tensor version {version} at offset {self.pos}")
        dims = tuple(self.int_() for _ in range(4))
        count = int(np.prod(dims))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int_()
        if version != 1:
            raise DlibDatError(f"unexpected alias_tensor version {version} at offset {self.pos}")
        return tuple(self.int_() for _ in range(4))  # type: ignore[return-value]


def _size(dims: tuple[int, ...]) -> int:
    return int(np.prod(dims))


def _split_params(params: np.ndarray, *dims: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a flat params tensor into consecutive alias_tensor views (offsets are implicit)."""
    flat = params.reshape(-1)
    out, off = [], 0
    for d in dims:
        n = _size(d)
        out.append(flat[off : off + n].reshape(d).copy())
        off += n
    if off != flat.size:
        raise DlibDatError(f"params size {flat.size} != sum of alias sizes {off}")
    return out


def _read_details(r: _Reader) -> DlibLayer:
    """Read one layer's details (the object inside ``add_layer``)."""
    version = r.str_()
    if version in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        attrs: dict[str, Any] = {
            "num_filters": r.int_(),
            "nr": r.int_(),
            "nc": r.int_(),
            "stride_y": r.int_(),
            "stride_x": r.int_(),
            "padding_y": r.int_(),
            "padding_x": r.int_(),
        }
        filters = r.alias_tensor()
        biases = r.alias_tensor()
        attrs["learning_rate_multiplier"] = r.float_()
        attrs["weight_decay_multiplier"] = r.float_()
        attrs["bias_learning_rate_multiplier"] = r.float_()
        attrs["bias_weight_decay_multiplier"] = r.float_()
        attrs["use_bias"] = r.bool_() if version in ("con_5", "con_6") else True
        if version == "con_6":
            attrs["use_relu"] = r.bool_()
        if attrs["use_bias"]:
            w, b = _split_params(params, filters, biases)
            arrays = {"weight": w, "bias": b.reshape(-1)}
        else:
            (w,) = _split_params(params, filters)
            arrays = {"weight": w}
        return DlibLayer("con", version, attrs, arrays)
    if version in ("fc_2", "fc_3"):
        attrs = {"num_outputs": r.int_(), "num_inputs": r.int_()}
        params = r.tensor()
        weights = r.alias_tensor()
        biases = r.alias_tensor()
        attrs["bias_mode"] = r.int_()  # 0 == FC_HAS_BIAS, 1 == FC_NO_BIAS
        attrs["learning_rate_multiplier"] = r.float_()
        attrs["weight_decay_multiplier"] = r.float_()
        attrs["bias_learning_rate_multiplier"] = r.float_()
        attrs["bias_weight_decay_multiplier"] = r.float_()
        use_bias = r.bool_() if version == "fc_3" else True
        attrs["use_bias"] = use_bias and attrs["bias_mode"] == 0
        n_in, n_out = attrs["num_inputs"], attrs["num_outputs"]
        if attrs["use_bias"]:
            w, b = _split_params(params, (n_in, n_out), (1, n_out))
            arrays = {"weight": w, "bias": b.reshape(-1)}
        else:
            (w,) = _split_params(params, (n_in, n_out))
            arrays = {"weight": w}
        if _size(weights) != n_in * n_out:
            raise DlibDatError(f"fc weights alias {weights} does not match {n_in}x{n_out}")
        return DlibLayer("fc", version, attrs, arrays)
    if version in ("affine_", "affine_2"):
        params = r.tensor()
        gamma = r.alias_tensor()
        beta = r.alias_tensor()
        mode = r.int_()  # 0 == CONV_MODE, 1 == FC_MODE
        attrs = {"mode": "conv" if mode == 0 else "fc"}
        attrs["disabled"] = r.bool_() if version == "affine_2" else False
        g, b = _split_params(params, gamma, beta)
        return DlibLayer("affine", version, attrs, {"gamma": g.reshape(-1), "beta": b.reshape(-1)})
    if version in ("bn_con2", "bn_fc2"):
        # A batch-norm layer; dlib's affine_ can be built from it. Convert to gamma/beta here.
        params = r.tensor()
        gamma = r.alias_tensor()
        beta = r.alias_tensor()
        arrays = {}
        for name in ("means", "invstds", "running_means", "running_variances"):
            arrays[name] = r.tensor().reshape(-1)
        attrs = {"num_updates": r.int_(), "running_stats_window_size": r.int_()}
        for name in (
            "learning_rate_multiplier",
            "weight_decay_multiplier",
            "bias_learning_rate_multiplier",
            "bias_weight_decay_multiplier",
            "eps",
        ):
            attrs[name] = r.float_()
        g, b = _split_params(params, gamma, beta)
        scale = g.reshape(-1) / np.sqrt(arrays["running_variances"] + np.float32(attrs["eps"]))
        arrays["gamma"] = scale.astype(np.float32)
        arrays["beta"] = (b.reshape(-1) - scale * arrays["running_means"]).astype(np.float32)
        attrs["mode"] = "conv" if version == "bn_con2" else "fc"
        attrs["disabled"] = False
        return DlibLayer("affine", version, attrs, arrays)
    if version in ("relu_", "relu_2"):
        return DlibLayer("relu", version, {"disabled": r.bool_() if version == "relu_2" else False})
    if version == "add_prev_":
        return DlibLayer("add_prev", version)
    if version in ("max_pool_2", "avg_pool_2"):
        attrs = {
            "nr": r.int_(),
            "nc": r.int_(),
            "stride_y": r.int_(),
            "stride_x": r.int_(),
            "padding_y": r.int_(),
            "padding_x": r.int_(),
        }
        return DlibLayer(version[:-2], version, attrs)
    raise DlibDatError(f"unsupported layer type {version!r} at offset {r.pos}")


def _read_input(r: _Reader) -> DlibLayer:
    version = r.str_()
    if version == "input_rgb_image_sized":
        attrs = {"avg_red": r.float_(), "avg_green": r.float_(), "avg_blue": r.float_()}
        attrs["nr"] = r.int_()
        attrs["nc"] = r.int_()
        return DlibLayer("input_rgb_image_sized", version, attrs)
    if version == "input_rgb_image":
        attrs = {"avg_red": r.float_(), "avg_green": r.float_(), "avg_blue": r.float_()}
        return DlibLayer("input_rgb_image", version, attrs)
    raise DlibDatError(f"unsupported input layer {version!r} at offset {r.pos}")


def _read_loss(r: _Reader) -> DlibLayer:
    version = r.str_()
    if version == "loss_metric_":
        return DlibLayer("loss_metric", version, {"margin": 0.1, "distance_threshold": 0.75})
    if version == "loss_metric_2":
        return DlibLayer("loss_metric", version, {"margin": r.float_(), "distance_threshold": r.float_()})
    raise DlibDatError(f"unsupported loss layer {version!r}")


def read_dlib_net(path: str | os.PathLike[str] | bytes) -> DlibNet:
    """Parse a dlib ``dnn`` network file.

    Args:
        path: path of the ``.dat`` file (or its raw bytes).

    Returns:
        :class:`DlibNet` with the loss layer, the input layer and the remaining layers in forward
        order (input side first). Training state stored in the file (cached outputs, gradients)
        is read and dropped.

    Raises:
        DlibDatError: on malformed data or an unsupported layer type.
    """
    data = (
        bytes(path) if isinstance(path, (bytes, bytearray)) else Path(path).read_bytes()
    )  # (closed: no ResourceWarning)
    r = _Reader(data)
    if r.int_() != 1:
        raise DlibDatError("expected add_loss_layer version 1 at offset 0")
    loss = _read_loss(r)

    # Descend the nested sub-networks: version 2 = add_layer over a sub-network, version 1 =
    # tag/skip layer, version 3 (or 2 followed directly by an input-layer string) = add_layer
    # over the input layer; the latter ends the descent.
    stack: list[int] = []
    while True:
        v = r.int_()
        if v == 3:
            break
        if v not in (1, 2):
            raise DlibDatError(f"unexpected sub-network version {v} at offset {r.pos}")
        stack.append(v)
    inp = _read_input(r)

    def read_add_layer_tail(bottom: bool) -> None:
        for _ in range(3):
            r.bool_()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        r.tensor()  # params_grad / grad_final
        if bottom:
            r.int_()  # _sample_expansion_factor

    layers = [_read_details(r)]
    read_add_layer_tail(bottom=True)
    for v in reversed(stack):
        if v == 1:
            layers.append(DlibLayer("tag_or_skip", ""))
        else:
            layers.append(_read_details(r))
            read_add_layer_tail(bottom=False)
    if r.pos != len(data):
        logger.warning("%d trailing bytes after the network in %s", len(data) - r.pos, path)
    logger.debug("parsed dlib net: %d layers, loss=%s, input=%s", len(layers), loss, inp)
    return DlibNet(loss=loss, input=inp, layers=layers)
