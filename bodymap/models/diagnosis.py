"""Lesion diagnosis from an image crop, with or without the lesion's anatomic site.

Two models in the manner of Amruthalingam et al.:

- Model A: a timm CNN on the lesion crop only;
- Model B: the same CNN, its pooled image features concatenated with a learned 128-d embedding
  of the lesion's anatomic site, then the classifier.

Sites are strings: the checkpoint keeps the vocabulary it was trained with (index 0 is
"unknown"); a site not in it is looked up through its taxonomy ancestors
("upper_extremity/forearm" -> "upper_extremity"), else counted unknown. Model B is trained
with 10% of sites dropped to "unknown", so it still answers without one.

Saliency: Grad-CAM of the predicted class on the backbone's last stride-16 feature map,
upsampled to the crop, in [0, 1] (for the rare crop whose map is negative everywhere, the raw
map shifted to start at 0, so the least negative place shows).

What ships (bodymap/data/diagnosis.pt = B, diagnosis_image_only.pt = A) is trained from random
weights on synthetic crops (bodymap.models.diagdata) by ``bodymap train diagnosis``: it shows
the method works and how much location adds; it is not a clinical diagnosis.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.models.checkpoint import CheckpointError, load_checkpoint, pick_device, save_checkpoint

TASK = "diagnosis"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PATH = DATA_DIR / "diagnosis.pt"
IMAGE_ONLY_PATH = DATA_DIR / "diagnosis_image_only.pt"
UNKNOWN_SITE = "unknown"
DEFAULT_ARCH = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [32, 64, 128, 256]},
                "site_dim": 128, "use_site": True, "sites": [UNKNOWN_SITE], "dropout": 0.2}
NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LABEL = "trained on synthetic lesion crops only: a demonstration, not a clinical diagnosis"

Progress = Callable[[str, float], None]


@dataclasses.dataclass
class Diagnosis:
    """One prediction. label: most probable class; probs: class -> probability (sum 1);
    saliency: (h, w) float32 in [0, 1], Grad-CAM of ``label`` at the crop's size; site: the
    vocabulary entry the site was read as ("unknown" if none)."""

    label: str
    probs: dict[str, float]
    saliency: np.ndarray | None
    site: str = UNKNOWN_SITE

    def to_dict(self) -> dict:
        """JSON-ready record without the saliency array."""
        return {"label": self.label, "probs": {k: round(float(v), 5) for k, v in self.probs.items()},
                "site": self.site}


def site_index(site: str | None, sites: list[str]) -> int:
    """Index of ``site`` in the vocabulary ``sites`` (0 = unknown): exact or case-insensitive
    match, then the taxonomy ancestors of a site code or name, else 0."""
    if not site:
        return 0
    s = str(site).strip()
    lower = {v.lower(): i for i, v in enumerate(sites)}
    if s.lower() in lower:
        return lower[s.lower()]
    from bodymap import taxonomy as tx

    code = s if s in tx.SITE_INDEX else next((x.code for x in tx.SITES if x.name.lower() == s.lower()), None)
    while code:
        if code.lower() in lower:
            return lower[code.lower()]
        code = tx.SITES[tx.SITE_INDEX[code]].parent
    return 0


def build_network(arch: dict, n_classes: int):
    """The torch module of ``arch`` (random weights): timm backbone -> pooled features
    [+ site embedding] -> dropout -> linear. forward(x (B,3,S,S) float, sites (B,) long) ->
    logits (B, n_classes)."""
    import timm
    import torch
    from torch import nn

    class DiagnosisNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.create_model(arch["backbone"], pretrained=False, num_classes=0,
                                              **arch.get("backbone_kwargs", {}))
            info = self.backbone.feature_info
            # Grad-CAM layer: the last feature stage at stride <= 16 (finer than the final one)
            self.cam_layer = [f["module"] for f in info if f["reduction"] <= 16][-1]
            nf = self.backbone.num_features
            self.use_site = bool(arch.get("use_site"))
            d = int(arch.get("site_dim", 128)) if self.use_site else 0
            self.site_embedding = nn.Embedding(max(len(arch.get("sites", [])), 1), d) if self.use_site else None
            self.head = nn.Sequential(nn.Dropout(float(arch.get("dropout", 0.2))), nn.Linear(nf + d, n_classes))

        def forward(self, x, sites=None):
            f = self.backbone(x)  # (B, nf) pooled
            if self.use_site:
                if sites is None:
                    sites = torch.zeros(len(x), dtype=torch.long, device=x.device)
                f = torch.cat([f, self.site_embedding(sites)], 1)
            return self.head(f)

    return DiagnosisNet()


def _to_tensor(crops: list[np.ndarray], size: int, norm: dict):
    """(B, 3, size, size) float tensor from a list of (H, W, 3) uint8 crops (resized if needed)."""
    import torch
    from PIL import Image

    arr = np.zeros((len(crops), size, size, 3), np.uint8)
    for i, c in enumerate(crops):
        c = np.asarray(c)
        if c.ndim == 2:
            c = np.repeat(c[..., None], 3, 2)
        if c.ndim != 3 or c.shape[2] not in (3, 4) or c.shape[0] < 2 or c.shape[1] < 2:
            raise ValueError(f"crop {i}: expected an (H, W, 3) image, got shape {c.shape}")
        c = c[..., :3]
        if c.dtype != np.uint8:
            c = np.clip(c, 0, 255).astype(np.uint8)
        if c.shape[:2] != (size, size):
            c = np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR))
        arr[i] = c
    return _normalise(torch.from_numpy(arr), norm)


def _normalise(u8, norm: dict):
    """uint8 (B, H, W, 3) tensor -> normalised float (B, 3, H, W)."""
    import torch

    x = u8.permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return (x - m) / s


class DiagnosisModel:
    """A loaded diagnosis checkpoint, ready to predict on a device (CPU unless a GPU is present).

    model = DiagnosisModel.load()            # the shipped model B (image + site)
    out = model.predict(crops, sites)        # crops: list of (H, W, 3) uint8; sites: str or None
    """

    def __init__(self, checkpoint: dict, device=None):

        self.checkpoint = checkpoint
        self.path = checkpoint.get("path")
        self.classes: list[str] = list(checkpoint["classes"])
        self.arch: dict = dict(checkpoint["arch"])
        self.sites: list[str] = list(self.arch.get("sites", [UNKNOWN_SITE]))
        self.input_size = int(checkpoint["input_size"])
        self.normalisation = checkpoint["normalisation"]
        self.device = pick_device(device)
        self.net = build_network(self.arch, len(self.classes))
        try:
            self.net.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(self.path or "checkpoint", f"weights do not fit its architecture ({str(e)[:200]})") from None
        self.net.to(self.device).eval()
        for prm in self.net.parameters():  # Grad-CAM needs activation gradients only
            prm.requires_grad_(False)

    @classmethod
    def load(cls, path=None, device=None) -> "DiagnosisModel":
        """Load a diagnosis checkpoint (default: the shipped bodymap/data/diagnosis.pt).
        Raises CheckpointError naming the file for anything that is not one."""
        return cls(load_checkpoint(DEFAULT_PATH if path is None else path, TASK), device)

    @property
    def uses_site(self) -> bool:
        """True for model B (image + site embedding)."""
        return bool(self.arch.get("use_site"))

    @property
    def description(self) -> str:
        """One line for the app: what the model is and what trained it."""
        kind = "image + anatomic site (model B)" if self.uses_site else "image only (model A)"
        data = self.checkpoint.get("data", {})
        label = self.checkpoint.get("training", {}).get("label", "")
        return f"diagnosis, {kind}, {len(self.classes)} classes; data: {data.get('kind', '?')}" + \
            (f"; {label}" if label else "")

    def predict(self, crops: list[np.ndarray], sites: list[str | None] | None = None, batch: int = 64,
                saliency: bool = True) -> list[Diagnosis]:
        """Classify lesion crops. crops: list of (H, W, 3) uint8 RGB (any size; resized to the
        model's input); sites: one site string (taxonomy code/name or the training data's site
        names) or None per crop (ignored by model A). Runs in batches of ``batch``. With
        ``saliency``, each Diagnosis carries a Grad-CAM map (H, W) of its crop's own size."""
        import torch

        if sites is None:
            sites = [None] * len(crops)
        if len(sites) != len(crops):
            raise ValueError(f"predict: {len(crops)} crops but {len(sites)} sites")
        out: list[Diagnosis] = []
        sidx = [site_index(s, self.sites) for s in sites]
        for b0 in range(0, len(crops), batch):
            part = crops[b0:b0 + batch]
            x = _to_tensor(part, self.input_size, self.normalisation).to(self.device)
            s = torch.tensor(sidx[b0:b0 + batch], dtype=torch.long, device=self.device)
            if saliency:
                probs, cams = self._forward_cam(x, s)
            else:
                with torch.no_grad():
                    probs, cams = torch.softmax(self.net(x, s), 1).cpu().numpy(), None
            for i, c in enumerate(part):
                p = probs[i]
                sal = None
                if cams is not None:
                    h, w = np.asarray(c).shape[:2]
                    sal = _resize01(cams[i], h, w)
                out.append(Diagnosis(self.classes[int(p.argmax())], {k: float(v) for k, v in zip(self.classes, p)},
                                     sal, self.sites[sidx[b0 + i]]))
        return out

    def _forward_cam(self, x, s):
        """Probabilities (B, k) and Grad-CAM maps (B, h, w) of the predicted classes."""
        import torch

        store = {}
        layer = self.net.backbone.get_submodule(self.net.cam_layer)

        def hook(_m, _i, o):
            o.retain_grad()
            store["a"] = o

        h = layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                x = x.requires_grad_(True)  # so the hooked activations carry gradients
                logits = self.net(x, s)
                pred = logits.argmax(1)
                # one backward for the batch: in eval mode the samples do not interact
                logits.gather(1, pred[:, None]).sum().backward()
        finally:
            h.remove()
        a, g = store["a"].detach(), store["a"].grad.detach()
        raw = (g.mean((2, 3), keepdim=True) * a).sum(1)  # (B, h, w)
        cam = torch.relu(raw)
        # where no location speaks for the class (all evidence negative at this layer), show
        # where it speaks least against it: the raw map rescaled, rather than a blank map
        flat = cam.flatten(1).amax(1) <= 1e-8
        if flat.any():
            r = raw[flat]
            lo = r.flatten(1).amin(1).view(-1, 1, 1)
            cam[flat] = r - lo
        cam = cam / cam.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
        return torch.softmax(logits.detach(), 1).cpu().numpy(), cam.cpu().numpy()

    def predict_arrays(self, images: np.ndarray, sites: list, batch: int = 128) -> np.ndarray:
        """Class probabilities (n, k) for images (n, S, S, 3) uint8 at the input size, no saliency."""
        import torch

        sidx = torch.tensor([site_index(s, self.sites) for s in sites], dtype=torch.long)
        out = []
        with torch.no_grad():
            for b0 in range(0, len(images), batch):
                x = _normalise(torch.from_numpy(np.ascontiguousarray(images[b0:b0 + batch])), self.normalisation)
                out.append(torch.softmax(self.net(x.to(self.device), sidx[b0:b0 + batch].to(self.device)), 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


def _resize01(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (a, b) map to (h, w), clipped to [0, 1], float32."""
    from PIL import Image

    im = Image.fromarray(cam.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    return np.clip(np.asarray(im), 0, 1).astype(np.float32)


def overlay(crop: np.ndarray, saliency: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop (H, W, 3) uint8 with its saliency (H, W) in [0, 1] as a jet-like heat map on top."""
    s = np.clip(np.asarray(saliency, np.float32), 0, 1)[..., None]
    heat = np.concatenate([np.clip(1.5 - np.abs(4 * s - 3), 0, 1), np.clip(1.5 - np.abs(4 * s - 2), 0, 1),
                           np.clip(1.5 - np.abs(4 * s - 1), 0, 1)], -1)
    a = alpha * np.clip(s * 1.5, 0.15, 1)
    return (np.asarray(crop, np.float32) * (1 - a) + 255 * heat * a).astype(np.uint8)


def lesion_crop(scan, lesion, size_px: int = 128) -> np.ndarray:
    """A square crop (size_px, size_px, 3) uint8 of the scan's texture around a lesion.

    scan: a Scan with UVs and a texture; lesion: a bodymap.lesions.Lesion (face, bary,
    diameter_mm). The crop shows a field of max(2.5 x diameter, 8 mm) on the body (the field the
    synthetic training crops show), at the texel size of the lesion's face, centred on its UV
    point, resized bilinearly. Texels beyond the texture's edge repeat the edge. Charts are not
    followed across UV seams."""
    from PIL import Image

    from bodymap.models.diagdata import crop_field_mm
    from bodymap.scan import uv_to_pixel

    scan.require_texture()
    face = int(lesion.face)
    if not 0 <= face < scan.n_faces:
        raise ValueError(f"lesion {lesion.id}: face {face} is not on this scan ({scan.n_faces} faces)")
    uv = scan.uv_from_barycentric(np.array([face]), np.array([lesion.bary], np.float64))[0]
    x, y = uv_to_pixel(uv, scan.texture.shape)
    texel = float(scan.texel_density[face])
    if not np.isfinite(texel) or texel <= 0:
        finite = scan.texel_density[np.isfinite(scan.texel_density)]
        texel = float(np.median(finite)) if len(finite) else 0.5
    half = crop_field_mm(lesion.diameter_mm) / texel / 2
    H, W = scan.texture.shape[:2]
    box = (x + 0.5 - half, y + 0.5 - half, x + 0.5 + half, y + 0.5 + half)
    im = Image.fromarray(scan.texture)
    # PIL's transform samples outside the image as black: pad by edge repetition first
    pad = int(np.ceil(half)) + 2
    if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H:
        padded = np.pad(scan.texture, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        im = Image.fromarray(padded)
        box = tuple(v + pad for v in box)
    return np.asarray(im.resize((size_px, size_px), Image.BILINEAR, box=box))


# ----------------------------------------------------------------------------- training
def _augment(x, gen):
    """Random flips and 90-degree rotations of a batch (B, 3, S, S) (lesions have no orientation)."""
    import torch

    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    return torch.rot90(x, k, (2, 3)) if k else x


def train_model(data: dict, *, use_site: bool, epochs: int = 10, batch: int = 64, lr: float = 2e-3,
                seed: int = 0, device=None, arch: dict | None = None, site_dropout: float = 0.1,
                progress: Progress | None = None, log: Callable[[str], None] | None = None,
                max_steps: int | None = None):
    """Train one diagnosis network from random weights on ``data`` (as made by
    bodymap.models.diagdata: images (n, S, S, 3) uint8, labels (n,), sites, classes).
    AdamW + one-cycle learning rate, label smoothing 0.05, flips/rotations; identical seeds and
    batches for A and B. Returns (net on cpu, arch, history list of per-epoch dicts)."""
    import torch

    torch.manual_seed(seed)
    arch = {**DEFAULT_ARCH, **(arch or {}), "use_site": bool(use_site)}
    vocab = [UNKNOWN_SITE] + sorted({str(s) for s in data["sites"] if s} - {UNKNOWN_SITE})
    arch["sites"] = vocab
    dev = pick_device(device)
    net = build_network(arch, len(data["classes"])).to(dev)
    imgs = torch.from_numpy(np.ascontiguousarray(data["images"]))
    labels = torch.as_tensor(np.asarray(data["labels"]), dtype=torch.long)
    sidx = torch.tensor([site_index(s, vocab) for s in data["sites"]], dtype=torch.long)
    n = len(imgs)
    steps_per_epoch = max(1, (n + batch - 1) // batch)
    total = steps_per_epoch * epochs if max_steps is None else max_steps
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 2), pct_start=0.2)
    gen = torch.Generator().manual_seed(seed)
    history, step, t0 = [], 0, time.perf_counter()
    for ep in range(epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        drop = torch.rand(n, generator=gen) < site_dropout
        tot, correct, seen = 0.0, 0, 0
        for b0 in range(0, n, batch):
            if step >= total:
                break
            idx = order[b0:b0 + batch]
            x = _augment(_normalise(imgs[idx], NORMALISATION), gen).to(dev)
            y = labels[idx].to(dev)
            s = torch.where(drop[idx], torch.zeros_like(sidx[idx]), sidx[idx]).to(dev)
            logits = net(x, s)
            loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        if not seen:
            break
        rec = {"epoch": ep + 1, "loss": round(tot / seen, 4), "train_acc": round(correct / seen, 4),
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(rec)
        if log:
            log(f"{'B' if use_site else 'A'} epoch {ep + 1}/{epochs} loss {rec['loss']:.4f} "
                f"train acc {rec['train_acc']:.3f} {rec['seconds']:.0f} s")
        if progress:
            progress(f"model {'B' if use_site else 'A'} epoch {ep + 1}", (ep + 1) / epochs)
    return net.cpu().eval(), arch, history


def model_from_net(net, arch: dict, classes: list[str], input_size: int) -> DiagnosisModel:
    """A DiagnosisModel around a trained network (no file)."""
    ck = {"classes": classes, "arch": arch, "input_size": input_size, "normalisation": NORMALISATION,
          "state_dict": net.state_dict(), "path": None}
    return DiagnosisModel(ck, device="cpu")


def evaluate(model: DiagnosisModel, data: dict, n_boot: int = 1000) -> dict:
    """Held-out scores of one model on ``data``: per-class precision/sensitivity with 95%
    bootstrap intervals, accuracy with interval, confusion matrix (bodymap.models.metrics),
    plus "correct": (n,) bool list and "predicted": (n,) class indices."""
    from bodymap.models.metrics import per_class_scores

    classes = list(data["classes"])
    if classes != model.classes:
        missing = sorted(set(classes) - set(model.classes))
        if missing:
            raise ValueError(f"evaluation data has classes the model lacks: {', '.join(missing)}")
    probs = model.predict_arrays(_fit_size(data["images"], model.input_size), data["sites"])
    pred = probs.argmax(1)
    truth = np.array([model.classes.index(classes[i]) for i in data["labels"]])
    scores = per_class_scores(truth, pred, model.classes, n_boot=n_boot)
    scores["correct"] = (pred == truth).tolist()
    scores["predicted"] = pred.tolist()
    return scores


def _fit_size(images: np.ndarray, size: int) -> np.ndarray:
    """images (n, S, S, 3) uint8 resized to (n, size, size, 3) when S != size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def compare(model_a: DiagnosisModel, model_b: DiagnosisModel, data: dict, n_boot: int = 1000) -> dict:
    """A vs B on the same held-out data: each model's scores and the McNemar test of their
    per-case correctness. Returns {"A": scores, "B": scores, "mcnemar": {...}, "n": n}."""
    from bodymap.models.metrics import mcnemar

    a = evaluate(model_a, data, n_boot)
    b = evaluate(model_b, data, n_boot)
    return {"A": a, "B": b, "mcnemar": mcnemar(a["correct"], b["correct"]), "n": len(data["labels"])}


def _strip(scores: dict) -> dict:
    """Scores without the per-case lists (for checkpoints and JSON summaries)."""
    return {k: v for k, v in scores.items() if k not in ("correct", "predicted")}


def train_diagnosis(out: Path, *, csv: str | None = None, test_csv: str | None = None, synth: list | None = None,
                    test_synth: list | None = None, n_train: int = 3000,
                    n_test: int = 1500, seed: int = 600, test_seed: int = 9600, size: int = 64, epochs: int = 10,
                    batch: int = 64, lr: float = 2e-3, device=None, command: str = "",
                    progress: Progress | None = None, max_steps: int | None = None) -> dict:
    """The whole recipe: data (synthetic crops from ``seed``, an ISIC-style ``csv``, or crops cut
    from the textures of ``bodymap synth`` patients in the ``synth`` folders), model A
    (image only) and model B (image + site) trained with the same seed and batches, both
    evaluated on held-out data (synthetic crops from ``test_seed``, or ``test_csv``; with a
    csv and no test_csv, a seeded 20% split of it), McNemar A vs B. Writes under ``out``:
    diagnosis_A.pt, diagnosis_B.pt (metrics and McNemar inside), training_log.txt,
    evaluation.json. Returns {"A": path, "B": path, "evaluation": summary}."""
    from bodymap.models import diagdata

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        from bodymap.atomic import write_text

        write_text(out / "training_log.txt", "\n".join(lines) + "\n")

    log(f"command: {command or '(library call)'}")
    t0 = time.perf_counter()
    if csv:
        data = diagdata.read_csv(csv, size=size)
        if test_csv:
            test = diagdata.read_csv(test_csv, size=size, classes=data["classes"])
        else:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(data["labels"]))
            k = max(1, len(perm) // 5)
            test, data = _subset(data, perm[:k]), _subset(data, perm[k:])
    elif synth:  # crops cut from the textures of `bodymap synth` patients
        data = diagdata.scan_crops(diagdata.visit_dirs(synth), size, progress=progress)
        test = (diagdata.scan_crops(diagdata.visit_dirs(test_synth), size) if test_synth else
                diagdata.synthetic_crops(n_test, test_seed, size, classes=data["classes"], progress=progress))
    else:
        data = diagdata.synthetic_crops(n_train, seed, size, progress=progress)
        test = diagdata.synthetic_crops(n_test, test_seed, size, classes=data["classes"], progress=progress)
    log(f"data: {json.dumps(data['description'])}")
    log(f"held-out: {json.dumps(test['description'])}")
    log(f"data ready in {time.perf_counter() - t0:.0f} s")
    nets = {}
    for name, use_site in (("A", False), ("B", True)):
        net, arch, hist = train_model(data, use_site=use_site, epochs=epochs, batch=batch, lr=lr, seed=seed,
                                      device=device, progress=progress, log=log, max_steps=max_steps)
        nets[name] = (net, arch, hist)
    models = {k: model_from_net(v[0], v[1], data["classes"], size) for k, v in nets.items()}
    cmp_ = compare(models["A"], models["B"], test)
    summary = {"n_test": cmp_["n"], "test_data": test["description"], "mcnemar_A_vs_B": cmp_["mcnemar"],
               "A": _strip(cmp_["A"]), "B": _strip(cmp_["B"])}
    for k in ("A", "B"):
        s = cmp_[k]
        log(f"held-out {k}: accuracy {s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}], "
            f"mean precision {s['mean_precision']:.3f}, mean sensitivity {s['mean_sensitivity']:.3f}")
    m = cmp_["mcnemar"]
    log(f"McNemar A vs B: b={m['b']} (A right, B wrong) c={m['c']} (B right, A wrong) p={m['p']:.3g} ({m['method']})")
    paths = {}
    for name, (net, arch, hist) in nets.items():
        p = out / f"diagnosis_{name}.pt"
        save_checkpoint(
            p, task=TASK, arch=arch, state_dict=net.state_dict(), classes=data["classes"], input_size=size,
            normalisation=NORMALISATION, data=data["description"],
            metrics={"held_out": summary[name], "held_out_data": test["description"],
                     "mcnemar_A_vs_B": cmp_["mcnemar"], "model": name},
            training={"command": command, "recipe": {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed,
                                                     "optimizer": "AdamW wd 1e-4, one-cycle", "label_smoothing": 0.05,
                                                     "site_dropout": 0.1 if name == "B" else 0.0,
                                                     "augment": "flips, 90-degree rotations"},
                      "history": hist, "log": "\n".join(lines),
                      "label": LABEL if not csv else "trained on user data",
                      "seconds": round(time.perf_counter() - t0, 1)})
        paths[name] = p
    from bodymap.atomic import write_text

    write_text(out / "evaluation.json", json.dumps(summary, indent=1))
    return {"A": paths["A"], "B": paths["B"], "evaluation": summary, "log": lines}


def _subset(data: dict, idx: np.ndarray) -> dict:
    """Rows ``idx`` of a data dict, with its description updated (n, hash)."""
    from bodymap.models.diagdata import data_hash

    d = dict(data)
    d["images"] = data["images"][idx]
    d["labels"] = np.asarray(data["labels"])[idx]
    d["sites"] = [data["sites"][i] for i in idx]
    d["records"] = [data["records"][i] for i in idx]
    d["description"] = {**data["description"], "n": int(len(idx)), "subset_of": data["description"]["sha256"],
                        "sha256": data_hash(d["images"], d["labels"], d["sites"])}
    return d


# ----------------------------------------------------------------------------- evaluation, CLI helpers
def evaluate_held_out(weights_b=None, weights_a=None, csv: str | None = None, n: int = 2000, seed: int = 9600,
                      n_boot: int = 1000, device=None, synth: list | None = None) -> dict:
    """Score models A and B (default: the shipped checkpoints) on held-out data: synthetic crops
    from ``seed`` (never a training seed), an ISIC-style ``csv``, or crops cut from the textures
    of synthetic patients (``synth``: folders of ``bodymap synth``). Returns compare()'s result
    without per-case lists plus "data", "checkpoints"."""
    from bodymap.models import diagdata

    b = DiagnosisModel.load(weights_b, device)
    a = DiagnosisModel.load(IMAGE_ONLY_PATH if weights_a is None else weights_a, device)
    if a.classes != b.classes:
        raise ValueError(f"{a.path} and {b.path} have different classes")
    if csv:
        data = diagdata.read_csv(csv, size=b.input_size, classes=b.classes)
    elif synth:
        data = diagdata.scan_crops(diagdata.visit_dirs(synth), b.input_size)
    else:
        data = diagdata.synthetic_crops(n, seed, b.input_size, classes=b.classes)
        train_hash = b.checkpoint.get("data", {}).get("sha256")
        if train_hash and train_hash == data["description"]["sha256"]:
            raise ValueError(f"seed {seed} makes the training data of {b.path}; pick another")
    r = compare(a, b, data, n_boot)
    return {"A": _strip(r["A"]), "B": _strip(r["B"]), "mcnemar": r["mcnemar"], "n": r["n"],
            "data": data["description"], "checkpoints": {"A": a.path, "B": b.path}}


def _ci(v: float, ci) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def score_table(res: dict) -> str:
    """Plain-text table of evaluate_held_out's result: per class precision / sensitivity with
    95% intervals for A and B, support; accuracy; McNemar."""
    a, b = res["A"], res["B"]
    lines = [f"{'class':<22}{'n':>5}  {'A precision':<22}{'A sensitivity':<22}{'B precision':<22}{'B sensitivity':<22}"]
    for c in a["class_names"]:
        x, y = a["classes"][c], b["classes"][c]
        lines.append(f"{c:<22}{x['support']:>5}  {_ci(x['precision'], x['precision_ci']):<22}"
                     f"{_ci(x['sensitivity'], x['sensitivity_ci']):<22}{_ci(y['precision'], y['precision_ci']):<22}"
                     f"{_ci(y['sensitivity'], y['sensitivity_ci']):<22}")
    lines.append(f"{'mean':<22}{a['n']:>5}  {_ci(a['mean_precision'], a['mean_precision_ci']):<22}"
                 f"{_ci(a['mean_sensitivity'], a['mean_sensitivity_ci']):<22}"
                 f"{_ci(b['mean_precision'], b['mean_precision_ci']):<22}{_ci(b['mean_sensitivity'], b['mean_sensitivity_ci']):<22}")
    m = res["mcnemar"]
    lines.append(f"accuracy A {_ci(a['accuracy'], a['accuracy_ci'])}, B {_ci(b['accuracy'], b['accuracy_ci'])}; "
                 f"McNemar b={m['b']} (A right, B wrong), c={m['c']} (B right, A wrong), p={m['p']:.2g} ({m['method']})")
    return "\n".join(lines)


def confusion_table(scores: dict) -> str:
    """Plain-text confusion matrix (rows true, columns predicted) of a scores dict."""
    names = scores["class_names"]
    short = [n[:8] for n in names]
    head = "true \\ predicted"
    lines = [f"{head:<22}" + "".join(f"{s:>9}" for s in short)]
    for n, row in zip(names, scores["confusion"]):
        lines.append(f"{n:<22}" + "".join(f"{v:>9}" for v in row))
    return "\n".join(lines)


def diagnose_photos(paths: list, sites: list[str | None], model: DiagnosisModel, size_px: int = 256):
    """Photographs -> (names, crops, qualities, diagnoses). Each photo is checked
    (bodymap.models.quality), centre-cropped to a square and resized to size_px."""
    from PIL import Image

    from bodymap.models.quality import check_photo, load_photo

    names, crops, quals = [], [], []
    for p in paths:
        img = load_photo(p)
        quals.append(check_photo(img, p))
        h, w = img.shape[:2]
        s = min(h, w)
        sq = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        crops.append(np.asarray(Image.fromarray(sq).resize((size_px, size_px), Image.BILINEAR)))
        names.append(Path(p).stem)
    return _unique_names(names), crops, quals, model.predict(crops, sites)


def diagnose_scan(scan, lesions, model: DiagnosisModel, size_px: int = 128):
    """The lesions of a scan (a LesionSet or list of Lesion) -> (names, crops, diagnoses); each
    lesion's site is its region code (from anatomy), if any."""
    items = list(getattr(lesions, "lesions", lesions))
    crops = [lesion_crop(scan, les, size_px) for les in items]
    sites = [(les.region or {}).get("code") for les in items]
    return [f"lesion_{les.id}" for les in items], crops, model.predict(crops, sites)


def write_diagnoses(out, names: list[str], crops: list[np.ndarray], diagnoses: list[Diagnosis],
                    model: DiagnosisModel, extra: list[dict] | None = None) -> list[Path]:
    """Write diagnoses.csv (name, label, site, one probability column per class),
    diagnoses.json (with the model's description and any ``extra`` per item) and
    saliency/<name>.png (the crop beside its Grad-CAM overlay). Returns the paths."""
    import csv as _csv

    from PIL import Image

    from bodymap.atomic import atomic_write, open_atomic, write_text

    out = Path(out)
    (out / "saliency").mkdir(parents=True, exist_ok=True)
    paths = [out / "diagnoses.csv", out / "diagnoses.json"]
    names = _unique_names(names)  # two photos called mole.jpg in two folders: two saliency maps
    with open_atomic(paths[0], "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["name", "label", "site", *model.classes])
        for n, d in zip(names, diagnoses):
            w.writerow([n, d.label, d.site, *[f"{d.probs[c]:.5f}" for c in model.classes]])
    items = []
    for i, (n, c, d) in enumerate(zip(names, crops, diagnoses)):
        png = out / "saliency" / f"{n}.png"
        if d.saliency is not None:
            with atomic_write(png) as tmp:
                Image.fromarray(np.concatenate([c, overlay(c, d.saliency)], 1)).save(tmp)
            paths.append(png)
        items.append({"name": n, **d.to_dict(), "saliency_png": str(png) if d.saliency is not None else None,
                      **((extra or [{}] * len(names))[i])})
    write_text(paths[1], json.dumps({"model": model.description, "checkpoint": model.path,
                                     "classes": model.classes, "items": items}, indent=1))
    return paths


def _unique_names(names: list[str]) -> list[str]:
    """names made unique by a numeric suffix on repeats (mole, mole_2, ...), keeping order."""
    seen, out = set(), []
    for n in names:
        m, k = n, 2
        while m in seen:
            m, k = f"{n}_{k}", k + 1
        seen.add(m)
        out.append(m)
    return out


def benchmark(n_crops: int = 300, held_out: int = 2000, seed: int = 9600, device=None) -> dict:
    """Figures for benchmarks/models.py: held-out A vs B (evaluate_held_out on the shipped
    checkpoints), the time to diagnose ``n_crops`` crops with saliency (batches of 64, after one
    warm-up batch), and the checkpoint sizes."""
    from bodymap.models import diagdata

    res = evaluate_held_out(n=held_out, seed=seed, device=device)
    model = DiagnosisModel.load(device=device)
    crops = diagdata.synthetic_crops(n_crops, seed + 1, model.input_size)
    model.predict(list(crops["images"][:64]), crops["sites"][:64])
    t0 = time.perf_counter()
    model.predict(list(crops["images"]), crops["sites"])
    dt = time.perf_counter() - t0
    res["timing"] = {"crops": n_crops, "seconds": round(dt, 2), "crops_per_s": round(n_crops / dt, 1),
                     "device": str(model.device), "saliency": True}
    res["sizes_mb"] = {p.name: round(p.stat().st_size / 1e6, 2) for p in (DEFAULT_PATH, IMAGE_ONLY_PATH)}
    return res


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``: data, per-class table, confusion matrices, McNemar,
    speed and sizes."""
    d = res["data"]
    t = res["timing"]
    lines = [f"held-out synthetic crops: {d['n']} (seed {d.get('seed')}, sha256 {d['sha256'][:12]}); "
             f"checkpoints A {res['checkpoints']['A']}, B {res['checkpoints']['B']}",
             score_table(res), "confusion A (rows true, columns predicted):", confusion_table(res["A"]),
             "confusion B:", confusion_table(res["B"]),
             f"speed: {t['crops']} crops with Grad-CAM in {t['seconds']:.2f} s ({t['crops_per_s']:.0f} crops/s) "
             f"on {t['device']}",
             "sizes: " + ", ".join(f"{k} {v:.2f} MB" for k, v in res["sizes_mb"].items())]
    return "\n".join(lines)
