"""Train recipes/default-model-224.yaml on a borrowed GPU in one short call (issue "a normalized face worth its
name", lever "224 px").

The GPU machine reaches nothing outside itself and takes at most 64 MiB of files with it, so what its training needs
travels packed, and nothing there reads the photos:

1. here, ``python benchmarks/gpu_224.py photos``: the encoder's features of each prepared person's own photos with
   their colour-cast copies (``train.photo_inputs`` / ``photo_casts``, as facekit.pool.encode_photos makes them; they
   depend on the photo and its landmarks only, not on the prepared image size), from a prepared set whose manifest
   points at the photos (the 112 px set here), keyed by the person;
2. here, ``python benchmarks/gpu_224.py pack``: the 224 px prepared set (``--stage prepare`` of the recipe) as WebP
   and JPEG (its averages and textures; 241 MB each as arrays), its landmarks and identities, the photo features and
   dlib's ResNet weights, into ``.gpu/`` (ignored by git; the device tool carries it);
3. there, ``python3 benchmarks/gpu_224.py train --seconds S``: unpacks the set, trains the recipe with the photo
   features read from the pack instead of the photos, stops after S seconds at the last checkpoint (one is written
   every ``train.checkpoint_every`` steps), exports it in fp16 and writes the training's speed to ``$OUT``.

The model then comes back here and is judged by ``benchmarks/quality.py`` like any other. The device tool sends the
working tree too (its tracked files count towards the 64 MiB): move the shipped models
(``facekit/assets/*.safetensors``, 30 MB, which the training does not read) out of the tree for the call and back after
it, and carry ``.gpu`` and ``.whl`` (pydantic, typer and click wheels for the machine's Python 3.12; its own torch,
numpy and OpenCV serve).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facekit.errors import FacekitError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "default-model-224.yaml"
PACK = ROOT / ".gpu"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"


def photo_features(prepared_112: Path, output: Path) -> None:
    """Step 1: the encoder's features of each person's photos (and cast copies), keyed by identity."""
    import torch

    from facekit.data.dataset import PreparedFaces
    from facekit.pool import encode_photos
    from facekit.recipe import load_recipe, path_override

    plan = load_recipe(RECIPE, [path_override("prepare.output", prepared_112)])
    recipe = plan.recipe
    encoder = plan.components["encoder"].build()
    faces = PreparedFaces(prepared_112)
    began = time.perf_counter()
    targets, features, embeddings, _ = encode_photos(recipe, faces, encoder, progress=True)
    names = np.asarray([faces.identities[int(t)]["identity"] for t in targets])
    # Features alone, in fp16 (the pack's room is 64 MiB): dlib's embedding is its last layer on them, redone there.
    # With the settings that chose and cast the photos: a run there with others is refused (helper-78).
    np.savez(
        output, identity=names, features=features.to(torch.float16).numpy(), settings=json.dumps(photo_settings(recipe))
    )
    redone = embedding_of(encoder, features.to(torch.float16).float())
    print(f"embeddings from the fp16 features: largest difference {float((redone - embeddings).abs().max()):.2e}")
    print(f"{len(names)} photo inputs of {len(set(names))} people in {time.perf_counter() - began:.0f} s -> {output}")


def photo_settings(recipe: Any) -> dict[str, Any]:
    """The recipe settings that choose the photo inputs and their casts."""
    names = ("photo_inputs", "photo_max_yaw_deg", "photo_casts", "photo_cast_sigma", "seed")
    return {name: getattr(recipe.train, name) for name in names}


def pack(prepared_224: Path, photos: Path) -> None:
    """Step 2: the 224 px set, the photo features and the ResNet's weights into .gpu/."""
    from facekit_dlib.models import model_path

    PACK.mkdir(exist_ok=True)
    pack_set(prepared_224, PACK)
    shutil.copy(photos, PACK / "photos.npz")
    shutil.copy(model_path(RESNET), PACK / RESNET)
    # The recipe's data section is checked before training (its people lists and folders); no photo is read there.
    from facekit.recipe import load_recipe

    root = load_recipe(RECIPE).recipe.data.resolved_root()
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        shutil.copy(root / "lfw" / name, PACK / name)
    sizes = {p.name: p.stat().st_size / 2**20 for p in PACK.iterdir()}
    print(json.dumps({k: round(v, 1) for k, v in sizes.items()}), f"total {sum(sizes.values()):.1f} MiB")


def pack_set(prepared: Path, pack_dir: Path) -> None:
    """A prepared set's arrays and identities into ``pack_dir``/set.npz and identities.json, its images compressed."""
    from PIL import Image

    arrays: dict[str, Any] = {}
    # The textures (the decoder's target) as JPEG quality 90, the averages (seeds of the morphs, whose backgrounds
    # train.background flattens) as WebP quality 92: 1.0 and 1.3 grey levels mean error, 25 MiB together.
    hows: tuple[tuple[str, dict[str, Any]], ...] = (
        ("averages", {"format": "WEBP", "quality": 92}),
        ("textures", {"format": "JPEG", "quality": 90}),
    )
    for name, how in hows:
        images = np.load(prepared / f"{name}.npy", mmap_mode="r")
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(image)).save(buffer, **how)
            encoded.append(np.frombuffer(buffer.getvalue(), np.uint8))
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(e) for e in encoded])
        arrays[f"{name}_bytes"] = np.concatenate(encoded)
    for name in ("landmarks", "mean_landmarks"):
        arrays[name] = np.load(prepared / f"{name}.npy")
    np.savez(pack_dir / "set.npz", **arrays)
    shutil.copy(prepared / "identities.json", pack_dir / "identities.json")


def unpack(folder: Path, pack_dir: Path = PACK) -> None:
    """There: ``pack_dir``/set.npz back into a prepared set's arrays in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    packed = np.load(pack_dir / "set.npz")
    for name in ("averages", "textures"):
        offsets, data = packed[f"{name}_offsets"], packed[f"{name}_bytes"]
        images = [
            np.asarray(Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
            for i in range(len(offsets) - 1)
        ]
        np.save(folder / f"{name}.npy", np.stack(images))
    for name in ("landmarks", "mean_landmarks"):
        np.save(folder / f"{name}.npy", packed[name])
    shutil.copy(pack_dir / "identities.json", folder / "identities.json")


def packed_photo_inputs(
    recipe: Any, faces: Any, encoder: Any, progress: bool = False, identity: Any = None
) -> tuple[Any, Any, Any, Any]:
    """facekit.pool.encode_photos from the pack: the features made here, their people found by name in this set
    (the 224 px recipe names no identity encoder: ``identity`` is refused, and no own embeddings come back)."""
    if identity is not None:
        raise SystemExit("gpu_224: the pack holds dlib's features only, not another identity encoder's embeddings")
    import torch

    photos = np.load(PACK / "photos.npz")
    made_with, wanted = json.loads(str(photos["settings"])), photo_settings(recipe)
    if made_with != wanted:
        raise FacekitError(
            f"the packed photo inputs were made with {made_with}, this run asks for {wanted}: make them again"
        )
    features = torch.from_numpy(photos["features"].astype(np.float32))
    row_of = {record["identity"]: index for index, record in enumerate(faces.identities)}
    keep = np.asarray([name in row_of for name in photos["identity"]])
    targets = np.asarray([row_of[name] for name in photos["identity"][keep]], np.int64)
    print(f"photo inputs from the pack: {keep.sum()} of {len(keep)} (their people are in this set)", flush=True)
    with torch.no_grad():
        embeddings = embedding_of(encoder, features)
    return targets, features[torch.from_numpy(keep)], embeddings[torch.from_numpy(keep)], None


def embedding_of(encoder: Any, features: Any) -> Any:
    """dlib's ResNet embedding from its 256-D features (on the encoder's device, back on the CPU)."""
    net = encoder.net
    return net.embed_features(features.to(next(net.parameters()).device)).cpu()


def encode_on_gpu(embed_and_features: Callable[..., Any]) -> Any:
    import torch

    def wrapped(encoder: Any, inputs: Any) -> Any:
        if not torch.cuda.is_available() or not isinstance(encoder, torch.nn.Module):
            return embed_and_features(encoder, inputs)
        encoder.to("cuda")
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            embedding, features = embed_and_features(encoder, inputs.to("cuda"))
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        return embedding.cpu(), features.cpu()

    return wrapped


def in_threads(plain_background: Callable[..., Any]) -> Callable[..., Any]:
    from concurrent.futures import ThreadPoolExecutor

    def wrapped(images: Any, textures: Any, landmarks: Any, mean_landmarks: Any, rgb: Any, *mask: Any) -> Any:
        chunks = np.array_split(np.arange(len(images)), max(1, min(64, len(images))))  # (no empty chunk)
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            parts = list(
                pool.map(
                    lambda c: plain_background(images[c], textures[c], landmarks[c], mean_landmarks, rgb, *mask),
                    chunks,
                )
            )
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return wrapped


class OutOfTime(BaseException):
    """Raised by the alarm: the training stops, its last checkpoint is the result."""


def train(seconds: int, out: Path, sets: list[str]) -> None:
    """Step 3 (on the GPU machine), from the repository's root (the recipe's outputs are relative to it)."""
    os.chdir(ROOT)
    home = Path(os.environ.setdefault("FACEKIT_HOME", "/tmp/facekit-home"))
    (home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(PACK / RESNET, home / "models" / RESNET)
    data = Path("/tmp/facekit-data")
    for folder in ("lfw", "london/neutral_front", "london/canada"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        shutil.copy(PACK / name, data / "lfw" / name)
    os.environ["FACEKIT_DATA"] = str(data)
    began = time.perf_counter()
    prepared = ROOT / "runs" / "data" / "default224"
    unpack(prepared)
    print(f"unpacked in {time.perf_counter() - began:.0f} s", flush=True)

    import facekit.pool
    from facekit.cli import app
    from facekit.recipe import path_override

    facekit.pool.encode_photos = packed_photo_inputs
    # The pool's two slow parts, faster on that machine (the same numbers up to float rounding): the encoder's pass
    # over the averages and morphs on the GPU (in full fp32, as here), the plain background in 16 threads.
    facekit.pool.embed_and_features = encode_on_gpu(facekit.pool.embed_and_features)
    facekit.pool.plain_background = in_threads(facekit.pool.plain_background)

    def stop(*_: object) -> None:
        raise OutOfTime

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    args = ["run", str(RECIPE), "--stage", "train", "--set", path_override("prepare.output", prepared)]
    for item in sets:
        args += ["--set", item]
    try:
        app(args, standalone_mode=False)
        print("training finished its steps", flush=True)
    except OutOfTime:
        print(f"stopped after {seconds} s", flush=True)
    signal.alarm(0)
    output = ROOT / "runs" / "train" / "default224"
    metrics = output / "metrics.csv"
    out.mkdir(parents=True, exist_ok=True)
    if metrics.is_file():
        shutil.copy(metrics, out / "metrics.csv")
    checkpoint = output / "checkpoints" / "last.safetensors"
    if checkpoint.is_file():
        app(["export", str(checkpoint), str(out / "default-224.safetensors")], standalone_mode=False)
        from facekit.checkpoints import read_checkpoint

        meta = read_checkpoint(checkpoint)[1]
        import csv

        rows = list(csv.DictReader(metrics.open()))
        # Speed over the second half of the logged steps (the first include warm-up and cuDNN's autotuning).
        half = rows[len(rows) // 2]
        steps = int(rows[-1]["step"]) - int(half["step"])
        seconds_ = float(rows[-1]["seconds"]) - float(half["seconds"])
        import torch

        summary = {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "checkpoint_step": meta["step"],
            "logged_steps": int(rows[-1]["step"]),
            "pool_seconds": meta.get("pool_seconds"),
            "train_seconds": float(rows[-1]["seconds"]),
            "batch_size": int(meta["recipe"]["train"]["batch_size"]),
            "steps_per_second": round(steps / seconds_, 2) if seconds_ > 0 else None,
        }
        summary["images_per_second"] = round((summary["steps_per_second"] or 0) * summary["batch_size"], 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("photos", help="step 1: the photo inputs' features (here)")
    one.add_argument("--prepared", type=Path, default=Path("runs/data/default112"), help="a set with its manifest")
    one.add_argument("--output", type=Path, default=Path("runs/photo-features-224.npz"))
    two = commands.add_parser("pack", help="step 2: pack what the GPU run needs into .gpu/ (here)")
    two.add_argument("--prepared", type=Path, default=Path("runs/data/default224"))
    two.add_argument("--photos", type=Path, default=Path("runs/photo-features-224.npz"))
    three = commands.add_parser("train", help="step 3: train there")
    three.add_argument("--seconds", type=int, required=True, help="stop the training after this long")
    three.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu-out")))
    three.add_argument("--set", dest="sets", action="append", default=[], help="recipe settings, as facekit run's")
    args = parser.parse_args(argv)
    if args.command == "photos":
        photo_features(args.prepared, args.output)
    elif args.command == "pack":
        pack(args.prepared, args.photos)
    else:
        train(args.seconds, args.out, args.sets)


if __name__ == "__main__":
    main()
