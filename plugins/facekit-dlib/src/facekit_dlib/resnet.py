"""Torch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The module is built layer by layer from the parsed ``.dat`` file (:mod:`facekit_dlib.dat`), in
dlib's forward order. The file stores every hyper-parameter (filters, kernel sizes, strides,
paddings, pooling windows, fc sizes, the input means) but **not** the ids of ``tag``/``skip``
layers (they are C++ template arguments). Those markers are resolved with dlib's residual
templates from ``dnn_metric_learning_on_images_ex.cpp``/``dnn_face_recognition_ex.cpp``::

    residual      = add_prev1<block<tag1<x>>>                       # lone marker  -> tag
    residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<x>>>>>>   # pair -> tag, skip

i.e. a lone marker is a tag of the block input, a pair of consecutive markers is "tag the block
output, then skip back to the block input", and ``add_prev`` adds the most recent tag. Any other
marker pattern raises.

Also provides :func:`extract_chip`, a numpy-only port (no dlib needed) of dlib's
``get_face_chip_details`` + ``extract_image_chip`` (what ``dlib.get_face_chip`` and
``compute_face_descriptor(img, shape)`` use), including dlib's ``pyramid_down<2>`` path for
large faces.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dat import DlibNet, read_dlib_net

__all__ = ["DlibResNet", "chips_to_tensor", "extract_chip", "face_chip_transform", "load_dlib_resnet"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# layers


class _Affine(nn.Module):
    """dlib ``affine_``: ``y = gamma * x + beta`` (per channel in conv mode, per element in fc)."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.gamma = nn.Parameter(torch.from_numpy(gamma.copy()), requires_grad=False)
        self.beta = nn.Parameter(torch.from_numpy(beta.copy()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)
        shape = x.shape
        return (x.reshape(shape[0], -1) * self.gamma + self.beta).reshape(shape)


class _Tag(nn.Module):
    def __init__(self, slot: int) -> None:
        super().__init__()
        self.slot = slot

    def extra_repr(self) -> str:
        return f"slot={self.slot}"


class _Skip(_Tag):
    pass


class _AddPrev(_Tag):
    pass


class _GlobalAvgPool(nn.Module):
    """dlib ``avg_pool_everything`` (``avg_pool_<0,0,1,1>``): mean over the whole H x W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class _Fc(nn.Module):
    """dlib ``fc_``: flatten (k, nr, nc) in C order, ``y = x @ W (+ b)``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            if bias is not None:
                self.linear.bias.copy_(torch.from_numpy(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``tt::add(dest, a, b)``: output has the max of each dim, missing values are zeros.

    Both tensors are aligned at index 0 (top-left, first channel), so a smaller operand is
    zero-padded at the end of the channel / row / column axes.
    """
    if a.shape == b.shape:
        return a + b
    shape = [max(p, q) for p, q in zip(a.shape, b.shape, strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        if list(t.shape) == shape:
            return t
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


def _build_layers(net: DlibNet) -> list[nn.Module]:
    """Translate parsed dlib layers (forward order) into torch modules, resolving tags/skips."""
    mods: list[nn.Module] = []
    layers = net.layers
    open_slots: list[tuple[int, int | None]] = []  # (tag slot, slot a following skip jumped to)
    n_slots = 0
    i = 0
    while i < len(layers):
        layer = layers[i]
        kind = layer.kind
        if kind == "tag_or_skip":
            pair = i + 1 < len(layers) and layers[i + 1].kind == "tag_or_skip"
            if i + 2 < len(layers) and pair and layers[i + 2].kind == "tag_or_skip":
                raise ValueError(f"three consecutive tag/skip markers at layer {i}: unsupported topology")
            slot = n_slots
            n_slots += 1
            mods.append(_Tag(slot))
            if pair:
                if not open_slots:
                    raise ValueError(f"skip marker at layer {i + 1} has no earlier tag to jump to")
                target = open_slots[-1][0]
                mods.append(_Skip(target))
                open_slots.append((slot, target))
                i += 2
            else:
                open_slots.append((slot, None))
                i += 1
            continue
        if kind == "con":
            a = layer.attrs
            w = layer.arrays["weight"]
            conv = nn.Conv2d(
                w.shape[1],
                a["num_filters"],
                (a["nr"], a["nc"]),
                stride=(a["stride_y"], a["stride_x"]),
                padding=(a["padding_y"], a["padding_x"]),
                bias="bias" in layer.arrays,
            )
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w))
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(layer.arrays["bias"]))
            mods.append(conv)
            if a.get("use_relu", False):
                mods.append(nn.ReLU())
        elif kind == "affine":
            if layer.attrs.get("disabled", False):
                mods.append(nn.Identity())
            else:
                mods.append(_Affine(layer.arrays["gamma"], layer.arrays["beta"], layer.attrs["mode"]))
        elif kind == "relu":
            mods.append(nn.Identity() if layer.attrs.get("disabled", False) else nn.ReLU())
        elif kind == "max_pool" or kind == "avg_pool":
            a = layer.attrs
            if a["nr"] == 0 and a["nc"] == 0:
                if kind != "avg_pool" or a["padding_y"] or a["padding_x"]:
                    raise ValueError(f"unsupported whole-image pooling {layer}")
                mods.append(_GlobalAvgPool())
            elif kind == "max_pool":
                mods.append(
                    nn.MaxPool2d(
                        (a["nr"], a["nc"]),
                        stride=(a["stride_y"], a["stride_x"]),
                        padding=(a["padding_y"], a["padding_x"]),
                    )
                )
            else:
                if a["padding_y"] or a["padding_x"]:
                    # dlib averages over the in-image part of the window only; not needed here.
                    raise ValueError(f"avg_pool with padding is not supported: {layer}")
                mods.append(nn.AvgPool2d((a["nr"], a["nc"]), stride=(a["stride_y"], a["stride_x"])))
        elif kind == "add_prev":
            if not open_slots:
                raise ValueError(f"add_prev at layer {i} without an open tag")
            slot, skip_target = open_slots.pop()
            mods.append(_AddPrev(slot))
            if skip_target is not None:
                # residual_down: tag1 (the skip target) belongs to the same block; close it too.
                if not open_slots or open_slots[-1][0] != skip_target:
                    raise ValueError(f"unexpected tag nesting at add_prev layer {i}")
                open_slots.pop()
        elif kind == "fc":
            mods.append(_Fc(layer.arrays["weight"], layer.arrays.get("bias")))
        else:
            raise ValueError(f"unsupported layer kind {kind!r} ({layer.version})")
        i += 1
    if open_slots:
        logger.debug("tags left open at the end of the network: %s", open_slots)
    return mods


class DlibResNet(nn.Module):
    """dlib's metric-learning face ResNet, mirroring the ``.dat`` layer order.

    Input: ``(B, 3, 150, 150)`` float32 RGB in ``[0, 1]`` (a dlib face chip divided by 255).
    Internally converted to dlib's input convention ``(255 * x - avg_channel) / 256``.
    Output of :meth:`forward`: ``(B, 128)`` embedding, identical to dlib's
    ``compute_face_descriptor`` (not re-normalised).

    Attributes:
        layers: the torch modules in dlib forward order (tag/skip/add_prev are explicit modules).
        mean_rgb: ``(3,)`` buffer with the per-channel means from the file (0..255 scale).
        input_size: ``(rows, cols)`` expected by the network (from the file).
        feature_index: index into ``layers`` of the whole-image average pool; its output is the
            256-D pooled feature returned by :meth:`forward_features`.
        loss_attrs: the metric loss parameters (margin, distance_threshold) from the file.
    """

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        inp = net.input
        if inp.kind != "input_rgb_image_sized":
            raise ValueError(f"expected input_rgb_image_sized, got {inp.version}")
        self.input_size = (int(inp.attrs["nr"]), int(inp.attrs["nc"]))
        mean = [inp.attrs["avg_red"], inp.attrs["avg_green"], inp.attrs["avg_blue"]]
        self.mean_rgb: torch.Tensor
        self.register_buffer("mean_rgb", torch.tensor(mean, dtype=torch.float32))
        self.loss_attrs: dict[str, Any] = dict(net.loss.attrs)
        self.layers = nn.ModuleList(_build_layers(net))
        pools = [i for i, m in enumerate(self.layers) if isinstance(m, _GlobalAvgPool)]
        self.feature_index = pools[-1] if pools else len(self.layers) - 2
        for p in self.parameters():
            p.requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` RGB in [0,1] -> dlib input tensor ``(255*x - mean) / 256``."""
        return (x * 255.0 - self.mean_rgb.view(1, 3, 1, 1)) / 256.0

    def _run(
        self,
        x: torch.Tensor,
        stop: int | None = None,
        keep: tuple[int, ...] = (),
        kept: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Layers ``[0, stop)``; the input of each layer index in ``keep`` is appended to ``kept``."""
        slots: dict[int, torch.Tensor] = {}
        end = len(self.layers) if stop is None else stop
        for index, m in enumerate(self.layers[:end]):
            if kept is not None and index in keep:
                kept.append(x)
            if isinstance(m, _Skip):
                x = slots[m.slot]
            elif isinstance(m, _AddPrev):
                x = _add_padded(x, slots[m.slot])
            elif isinstance(m, _Tag):
                slots[m.slot] = x
            else:
                x = m(x)
        return x

    #: Inputs of these layers are the early feature maps for feature matching: after the stride-2 stem (32 x 72 x 72),
    #: the first residual stage (32 x 35 x 35) and the second (64 x 17 x 17).
    MAP_LAYERS = (3, 29, 64)

    def embed_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B,3,150,150)`` in [0,1] -> ((B,128) embedding, the feature maps at :data:`MAP_LAYERS`), one pass."""
        maps: list[torch.Tensor] = []
        out = self._run(self.preprocess(x), self.feature_index + 1, self.MAP_LAYERS, maps)
        emb = out.reshape(out.shape[0], -1)
        for m in self.layers[self.feature_index + 1 :]:
            emb = m(emb)
        return emb, maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,150,150)`` in [0,1] -> ``(B,256)`` average-pooled features (input of the last fc)."""
        out = self._run(self.preprocess(x), self.feature_index + 1)
        return out.reshape(out.shape[0], -1)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B,3,150,150)`` in [0,1] -> ``(B,128)`` embedding (and ``(B,256)`` features if asked)."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            h, w = self.input_size
            raise ValueError(f"expected (B,3,{h},{w}), got {tuple(x.shape)}")
        feats = self.forward_features(x)
        emb = self.embed_features(feats)
        return (emb, feats) if return_features else emb

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B,256)`` features (:meth:`forward_features`) -> ``(B,128)`` embedding: the layers after the pool."""
        emb = feats
        for m in self.layers[self.feature_index + 1 :]:
            if isinstance(m, _Tag):
                raise ValueError("tag/skip layers after the feature pool are not supported")
            emb = m(emb)
        return emb

    @property
    def fc(self) -> nn.Linear:
        """The final ``fc_no_bias`` layer (256 -> 128) as an ``nn.Linear``."""
        return self.layers[-1].linear  # type: ignore[return-value]


def load_dlib_resnet(path: str | os.PathLike[str]) -> DlibResNet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` (or a compatible net) into a DlibResNet.

    The returned module is in eval mode with frozen parameters (gradients still flow to the input).
    """
    model = DlibResNet(read_dlib_net(path))
    model.eval()
    logger.info("loaded dlib ResNet from %s (%d modules)", path, len(model.layers))
    return model


# --------------------------------------------------------------------------------------------
# face chips (dlib's get_face_chip_details + extract_image_chip)

# dlib's 5-point template (get_face_chip_details), in units of the un-padded chip.
_TEMPLATE5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
# mean face shape for landmarks 17..67 of the 68-point model (get_face_chip_details).
_MEAN68_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
]  # fmt: skip
_MEAN68_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
]  # fmt: skip


def _landmarks_array(landmarks: Any) -> np.ndarray:
    """Accept an (N,2) array-like or a dlib ``full_object_detection``-like object with ``parts()``."""
    if hasattr(landmarks, "parts"):
        pts = [(p.x, p.y) for p in landmarks.parts()]
    elif hasattr(landmarks, "num_parts") and hasattr(landmarks, "part"):
        pts = [(landmarks.part(i).x, landmarks.part(i).y) for i in range(landmarks.num_parts)]
    else:
        pts = landmarks
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] not in (5, 68):
        raise ValueError(f"expected 5 or 68 (x, y) landmarks, got shape {arr.shape}")
    return arr


def _similarity_umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib ``find_similarity_transform`` (Umeyama): returns (M (2,2), t (2,)) with dst ~ M src + t."""
    mean_s, mean_d = src.mean(0), dst.mean(0)
    ds, dd = src - mean_s, dst - mean_d
    sigma_s = (ds**2).sum(1).mean()
    cov = dd.T @ ds / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = np.linalg.det(cov)
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / sigma_s if sigma_s != 0 else 1.0
    m = c * r
    return m, mean_d - m @ mean_s


_Rect = tuple[float, float, float, float]  # dlib drectangle (left, top, right, bottom), width = r - l + 1


def _chip_details(landmarks: Any, size: int, padding: float) -> tuple[_Rect, float]:
    """dlib ``get_face_chip_details``: the chip's rectangle in image coordinates and its angle."""
    pts = _landmarks_array(landmarks)
    if len(pts) == 5:
        tmpl = (padding + _TEMPLATE5) / (2 * padding + 1) * size
        img_pts = pts
    else:
        # points 27..54 and 60..64: dlib ignores the eyebrows (17..26) and the lower lip
        keep = [i for i in range(17, 68) if not (i <= 26 or 55 <= i <= 59 or 65 <= i)]
        mean = np.stack([_MEAN68_X, _MEAN68_Y], 1)[[i - 17 for i in keep]]
        tmpl = (padding + mean) / (2 * padding + 1) * size
        img_pts = pts[keep]
    # chip_details(chip_points, img_points, dims)
    m, t = _similarity_umeyama(tmpl, img_pts)
    p = m @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    center = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1.0) / 2.0  # centered_drect decrements width/height by one
    return (center[0] - half, center[1] - half, center[0] + half, center[1] + half), angle


def _rotated_corners(rect: _Rect, angle: float) -> np.ndarray:
    """``rotate_point(center(rect), corner, angle)`` for tl, tr, bl, br -> (4, 2)."""
    left, top, right, bottom = rect
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    pts = np.array([[left, top], [right, top], [left, bottom], [right, bottom]]) - (cx, cy)
    rot = np.array([[cos_a, -sin_a], [sin_a, cos_a]])
    return pts @ rot.T + (cx, cy)


def _corner_affine(rect: _Rect, angle: float, size: int) -> np.ndarray:
    """``find_affine_transform`` from the chip's tl/tr/bl pixel corners to the rotated rect -> (2, 3)."""
    dst = _rotated_corners(rect, angle)[:3]
    src = np.array([[0.0, 0.0, 1.0], [size - 1.0, 0.0, 1.0], [0.0, size - 1.0, 1.0]])
    return np.linalg.solve(src, dst).T.copy()


def _rect_down(rect: _Rect) -> _Rect:
    """``pyramid_down<2>::rect_down``: each corner ``p/2 - (1.25, 0.75)``."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _area(rect: _Rect) -> float:
    width, height = rect[2] - rect[0] + 1, rect[3] - rect[1] + 1
    return 0.0 if width <= 0 or height <= 0 else width * height


def _lround(v: float) -> int:
    """C ``std::lround`` (halves away from zero)."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _pyramid_down_2(img: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_down<2>`` for RGB uint8: separable [1 4 6 4 1] filter, keep every 2nd pixel.

    ``(H, W, 3)`` -> ``((H-3)//2, (W-3)//2, 3)``; integer sums, ``/256`` truncated, as in dlib.
    """
    h, w = img.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0, 3), np.uint8)
    x = img.astype(np.int32)
    wc, hd = (w - 3) // 2, (h - 3) // 2
    taps = (1, 4, 6, 4, 1)
    row = np.zeros((h, wc, 3), np.int32)
    for j, k in enumerate(taps):
        row += k * x[:, j : j + 2 * wc : 2]
    col = np.zeros((hd, wc, 3), np.int32)
    for j, k in enumerate(taps):
        col += k * row[j : j + 2 * hd : 2]
    return (col // 256).astype(np.uint8)


def face_chip_transform(landmarks: Any, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The affine map from chip pixel ``(x, y)`` to image ``(x, y)`` that dlib's chip uses.

    Reproduces ``get_face_chip_details`` (similarity fit of the landmarks to dlib's template,
    turned into a rotated rectangle) and the corner-based ``find_affine_transform`` of
    ``extract_image_chips``. (For faces much larger than the chip dlib samples this map on a
    downsampled pyramid level instead, see :func:`extract_chip`.)

    Args:
        landmarks: ``(5,2)`` or ``(68,2)`` ``(x, y)`` points, or a dlib ``full_object_detection``.
        size: chip side in pixels.
        padding: dlib's padding (0.25 for ``compute_face_descriptor``).

    Returns:
        ``(2,3)`` float64 matrix ``A`` with ``[x_img, y_img] = A @ [x_chip, y_chip, 1]``.
    """
    rect, angle = _chip_details(landmarks, size, padding)
    return _corner_affine(rect, angle, size)


def _bilinear_truncate(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """dlib ``interpolate_bilinear`` + ``static_cast<unsigned char>``; samples needing a pixel
    outside ``img`` are 0 (dlib's ``transform_image`` background)."""
    h, w = img.shape[:2]
    left = np.floor(xs).astype(np.int64)
    top = np.floor(ys).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    out = np.zeros((*xs.shape, 3), np.uint8)
    if not inside.any():
        return out
    lx, ty = left[inside], top[inside]
    fx = (xs[inside] - lx)[:, None]
    fy = (ys[inside] - ty)[:, None]
    src = img.astype(np.float64)
    tl, tr = src[ty, lx], src[ty, lx + 1]
    bl, br = src[ty + 1, lx], src[ty + 1, lx + 1]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out[inside] = np.clip(val, 0, 255).astype(np.uint8)  # the C++ cast truncates toward zero
    return out


def extract_chip(image_rgb: np.ndarray, landmarks: Any, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Reproduce ``dlib.get_face_chip(img, shape, size, padding)`` in numpy, without dlib.

    Follows ``get_face_chip_details`` + ``extract_image_chips`` with bilinear interpolation:
    crop the bounding box of the (grown) rotated chip rectangle, build dlib's
    ``pyramid_down<2>`` levels when the rectangle is more than about twice the chip size, pick
    the level the same way dlib does, and sample it through the corner affine transform.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB image.
        landmarks: 5- or 68-point shape: ``(N,2)`` ``(x, y)`` array or a dlib
            ``full_object_detection`` (anything with ``parts()``).
        size: output side (150 for the face-recognition ResNet).
        padding: relative padding (0.25 as in ``compute_face_descriptor``).

    Returns:
        ``(size, size, 3)`` uint8 aligned chip.
    """
    img = np.ascontiguousarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected (H,W,3) uint8 image, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    rect, angle = _chip_details(landmarks, size, padding)
    n_px = size * size

    depth, grow = 0, 2.0
    r = _rect_down(rect)
    while _area(r) > n_px:
        r = _rect_down(r)
        depth += 1
        grow = grow * 2 + 2
    corners = _rotated_corners(rect, angle)
    x0, y0 = corners.min(0) - grow
    x1, y1 = corners.max(0) + grow
    box = [_lround(v) for v in (max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0))]
    if box[2] < box[0] or box[3] < box[1]:
        return np.zeros((size, size, 3), np.uint8)
    sub = img[box[1] : box[3] + 1, box[0] : box[2] + 1]

    local: _Rect = (rect[0] - box[0], rect[1] - box[1], rect[2] - box[0], rect[3] - box[1])
    level = -1
    while _area(_rect_down(local)) > n_px:
        level += 1
        local = _rect_down(local)
    src = sub
    for _ in range(level + 1):
        src = _pyramid_down_2(src)
    if level >= 0:
        logger.debug("chip sampled from pyramid level %d (%s)", level, src.shape)

    a = _corner_affine(local, angle, size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    x_src = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    y_src = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    return _bilinear_truncate(src, x_src, y_src)


def chips_to_tensor(chips: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """``(B,H,W,3)`` uint8 chips (or a list) -> ``(B,3,H,W)`` float32 in [0,1] for :class:`DlibResNet`."""
    arr = np.stack(list(chips)) if not isinstance(chips, np.ndarray) else chips
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float() / 255.0
