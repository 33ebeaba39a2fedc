"""Model files: checkpoints (decoder weights, Adam state, metadata) and exported models (fp16 weights and
provenance), one safetensors format with a sha256 over the tensors. Inference reads them without importing training.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from facekit.errors import FacekitError
from facekit.locks import replace_durably, temporary_beside
from facekit.warp import tfa_boundary_points


def save_checkpoint(
    path: Path, decoder: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    """Weights + Adam state + metadata in one safetensors file, written atomically (temporary file + rename)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = tensor.detach().cpu().contiguous()
    write_model_file(path, tensors, {**meta, "param_groups": state["param_groups"]})


def write_model_file(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """``tensors`` + ``meta`` (JSON) + the tensors' sha256 as one safetensors file, written to a temporary file beside
    ``path`` and renamed: the format of checkpoints and exported models, read by :func:`read_checkpoint`. The
    temporary name is unique (``.NAME.XXXXXXXX.tmp``): two exports to the same file at once each write their own,
    and a stop's cleanup of one leaves the other's (before: both wrote ``.NAME.tmp``, which the stopped one removed
    under the other). The file gets the usual permissions of a written file (:func:`replace_durably`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta)
    header = {"facekit": text, DIGEST_KEY: tensors_digest(tensors), META_DIGEST_KEY: text_digest(text)}
    temporary = temporary_beside(path)  # (safetensors writes the file by its name)
    try:
        save_tensors(tensors, temporary, header)
        replace_durably(temporary, path)
    except BaseException:  # (a stop, a full disk: no part left beside the file, which is as it was)
        temporary.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path) -> None:
    """Remove the temporaries :func:`write_model_file` left in ``folder`` when killed outright (kill -9, a power
    cut): their names are unique, so the next write no longer writes over them (a checkpoint's size each). For a
    folder its writer holds alone (a training's checkpoints, under its lock): another's would be one in progress."""
    for pattern in (".*.safetensors.????????.tmp", ".*.safetensors.tmp"):  # (the second: before the names were unique)
        for leftover in folder.glob(pattern):
            leftover.unlink(missing_ok=True)


def remove_stale_temporaries_of(path: Path) -> int:
    """Delete the temporaries of ``path`` (:func:`write_model_file`'s ``.NAME.XXXXXXXX.tmp``, NAME ``path``'s)
    that a writer killed outright left beside it (:func:`facekit.locks.remove_stale`: that exact pattern, plain
    files of this user, untouched for an hour, so another export to the same file writing now keeps its own). For a
    file that is written beside others' (``facekit export``'s OUT): before, each killed export left a model's size
    there, hidden, for good. Returns how many."""
    from facekit.locks import remove_stale

    return remove_stale(path.parent, re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp"))


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file``, its I/O failures raised as the OSError they are, the part written removed
    (helper-74: a full disk while saving a checkpoint or the training pool was a SafetensorError traceback; as an
    OSError the command says it in one line: "free some space")."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as error:
        path.unlink(missing_ok=True)
        found = re.search(r"os error (\d+)", str(error))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


#: Metadata key of the sha256 over a checkpoint's tensors (names, dtypes, shapes and bytes), checked when read.
DIGEST_KEY = "tensors_sha256"
#: Metadata key of the sha256 over its ``facekit`` metadata (recipe, warp settings, statistics), checked when read:
#: a header edited by hand would change the faces without touching a tensor. Files written before it have none.
META_DIGEST_KEY = "facekit_sha256"


def text_digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order. Hashed in place, as
    :func:`facekit.pool.pool_checksum` is (a copy only of a tensor not contiguous or not on the CPU): before, each
    tensor was copied to bytes first (a 1.5 GB set of tensors on 2 busy cores: 1.8-4.5 s and 960 MB more at its peak,
    against 0.9-1.3 s and none). The digest is the same: files written before verify."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def checkpoint_not_found(path: str | Path) -> FacekitError:
    """The error for a model file that is not there: a folder given for it says so (before: "checkpoint not found"
    for a folder that exists, e.g. ``--checkpoint runs/train/mine``)."""
    if Path(path).is_dir():
        return FacekitError(
            f"checkpoint {path} is a folder: give the model file itself (a .safetensors file, e.g. a training's "
            "checkpoints/last.safetensors or what facekit export wrote)"
        )
    return FacekitError(f"checkpoint not found: {path}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint written by :func:`save_checkpoint` (or a model from :func:`export_model`)."""
    from facekit.models import ChecksumError

    path = Path(path)
    if not path.is_file():
        raise checkpoint_not_found(path)
    with _unreadable_as_error(path):
        header, meta = _header(path)
        tensors = load_file(str(path))
    expected = header.get(DIGEST_KEY)
    if expected is not None and tensors_digest(tensors) != expected:
        raise ChecksumError(f"{path} is damaged: its tensors do not match the checksum they were saved with")
    return tensors, _checked_meta(path, header, meta)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint or model file from its header alone (checked against the checksum it was saved
    with), without reading its tensors: what reports need (the step reached, the recipe)."""
    path = Path(path)
    with _unreadable_as_error(path):
        header, meta = _header(path)
    return _checked_meta(path, header, meta)


@contextmanager
def _unreadable_as_error(path: Path) -> Iterator[None]:
    """A damaged header, JSON or file read inside is a FacekitError naming ``path``."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise FacekitError(f"{path} is not a readable facekit model ({type(error).__name__}: {error})") from None


def _header(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The safetensors header's metadata and facekit's JSON in it (unparsed JSON raises, as a damaged file does)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return header, json.loads(header.get("facekit", "{}"))


def _checked_meta(path: Path, header: dict[str, str], meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` (facekit's JSON in ``header``), checked against the checksum it was saved with."""
    from facekit.models import ChecksumError

    expected = header.get(META_DIGEST_KEY)
    if expected is not None and text_digest(header.get("facekit", "")) != expected:
        raise ChecksumError(f"{path} is damaged: its metadata does not match the checksum it was saved with")
    return tfa_boundary_points(meta)


def load_decoder_state(decoder: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.items()})


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's model tensors as a model file holds them: fp16, but the mean landmarks (sub-pixel positions)
    and integer buffers as they are. Idempotent: a model file's tensors come back unchanged."""
    return {
        k: (v.half() if v.is_floating_point() and not k.endswith("mean_landmarks") else v)
        for k, v in tensors.items()
        if k.startswith("model.")
    }


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's weights as exported (:func:`model_weights`): the same for a checkpoint and the model file
    made from it, so an evaluation of either names the model (``weights_sha256`` in its metrics)."""
    return tensors_digest(model_weights(tensors))


def recorded_digests(metrics: Any) -> set[str]:
    """The ``weights_sha256`` an evaluation's metrics record: at the top (``facekit eval``) or in each model's row
    (``benchmarks/quality.py``)."""
    if not isinstance(metrics, dict):
        return set()
    rows = [metrics, *(row for row in metrics.values() if isinstance(row, dict))]
    return {str(row["weights_sha256"]) for row in rows if isinstance(row.get("weights_sha256"), str)}


def model_detector(meta: dict[str, Any]) -> dict[str, Any]:
    """The detector a model file records (its training recipe's ``components.detector``: name and params), or {}."""
    return ((meta.get("recipe") or {}).get("components") or {}).get("detector") or {}


def check_metrics_measure(metrics: Any, digest: str, path: str | Path, checkpoint: str | Path) -> None:
    """Refuse to record ``metrics`` in a model file unless they measured these weights (``digest``)."""
    recorded = recorded_digests(metrics)
    if digest in recorded:
        return
    measure = (
        f"evaluate it first (facekit eval --checkpoint {checkpoint}, or benchmarks/quality.py "
        f"--model NAME={checkpoint}) and pass that metrics.json"
    )
    if not recorded:
        raise FacekitError(
            f"--metrics {path} does not say which model it measured (no weights_sha256: made by an older facekit or by "
            f"hand): {measure}"
        )
    raise FacekitError(
        f"--metrics {path} measured another model (weights {', '.join(sorted(d[:12] for d in recorded))}; "
        f"{checkpoint}'s are {digest[:12]}): {measure}"
    )


def check_metrics_file(metrics: Path) -> None:
    """Refuse a ``--metrics`` that is not there or is a folder, in words (before: "cannot be read as JSON: [Errno 2]
    No such file or directory", "[Errno 21] Is a directory")."""
    wrote = "give the metrics.json a `facekit eval` or benchmarks/quality.py wrote"
    if metrics.is_dir():
        inside = f" ({metrics / 'metrics.json'}?)" if (metrics / "metrics.json").is_file() else ""
        raise FacekitError(f"--metrics {metrics} is a folder: {wrote}{inside}")
    if not metrics.is_file():
        raise FacekitError(f"--metrics {metrics}: no such file: {wrote}")


def export_model(
    checkpoint: str | Path, out: str | Path, metrics: str | Path | None = None, overwrite: bool = False
) -> int:
    """Write ``checkpoint``'s decoder weights in fp16 with its provenance (recipe, step, components, git sha and
    ``metrics`` if given) and no optimizer state: the format of the shipped default model. Returns the file size.
    ``checkpoint`` may be a model file this wrote (its weights come back unchanged, its ``exported_from`` stays the
    training checkpoint it names, and ``re_exported_from`` names the model file): how a shipped model's figures are
    re-recorded without its training run.
    An existing ``out`` is a FacekitError unless ``overwrite``; ``out`` is never the checkpoint or ``metrics``."""
    from facekit.runs import git_sha

    out = Path(out)
    if not Path(checkpoint).is_file():  # said first (before: "OUT exists: --overwrite", then "not found")
        raise checkpoint_not_found(checkpoint)
    if out.resolve() == Path(checkpoint).resolve():
        raise FacekitError(f"{out} is the checkpoint itself: write the model to another file")
    if metrics is not None and out.resolve() == Path(metrics).resolve():  # before: --overwrite replaced the figures
        raise FacekitError(f"{out} is the --metrics file: write the model to another file")
    if metrics is not None:  # before reading the checkpoint (helper-144: "cannot be read as JSON: [Errno 2] ...")
        check_metrics_file(Path(metrics))
    if out.is_dir():  # (helper-69: first "exists: --overwrite replaces it", and with it "is a folder")
        raise FacekitError(f"{out} is a folder: give the model file's name (e.g. {out / 'model.safetensors'})")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FacekitError(f"{out} exists: --overwrite replaces it")

    tensors, meta = read_checkpoint(Path(checkpoint))
    weights = model_weights(tensors)
    if not weights or "decoder" not in meta:  # a training pool's or another file's tensors: not a model to ship
        raise FacekitError(
            f"{checkpoint} is not a facekit training checkpoint (no decoder weights in it): export one of "
            "train.output's checkpoints/*.safetensors"
        )
    meta = {k: v for k, v in meta.items() if k != "param_groups"}
    if "exported_from" in meta:  # a model file exported again (to record new figures): it keeps where it came from
        meta["re_exported_from"] = str(checkpoint)
    else:
        meta["exported_from"] = str(checkpoint)
    meta["git_sha"] = git_sha()
    if metrics is not None:
        try:
            meta["metrics"] = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FacekitError(f"--metrics {metrics} cannot be read as JSON: {error}") from None
        check_metrics_measure(meta["metrics"], weights_digest(weights), metrics, checkpoint)
        own = model_detector(meta)
        used = meta["metrics"].get("detector") if isinstance(meta["metrics"], dict) else None
        if isinstance(used, str) and own.get("name") and used != own["name"]:  # (helper-81: taken as the model's)
            raise FacekitError(
                f"--metrics {metrics} found its faces with detector {used!r}, the model's is {own['name']!r}: "
                "evaluate it with the model's own detector to record the figures in the model file"
            )
    remove_stale_temporaries_of(out)  # (a killed export's, beside OUT)
    write_model_file(out, weights, meta)
    return out.stat().st_size
