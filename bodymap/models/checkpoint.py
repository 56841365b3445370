"""One file per model: weights plus everything needed to use and judge them.

A BodyMap checkpoint is ``torch.save`` of a dict::

    {"format": "bodymap-checkpoint", "version": 1, "task": "diagnosis" | "earseg" | "macro" | ...,
     "arch": {...}, "state_dict": {...}, "classes": [...], "input_size": int,
     "normalisation": {"mean": [...], "std": [...]}, "data": {... "sha256": ...},
     "metrics": {...}, "training": {"command": ..., "log": ..., ...}, "half": bool,
     "created": ISO time, "torch": version[, "int8": {name: per-channel scales}]}

Floating-point weights are stored as fp16 when ``half`` (files half as big); ``load_checkpoint``
gives them back as fp32. ``compress_checkpoint`` stores the large weight tensors (convolution and
linear kernels) as int8 with one fp32 scale per output channel (a quarter of fp32): their names
and scales are the "int8" entry, and such a file is format version 2 (older readers refuse it,
saying to update BodyMap). The compression is a stored-weights change only: the network is the
same and computes in fp32 after loading.
"""
from __future__ import annotations

import datetime as _dt
import zipfile
from pathlib import Path

from bodymap.atomic import atomic_write

FORMAT = "bodymap-checkpoint"
VERSION = 2  # the newest this code reads and writes (1: no "int8" entry)
INT8_MIN_SIZE = 1024  # kernels with fewer weights stay as they are (their scales would cost more than they save)


class CheckpointError(ValueError):
    """A file that cannot be used as the requested model. ``str(e) == f"{path}: {problem}"``."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def save_checkpoint(path, *, task: str, arch: dict, state_dict, classes: list[str], input_size: int,
                    normalisation: dict, data: dict, metrics: dict, training: dict, half: bool = True,
                    keep_fp32: tuple[str, ...] = ()) -> None:
    """Write a model checkpoint atomically (temporary file in the same folder, then rename).

    state_dict: a module's state_dict (tensors); floating tensors are stored fp16 when ``half``.
    input_size: side in pixels of the square network input. normalisation: {"mean": [3], "std": [3]}
    on 0..1 RGB. data: description of the training data including its hash (and, for real data,
    its licence, which weights trained on it inherit); metrics: measured scores (held-out);
    training: command, log and recipe. keep_fp32: name prefixes of tensors kept fp32 even when
    ``half`` (statistics such as a precision matrix, whose range fp16 cannot hold)."""
    import torch

    sd = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and not any(k.startswith(p) for p in keep_fp32):
            v = v.half()
        sd[k] = v.clone()
    obj = {"format": FORMAT, "version": 1, "task": str(task), "arch": dict(arch), "state_dict": sd,
           "classes": [str(c) for c in classes], "input_size": int(input_size),
           "normalisation": dict(normalisation), "data": dict(data), "metrics": dict(metrics),
           "training": dict(training), "half": bool(half),
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "torch": str(torch.__version__)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(obj, str(tmp))


def load_checkpoint(path, task: str | None) -> dict:
    """Read a checkpoint written by ``save_checkpoint`` for ``task`` (None: any task); weights
    come back fp32.

    Raises CheckpointError (naming the file) for a missing file, a file that is not a BodyMap
    checkpoint (e.g. a YOLO .pt or any other file), a checkpoint of another task, or a newer
    format version."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file, not a BodyMap checkpoint")
    if not zipfile.is_zipfile(path):  # save_checkpoint writes torch's zip format: say so before importing torch
        raise CheckpointError(path, "not a BodyMap checkpoint (not a PyTorch file)")
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # never unpickle arbitrary objects: weights_only refuses them
        kind = ("a PyTorch file holding other objects (e.g. a YOLO or whole-model .pt)"
                if zipfile.is_zipfile(path) else "not a PyTorch file")
        raise CheckpointError(path, f"not a BodyMap checkpoint ({kind})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(path, "not a BodyMap checkpoint (no 'format': 'bodymap-checkpoint' entry)")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(path, f"checkpoint format version {version} is newer than this BodyMap "
                                    f"reads ({VERSION}); update BodyMap")
    if task is not None and obj.get("task") != task:
        raise CheckpointError(path, f"a checkpoint for the {obj.get('task')!r} model, not {task!r}")
    for key in ("arch", "state_dict", "classes", "input_size", "normalisation"):
        if key not in obj:
            raise CheckpointError(path, f"damaged BodyMap checkpoint: no {key!r} entry")
    scales = obj.get("int8") or {}
    try:
        obj["state_dict"] = {k: (_dequantize(v, scales[k]) if k in scales else v.float() if v.is_floating_point() else v)
                             for k, v in obj["state_dict"].items()}
    except (RuntimeError, TypeError, AttributeError) as e:  # a scale that does not fit its weights
        raise CheckpointError(path, f"damaged BodyMap checkpoint: int8 weights unreadable ({e})") from None
    obj["path"] = str(path)
    return obj


def stored_as(training: dict) -> str:
    """How a checkpoint's weights are stored, from its "training" record: "int8 kernels" after
    ``compress_checkpoint``, else "fp16"."""
    return "int8 kernels, the rest fp16" if (training or {}).get("compressed") else "fp16"


def _quantize(w):
    """Per-output-channel symmetric int8 of a float tensor w (out, ...): (int8 tensor like w,
    fp32 scales (out,)); w ~= q * scale along dim 0. A channel of zeros gets scale 1."""
    import torch

    w = w.detach().float()
    amax = w.reshape(len(w), -1).abs().amax(1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _dequantize(q, scale):
    """fp32 weights from an int8 tensor q (out, ...) and its scales (out,)."""
    return q.float() * scale.float().view(-1, *[1] * (q.dim() - 1))


def compress_checkpoint(path, out=None, *, command: str = "") -> dict:
    """Store a checkpoint's large kernels (floating tensors of 2 or more dimensions with at
    least INT8_MIN_SIZE weights, ending in "weight") as int8 with per-output-channel scales;
    everything else (biases, normalisation layers, statistics) as it was. Writes ``out`` (default:
    in place), format version 2, and adds to its "training" record what was done ("compressed":
    scheme, command, tensors, sizes before and after). Returns that record. The held-out scores
    in "metrics" are the uncompressed weights' until measured again (benchmarks/models.py)."""
    import torch

    load_checkpoint(path, None)  # the checks of a load (a foreign or damaged file is named), any task
    obj = torch.load(path, map_location="cpu", weights_only=True)
    scales = dict(obj.get("int8") or {})
    sd, names = {}, []
    for k, v in obj["state_dict"].items():
        if k not in scales and v.is_floating_point() and v.dim() >= 2 and v.numel() >= INT8_MIN_SIZE \
                and k.endswith("weight"):
            sd[k], scales[k] = _quantize(v)
            names.append(k)
        else:
            sd[k] = v
    before = Path(path).stat().st_size
    obj.update(state_dict=sd, int8=scales, version=2)
    rec = {"scheme": "int8 weights, one fp32 scale per output channel (symmetric); the rest as before",
           "command": command, "tensors": len(names),
           "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    obj["training"] = {**obj.get("training", {}), "compressed": rec}
    out = Path(out) if out else Path(path)
    with atomic_write(out) as tmp:
        torch.save(obj, str(tmp))
    rec.update(mb_before=round(before / 1e6, 2), mb_after=round(out.stat().st_size / 1e6, 2))
    obj["training"]["compressed"] = rec  # (the sizes, known only once written)
    with atomic_write(out) as tmp:
        torch.save(obj, str(tmp))
    return rec


def pick_device(device: str | None = None):
    """The torch device to run on: ``device`` when given ("cpu", "cuda", "cuda:1", "0"), else
    cuda when present, else cpu. Asking for cuda without a GPU raises ValueError."""
    import torch

    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = str(device)
    if d.isdigit():
        d = f"cuda:{d}"
    dev = torch.device(d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here (use cpu)")
    return dev


def record_metrics(path, task: str, updates: dict, *, arch: dict | None = None, training: dict | None = None) -> None:
    """Add measured scores to a checkpoint's "metrics" (``updates``: key -> JSON-ready value),
    leaving its weights and everything else as they are; one atomic rewrite. For scores
    measured after training (benchmarks/models.py --record). ``arch`` / ``training``: keys to
    update the same way in those parts (settings chosen after training, and how)."""
    import torch

    load_checkpoint(path, task)  # the same checks as a load: refuses foreign files
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for section, up in (("metrics", updates), ("arch", arch), ("training", training)):
        if up:
            obj[section] = {**obj.get(section, {}), **up}
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
