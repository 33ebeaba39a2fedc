"""facekit-vggface: strict loading of vgg_face_dag.pth-format state dicts, conformance, checksums, safety.

The weight file is made at full size (138M parameters, ~553 MB) because only that exercises the real fc6 shape
(4096 x 25088); it is written once per module (a few seconds of CPU) and deleted with the temporary directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("facekit_vggface")

from facekit_vggface.cards import VggFaceParams  # noqa: E402
from facekit_vggface.model import build_encoder  # noqa: E402

import facekit  # noqa: E402
from facekit.models import ChecksumError  # noqa: E402
from facekit.testing import check_encoder  # noqa: E402
from facekit.weights import WeightsFormatError  # noqa: E402
from tests.helpers import PicklePayload, checksum_refused  # noqa: E402

# The keys and shapes of Samuel Albanie's vgg_face_dag.pth, written out independently of the plugin's module.
CONVS = {
    "conv1_1": (64, 3),
    "conv1_2": (64, 64),
    "conv2_1": (128, 64),
    "conv2_2": (128, 128),
    "conv3_1": (256, 128),
    "conv3_2": (256, 256),
    "conv3_3": (256, 256),
    "conv4_1": (512, 256),
    "conv4_2": (512, 512),
    "conv4_3": (512, 512),
    "conv5_1": (512, 512),
    "conv5_2": (512, 512),
    "conv5_3": (512, 512),
}
FCS = {"fc6": (4096, 25088), "fc7": (4096, 4096), "fc8": (2622, 4096)}


def vgg_face_dag_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (out, inp) in CONVS.items():
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, inp, 3, 3), (out,)
    for name, (out, inp) in FCS.items():
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, inp), (out,)
    return shapes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        scale = (2.0 / fan_in) ** 0.5 if len(shape) > 1 else 0.01
        state[key] = torch.randn(shape, generator=generator) * scale
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vggface") / "vgg_face_dag.pth"
    torch.save(_random_state(vgg_face_dag_shapes()), path)
    return path


@pytest.fixture(scope="module")
def digest(weights: Path) -> str:
    return _sha256(weights)


def test_conformance(weights: Path, digest: str) -> None:
    spec = facekit.get_registry("encoder").get("vggface")
    assert spec.plugin == "vggface"
    assert sum(torch.Size(s).numel() for s in vgg_face_dag_shapes().values()) == 145_002_878
    check_encoder(
        spec,
        params={"weights": str(weights), "sha256": digest},
        skip={"identity": "random test weights in the real file format"},
    )


def test_mean_subtraction_and_fc7(weights: Path, digest: str) -> None:
    encoder = build_encoder(VggFaceParams(weights=str(weights), sha256=digest))
    mean = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688]).view(1, 3, 1, 1)
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fc7 = encoder.net.fc7_preactivation(images * 255 - mean)
        torch.testing.assert_close(encoder.features(images), torch.relu(fc7), rtol=1e-3, atol=5e-3)
        torch.testing.assert_close(encoder.embed(images), torch.nn.functional.normalize(torch.relu(fc7)))
    raw = build_encoder(VggFaceParams(weights=str(weights), sha256=digest, features_relu=False))
    with torch.no_grad():
        torch.testing.assert_close(raw.features(images), fc7, rtol=1e-3, atol=5e-3)


def test_one_changed_byte_is_refused(weights: Path, digest: str) -> None:
    with open(weights, "r+b") as handle:  # flip one byte in place, and put it back
        handle.seek(1 << 20)
        original = handle.read(1)
        handle.seek(1 << 20)
        handle.write(bytes([original[0] ^ 0x01]))
    try:
        with pytest.raises(ChecksumError, match=checksum_refused(weights, digest)):
            build_encoder(VggFaceParams(weights=str(weights), sha256=digest))
    finally:
        with open(weights, "r+b") as handle:
            handle.seek(1 << 20)
            handle.write(original)
    assert _sha256(weights) == digest


def test_missing_keys_are_refused(tmp_path: Path) -> None:
    # A VGG-16 without its classifier (e.g. someone's truncated export): small, and every fc key is missing.
    shapes = {k: v for k, v in vgg_face_dag_shapes().items() if not k.startswith(("fc", "conv5", "conv4"))}
    path = tmp_path / "truncated.pth"
    torch.save(_random_state(shapes), path)
    with pytest.raises(WeightsFormatError, match=r"missing keys: conv4_1\.weight.*\(18 in all\)"):
        build_encoder(VggFaceParams(weights=str(path)))


def test_extra_and_misshaped_keys_are_refused(tmp_path: Path) -> None:
    from facekit_vggface.model import VggFace

    from facekit.weights import load_strict

    net = VggFace()
    state = dict(net.state_dict())
    state["fc9.weight"] = torch.zeros(1)
    state["fc8.weight"] = torch.zeros(1000, 4096)
    with pytest.raises(WeightsFormatError, match=r"unexpected keys: fc9\.weight.*wrong shapes: fc8\.weight"):
        load_strict(net, state, "vggface", tmp_path / "x.pth")


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "vgg_face_dag.pth"
    torch.save({"conv1_1.weight": PicklePayload(marker)}, path)
    with pytest.raises(WeightsFormatError, match="weights_only=True"):
        build_encoder(VggFaceParams(weights=str(path)))
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path))
    with pytest.raises(facekit.FacekitError, match=r"vgg_face_dag\.pth.*facekit models import"):
        build_encoder(VggFaceParams(weights=None))
