"""The learned lesion detector: ultralytics YOLO, from random weights, trained by our own code on
texture tiles of synthetic patients (`bodymap train detector`).

Tiles are cut from the texture at native resolution (``TILE`` texels) and enlarged ``SCALE``
times for the network: lesions of 1-2 mm are only 2-6 texels across at 4096 and would vanish
at the network's stride otherwise. Labels come from the generator's lesion label image (lesions
only: freckles are negatives). The checkpoint is ultralytics' own file with a ``bodymap`` entry
added: recipe, data description and hash, held-out scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bodymap.atomic import atomic_write, write_text
from bodymap.detect import Boxes

TILE = 192  # texels per tile side
SCALE = 2  # enlargement for the network (input TILE * SCALE)
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "detector_yolo.pt"
#: sha256 of every weights file BodyMap ships (sha256sum format); only these, or files the user
#: explicitly trusts, are unpickled (a YOLO checkpoint is a pickle: loading one runs its code).
SHA256SUMS = SHIPPED.parent / "SHA256SUMS"


class UntrustedWeights(ValueError):
    """Weights that are not the shipped ones and that the user did not say to trust."""


def offline_env() -> None:
    """Tell ultralytics, before it is first imported (also by torch.load of one of its
    checkpoints), that it must not touch the network: its import otherwise resolves DNS names to
    decide whether it is online (seconds where DNS packets are dropped)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_hashes() -> dict[str, str]:
    """{sha256: file name} of the weights BodyMap ships (bodymap/data/SHA256SUMS)."""
    if not SHA256SUMS.is_file():
        return {}
    out = {}
    for line in SHA256SUMS.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0].lower()] = parts[1].lstrip("*")
    return out


def record_shipped_hash(path: str | Path = SHIPPED) -> str:
    """Record a shipped weights file's sha256 in SHA256SUMS (after training or re-scoring the
    shipped file; scripts/ship_weights.py). Returns the hash."""
    path = Path(path)
    h = sha256_file(path)
    keep = {k: v for k, v in shipped_hashes().items() if v != path.name}
    keep[h] = path.name
    write_text(SHA256SUMS, "".join(f"{k}  {v}\n" for k, v in sorted(keep.items(), key=lambda kv: kv[1])))
    return h


def check_trusted(path: str | Path, trust: bool = False) -> None:
    """Allow unpickling `path` only when it is byte for byte weights BodyMap ships (sha256 in
    SHA256SUMS) or the user trusts it (trust=True, `--trust-weights`). UntrustedWeights
    (a ValueError naming the file) otherwise; FileNotFoundError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no YOLO weights (train them with `bodymap train detector`, "
                                "or use the classical detector)")
    if trust:
        return
    if sha256_file(path) in shipped_hashes():
        return
    shipped = path.resolve() == SHIPPED.resolve()
    raise UntrustedWeights(
        f"{path}: " + ("the shipped detector weights do not match their recorded sha256 (bodymap/data/SHA256SUMS): "
                       "replaced or damaged; after shipping new weights run scripts/ship_weights.py"
                       if shipped else
                       "not BodyMap's shipped detector weights. A YOLO checkpoint is a Python pickle that can run "
                       "any code when loaded, so other weights are loaded only with --trust-weights (weights you "
                       "trained yourself or got from someone you trust)"))


def _quiet_ultralytics() -> None:
    """No downloads, no telemetry, no auto-install: nothing may leave this machine."""
    offline_env()
    from ultralytics.utils import SETTINGS

    try:
        SETTINGS.update({"sync": False})
    except Exception:  # settings file not writable: telemetry stays off through YOLO_OFFLINE
        pass
    # ultralytics replaces PIL.Image.open for the whole process with a version that tries to
    # pip-install a HEIF plugin whenever Pillow cannot read a file: every later photo error
    # would become an install attempt. Put Pillow's own back.
    try:
        from PIL import Image
        from ultralytics.utils import patches

        Image.open = getattr(patches, "_image_open", Image.open)
    except ImportError:
        pass


@dataclasses.dataclass
class YoloDetector:
    """Runs a trained YOLO checkpoint on image tiles. weights: path (default: the shipped file);
    conf: score threshold (None: the checkpoint's operating point `conf`, chosen on development
    patients, else 0.25); device: 'cpu', 'cuda' or None (GPU when present); trust: load weights
    other than the shipped ones (a checkpoint is a pickle: only for weights you trust)."""

    weights: str | Path | None = None
    conf: float | None = None
    device: str | None = None
    trust: bool = False  # unpickle weights that are not the shipped ones (see check_trusted)
    tile: int = TILE
    overlap: int = 24
    name: str = "yolo"

    def __post_init__(self):
        path = Path(self.weights) if self.weights else SHIPPED
        self.info = read_checkpoint_info(path, trust=self.trust)
        _quiet_ultralytics()
        from ultralytics import YOLO

        self._model = YOLO(str(path), task="detect")
        self.scale = int(self.info.get("scale", SCALE))
        self.tile = int(self.info.get("tile", self.tile))
        if self.conf is None:
            self.conf = float(self.info.get("conf", 0.25))
        if self.device is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def resolution_warning(self, scan) -> str | None:
        """A warning when the scan's texels are much coarser or finer than the training
        textures' (checkpoint `texel_mm`): lesions then reach the network at sizes it did not
        learn. Measured: on a 2048 texture (~1 mm texels, twice the training size) precision fell
        to 0.63 on freckled skin; enlarging such tiles 2x restored recall but made precision
        worse (0.39), so the texture is used as it is and the user is told."""
        train_mm = self.info.get("texel_mm")
        if not train_mm or scan.texture is None or not np.isfinite(scan.texel_density).any():
            return None
        mm = texel_mm([scan])
        if 1 / 1.5 <= mm / float(train_mm) <= 1.5:
            return None
        return (f"texture resolution {mm:.2f} mm per texel, the YOLO detector was trained at {float(train_mm):.2f}: "
                "expect more false positives or misses (the classical detector adapts to any resolution)")

    def detect(self, image: np.ndarray, mask: np.ndarray) -> Boxes:
        """Boxes of lesions in image (h, w, 3) uint8 (h, w <= tile) whose centre lies in mask."""
        if not mask.any():
            return Boxes.empty()
        h, w = mask.shape
        big = np.repeat(np.repeat(image, self.scale, 0), self.scale, 1)
        r = self._model.predict(big[..., ::-1].copy(), imgsz=max(h, w) * self.scale, conf=self.conf,
                                device=self.device, verbose=False)[0]
        xyxy = r.boxes.xyxy.cpu().numpy().astype(np.float32) / self.scale
        score = r.boxes.conf.cpu().numpy().astype(np.float32)
        cx = np.clip(((xyxy[:, 0] + xyxy[:, 2]) / 2).astype(int), 0, w - 1)
        cy = np.clip(((xyxy[:, 1] + xyxy[:, 3]) / 2).astype(int), 0, h - 1)
        keep = mask[cy, cx]
        return Boxes(xyxy[keep], score[keep])


def _area_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The weighted median of values (k,) with weights (k,)."""
    o = np.argsort(values)
    c = np.cumsum(weights[o])
    return float(values[o][np.searchsorted(c, c[-1] / 2)])


def texel_mm(scans) -> float:
    """Median over scans of each scan's area-weighted median texel size (mm per texel)."""
    out = []
    for s in scans:
        d = s.texel_density
        ok = np.isfinite(d)
        out.append(_area_median(d[ok], s.face_areas[ok]))
    return float(np.median(out))


def read_checkpoint_info(path: str | Path, trust: bool = False) -> dict:
    """The ``bodymap`` entry of a YOLO checkpoint. Only the shipped weights or a file the caller
    trusts are unpickled (check_trusted); ultralytics is told to stay offline first (unpickling
    imports it). Raises ValueError naming the file if it is not a BodyMap lesion-detector
    checkpoint or not trusted."""
    offline_env()
    check_trusted(path, trust)
    import torch

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    info = ck.get("bodymap") if isinstance(ck, dict) else None
    if not isinstance(info, dict) or info.get("task") != "lesion-detection":
        raise ValueError(f"{path}: not a BodyMap lesion-detector checkpoint")
    return info


def tiles_of_visit(vdir: Path, rng: np.random.Generator, negatives: float = 0.15, tile: int = TILE,
                   scale: int = SCALE):
    """Training tiles of one synthetic visit: yields (image (tile*scale, tile*scale, 3) uint8,
    boxes (k, 4) in that image's pixels). Tiles without any lesion are kept with probability
    `negatives`."""
    from PIL import Image

    from bodymap.synth.truth import read_visit_truth

    truth, arrays = read_visit_truth(vdir)
    tex = np.asarray(Image.open(vdir / "scan.png").convert("RGB"))
    lab = arrays["lesion_label"]
    lesion_ids = {r["id"] for r in truth["lesions"]}
    covered = arrays["tissue"] > 0
    H, W = lab.shape
    step = tile - 32
    for y0 in range(0, H - 32, step):
        for x0 in range(0, W - 32, step):
            if not covered[y0:y0 + tile, x0:x0 + tile].any():
                continue
            t = lab[y0:y0 + tile, x0:x0 + tile]
            ids = [i for i in np.unique(t) if i in lesion_ids]
            if not ids and rng.random() > negatives:
                continue
            boxes = []
            for i in ids:
                ys, xs = np.nonzero(t == i)
                if len(xs) < 2:
                    continue
                boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            img = np.zeros((tile, tile, 3), np.uint8)
            part = tex[y0:y0 + tile, x0:x0 + tile]
            img[:part.shape[0], :part.shape[1]] = part
            big = np.repeat(np.repeat(img, scale, 0), scale, 1)
            yield big, np.array(boxes, np.float32).reshape(-1, 4) * scale


def build_dataset(visits: list[Path], out: Path, val_fraction: float = 0.15, seed: int = 0, tile: int = TILE,
                  scale: int = SCALE) -> dict:
    """Write a YOLO data set (images/, labels/, data.yaml) of tiles from synthetic visits.
    Returns a description with counts and a hash of the labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    counts = {"train": 0, "val": 0, "boxes": 0}
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    n = 0
    for vdir in visits:
        for img, boxes in tiles_of_visit(vdir, rng, tile=tile, scale=scale):
            split = "val" if rng.random() < val_fraction else "train"
            name = f"t{n:06d}"
            with atomic_write(out / "images" / split / f"{name}.jpg", fsync=False) as tmp:
                Image.fromarray(img).save(tmp, quality=95)
            s = img.shape[0]
            lines = [f"0 {(b[0] + b[2]) / 2 / s:.6f} {(b[1] + b[3]) / 2 / s:.6f} {(b[2] - b[0]) / s:.6f} "
                     f"{(b[3] - b[1]) / s:.6f}" for b in boxes]
            text = "\n".join(lines)
            write_text(out / "labels" / split / f"{name}.txt", text, fsync=False)
            h.update(text.encode())
            counts[split] += 1
            counts["boxes"] += len(boxes)
            n += 1
    write_text(out / "data.yaml", f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: lesion\n")
    return {**counts, "labels_sha256": h.hexdigest(), "visits": [str(v) for v in visits]}


def train_detector(out: Path, patients: int = 6, seed: int = 500, epochs: int = 30, model: str = "yolov8n.yaml",
                   batch: int = 16, device: str | None = None, texture: int = 4096, lesions: int = 300,
                   faces: int = 60_000, tile: int = TILE, scale: int = SCALE, progress=None) -> Path:
    """The whole recipe: synthetic patients (Fitzpatrick I-VI in turn) -> tiles -> YOLO from random
    weights -> checkpoint with a ``bodymap`` entry (recipe, data, validation mAP). Returns the
    checkpoint path (out/detector_yolo.pt)."""
    import torch

    from bodymap.synth.patient import SynthOptions, synthesize_patient

    say = progress or (lambda s, f: None)
    out = Path(out)
    visits = []
    for k in range(patients):
        say(f"synthetic patient {k + 1} of {patients}", 0.3 * k / patients)
        opts = SynthOptions(n_lesions=lesions, texture_size=texture, target_faces=faces, visits=1,
                            fitzpatrick=k % 6 + 1)
        visits += synthesize_patient(seed + k, opts, out / "synth")
    say("tiles", 0.3)
    data = build_dataset(visits, out / "tiles", seed=seed, tile=tile, scale=scale)
    from bodymap.io import load_scan

    train_texel_mm = texel_mm(load_scan(v / "scan.obj") for v in visits)
    _quiet_ultralytics()
    from ultralytics import YOLO

    say("training", 0.35)
    dev = device or ("0" if torch.cuda.is_available() else "cpu")
    net = YOLO(model, task="detect")
    res = net.train(data=str(out / "tiles" / "data.yaml"), epochs=epochs, imgsz=tile * scale, batch=batch,
                    device=dev, workers=0 if dev == "cpu" else 4, plots=False, amp=dev != "cpu",
                    project=str(out), name="run", exist_ok=True, seed=seed, deterministic=True,
                    verbose=False, pretrained=False, mosaic=0.5, degrees=10.0, fliplr=0.5, flipud=0.5,
                    hsv_h=0.01, hsv_s=0.3, hsv_v=0.3)
    best = out / "run" / "weights" / "best.pt"
    metrics = {k: round(float(v), 4) for k, v in getattr(res, "results_dict", {}).items()}
    ck = torch.load(str(best), map_location="cpu", weights_only=False)
    ck["bodymap"] = {
        "task": "lesion-detection", "classes": ["lesion"], "tile": tile, "scale": scale, "input_size": tile * scale,
        "texel_mm": round(train_texel_mm, 4),  # training textures' resolution (YoloDetector.adapt_to)
        "recipe": {"command": f"bodymap train detector --out {out} --patients {patients} --seed {seed} "
                              f"--epochs {epochs} --arch {model} --tile {tile} --scale {scale} --faces {faces} "
                              f"--texture {texture} --lesions {lesions} --batch {batch}",
                   "model": model, "epochs": epochs, "batch": batch,
                   "device": dev, "from": "random weights"},
        "data": {"synthetic": True, "patients": patients, "seeds": [seed + k for k in range(patients)],
                 "texture": texture, "lesions": lesions, **{k: v for k, v in data.items() if k != "visits"}},
        "validation": metrics,
        "trained_on": "synthetic patients from bodymap synth (not clinical images)",
    }
    path = out / "detector_yolo.pt"
    _save_checkpoint(ck, path)
    write_text(out / "detector_yolo.json", json.dumps(ck["bodymap"], indent=1))
    say("done", 1.0)
    return path


def _save_checkpoint(ck: dict, path: str | Path) -> None:
    """torch.save atomically: a kill mid-write leaves the previous checkpoint whole."""
    import torch

    with atomic_write(path) as tmp:
        torch.save(ck, str(tmp))
    if Path(path).resolve() == SHIPPED.resolve():  # the shipped file changed: record its new hash
        record_shipped_hash(path)


def record_scores(path: str | Path, key: str, scores: dict) -> None:
    """Store held-out scores (e.g. benchmarks/detection.py's pooled figures) under
    ``bodymap.held_out[key]`` in a lesion-detector checkpoint, so the file says what it scored."""
    import torch

    read_checkpoint_info(path, trust=True)  # refuses files that are not ours (a developer's own file)
    ck = torch.load(str(path), map_location="cpu", weights_only=False)
    ck["bodymap"].setdefault("held_out", {})[key] = scores
    _save_checkpoint(ck, path)


def set_operating_point(path: str | Path, conf: float, chosen_on: str) -> None:
    """Store the score threshold YoloDetector uses by default (``bodymap.conf``) and how it was
    chosen (``bodymap.conf_chosen_on``: which patients, by which command) in a checkpoint."""
    import torch

    read_checkpoint_info(path, trust=True)
    ck = torch.load(str(path), map_location="cpu", weights_only=False)
    ck["bodymap"]["conf"] = float(conf)
    ck["bodymap"]["conf_chosen_on"] = chosen_on
    _save_checkpoint(ck, path)
