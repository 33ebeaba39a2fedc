"""Conformance checks for every kind of component, for facekit's own suite and for third-party plugins.

Use them from a plugin's tests::

    import pytest
    from facekit.testing import check_component, parametrize_components

    @pytest.mark.parametrize("spec", parametrize_components("warper", plugin="my-plugin"))
    def test_conforms(spec):
        check_component("warper", spec)

or call ``check_encoder(spec, params={...})`` directly for a component whose params have no defaults (a weights
path, say). Each check raises ``AssertionError`` naming the component and what it got wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError

from facekit.registry import ComponentSpec, Params, get_registry
from facekit.types import Decoder, DecoderOutput, Detector, Encoder, FaceDetection, Kind, Warper


def parametrize_components(kind: Kind, plugin: str | None = None) -> list[Any]:
    """``pytest.param`` per registered component of ``kind`` (of one ``plugin`` if given), with its name as id."""
    import pytest

    return [pytest.param(spec, id=spec.name) for spec in get_registry(kind) if plugin is None or spec.plugin == plugin]


def default_params(spec: ComponentSpec[Any]) -> Params | None:
    """The component's params with every default, or ``None`` when some field is required."""
    try:
        return spec.params()
    except ValidationError:
        return None


def check_params(spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None) -> Params:
    """Params round-trip through plain data, and an unknown key is rejected."""
    name = spec.name
    validated = params if isinstance(params, Params) else spec.validate_params(params or {})
    assert isinstance(validated, spec.params), f"{name}: params are not a {spec.params.__name__}"
    data = validated.model_dump(mode="json")
    again = spec.params.model_validate(data)
    assert again == validated, f"{name}: params do not round-trip: {data}"
    try:
        spec.params.model_validate({**data, "surely_not_a_field": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{name}: Params accepts unknown keys; subclass facekit.Params (extra='forbid')")
    return validated


def _build(spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None) -> Any:
    validated = check_params(spec, params)
    component = spec.build(validated)
    if isinstance(component, torch.nn.Module):
        component.eval()
    return component


def _assert_finite(name: str, what: str, tensor: Any) -> None:
    assert isinstance(tensor, torch.Tensor), f"{name}: {what} is a {type(tensor).__name__}, not a torch.Tensor"
    assert torch.isfinite(tensor).all(), f"{name}: {what} has NaN or inf"


def _grad_ok(name: str, what: str, grad: torch.Tensor | None) -> None:
    assert grad is not None, f"{name}: no gradient reaches {what}"
    assert torch.isfinite(grad).all(), f"{name}: the gradient w.r.t. {what} has NaN or inf"
    assert grad.abs().sum() > 0, f"{name}: the gradient w.r.t. {what} is zero everywhere"


def check_warper(spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None) -> None:
    """Shapes and dtypes, identity when nothing moves, content moves from source to destination, determinism,
    and gradients w.r.t. image, source and destination when the warper says it is differentiable."""
    name = spec.name
    warper = _build(spec, params)
    assert isinstance(warper, Warper), f"{name}: does not implement facekit.types.Warper"
    gen = torch.Generator().manual_seed(0)
    batch, height, width = 2, 36, 44
    image = torch.rand(batch, 3, height, width, generator=gen)
    source = torch.tensor([[12.0, 10.0], [30.0, 11.0], [21.0, 19.0], [14.0, 27.0], [29.0, 26.0]]).expand(batch, -1, -1)
    source = source.contiguous()

    warped, flow = warper.warp(image, source, source.clone())
    assert warped.shape == image.shape, f"{name}: warped shape {tuple(warped.shape)} != {tuple(image.shape)}"
    assert warped.dtype == image.dtype, f"{name}: warped dtype {warped.dtype} != {image.dtype}"
    assert tuple(flow.shape) == (batch, height, width, 2), f"{name}: flow shape {tuple(flow.shape)}"
    assert torch.allclose(warped, image, atol=1e-3), f"{name}: not the identity when source == destination"

    # A control point moved by whole pixels: the output at the destination reads the input at the source.
    destination = source.clone()
    destination[:, 2] += torch.tensor([3.0, -2.0])
    warped, flow = warper.warp(image, source, destination)
    _assert_finite(name, "warped image", warped)
    (dx, dy), (sx, sy) = destination[0, 2].long().tolist(), source[0, 2].long().tolist()
    got, want = warped[:, :, dy, dx], image[:, :, sy, sx]
    assert torch.allclose(got, want, atol=2e-3), f"{name}: output at destination {dx, dy} does not show source {sx, sy}"
    assert torch.allclose(flow[:, dy, dx].float(), torch.tensor([3.0, -2.0]), atol=2e-3), (
        f"{name}: flow at destination wrong"
    )

    again, _ = warper.warp(image, source, destination)
    assert torch.equal(again, warped), f"{name}: two identical calls differ"

    if getattr(warper, "differentiable", False):
        image_g = image.clone().requires_grad_(True)
        source_g = (source + 0.3).requires_grad_(True)
        destination_g = (destination - 0.2).requires_grad_(True)
        out, _ = warper.warp(image_g, source_g, destination_g)
        weights = torch.rand(out.shape, generator=gen)
        (out * weights).sum().backward()
        _grad_ok(name, "image", image_g.grad)
        _grad_ok(name, "source", source_g.grad)
        _grad_ok(name, "destination", destination_g.grad)


def check_encoder(spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None, batch: int = 2) -> None:
    """A complete card; embeddings and features of the card's sizes; eval-mode determinism; gradients to the
    input pixels when the card says differentiable."""
    name = spec.name
    card = spec.card
    assert card is not None, f"{name}: an encoder needs a model card"
    assert card.input_size, f"{name}: card.input_size missing"
    assert card.embedding_size, f"{name}: card.embedding_size missing"
    assert card.threshold is not None and card.distance, f"{name}: card needs threshold and distance"
    assert card.weights and all(w.licence for w in card.weights), f"{name}: card needs weights with a licence"
    encoder = _build(spec, params)
    assert isinstance(encoder, Encoder), f"{name}: does not implement facekit.types.Encoder"
    width, height = card.input_size
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embedding = encoder.embed(images)
        features = encoder.features(images)
        again = encoder.embed(images)
    _assert_finite(name, "embedding", embedding)
    assert embedding.shape == (batch, card.embedding_size), f"{name}: embedding shape {tuple(embedding.shape)}"
    assert embedding.dtype == torch.float32, f"{name}: embedding dtype {embedding.dtype}"
    _assert_finite(name, "features", features)
    if card.feature_size:
        assert features.shape == (batch, card.feature_size), f"{name}: features shape {tuple(features.shape)}"
    assert torch.allclose(embedding, again, atol=1e-6), f"{name}: not deterministic in eval mode"
    if card.differentiable:
        pixels = images.clone().requires_grad_(True)
        encoder.embed(pixels).sum().backward()
        _grad_ok(name, "input pixels", pixels.grad)


def check_detector(
    spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None, images: Any = None
) -> None:
    """One list of detections per image, boxes as 4 numbers, landmarks ``(K, 2)`` with K from the card."""
    name = spec.name
    card = spec.card
    assert card is not None, f"{name}: a detector needs a model card"
    detector = _build(spec, params)
    assert isinstance(detector, Detector), f"{name}: does not implement facekit.types.Detector"
    if images is None:
        images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    results = detector.detect(images)
    assert isinstance(results, list) and len(results) == len(images), f"{name}: needs one list per image"
    for faces in results:
        for face in faces:
            assert isinstance(face, FaceDetection), f"{name}: returns {type(face).__name__}, not FaceDetection"
            assert len(face.box) == 4, f"{name}: box {face.box}"
            if face.landmarks is not None and card.landmarks:
                assert tuple(face.landmarks.shape) == (card.landmarks, 2), f"{name}: landmarks {face.landmarks.shape}"


def check_decoder(
    spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None, feature_size: int | None = None
) -> None:
    """``decode`` returns a DecoderOutput of the right shapes and gradients reach the features."""
    name = spec.name
    decoder = _build(spec, params)
    assert isinstance(decoder, Decoder), f"{name}: does not implement facekit.types.Decoder"
    size = feature_size or int(getattr(decoder, "feature_size", 0))
    assert size > 0, f"{name}: pass feature_size or give the decoder a feature_size attribute"
    features = torch.randn(2, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = decoder.decode(features)
    assert isinstance(out, DecoderOutput), f"{name}: decode returns {type(out).__name__}, not DecoderOutput"
    _assert_finite(name, "image", out.image)
    assert out.image.ndim == 4 and out.image.shape[:2] == (2, 3), f"{name}: image shape {tuple(out.image.shape)}"
    if out.landmarks is not None:
        assert out.landmarks.ndim == 3 and out.landmarks.shape[::2] == (2, 2), f"{name}: landmarks shape"
    out.image.sum().backward()
    _grad_ok(name, "features", features.grad)


def check_app(spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None) -> None:
    """Params round-trip and the component implements ``facekit.types.App``."""
    from facekit.types import App

    app = _build(spec, params)
    assert isinstance(app, App), f"{spec.name}: does not implement facekit.types.App"


CHECKS = {
    "detector": check_detector,
    "encoder": check_encoder,
    "decoder": check_decoder,
    "warper": check_warper,
    "app": check_app,
}


def check_component(kind: Kind, spec: ComponentSpec[Any], params: Params | Mapping[str, Any] | None = None) -> None:
    """Run the conformance check for ``kind`` on ``spec`` (default params unless given)."""
    CHECKS[kind](spec, params)
