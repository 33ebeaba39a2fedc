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
from tests.helpers import PicklePayload  # noqa: E402

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
    with pytest.raises(ChecksumError, match=f"expected {digest}"):
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
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path))
    with pytest.raises(FacekitError) as info:
        build_encoder(FaceNetParams(weights=None))
    message = str(info.value)
    assert "20180402-114759-vggface2.pt" in message and str(tmp_path / "models") in message
    assert "facekit models import" in message
    with pytest.raises(FacekitError, match="weight file not found"):
        build_encoder(FaceNetParams(weights=str(tmp_path / "nope.pt")))


def test_import_is_light() -> None:
    code = "import facekit_facenet, facekit, sys\nfacekit.list_components('encoder')\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
