"""facekit-insightface: arcface-onnx and scrfd on tiny ONNX graphs with the real input/output names and shapes,
the torch iresnet on a real-shaped backbone.pth, checksums, strict keys and safe loading."""

from __future__ import annotations

import copy
import hashlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("facekit_insightface")

from facekit_insightface.cards import ArcFaceTorchParams, ScrfdParams  # noqa: E402
from facekit_insightface.iresnet import LAYERS, IResNet, build_encoder  # noqa: E402
from facekit_insightface.scrfd import ScrfdDetector  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import facekit  # noqa: E402
from facekit.models import ChecksumError  # noqa: E402
from facekit.testing import check_detector, check_encoder  # noqa: E402
from facekit.weights import WeightsFormatError  # noqa: E402
from tests.helpers import checksum_refused  # noqa: E402

# det_10g.onnx's outputs for a 640 x 640 input, in graph order: scores, boxes, keypoints for strides 8, 16, 32.
SCRFD_OUTPUTS = [
    ("448", [12800, 1]),
    ("471", [3200, 1]),
    ("494", [800, 1]),
    ("451", [12800, 4]),
    ("474", [3200, 4]),
    ("497", [800, 4]),
    ("454", [12800, 10]),
    ("477", [3200, 10]),
    ("500", [800, 10]),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save(model: Any, path: Path) -> Path:
    model.opset_import[0].version = 13
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


# ---------------------------------------------------------------------------------------------------- arcface-onnx


def arcface_graph(path: Path, probe: bool = False) -> Path:
    """input.1 (N, 3, 112, 112) -> '683' (N, 512). ``probe``: the first 3 outputs are the channel means of the input
    (to check colour order and normalisation); otherwise conv + global pool + gemm with random weights."""
    rng = np.random.default_rng(0)
    if probe:
        weight = np.zeros((512, 3), np.float32)
        weight[:3, :3] = np.eye(3)
        nodes = [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["683"], transB=1),
        ]
        inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.zeros(512, np.float32), "B")]
    else:
        nodes = [
            helper.make_node("Conv", ["input.1", "K"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["683"], transB=1),
        ]
        inits = [
            numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "K"),
            numpy_helper.from_array(rng.normal(size=(512, 8)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=512).astype(np.float32), "B"),
        ]
    return recognition_model(path, nodes, inits, "w600k_r50_stand_in", "input.1", "683")


def recognition_model(path: Path, nodes: list[Any], inits: list[Any], title: str, name_in: str, name_out: str) -> Path:
    """A (N, 3, 112, 112) -> (N, 512) ONNX graph of ``nodes`` saved at ``path``."""
    graph = helper.make_graph(
        nodes,
        title,
        [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, ["None", 512])],
        inits,
    )
    return _save(helper.make_model(graph), path)


def test_arcface_onnx_conformance(tmp_path: Path) -> None:
    path = arcface_graph(tmp_path / "w600k_r50.onnx")
    spec = facekit.get_registry("encoder").get("arcface-onnx")
    assert spec.plugin == "insightface" and not spec.card.differentiable
    check_encoder(
        spec,
        params={"weights": str(path), "sha256": _sha256(path)},
        skip={"identity": "random test weights in the real file format"},
    )


def test_arcface_onnx_sees_rgb_scaled_like_insightface(tmp_path: Path) -> None:
    path = arcface_graph(tmp_path / "probe.onnx", probe=True)
    encoder = facekit.load_component("encoder", "arcface-onnx", weights=str(path), sha256=_sha256(path))
    image = torch.stack([torch.full((112, 112), v) for v in (1.0, 0.5, 0.0)])[None]  # red, half green, no blue
    out = encoder.features(image)
    # insightface: blobFromImage(BGR image, 1/127.5, mean 127.5, swapRB=True) -> RGB channels (p - 127.5) / 127.5.
    np.testing.assert_allclose(out[0, :3].numpy(), [1.0, (127.5 - 127.5) / 127.5, -1.0], atol=1e-5)
    np.testing.assert_allclose(encoder.embed(image).norm(dim=1).numpy(), [1.0], atol=1e-6)


def test_an_mxnet_converted_arcface_that_normalises_itself_is_fed_raw_pixels(tmp_path: Path) -> None:
    """Before: a model whose first nodes subtract 127.5 and scale by 1/128 (insightface's MXNet conversions) was fed
    (255 x - 127.5) / 127.5 and normalised twice; insightface feeds such models 0-255. Auto-detected, or stated."""
    weight = np.zeros((512, 3), np.float32)
    weight[:3, :3] = np.eye(3)
    nodes = [
        helper.make_node("Sub", ["data", "mean"], ["centred"], name="_minus0"),
        helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mul0"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["fc1"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
        numpy_helper.from_array(np.array(0.0078125, np.float32), "scale"),
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(np.zeros(512, np.float32), "B"),
    ]
    path = recognition_model(tmp_path / "model-r100.onnx", nodes, inits, "mxnet_arcface_stand_in", "data", "fc1")
    image = torch.stack([torch.full((112, 112), v) for v in (1.0, 0.5, 0.0)])[None]
    raw = [(255 - 127.5) / 128, (127.5 - 127.5) / 128, -127.5 / 128]
    for scaling in ("auto", "in-model"):
        encoder = facekit.load_component(
            "encoder", "arcface-onnx", weights=str(path), sha256=_sha256(path), input_scaling=scaling
        )
        np.testing.assert_allclose(encoder.features(image)[0, :3].numpy(), raw, atol=1e-4)
    stated = facekit.load_component(
        "encoder", "arcface-onnx", weights=str(path), sha256=_sha256(path), input_scaling="insightface"
    )
    twice = [(2 * v - 1 - 127.5) / 128 for v in (1.0, 0.5, 0.0)]  # what the model saw before: a near-grey face
    np.testing.assert_allclose(stated.features(image)[0, :3].numpy(), twice, atol=1e-4)


def test_arcface_onnx_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = arcface_graph(tmp_path / "w600k_r50.onnx")
    digest = _sha256(path)
    with pytest.raises(ChecksumError, match="4c06341c"):  # the card pins the real buffalo_l file
        facekit.load_component("encoder", "arcface-onnx", weights=str(path))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=checksum_refused(path, digest)):
        facekit.load_component("encoder", "arcface-onnx", weights=str(path), sha256=digest)
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))
    with pytest.raises(facekit.FacekitError, match=r"w600k_r50\.onnx \(sha256 4c06341c.*place it at"):
        facekit.load_component("encoder", "arcface-onnx", weights=None)


def test_arcface_onnx_pickles_and_deep_copies_and_verifies_its_file_again(tmp_path: Path) -> None:
    """A Normalizer with this encoder goes to a spawned worker (a process pool) pickled, or is deep-copied, as one
    with dlib's detector or YuNet does (before: "cannot pickle '...InferenceSession' object"). A copy opens its own
    session and embeds as the original does; the weight file is verified again as it is opened."""
    path = arcface_graph(tmp_path / "w600k_r50.onnx")
    digest = _sha256(path)
    encoder = facekit.load_component("encoder", "arcface-onnx", weights=str(path), sha256=digest)
    images = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(5))
    features, embedding = encoder.features(images), encoder.embed(images)
    for twin in (pickle.loads(pickle.dumps(encoder)), copy.deepcopy(encoder)):
        assert twin.session is not encoder.session and twin.params == encoder.params
        assert torch.equal(twin.features(images), features) and torch.equal(twin.embed(images), embedding)
    state = pickle.dumps(encoder)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=checksum_refused(path, digest)):
        pickle.loads(state)


# ------------------------------------------------------------------------------------------------- arcface (torch)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iresnet50 backbone.pth in arcface_torch's format (random weights, BN statistics perturbed)."""
    torch.manual_seed(0)
    state = IResNet(LAYERS["r50"]).state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("arcface") / "backbone.pth"
    torch.save(state, path)
    return path


def test_backbone_has_arcface_torch_layout(backbone: Path) -> None:
    shapes = {k: tuple(v.shape) for k, v in torch.load(backbone, weights_only=True).items()}
    assert shapes["conv1.weight"] == (64, 3, 3, 3) and shapes["prelu.weight"] == (64,)
    assert shapes["layer1.0.bn1.weight"] == (64,) and shapes["layer1.0.conv2.weight"] == (64, 64, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1) and shapes["layer1.0.downsample.1.weight"] == (64,)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer3.13.prelu.weight"] == (256,) and "layer3.14.bn1.weight" not in shapes
    assert shapes["layer4.2.bn3.running_var"] == (512,) and "layer4.1.downsample.0.weight" not in shapes
    assert shapes["bn2.weight"] == (512,) and shapes["fc.weight"] == (512, 512 * 7 * 7) and shapes["fc.bias"] == (512,)
    assert shapes["features.running_mean"] == (512,)
    assert sum(1 for k in shapes if k.endswith(".conv1.weight")) == sum(LAYERS["r50"]) == 24


def test_arcface_torch_conformance(backbone: Path) -> None:
    spec = facekit.get_registry("encoder").get("arcface")
    assert spec.card.differentiable
    check_encoder(
        spec, params={"weights": str(backbone)}, skip={"identity": "random test weights in the real file format"}
    )
    encoder = build_encoder(ArcFaceTorchParams(weights=str(backbone)))
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(encoder.net((images - 0.5) / 0.5))
        torch.testing.assert_close(encoder.embed(images), expected)
        assert encoder.features(images).shape == (2, 512)


def test_arcface_torch_strict(backbone: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsFormatError, match=r"unexpected keys: layer1\.2\."):
        build_encoder(ArcFaceTorchParams(weights=str(backbone), arch="r18"))
    state = torch.load(backbone, weights_only=True)
    del state["layer2.3.prelu.weight"]
    state["module.extra"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFormatError, match=r"missing keys: layer2\.3\.prelu\.weight; unexpected keys: module"):
        build_encoder(ArcFaceTorchParams(weights=str(path)))


def test_arcface_torch_checksum_and_pickle(backbone: Path, tmp_path: Path) -> None:
    digest = _sha256(backbone)
    altered = tmp_path / "backbone.pth"
    data = bytearray(backbone.read_bytes())
    data[len(data) // 3] ^= 0x80
    altered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=checksum_refused(altered, digest)):
        build_encoder(ArcFaceTorchParams(weights=str(altered), sha256=digest))

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, evil)
    with pytest.raises(WeightsFormatError, match="weights_only=True"):
        build_encoder(ArcFaceTorchParams(weights=str(evil)))
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------------------------------------- scrfd

#: Planted detections: (stride, row, column, anchor, score, box distances, keypoint offsets) in stride units.
PLANTED = [
    (8, 40, 30, 0, 0.9, (4, 4, 4, 5), [(-1.5, -1), (1.5, -1), (0, 0.5), (-1, 2), (1, 2)]),
    (8, 40, 30, 1, 0.8, (4, 4, 4, 5), [(0, 0)] * 5),  # same box, lower score: removed by NMS
    (32, 5, 10, 1, 0.7, (2, 2, 2, 2), [(0.5, 0.5)] * 5),
    (16, 3, 3, 0, 0.45, (1, 1, 1, 1), [(0, 0)] * 5),  # below the 0.5 threshold
]


def scrfd_graph(path: Path, order: list[int] | None = None) -> Path:
    """det_10g's input and 9 outputs (names, shapes) for 640 x 640, with constant outputs that plant ``PLANTED``."""
    arrays = {name: np.zeros(shape, np.float32) for name, shape in SCRFD_OUTPUTS}
    names = {8: ("448", "451", "454"), 16: ("471", "474", "477"), 32: ("494", "497", "500")}
    for stride, row, col, anchor, score, dist, kps in PLANTED:
        index = (row * (640 // stride) + col) * 2 + anchor
        scores, boxes, points = names[stride]
        arrays[scores][index, 0] = score
        arrays[boxes][index] = dist
        arrays[points][index] = np.asarray(kps, np.float32).reshape(-1)
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0)]
    nodes.append(helper.make_node("Mul", ["m", "zero"], ["m0"]))
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name, _ in SCRFD_OUTPUTS:
        inits.append(numpy_helper.from_array(arrays[name], f"c{name}"))
        nodes.append(helper.make_node("Add", [f"c{name}", "m0"], [name]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in SCRFD_OUTPUTS]
    if order is not None:
        outputs = [outputs[i] for i in order]
    graph = helper.make_graph(
        nodes,
        "det_10g_stand_in",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        outputs,
        inits,
    )
    return _save(helper.make_model(graph), path)


@pytest.fixture(scope="module")
def scrfd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scrfd_graph(tmp_path_factory.mktemp("scrfd") / "det_10g.onnx")


def _expected_faces() -> list[tuple[float, tuple[float, ...], np.ndarray]]:
    faces = []
    for stride, row, col, _, score, dist, kps in (PLANTED[0], PLANTED[2]):
        cx, cy = col * stride, row * stride
        box = (cx - dist[0] * stride, cy - dist[1] * stride, cx + dist[2] * stride, cy + dist[3] * stride)
        faces.append((score, box, np.array([cx, cy]) + np.asarray(kps) * stride))
    # Largest box first (the detector contract), though the smaller face scores higher.
    return sorted(faces, key=lambda face: -(face[1][2] - face[1][0]) * (face[1][3] - face[1][1]))


@pytest.mark.parametrize("order", [None, [8, 0, 4, 2, 6, 1, 3, 7, 5]], ids=["graph-order", "shuffled"])
def test_scrfd_decodes_planted_faces(tmp_path: Path, order: list[int] | None) -> None:
    path = scrfd_graph(tmp_path / "det.onnx", order)
    detector = ScrfdDetector(ScrfdParams(weights=str(path), sha256=_sha256(path)))
    faces = detector.detect(torch.zeros(1, 3, 640, 640))[0]
    expected = _expected_faces()
    assert len(faces) == 2 and [face.score for face in faces] == pytest.approx([0.7, 0.9])  # not best first
    for face, (score, box, points) in zip(faces, expected, strict=True):
        assert face.score == pytest.approx(score) and face.scheme == "eyes-nose-mouth5"
        np.testing.assert_allclose(face.box, box, atol=1e-4)
        np.testing.assert_allclose(face.landmarks, points, atol=1e-4)
        assert face.landmarks.shape == (5, 2)


def test_scrfd_maps_back_to_the_image(scrfd_file: Path) -> None:
    detector = ScrfdDetector(ScrfdParams(weights=str(scrfd_file), sha256=_sha256(scrfd_file), max_faces=1))
    # A 320 x 240 (W x H) image is letterboxed at scale 2 into the 640 canvas (top-left).
    faces = detector.detect(np.zeros((1, 3, 240, 320), np.float32))[0]
    score, box, points = _expected_faces()[0]
    assert len(faces) == 1 and faces[0].score == pytest.approx(score)
    np.testing.assert_allclose(faces[0].box, (np.asarray(box) + 0.5) / 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(faces[0].landmarks, (points + 0.5) / 2 - 0.5, atol=1e-4)


def test_scrfd_conformance_and_checksum(scrfd_file: Path, tmp_path: Path) -> None:
    spec = facekit.get_registry("detector").get("scrfd")
    assert spec.card.landmarks == 5
    planted = "a planted test graph: it finds its planted faces in any image, never the real one"
    check_detector(
        spec,
        params={"weights": str(scrfd_file), "sha256": _sha256(scrfd_file)},
        skip={
            check: planted
            for check in (
                "real_face",
                "scheme_semantics",
                "largest_first",
                "stateless",
                "large_photo",
                "thread_safe",
                "no_face",
            )
        },
    )
    with pytest.raises(ChecksumError, match="5838f7fe"):  # the card pins the real det_10g.onnx
        ScrfdDetector(ScrfdParams(weights=str(scrfd_file)))
    altered = tmp_path / "det_10g.onnx"
    data = bytearray(scrfd_file.read_bytes())
    data[10] ^= 0x01
    altered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        ScrfdDetector(ScrfdParams(weights=str(altered), sha256=_sha256(scrfd_file)))


def test_scrfd_pickles_and_deep_copies_and_verifies_its_file_again(scrfd_file: Path, tmp_path: Path) -> None:
    """As arcface-onnx: a copy made before or after the first run (which matches the outputs to strides) opens its
    own session and finds what the original finds; the weight file is verified again as it is opened."""
    path = Path(shutil.copy(scrfd_file, tmp_path / "det_10g.onnx"))
    detector = ScrfdDetector(ScrfdParams(weights=str(path), sha256=_sha256(path)))
    inputs = (torch.zeros(1, 3, 640, 640), np.zeros((1, 3, 240, 320), np.float32))

    def found(component: ScrfdDetector) -> list[Any]:
        return [
            [(face.box, face.score, face.landmarks.tolist()) for face in faces]
            for image in inputs
            for faces in component.detect(image)
        ]

    before = [pickle.loads(pickle.dumps(detector)), copy.deepcopy(detector)]
    expected = found(detector)
    assert [len(faces) for faces in expected] == [2, 2]
    for twin in [*before, pickle.loads(pickle.dumps(detector)), copy.deepcopy(detector)]:
        assert twin.session is not detector.session and found(twin) == expected
    state = pickle.dumps(detector)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=checksum_refused(path, _sha256(scrfd_file))):
        pickle.loads(state)


def test_nms_and_threshold() -> None:
    from facekit_insightface.scrfd import nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.9).tolist() == [0, 1, 2]


def test_import_is_light() -> None:
    code = (
        "import facekit_insightface, facekit, sys\nfacekit.list_components()\n"
        "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'cv2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
