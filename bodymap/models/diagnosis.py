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

Two recipes (``RECIPES``): "synthetic" (flips and 90-degree turns, natural class frequencies;
the synthetic crops are balanced) and "real" for dermoscopy data sets such as HAM10000:
square-root class-balanced sampling with a logit-adjusted loss (Menon et al. 2021, so the
decision is that of balanced classes), strong augmentation (any rotation, flips, zoom, aspect,
shift, colour and light), test-time augmentation (the eight flips and quarter turns,
probabilities averaged), and a shades-of-gray colour constancy (p = 6) on every image before
the network, in training and prediction alike (stored in the checkpoint's normalisation).

Out of distribution: a checkpoint trained by this code keeps the class means and the shared
covariance of its pooled image features on the training images; an image whose Mahalanobis
distance to the nearest class mean exceeds the 99th percentile of the development images'
distances is flagged ``ood`` (the image is unlike the training data; its label is not to be
trusted).

What ships: ``bodymap/data/diagnosis.pt`` (model B) and ``diagnosis_image_only.pt`` (model A),
trained from random weights on HAM10000 dermoscopy images (CC BY-NC 4.0: non-commercial, and
the weights inherit that) by ``bodymap train diagnosis --csv``; the earlier weights trained on
synthetic crops stay available by name (``NAMED``: "synthetic", "synthetic_image_only").
None of them is a clinical diagnosis.
"""
from __future__ import annotations

import dataclasses
import json
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.models.base import LoadedModel
from bodymap.models.checkpoint import pick_device, save_checkpoint
from bodymap.models.diagdata import lesion_crop  # noqa: F401  (here too: photo mode, the GUI, batch)
from bodymap.models.preprocess import fit_size, normalise, standardise, unit_rgb
from bodymap.models.training import TorchOneCycle, fit

TASK = "diagnosis"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PATH = DATA_DIR / "diagnosis.pt"
IMAGE_ONLY_PATH = DATA_DIR / "diagnosis_image_only.pt"
# every shipped diagnosis checkpoint by name: the default (real data) and the synthetic-trained ones
NAMED = {"default": DEFAULT_PATH, "image_only": IMAGE_ONLY_PATH,
         "synthetic": DATA_DIR / "diagnosis_synthetic.pt",
         "synthetic_image_only": DATA_DIR / "diagnosis_synthetic_image_only.pt"}
UNKNOWN_SITE = "unknown"
DEFAULT_ARCH = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [32, 64, 128, 256]},
                "site_dim": 128, "use_site": True, "sites": [UNKNOWN_SITE], "dropout": 0.2}
NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LABEL = "trained on synthetic lesion crops only: a demonstration, not a clinical diagnosis"
REAL_LABEL = "trained on dermoscopy images: research use, not a clinical diagnosis"
# Training recipes (see the module docstring). balance: classes are sampled in proportion to
# count ** (1 - balance) (0 natural, 0.5 square root, 1 equal); logit_adjust: the loss adds the
# log of that sampling prior to the logits, so the raw logits answer as if classes were equal.
RECIPES = {
    "synthetic": {"augment": "light", "balance": 0.0, "logit_adjust": False, "weight_decay": 1e-4,
                  "label_smoothing": 0.05, "tta": 1, "pct_start": 0.2},
    "real": {"augment": "strong", "balance": 0.5, "logit_adjust": True, "weight_decay": 0.02,
             "label_smoothing": 0.1, "tta": 8, "pct_start": 0.15, "shades_of_gray": 6},
}


def normalisation_for(recipe: dict | None) -> dict:
    """The input normalisation of a recipe: NORMALISATION, with the recipe's colour constancy
    ("shades_of_gray": Minkowski p; preprocess.shades_of_gray) when it has one. Stored in the
    checkpoint, so every prediction path applies what training applied."""
    p = (recipe or {}).get("shades_of_gray")
    return {**NORMALISATION, "shades_of_gray": p} if p else dict(NORMALISATION)


OOD_QUANTILE = 0.99  # share of development (in-distribution) images that pass the OOD check
# readable names of the HAM10000 / ISIC diagnosis codes
CLASS_NAMES = {"akiec": "actinic keratosis / intraepithelial carcinoma", "bcc": "basal cell carcinoma",
               "bkl": "benign keratosis (seborrhoeic keratosis, solar lentigo, lichen planus-like)",
               "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic nevus", "vasc": "vascular lesion"}

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
    ood: bool = False
    ood_score: float | None = None
    melanoma_score: float | None = None
    melanoma_flag: bool | None = None
    melanoma_check: str | None = None
    ood_reason: str | None = None

    def out_of_distribution(self, reason: str) -> "Diagnosis":
        """Mark this diagnosis out of distribution for ``reason`` (words), withdrawing its melanoma
        verdict (the operating point was validated on in-distribution images only); returns it."""
        self.ood, self.ood_reason, self.melanoma_flag, self.melanoma_check = True, reason, None, None
        return self

    def to_dict(self) -> dict:
        """JSON-ready record without the saliency array. ood: the image is unlike the training
        data (its label is not to be trusted); ood_score: its feature distance over the
        model's threshold (> 1 is out of distribution); melanoma_score (MELANOMA_SCORE),
        melanoma_flag (the score is at or over the model's validated operating point; None when
        the model has none or the image is out of distribution) and melanoma_check (that
        verdict in words, with the operating point's held-out sensitivity and specificity);
        ood_reason: why it is out of distribution, in words (None when it is not)."""
        return {"label": self.label, "probs": {k: round(float(v), 5) for k, v in self.probs.items()},
                "site": self.site, "ood": bool(self.ood),
                "ood_score": None if self.ood_score is None else round(float(self.ood_score), 3),
                "melanoma_score": None if self.melanoma_score is None else round(float(self.melanoma_score), 4),
                "melanoma_flag": self.melanoma_flag, "melanoma_check": self.melanoma_check,
                "ood_reason": self.ood_reason}


def site_index(site: str | None, sites: list[str]) -> int:
    """Index of ``site`` in the vocabulary ``sites`` (0 = unknown): exact or case-insensitive
    match, then the taxonomy ancestors of a site code, a taxonomy name or a data set's site name
    ("back", "lower extremity": diagdata.site_code), else 0."""
    if not site:
        return 0
    s = str(site).strip()
    lower = {v.lower(): i for i, v in enumerate(sites)}
    if s.lower() in lower:
        return lower[s.lower()]
    from bodymap import taxonomy as tx
    from bodymap.models.diagdata import site_code

    code = site_code(s)
    while code in tx.SITE_INDEX:
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
            if arch.get("ood"):  # feature statistics of the training images (see set_ood)
                self.register_buffer("ood_means", torch.zeros(n_classes, nf))
                self.register_buffer("ood_precision", torch.zeros(nf, nf))

        def features(self, x):
            """(B, nf) pooled image features."""
            return self.backbone(x)

        def classify(self, f, sites=None):
            """Logits (B, k) from pooled features (B, nf) and site indices (B,)."""
            if self.use_site:
                if sites is None:
                    sites = torch.zeros(len(f), dtype=torch.long, device=f.device)
                f = torch.cat([f, self.site_embedding(sites)], 1)
            return self.head(f)

        def forward(self, x, sites=None):
            return self.classify(self.features(x), sites)

        def ood_distance(self, f):
            """(B,) squared Mahalanobis distance of features f (B, nf) to the nearest class mean."""
            d = f[:, None, :] - self.ood_means[None]  # (B, k, nf)
            return torch.einsum("bki,ij,bkj->bk", d, self.ood_precision, d).amin(1)

    return DiagnosisNet()


def tta_views(x, n: int):
    """The first ``n`` (1, 2, 4 or 8) of the eight flips and quarter turns of a batch (B, C, H, W),
    as a list of tensors (identity first)."""
    import torch

    views = []
    for k in range(8):
        v = torch.rot90(x, k % 4, (2, 3)) if k % 4 else x
        views.append(v.flip(3) if k >= 4 else v)
    order = [0, 4, 2, 6, 1, 5, 3, 7]  # identity, mirror, half turn, ... : the most different first
    return [views[i] for i in order[:max(1, min(8, n))]]


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
    return normalise(torch.from_numpy(arr), norm)


class DiagnosisModel(LoadedModel):
    """A loaded diagnosis checkpoint, ready to predict on a device (CPU unless a GPU is present).

    model = DiagnosisModel.load()            # the shipped model B (image + site)
    out = model.predict(crops, sites)        # crops: list of (H, W, 3) uint8; sites: str or None

    ``load`` takes a file, a shipped name (``NAMED``: "default", "image_only", "synthetic",
    "synthetic_image_only") or None (the shipped model B).
    """

    TASK = TASK
    DEFAULT_PATH = DEFAULT_PATH
    NAMED = NAMED

    def __init__(self, checkpoint: dict, device=None, model=None):
        self.arch: dict = dict(checkpoint["arch"])
        self.sites: list[str] = list(self.arch.get("sites", [UNKNOWN_SITE]))
        recipe = checkpoint.get("training", {}).get("recipe", {})
        self.tta = int(recipe.get("tta", 1))  # test-time views averaged (1 for the synthetic recipe)
        ood = self.arch.get("ood") or {}
        self.ood_threshold: float | None = ood.get("threshold")
        super().__init__(checkpoint, device, model)
        self.path = checkpoint.get("path")  # a str (or None): evaluation records put it in JSON
        for prm in self.model.parameters():  # Grad-CAM needs activation gradients only
            prm.requires_grad_(False)

    @classmethod
    def build(cls, checkpoint: dict):
        return build_network(dict(checkpoint["arch"]), len(checkpoint["classes"]))

    @property
    def net(self):
        """The network (the same object as ``model``)."""
        return self.model

    @property
    def checkpoint(self) -> dict:
        """The checkpoint dict (the same object as ``info``)."""
        return self.info

    def held_out_line(self) -> str:
        return held_out_line(self.info.get("metrics", {}))

    @property
    def load_size(self) -> int:
        """The side (px) its images were stored at in training (the recipe's "load_size"; the
        input size when the recipe names none): the size to read evaluation images at."""
        return int(self.checkpoint.get("training", {}).get("recipe", {}).get("load_size", self.input_size))

    @property
    def uses_site(self) -> bool:
        """True for model B (image + site embedding)."""
        return bool(self.arch.get("use_site"))

    @property
    def card(self) -> dict:
        """What a user needs to judge a prediction: {"name", "file", "kind", "trained_on",
        "licence", "classes", "held_out": one line of held-out scores, "label"}."""
        ck = self.checkpoint
        data, metrics = ck.get("data", {}), ck.get("metrics", {})
        kind = "image + anatomic site (model B)" if self.uses_site else "image only (model A)"
        return {"name": f"diagnosis, {kind}", "file": Path(self.path).name if self.path else None,
                "kind": kind, "trained_on": data.get("name") or data.get("kind", "?"),
                "licence": data.get("licence"), "classes": list(self.classes),
                "held_out": held_out_line(metrics), "label": ck.get("training", {}).get("label", ""),
                "ood_check": self.ood_threshold is not None}

    @property
    def description(self) -> str:
        """One line for the app: what the model is, what trained it (and its licence), how it
        scored on held-out data."""
        c = self.card
        parts = [f"{c['name']}, {len(self.classes)} classes", f"trained on {c['trained_on']}"]
        if c["licence"]:
            parts.append(f"licence {c['licence']}")
        if c["held_out"]:
            parts.append(f"held-out {c['held_out']}")
        if c["label"]:
            parts.append(c["label"])
        return "; ".join(parts)

    def predict(self, crops: list[np.ndarray], sites: list[str | None] | None = None, batch: int = 64,
                saliency: bool = True, tta: int | None = None) -> list[Diagnosis]:
        """Classify lesion crops. crops: list of (H, W, 3) uint8 RGB (any size; resized to the
        model's input); sites: one site string (taxonomy code/name or the training data's site
        names) or None per crop (ignored by model A). Runs in batches of ``batch``, averaging
        the probabilities of ``tta`` test-time views (default: the checkpoint's recipe). With
        ``saliency``, each Diagnosis carries a Grad-CAM map (H, W) of its crop's own size (of the
        unturned view, for the averaged label). Each Diagnosis says whether the crop is out of
        the training distribution (when the checkpoint has feature statistics)."""
        import torch

        if sites is None:
            sites = [None] * len(crops)
        if len(sites) != len(crops):
            raise ValueError(f"predict: {len(crops)} crops but {len(sites)} sites")
        out: list[Diagnosis] = []
        sidx = [site_index(s, self.sites) for s in sites]
        mel = melanoma_class(self.classes)
        threshold = melanoma_threshold(self)
        for b0 in range(0, len(crops), batch):
            part = crops[b0:b0 + batch]
            x = _to_tensor(part, self.input_size, self.normalisation).to(self.device)
            s = torch.tensor(sidx[b0:b0 + batch], dtype=torch.long, device=self.device)
            probs, dist = self._probs(x, s, self.tta if tta is None else tta)
            cams = self._forward_cam(x, s, torch.as_tensor(probs.argmax(1), device=self.device)) if saliency else None
            for i, c in enumerate(part):
                p = probs[i]
                sal = None
                if cams is not None:
                    h, w = np.asarray(c).shape[:2]
                    sal = _resize01(cams[i], h, w)
                score = None if dist is None else float(dist[i] / self.ood_threshold)
                ood = bool(score is not None and score > 1)
                ms = None if mel is None else float(melanoma_score(p[None], self.classes, mel)[0])
                # the operating point was validated on in-distribution images only
                flag = None if ms is None or threshold is None or ood else bool(ms >= threshold)
                why = (f"unlike the model's training images (feature distance {score:.1f} x its limit)"
                       if ood else None)
                out.append(Diagnosis(self.classes[int(p.argmax())], {k: float(v) for k, v in zip(self.classes, p)},
                                     sal, self.sites[sidx[b0 + i]], ood, score, ms, flag,
                                     self.melanoma_check_text(flag, ms, threshold), why))
        return out

    def melanoma_check_text(self, flag: bool | None, score: float | None, thr: float | None) -> str | None:
        """The melanoma check in words: whether ``score`` (MELANOMA_SCORE) reaches the
        checkpoint's operating point ``thr`` (melanoma_threshold: chosen on development lesions)
        and what that point scored on held-out lesions; None when there is no verdict (``flag``
        None)."""
        if flag is None or score is None or thr is None:
            return None
        held = (self.checkpoint.get("metrics", {}).get("held_out") or {}).get("melanoma") or {}
        same = held.get("threshold") == thr and held.get("score", "p(mel)") == melanoma_score_name(self.classes)
        perf = (f"; at this threshold {held['sensitivity']:.0%} of held-out melanomas were found, "
                f"{held['specificity']:.0%} of the other lesions passed"
                if same and "sensitivity" in held and "specificity" in held else "")
        verdict = "over the melanoma threshold: have it examined" if flag else "under the melanoma threshold"
        return f"{verdict} (score {score:.2f}, threshold {thr:.2f}{perf})"

    def _probs(self, x, s, tta: int):
        """Mean probabilities (B, k) over the test-time views of a normalised batch, and the
        squared feature distances (B,) of the unturned view (None without statistics)."""
        import torch

        with torch.no_grad():
            acc, dist = None, None
            for k, v in enumerate(tta_views(x, tta)):
                f = self.net.features(v)
                p = torch.softmax(self.net.classify(f, s), 1)
                acc = p if acc is None else acc + p
                if k == 0 and self.ood_threshold is not None:
                    dist = self.net.ood_distance(f).cpu().numpy()
            return (acc / len(tta_views(x, tta))).cpu().numpy(), dist

    def _forward_cam(self, x, s, target):
        """Grad-CAM maps (B, h, w) in [0, 1] of the classes ``target`` (B,) on the unturned view."""
        import torch

        store = {}
        layer = self.net.backbone.get_submodule(self.net.cam_layer)

        def hook(_m, _i, o):
            o.retain_grad()
            store["a"] = o

        h = layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                x = x.clone().requires_grad_(True)  # so the hooked activations carry gradients
                logits = self.net(x, s)
                # one backward for the batch: in eval mode the samples do not interact
                logits.gather(1, target[:, None]).sum().backward()
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
        return cam.cpu().numpy()

    def predict_arrays(self, images: np.ndarray, sites: list, batch: int = 128, tta: int | None = None,
                       with_ood: bool = False):
        """Class probabilities (n, k) for images (n, S, S, 3) uint8 at the input size, no saliency,
        averaged over ``tta`` views (default: the checkpoint's). With ``with_ood`` also the OOD
        scores (n,) (distance over threshold; nan without statistics)."""
        import torch

        sidx = torch.tensor([site_index(s, self.sites) for s in sites], dtype=torch.long)
        out, dists = [], []
        for b0 in range(0, len(images), batch):
            x = normalise(torch.from_numpy(np.ascontiguousarray(images[b0:b0 + batch])), self.normalisation)
            p, d = self._probs(x.to(self.device), sidx[b0:b0 + batch].to(self.device), self.tta if tta is None else tta)
            out.append(p)
            dists.append(np.full(len(p), np.nan) if d is None else d / self.ood_threshold)
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classes)))
        if with_ood:
            return probs, (np.concatenate(dists) if dists else np.zeros(0))
        return probs

    def features_of(self, images: np.ndarray, batch: int = 128) -> np.ndarray:
        """(n, nf) pooled features of images (n, S, S, 3) uint8 at the input size."""
        import torch

        out = []
        with torch.no_grad():
            for b0 in range(0, len(images), batch):
                x = normalise(torch.from_numpy(np.ascontiguousarray(images[b0:b0 + batch])), self.normalisation)
                out.append(self.net.features(x.to(self.device)).cpu().numpy())
        return np.concatenate(out)


def held_out_line(metrics: dict) -> str:
    """One line of a checkpoint's held-out scores (balanced accuracy, melanoma AUC where
    stored, or accuracy), '' when it has none."""
    ho = metrics.get("held_out") or {}
    if not ho:
        return ""
    parts = []
    unit = metrics.get("held_out_unit", "")
    if "mean_sensitivity" in ho:
        ci = ho.get("mean_sensitivity_ci", [float("nan")] * 2)
        parts.append(f"balanced accuracy {ho['mean_sensitivity']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
    mel = metrics.get("melanoma") or {}
    if "auc" in mel:
        parts.append(f"melanoma AUC {mel['auc']:.2f}")
    if "accuracy" in ho:
        parts.append(f"accuracy {ho['accuracy']:.2f}")
    n = ho.get("n")
    return ", ".join(parts) + (f" ({n} {unit or 'cases'})" if n else "")


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


def _augment(x, gen):
    """Random flips and 90-degree rotations of a batch (B, 3, S, S) (lesions have no orientation)."""
    import torch

    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    return torch.rot90(x, k, (2, 3)) if k else x


def strong_augment(u8, out: int, gen, norm: dict = NORMALISATION):
    """The "real" recipe's augmentation of a uint8 batch (B, H, W, 3) -> normalised (B, 3, out, out).

    Geometry (one affine resampling per image, reflected at the borders): any rotation, a mirror
    half the time, a window of 0.65-1.1 of the image side (zoom), aspect 0.8-1.25, shift up to
    12% of the side. Colour and light: brightness x0.7-1.3, contrast x0.7-1.3, saturation
    x0.6-1.4, hue turned up to 8 degrees, per-channel gain x0.92-1.08 (white balance), gamma
    0.8-1.25, sensor noise. A colour constancy in ``norm`` is applied to the whole image first,
    as at prediction time.

    ``u8`` may be on a GPU: the random parameters still come from ``gen`` (a CPU generator), so a
    seed gives the same geometry and colours on either device; the image work runs where ``u8``
    is, and the sensor noise there is drawn from a GPU generator seeded from ``gen``."""
    import torch
    import torch.nn.functional as F

    x = unit_rgb(u8, norm)
    B, dev = len(x), x.device

    def U(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand(B, *shape, generator=gen)).to(dev)

    ang = U(0, 2 * np.pi)
    zoom = torch.exp(U(np.log(0.65), np.log(1.1)))
    asp = torch.exp(U(-0.22, 0.22))
    sx, sy = zoom * torch.sqrt(asp), zoom / torch.sqrt(asp)
    flip = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0).to(dev)
    t = U(-0.12, 0.12, 2)
    c, s_ = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([sx * c * flip, -sy * s_, t[:, 0]], 1),
                         torch.stack([sx * s_ * flip, sy * c, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (B, 3, out, out), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = grey + (x - grey) * U(0.6, 1.4, 1, 1, 1)  # saturation
    # hue: rotate the colours about the grey axis (Rodrigues about (1, 1, 1) / sqrt(3))
    h = U(-0.14, 0.14)
    k = torch.ones(3) / np.sqrt(3)
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]]).to(dev)
    R = (torch.eye(3, device=dev)[None] + torch.sin(h)[:, None, None] * K[None]
         + (1 - torch.cos(h))[:, None, None] * (K @ K)[None])  # (B, 3, 3)
    x = torch.einsum("bij,bjhw->bihw", R, x)
    m = x.mean((1, 2, 3), keepdim=True)
    x = (x - m) * U(0.7, 1.3, 1, 1, 1) + m  # contrast
    x = x * U(0.7, 1.3, 1, 1, 1) * U(0.92, 1.08, 3, 1, 1)  # brightness, white balance
    x = x.clamp(0, 1) ** U(0.8, 1.25, 1, 1, 1)
    sigma = U(0, 0.02, 1, 1, 1)
    if dev.type == "cpu":
        noise = torch.randn(x.shape, generator=gen)
    else:  # drawing it on the CPU and copying it over would take longer than the network's step
        g = torch.Generator(device=dev).manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
        noise = torch.randn(x.shape, generator=g, device=dev)
    x = x + sigma * noise
    return standardise(x.clamp(0, 1), norm)


def train_model(data: dict, *, use_site: bool, epochs: int = 10, batch: int = 64, lr: float = 2e-3,
                seed: int = 0, device=None, arch: dict | None = None, site_dropout: float = 0.1,
                progress: Progress | None = None, log: Callable[[str], None] | None = None,
                max_steps: int | None = None, recipe: dict | None = None, input_size: int | None = None,
                dev: dict | None = None, eval_every: int | None = None):
    """Train one diagnosis network from random weights on ``data`` (as made by
    bodymap.models.diagdata: images (n, S, S, 3) uint8, labels (n,), sites, classes).

    AdamW + one-cycle learning rate; ``recipe`` (default RECIPES["synthetic"]) sets the
    augmentation, class balancing, logit adjustment, weight decay and label smoothing. The
    network sees ``input_size`` pixels (default the images' size; the strong augmentation
    samples its windows from the larger stored image). A and B trained with the same seed see
    the same batches, augmentations and site dropouts. ``dev`` (data like ``data``): its
    balanced accuracy (one view) is logged after every ``eval_every`` epochs (default: about 25
    times in the run, and after the last epoch). On a GPU the images are moved there once and
    augmented there (see strong_augment). Returns (net on cpu, arch,
    history list of per-epoch dicts)."""
    import torch
    import torch.nn.functional as F

    rec = {**RECIPES["synthetic"], **(recipe or {})}
    torch.manual_seed(seed)
    arch = {**DEFAULT_ARCH, **(arch or {}), "use_site": bool(use_site)}
    vocab = [UNKNOWN_SITE] + sorted({str(s) for s in data["sites"] if s} - {UNKNOWN_SITE})
    arch["sites"] = vocab
    size = int(input_size or data["images"].shape[1])
    dev_ = pick_device(device)
    # channels-last: about 30% faster convolutions on a CPU (measured on resnet10t, one thread)
    net = build_network(arch, len(data["classes"])).to(dev_, memory_format=torch.channels_last)
    imgs = torch.from_numpy(np.ascontiguousarray(data["images"]))
    if dev_.type != "cpu":  # a few hundred MB: on the GPU once, so batches are cut and augmented there
        imgs = imgs.to(dev_)
    labels = torch.as_tensor(np.asarray(data["labels"]), dtype=torch.long)
    sidx = torch.tensor([site_index(s, vocab) for s in data["sites"]], dtype=torch.long)
    n, k = len(imgs), len(data["classes"])
    counts = torch.bincount(labels, minlength=k).double().clamp_min(1)
    weight = counts[labels] ** -float(rec["balance"])  # per-image sampling weight
    prior = counts ** (1 - float(rec["balance"]))
    log_prior = torch.log(prior / prior.sum()).float().to(dev_)
    steps_per_epoch = max(1, (n + batch - 1) // batch)
    total = steps_per_epoch * epochs if max_steps is None else max_steps
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=float(rec["weight_decay"]))
    sched = TorchOneCycle(opt, lr, max(total, 2), pct_start=float(rec["pct_start"]))
    gen = torch.Generator().manual_seed(seed)
    norm = normalisation_for(rec)
    every = int(eval_every or max(1, -(-epochs // 25)))
    history, t0 = [], time.perf_counter()
    epoch = {}  # this epoch's sampling order and site dropouts

    def next_batch(step):
        ep, b = divmod(step, steps_per_epoch)
        if b == 0:  # a new epoch: class-balanced (or plain) order, which sites are hidden
            epoch["order"] = (torch.multinomial(weight, n, replacement=True, generator=gen) if rec["balance"] > 0
                              else torch.randperm(n, generator=gen))
            epoch["drop"] = torch.rand(n, generator=gen) < site_dropout
        b0 = b * batch
        idx = epoch["order"][b0:b0 + batch]
        u8 = imgs[idx.to(imgs.device)]
        if rec["augment"] == "strong":
            x = strong_augment(u8, size, gen, norm)
        else:
            x = normalise(u8, norm)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = _augment(x, gen)
        s = torch.where(epoch["drop"][b0:b0 + len(idx)], torch.zeros_like(sidx[idx]), sidx[idx])
        return (x.to(dev_, memory_format=torch.channels_last), s.to(dev_)), labels[idx].to(dev_)

    def loss_of(logits, y):
        fit_ = logits + log_prior if rec["logit_adjust"] else logits  # logit adjustment: the prior of the sampling
        return F.cross_entropy(fit_, y, label_smoothing=float(rec["label_smoothing"]))

    def end_of_epoch(step, losses, scores):
        """At each epoch's end: its mean loss and training accuracy, and the dev figures."""
        if (step + 1) % steps_per_epoch and step + 1 < min(total, steps_per_epoch * epochs):
            return
        ep, k0 = len(history), len(history) * steps_per_epoch
        w = [min(batch, n - b * batch) for b in range(len(losses) - k0)]  # images per batch (the last is short)
        rec_ep = {"epoch": ep + 1, "loss": round(float(np.average(losses[k0:], weights=w)), 4),
                  "train_acc": round(float(np.average(scores[k0:], weights=w)), 4),
                  "seconds": round(time.perf_counter() - t0, 1)}
        msg = ""
        last = step + 1 >= min(total, steps_per_epoch * epochs)
        if dev is not None and ((ep + 1) % every == 0 or last):
            m = model_from_net(net.cpu().eval(), arch, data["classes"], size, {**rec, "tta": 1})
            sc = evaluate(m, dev, n_boot=0)
            net.to(dev_, memory_format=torch.channels_last).train()
            rec_ep["dev_balanced_accuracy"] = round(sc["mean_sensitivity"], 4)
            msg = f" dev balanced accuracy {sc['mean_sensitivity']:.3f}"
            if "melanoma" in sc:
                rec_ep["dev_melanoma_auc"] = round(sc["melanoma"]["auc"], 4)
                msg += f", melanoma AUC {sc['melanoma']['auc']:.3f}"
        history.append(rec_ep)
        notes.note(f"{'B' if use_site else 'A'} epoch {ep + 1}/{epochs} loss {rec_ep['loss']:.4f} "
                   f"train acc {rec_ep['train_acc']:.3f}{msg} {time.perf_counter() - t0:.0f} s")

    notes = types.SimpleNamespace(note=log or (lambda msg: None))  # fit's log: the caller's function, or nothing
    # the schedule spans `total` steps; the run stops there or after `epochs` epochs
    fit(net, next_batch, loss_of, opt, sched, min(total, steps_per_epoch * epochs), log=notes, log_every=max(total, 1),
        say=lambda st, f: progress(f"model {'B' if use_site else 'A'} {st}", f) if progress else None,
        span=(0.0, 1.0), score=lambda logits, y: (logits.argmax(1) == y).float().mean(), after_step=end_of_epoch)
    return net.cpu().to(memory_format=torch.contiguous_format).eval(), arch, history


def _train_worker(args: tuple):
    """train_model in a worker process (parallel A and B): writes its log lines to a file and
    returns (state_dict, arch, history)."""
    import torch

    data, kw, log_file = args
    torch.set_num_threads(kw.pop("threads", 1))
    with open(log_file, "w") as f:
        def log(msg):
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
            f.flush()
        net, arch, hist = train_model(data, log=log, **kw)
    return net.state_dict(), arch, hist


def fit_ood(net, arch: dict, train: dict, dev: dict | None, size: int, n_max: int = 4000,
            quantile: float = OOD_QUANTILE, seed: int = 0, recipe: dict | None = None) -> dict:
    """Give a trained network its out-of-distribution check: class means and shared covariance
    (shrunk by 1% of its mean variance) of the pooled features of up to ``n_max`` training
    images (unaugmented, at the input ``size``), stored as buffers; the threshold is the
    ``quantile`` of the development images' squared Mahalanobis distances to the nearest class
    mean (of the training images' when there is no dev data). ``recipe``: the training recipe
    (its colour constancy is applied to the images, as in training). Returns the new arch (with
    "ood": {"threshold", "quantile", "n"}); the net is rebuilt in place with the buffers."""
    import torch

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(train["labels"]))[:n_max])
    model = model_from_net(net, arch, train["classes"], size, recipe)
    f = model.features_of(fit_size(train["images"][idx], size)).astype(np.float64)
    y = np.asarray(train["labels"])[idx]
    k = len(train["classes"])
    means = np.stack([f[y == c].mean(0) if (y == c).any() else f.mean(0) for c in range(k)])
    r = f - means[y]
    cov = r.T @ r / len(r)
    cov += 0.01 * np.trace(cov) / len(cov) * np.eye(len(cov))
    prec = np.linalg.inv(cov)
    new = {**arch, "ood": {"threshold": 1.0, "quantile": quantile, "n": int(len(idx))}}
    sd = dict(net.state_dict())
    sd["ood_means"] = torch.tensor(means, dtype=torch.float32)
    sd["ood_precision"] = torch.tensor(prec, dtype=torch.float32)
    m = model_from_net(None, new, train["classes"], size, recipe, state_dict=sd)
    ref = dev if dev is not None else train
    fd = m.features_of(fit_size(ref["images"], size))
    with torch.no_grad():
        d = m.net.ood_distance(torch.from_numpy(fd)).numpy()
    new["ood"]["threshold"] = float(np.quantile(d, quantile))
    new["ood"]["reference"] = "development images" if dev is not None else "training images"
    return new, sd


def model_from_net(net, arch: dict, classes: list[str], input_size: int, recipe: dict | None = None,
                   state_dict: dict | None = None) -> DiagnosisModel:
    """A DiagnosisModel around a trained network or a state dict (no file), with the recipe's
    normalisation."""
    ck = {"classes": classes, "arch": arch, "input_size": input_size, "normalisation": normalisation_for(recipe),
          "state_dict": state_dict if state_dict is not None else net.state_dict(), "path": None,
          "training": {"recipe": recipe or {}}}
    return DiagnosisModel(ck, device="cpu")


def aggregate_groups(probs: np.ndarray, labels: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case per group (lesion): the mean probabilities (g, k) of its images, its label (g,)
    (the most common of its images'), and the group names (g,)."""
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    k = probs.shape[1]
    acc = np.zeros((len(uniq), k))
    np.add.at(acc, inv, probs)
    acc /= np.bincount(inv, minlength=len(uniq))[:, None]
    labels = np.asarray(labels)
    counts = np.zeros((len(uniq), int(labels.max()) + 1 if len(labels) else 1), np.int64)
    np.add.at(counts, (inv, labels), 1)
    lab = counts.argmax(1)
    return acc, lab, uniq


# The melanoma score that melanoma-vs-rest figures and the melanoma operating point use: the
# log-odds of melanoma against melanocytic nevus, log p(mel) - log p(nv), when the model has both
# classes ("mel", "nv"; else p(mel)). Why: melanoma is told apart from keratoses but not from excised,
# suspicious-looking nevi (benchmarks/melanoma_gap.py), and p(mel) also falls when the model
# spreads probability onto keratoses, which says nothing about melanoma vs nevus. Chosen on the
# HAM10000 dev part (AUC 0.842 -> 0.866; docs/benchmarks.md). Operating points record the score
# they are in ("score"); one in another score is not applied.
MELANOMA_SCORE = "log p(mel) - log p(nv)"


def melanoma_score_name(classes: list[str]) -> str:
    """The name of the melanoma score ``melanoma_score`` gives for a model with ``classes``."""
    return MELANOMA_SCORE if "nv" in classes else "p(mel)"


def melanoma_score(probs: np.ndarray, classes: list[str], mel: str) -> np.ndarray:
    """(n,) melanoma scores (MELANOMA_SCORE) of class probabilities (n, k) over ``classes``;
    ``mel`` names the melanoma class. Without the dermoscopy sets' nevus class "nv" (the
    synthetic models' classes, where it was not chosen): p(mel)."""
    probs = np.asarray(probs, np.float64)
    j = classes.index(mel)
    if "nv" not in classes:
        return probs[:, j]
    return np.log(probs[:, j] + 1e-7) - np.log(probs[:, classes.index("nv")] + 1e-7)


def evaluate(model: DiagnosisModel, data: dict, n_boot: int = 1000, by_group: bool = False,
             melanoma_threshold: float | None = None, tta: int | None = None, probs: np.ndarray | None = None) -> dict:
    """Held-out scores of one model on ``data``: per-class precision/sensitivity with 95%
    bootstrap intervals (mean sensitivity = balanced accuracy), accuracy with interval,
    confusion matrix (bodymap.models.metrics), and, when "mel" (or "melanoma") is a class,
    melanoma vs rest on ``melanoma_score`` (ROC AUC, sensitivity at specificity 0.80, and at
    ``melanoma_threshold``).
    ``by_group``: one case per lesion (data["groups"]), its images' probabilities averaged.
    Adds "correct": (m,) bool list, "predicted": (m,) class indices, "probs" (m, k) list,
    "ood_share" (share of images flagged out of distribution, when the model checks)."""
    from bodymap.models.metrics import binary_scores, per_class_scores

    classes = list(data["classes"])
    if classes != model.classes:
        missing = sorted(set(classes) - set(model.classes))
        if missing:
            raise ValueError(f"evaluation data has classes the model lacks: {', '.join(missing)}")
    ood = None
    if probs is None:
        probs, ood = model.predict_arrays(fit_size(data["images"], model.input_size), data["sites"], tta=tta,
                                          with_ood=True)
    truth = np.array([model.classes.index(classes[i]) for i in data["labels"]])
    image_probs = probs
    unit = "images"
    if by_group and "groups" in data:
        probs, truth, _ = aggregate_groups(probs, truth, data["groups"])
        unit = "lesions"
    pred = probs.argmax(1)
    scores = per_class_scores(truth, pred, model.classes, n_boot=max(n_boot, 1))
    scores["unit"] = unit
    mel = melanoma_class(model.classes)
    if mel is not None:
        j = model.classes.index(mel)
        scores["melanoma"] = binary_scores(truth == j, melanoma_score(probs, model.classes, mel),
                                           threshold=melanoma_threshold, n_boot=max(n_boot, 1))
        scores["melanoma"]["score"] = melanoma_score_name(model.classes)
    if ood is not None and np.isfinite(ood).any():
        scores["ood_share"] = float((ood > 1).mean())
    scores["correct"] = (pred == truth).tolist()
    scores["predicted"] = pred.tolist()
    scores["probs"] = probs.tolist()
    scores["image_probs"] = np.asarray(image_probs).tolist()
    return scores


def compare(model_a: DiagnosisModel, model_b: DiagnosisModel, data: dict, n_boot: int = 1000, **kw) -> dict:
    """A vs B on the same held-out data: each model's scores and the McNemar test of their
    per-case correctness. ``kw`` go to evaluate (by_group, melanoma thresholds as
    melanoma_threshold_a / _b, precomputed image probabilities as probs_a / _b). Returns
    {"A": scores, "B": scores, "mcnemar": {...}, "n": n}."""
    from bodymap.models.metrics import mcnemar

    ta, tb = kw.pop("melanoma_threshold_a", None), kw.pop("melanoma_threshold_b", None)
    pa, pb = kw.pop("probs_a", None), kw.pop("probs_b", None)
    a = evaluate(model_a, data, n_boot, melanoma_threshold=ta, probs=pa, **kw)
    b = evaluate(model_b, data, n_boot, melanoma_threshold=tb, probs=pb, **kw)
    return {"A": a, "B": b, "mcnemar": mcnemar(a["correct"], b["correct"]), "n": len(a["correct"])}


def _strip(scores: dict) -> dict:
    """Scores without the per-case lists (for checkpoints and JSON summaries)."""
    return {k: v for k, v in scores.items() if k not in ("correct", "predicted", "probs", "image_probs")}


def split_description(data: dict, parts: list[np.ndarray], fractions, seed: int) -> dict:
    """What a checkpoint records of a group split: by which column, fractions, seed, the number
    of groups and images per part, and a sha256 of each part's sorted group ids (so a later
    evaluation can check it recreates the same held-out lesions)."""
    import hashlib

    groups = np.asarray(data["groups"])
    names = ("train", "dev", "test")[:len(parts)]
    out = {"by": data["description"].get("group_column") or "image", "fractions": [float(f) for f in fractions],
           "seed": int(seed), "parts": {}}
    for nm, idx in zip(names, parts):
        g = sorted(set(groups[idx].tolist()))
        out["parts"][nm] = {"groups": len(g), "images": int(len(idx)),
                            "sha256": hashlib.sha256("\n".join(g).encode()).hexdigest()}
    return out


def train_diagnosis(out: Path, *, csv: str | None = None, test_csv: str | None = None, synth: list | None = None,
                    test_synth: list | None = None, n_train: int = 3000,
                    n_test: int = 1500, seed: int = 600, test_seed: int = 9600, size: int = 64, epochs: int = 10,
                    batch: int = 64, lr: float = 2e-3, device=None, command: str = "",
                    progress: Progress | None = None, max_steps: int | None = None, recipe: str | None = None,
                    load_size: int | None = None, split=(0.7, 0.1, 0.2), split_seed: int = 0,
                    score_test: bool = True, cache: str | None = None, data_name: str | None = None,
                    licence: str | None = None, threads: int | None = None, parallel: bool = False,
                    n_boot: int = 1000) -> dict:
    """The whole recipe: data (synthetic crops from ``seed``, an ISIC-style ``csv``, or crops cut
    from the textures of ``bodymap synth`` patients in the ``synth`` folders), model A
    (image only) and model B (image + site) trained with the same seed and batches, both
    evaluated on held-out data, McNemar A vs B.

    With a ``csv`` (real data, recipe "real" by default): the rows are split by lesion (or
    patient; ``diagdata.group_split``, stratified by diagnosis, seed ``split_seed``) into
    train / dev / test in the proportions ``split`` (or train / dev when a ``test_csv`` is
    given); images are read at ``load_size`` (default 8/7 of ``size``) and cached under
    ``cache``; the dev part is scored after every epoch and sets the OOD threshold and the
    melanoma operating point (specificity 0.80); the test part is scored once, one case per
    lesion (``score_test=False`` leaves it unscored, for tuning runs). ``data_name`` and
    ``licence`` are written into the checkpoints (weights inherit the data's licence).
    ``parallel``: train A and B at the same time in two worker processes (``threads`` each);
    the same seed gives both the same batches either way. ``n_boot``: bootstrap resamples of
    the held-out intervals.

    Writes under ``out``: diagnosis_A.pt, diagnosis_B.pt (metrics and McNemar inside),
    training_log.txt, evaluation.json. Returns {"A": path, "B": path, "evaluation": summary}."""
    import torch

    from bodymap.models import diagdata

    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(f"{time.strftime('%H:%M:%S')} {msg}")
        from bodymap.atomic import write_text

        write_text(out / "training_log.txt", "\n".join(lines) + "\n")

    rname = recipe or ("real" if csv else "synthetic")
    rec = dict(RECIPES[rname])
    log(f"command: {command or '(library call)'}")
    log(f"recipe {rname}: {json.dumps(rec)}")
    t0 = time.perf_counter()
    dev = None
    by_group = False
    if csv:
        load = int(load_size or round(size * 8 / 7))
        data = diagdata.read_csv(csv, size=load, cache=cache, progress=progress)
        full_desc = dict(data["description"])
        if test_csv:
            test = diagdata.read_csv(test_csv, size=load, classes=data["classes"], cache=cache)
            tr, dv = diagdata.group_split(data["groups"], data["labels"], split[:2], split_seed)
            parts = [tr, dv]
        else:
            parts = diagdata.group_split(data["groups"], data["labels"], split, split_seed)
            tr, dv, te = parts
            test = _subset(data, te)
        split_info = split_description(data, parts, split if not test_csv else split[:2], split_seed)
        dev = _subset(data, dv)
        data = _subset(data, tr)
        data["description"] = {**data["description"], "name": data_name or Path(csv).parent.name,
                               "licence": licence, "split": split_info, "all": full_desc}
        by_group = True
    elif synth:  # crops cut from the textures of `bodymap synth` patients
        data = diagdata.scan_crops(diagdata.visit_dirs(synth), size, progress=progress)
        test = (diagdata.scan_crops(diagdata.visit_dirs(test_synth), size) if test_synth else
                diagdata.synthetic_crops(n_test, test_seed, size, classes=data["classes"], progress=progress))
    else:
        data = diagdata.synthetic_crops(n_train, seed, size, progress=progress)
        test = diagdata.synthetic_crops(n_test, test_seed, size, classes=data["classes"], progress=progress)
    log(f"data: {json.dumps(data['description'])}")
    if dev is not None:
        log(f"dev: {json.dumps(dev['description'])}")
    log(f"held-out: {json.dumps(test['description'])}" + ("" if score_test else " (not scored in this run)"))
    log(f"data ready in {time.perf_counter() - t0:.0f} s")
    nets = {}
    kw = dict(epochs=epochs, batch=batch, lr=lr, seed=seed, device=device, max_steps=max_steps, recipe=rec,
              input_size=size, dev=dev)
    trained = {}
    if parallel and pick_device(device).type != "cpu":
        # the workers would be forked from a process that may hold CUDA, and one GPU runs the
        # small networks one after the other about as fast
        log("on a GPU: A and B trained one after the other (--parallel is for CPU cores)")
        parallel = False
    if parallel:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        log("training A and B in two worker processes")
        # fork: the workers share the loaded images instead of receiving a pickled copy
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            futs = {name: ex.submit(_train_worker, (data, {**kw, "use_site": use_site, "threads": threads or 1},
                                                    str(out / f"train_{name}.log")))
                    for name, use_site in (("A", False), ("B", True))}
            for name, fut in futs.items():
                sd, arch, hist = fut.result()
                net = build_network(arch, len(data["classes"]))
                net.load_state_dict(sd)
                trained[name] = (net.eval(), arch, hist)
        for name in ("A", "B"):
            for line in (out / f"train_{name}.log").read_text().splitlines():
                lines.append(line)
        log("workers done")
    else:
        for name, use_site in (("A", False), ("B", True)):
            trained[name] = train_model(data, use_site=use_site, progress=progress, log=log, **kw)
    for name, (net, arch, hist) in trained.items():
        sd = net.state_dict()
        if dev is not None:
            arch, sd = fit_ood(net, arch, data, dev, size, recipe=rec)
            log(f"{name}: OOD threshold {arch['ood']['threshold']:.1f} (squared Mahalanobis distance, "
                f"{OOD_QUANTILE:.0%} of dev images below)")
        nets[name] = (sd, arch, hist)
    models = {k: model_from_net(None, v[1], data["classes"], size, rec, state_dict=v[0]) for k, v in nets.items()}
    op = {}
    dev_scores = {}
    if dev is not None:  # operating points from the dev images, never from the test ones
        cmp_dev = compare(models["A"], models["B"], dev, n_boot=min(200, n_boot), by_group=True)
        for k in ("A", "B"):
            m = cmp_dev[k].get("melanoma")
            op[k] = ({"melanoma_threshold": m["roc_threshold"], "at_specificity": m["at_specificity"],
                      "score": m["score"]} if m else {})
            dev_scores[k] = _strip(cmp_dev[k])
            log(f"dev {k}: balanced accuracy {cmp_dev[k]['mean_sensitivity']:.3f}"
                + (f", melanoma AUC {m['auc']:.3f}, threshold {m['roc_threshold']:.3f} for specificity "
                   f"{m['at_specificity']}" if m else ""))
    summary = {"test_data": test["description"], "recipe": rname, "dev": dev_scores, "operating_points": op}
    if score_test:
        cmp_ = compare(models["A"], models["B"], test, n_boot=n_boot, by_group=by_group,
                       melanoma_threshold_a=op.get("A", {}).get("melanoma_threshold"),
                       melanoma_threshold_b=op.get("B", {}).get("melanoma_threshold"))
        summary.update({"n_test": cmp_["n"], "unit": cmp_["A"]["unit"], "mcnemar_A_vs_B": cmp_["mcnemar"],
                        "A": _strip(cmp_["A"]), "B": _strip(cmp_["B"])})
        for k in ("A", "B"):
            s = cmp_[k]
            log(f"held-out {k} ({s['n']} {s['unit']}): accuracy {s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, "
                f"{s['accuracy_ci'][1]:.3f}], mean precision {s['mean_precision']:.3f}, balanced accuracy "
                f"(mean sensitivity) {s['mean_sensitivity']:.3f} [{s['mean_sensitivity_ci'][0]:.3f}, "
                f"{s['mean_sensitivity_ci'][1]:.3f}]")
            if "melanoma" in s:
                m = s["melanoma"]
                log(f"held-out {k} melanoma: AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}], "
                    f"sensitivity at specificity {m['at_specificity']} (ROC) {m['sensitivity_at_specificity']:.3f}"
                    + (f"; at the dev threshold: sensitivity {m['sensitivity']:.3f}, specificity "
                       f"{m['specificity']:.3f}" if "sensitivity" in m else ""))
        m = cmp_["mcnemar"]
        log(f"McNemar A vs B: b={m['b']} (A right, B wrong) c={m['c']} (B right, A wrong) p={m['p']:.3g} ({m['method']})")
    paths = {}
    for name, (sd, arch, hist) in nets.items():
        p = out / f"diagnosis_{name}.pt"
        metrics = {"model": name, "held_out_data": test["description"], "dev": dev_scores.get(name),
                   "operating_point": op.get(name)}
        if score_test:
            ho = summary[name]
            metrics.update({"held_out": ho, "held_out_unit": ho["unit"], "melanoma": ho.get("melanoma"),
                            "mcnemar_A_vs_B": summary["mcnemar_A_vs_B"]})
        save_checkpoint(
            p, task=TASK, arch=arch, state_dict=sd, classes=data["classes"], input_size=size,
            normalisation=normalisation_for(rec), data=data["description"], metrics=metrics,
            training={"command": command, "recipe": {"name": rname, **rec, "epochs": epochs, "batch": batch, "lr": lr,
                                                     "seed": seed, "optimizer": f"AdamW wd {rec['weight_decay']}, one-cycle",
                                                     "site_dropout": 0.1 if name == "B" else 0.0,
                                                     "load_size": int(data["images"].shape[1]),
                                                     "threads": torch.get_num_threads()},
                      "history": hist, "log": "\n".join(lines),
                      "label": LABEL if not csv else REAL_LABEL,
                      "seconds": round(time.perf_counter() - t0, 1)},
            keep_fp32=("ood_",))
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
    if "groups" in data:
        d["groups"] = np.asarray(data["groups"])[idx]
    d["description"] = {**data["description"], "n": int(len(idx)), "subset_of": data["description"]["sha256"],
                        "class_counts": {c: int((d["labels"] == i).sum()) for i, c in enumerate(data["classes"])},
                        "sha256": data_hash(d["images"], d["labels"], d["sites"])}
    return d


# ----------------------------------------------------------------------------- evaluation, CLI helpers
def evaluate_held_out(weights_b=None, weights_a=None, csv: str | None = None, n: int = 2000, seed: int = 9600,
                      n_boot: int = 1000, device=None, synth: list | None = None, cache: str | None = None) -> dict:
    """Score models A and B (default: the shipped checkpoints) on held-out data: synthetic crops
    from ``seed`` (never a training seed), an ISIC-style ``csv`` (see ``evaluate_csv``), or
    crops cut from the textures of synthetic patients (``synth``: folders of ``bodymap
    synth``). Returns compare()'s result without per-case lists plus "data", "checkpoints"."""
    from bodymap.models import diagdata

    b = DiagnosisModel.load(weights_b, device)
    a = DiagnosisModel.load(IMAGE_ONLY_PATH if weights_a is None else weights_a, device)
    if a.classes != b.classes:
        raise ValueError(f"{a.path} and {b.path} have different classes")
    if csv:
        return evaluate_csv(a, b, csv, n_boot=n_boot, cache=cache)
    if synth:
        data = diagdata.scan_crops(diagdata.visit_dirs(synth), b.input_size)
    else:
        data = diagdata.synthetic_crops(n, seed, b.input_size, classes=b.classes)
        train_hash = trained_data_sha256(b)
        if train_hash and train_hash == data["description"]["sha256"]:
            raise ValueError(f"seed {seed} makes the training data of {b.path}; pick another")
    r = compare(a, b, data, n_boot)
    return {"kind": "per case", "A": _strip(r["A"]), "B": _strip(r["B"]), "mcnemar": r["mcnemar"], "n": r["n"],
            "data": data["description"], "checkpoints": {"A": a.path, "B": b.path}}


MELANOMA_NAMES = ("mel", "melanoma", "MEL")


def melanoma_class(names) -> str | None:
    """The melanoma class among ``names`` (a model's classes or a CSV's diagnoses: one of
    MELANOMA_NAMES), or None."""
    return next((c for c in names if c in MELANOMA_NAMES), None)


def trained_data_sha256(model: DiagnosisModel) -> str | None:
    """sha256 of all the data ``model`` was trained from (diagdata descriptions): the whole CSV
    its lesion split was drawn from (checkpoint data.all), else its training data itself
    (synthetic crops); None when the checkpoint records neither."""
    trained = model.checkpoint.get("data", {})
    return trained.get("all", {}).get("sha256", trained.get("sha256"))


def melanoma_threshold(model: DiagnosisModel) -> float | None:
    """The melanoma operating point recorded in a checkpoint (chosen on its dev data), or None
    when there is none or it is in another score than the one ``melanoma_score`` gives this
    model (a checkpoint that names no score has its threshold on p(mel))."""
    op = model.checkpoint.get("metrics", {}).get("operating_point") or {}
    ok = op.get("score", "p(mel)") == melanoma_score_name(model.classes)
    return op.get("melanoma_threshold") if ok else None


def recorded_part(raw: dict, model: DiagnosisModel, part: str) -> dict | None:
    """One part ("dev" or "test") of the lesion split recorded in ``model``'s checkpoint,
    recreated from ``raw`` (diagdata.read_csv of the CSV it was trained on), its classes in the
    model's order; None when the checkpoint records no split or ``raw`` is other data. Raises
    ValueError when the recreated lesions differ from the recorded ones (the split code or the
    CSV changed), so a figure is never read on the wrong lesions."""
    import hashlib

    from bodymap.models import diagdata

    trained = model.checkpoint.get("data", {})
    split = trained.get("split")
    if not split or trained_data_sha256(model) != raw["description"]["sha256"]:
        return None
    parts = diagdata.group_split(raw["groups"], raw["labels"], split["fractions"], split["seed"])
    data = _subset(raw, parts[("train", "dev", "test").index(part)])
    got = hashlib.sha256("\n".join(sorted(set(data["groups"].tolist()))).encode()).hexdigest()
    if got != split["parts"][part]["sha256"]:
        raise ValueError(f"{raw['description'].get('csv', 'the CSV')}: the {part} lesions recreated from the split "
                         f"do not match those recorded in {model.path}")
    return _relabel(data, model.classes) if data["classes"] != model.classes else data


def retune_operating_points(csv: str, paths: dict | None = None, cache: str | None = None, n_boot: int = 200) -> dict:
    """Choose the melanoma operating point (specificity 0.80, MELANOMA_SCORE) of checkpoints A
    and B again on their dev part (recreated from the split they record; one case per lesion)
    and write it into them (weights unchanged). For a change of the melanoma score after
    training. ``paths``: {"A": path, "B": path} (default: the shipped pair). Returns
    {name: operating point with the dev AUC}."""
    from bodymap.models import diagdata
    from bodymap.models.checkpoint import record_metrics

    paths = paths or {"A": IMAGE_ONLY_PATH, "B": DEFAULT_PATH}
    models = {k: DiagnosisModel.load(p) for k, p in paths.items()}
    b = models["B"]
    split = b.checkpoint.get("data", {}).get("split")
    if not split:
        raise ValueError(f"{b.path}: no recorded split, so no dev part to choose the operating point on")
    raw = diagdata.read_csv(csv, size=b.load_size, cache=cache)
    dev = recorded_part(raw, b, "dev")
    if dev is None:
        raise ValueError(f"{csv}: not the data {b.path} was trained on")
    out = {}
    for k, m in models.items():
        sc = evaluate(m, dev, n_boot=n_boot, by_group=True)["melanoma"]
        op = {"melanoma_threshold": sc["roc_threshold"], "at_specificity": sc["at_specificity"],
              "score": sc["score"], "chosen_on": f"dev part of {Path(csv).name} (split seed {split['seed']}), "
                                                     f"{sc['n']} lesions"}
        record_metrics(m.path, TASK, {"operating_point": op})
        out[k] = {**op, "dev_auc": sc["auc"]}
    return out


def evaluate_csv(a: DiagnosisModel, b: DiagnosisModel, csv: str, n_boot: int = 1000, cache: str | None = None) -> dict:
    """Models A and B on an ISIC-style CSV, in the way its labels allow:

    - the CSV the models were trained on (the same data, recorded split): only its held-out
      test part, one case per lesion (images' probabilities averaged), melanoma at the dev
      operating point: "held-out lesions";
    - diagnoses that are the models' classes, or map onto them (PAD-UFES-20's codes,
      diagdata.PAD_CLASSES): every row, per image: "per image";
    - a melanoma flag (ISIC 2017: melanoma / not_melanoma): melanoma vs rest, ROC AUC and the
      sensitivity at specificity 0.80, and at each model's dev threshold: "melanoma vs rest".

    Model B gets each row's site (mapped onto the taxonomy). Returns {"kind", "A", "B",
    "mcnemar" (not for melanoma vs rest), "n", "data", "checkpoints", "ood_share"}."""
    from bodymap.models import diagdata
    from bodymap.models.metrics import binary_scores

    trained = b.checkpoint.get("data", {})
    raw = diagdata.read_csv(csv, size=b.load_size, cache=cache)
    out = {"checkpoints": {"A": a.path, "B": b.path}}
    op = {k: melanoma_threshold(m) for k, m in (("A", a), ("B", b))}
    split = trained.get("split")
    data = recorded_part(raw, b, "test")
    if data is not None:
        r = compare(a, b, data, n_boot, by_group=True, melanoma_threshold_a=op["A"], melanoma_threshold_b=op["B"])
        img = compare(a, b, data, n_boot, melanoma_threshold_a=op["A"], melanoma_threshold_b=op["B"],
                      probs_a=np.array(r["A"]["image_probs"]), probs_b=np.array(r["B"]["image_probs"]))
        out.update({"kind": "held-out lesions", "A": _strip(r["A"]), "B": _strip(r["B"]), "mcnemar": r["mcnemar"],
                    "n": r["n"], "per_image": {"A": _strip(img["A"]), "B": _strip(img["B"]), "mcnemar": img["mcnemar"],
                                               "n": img["n"]}})
        out["data"] = {**data["description"], "part": "test", "split": split}
        return out
    names = raw["classes"]
    mapped = [diagdata.PAD_CLASSES.get(c, c) for c in names]
    if set(mapped) <= set(b.classes):
        data = _relabel({**raw, "classes": mapped}, b.classes) if mapped != b.classes else raw
        r = compare(a, b, data, n_boot, melanoma_threshold_a=op["A"], melanoma_threshold_b=op["B"])
        out.update({"kind": "per image", "A": _strip(r["A"]), "B": _strip(r["B"]), "mcnemar": r["mcnemar"],
                    "n": r["n"], "data": raw["description"], "class_map": dict(zip(names, mapped))})
        return out
    pos, mel = melanoma_class(names), melanoma_class(b.classes)
    if pos is None or mel is None:
        raise ValueError(f"{csv}: its diagnoses ({', '.join(names)}) are neither the model's classes nor a "
                         "melanoma flag")
    y = np.asarray(raw["labels"]) == names.index(pos)
    imgs = fit_size(raw["images"], b.input_size)
    for k, m in (("A", a), ("B", b)):
        probs, ood = m.predict_arrays(imgs, raw["sites"], with_ood=True)
        out[k] = binary_scores(y, melanoma_score(probs, m.classes, mel), threshold=op[k], n_boot=n_boot)
        out[k]["score"] = melanoma_score_name(m.classes)
        if np.isfinite(ood).any():
            out[k]["ood_share"] = float((ood > 1).mean())
    out.update({"kind": "melanoma vs rest", "n": int(len(y)), "data": raw["description"],
                "with_site": int(sum(1 for s_ in raw["sites"] if s_ and s_ != UNKNOWN_SITE))})
    return out


def compare_on(candidate: DiagnosisModel, shipped: DiagnosisModel, csv: str, n_boot: int = 1000,
               cache: str | None = None) -> dict:
    """A candidate model against the shipped one on the same images of an ISIC-style CSV that
    neither was trained on: the comparison a decision to ship rests on (dev or held-out parts
    of two different lesion splits compare two draws, not two models).

    Melanoma vs rest (a melanoma class or flag): each model's ROC AUC on ``melanoma_score`` and
    the paired bootstrap interval of the difference (candidate - shipped; the images resampled
    together). Diagnoses that map onto the models' classes (diagdata.PAD_CLASSES): per-image
    balanced accuracy over the classes present, the paired interval of its difference and a
    McNemar test of right / wrong. Model B gets each row's site. Raises ValueError naming the
    CSV when either model was trained on it. Returns {"csv", "n", "melanoma": {...} or None,
    "classes": {...} or None}."""
    from bodymap.models import diagdata
    from bodymap.models.metrics import bootstrap_ci, mcnemar, roc_auc

    raws = {}
    for m in (candidate, shipped):
        if m.load_size not in raws:
            raws[m.load_size] = diagdata.read_csv(csv, size=m.load_size, cache=cache)
    for m in (candidate, shipped):
        if trained_data_sha256(m) == raws[m.load_size]["description"]["sha256"]:
            raise ValueError(f"{csv}: {m.path} was trained on this data; compare on data neither model saw")
    raw = raws[candidate.load_size]
    names = raw["classes"]
    probs = {k: m.predict_arrays(fit_size(raws[m.load_size]["images"], m.input_size), raws[m.load_size]["sites"])
             for k, m in (("candidate", candidate), ("shipped", shipped))}
    out: dict = {"csv": str(csv), "n": int(len(raw["labels"])), "melanoma": None, "classes": None}
    labels = np.asarray(raw["labels"])
    pos, mel = melanoma_class(names), melanoma_class(candidate.classes)
    if pos is not None and mel is not None and mel in shipped.classes:
        y = labels == names.index(pos)
        sc = {k: melanoma_score(p, m.classes, mel) for (k, p), m in zip(probs.items(), (candidate, shipped))}
        out["melanoma"] = {
            "positives": int(y.sum()), "auc": {k: roc_auc(y, v) for k, v in sc.items()},
            "difference": roc_auc(y, sc["candidate"]) - roc_auc(y, sc["shipped"]),
            "difference_ci": bootstrap_ci(lambda t, a, b: roc_auc(t, a) - roc_auc(t, b), y, sc["candidate"],
                                          sc["shipped"], n=n_boot)}
    mapped = [diagdata.PAD_CLASSES.get(c, c) for c in names]
    if set(mapped) <= set(candidate.classes) and candidate.classes == shipped.classes:
        classes = candidate.classes
        truth = np.array([classes.index(mapped[i]) for i in labels])
        pred = {k: p.argmax(1) for k, p in probs.items()}
        present = sorted(set(truth.tolist()))

        def balanced(t, p_):
            return float(np.mean([np.mean(p_[t == c] == c) for c in present if (t == c).any()]))

        out["classes"] = {
            "balanced_accuracy": {k: balanced(truth, v) for k, v in pred.items()},
            "difference": balanced(truth, pred["candidate"]) - balanced(truth, pred["shipped"]),
            "difference_ci": bootstrap_ci(lambda t, a, b: balanced(t, a) - balanced(t, b), truth, pred["candidate"],
                                          pred["shipped"], n=n_boot),
            "mcnemar": mcnemar(pred["shipped"] == truth, pred["candidate"] == truth)}
    return out


def compare_on_text(res: dict) -> list[str]:
    """Lines for a terminal from compare_on's result."""
    lines = [f"{res['csv']} ({res['n']} images):"]
    m = res["melanoma"]
    if m:
        lo, hi = m["difference_ci"]
        lines.append(f"  melanoma vs rest ({m['positives']} melanomas): AUC shipped {m['auc']['shipped']:.3f}, candidate "
                     f"{m['auc']['candidate']:.3f}; difference {m['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired)")
    c = res["classes"]
    if c:
        lo, hi = c["difference_ci"]
        mc = c["mcnemar"]
        lines.append(f"  balanced accuracy over the classes present: shipped {c['balanced_accuracy']['shipped']:.3f}, "
                     f"candidate {c['balanced_accuracy']['candidate']:.3f}; difference {c['difference']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] (paired); McNemar b={mc['b']} (only shipped right) c={mc['c']} "
                     f"(only candidate right) p={mc['p']:.3g}")
    if not m and not c:
        lines.append("  nothing to compare: no melanoma label and classes the models do not share")
    return lines


def _relabel(data: dict, classes: list[str]) -> dict:
    """A data dict whose class names are all in ``classes``, re-indexed to that list."""
    d = dict(data)
    d["labels"] = np.array([classes.index(data["classes"][i]) for i in data["labels"]])
    d["classes"] = list(classes)
    return d


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
    (bodymap.models.quality) and, whole, squeezed to a size_px square (as the training images
    of the real recipe were)."""
    from PIL import Image

    from bodymap.models.quality import check_photo, load_photo

    names, crops, quals = [], [], []
    for p in paths:
        img = load_photo(p)
        quals.append(check_photo(img, p))
        crops.append(np.asarray(Image.fromarray(img).resize((size_px, size_px), Image.BILINEAR, reducing_gap=2.0)))
        names.append(Path(p).stem)
    return _unique_names(names), crops, quals, model.predict(crops, sites)


# the kind of image each diagnosis training set holds (the checkpoint's data name or kind)
MODALITY = {"HAM10000": "dermoscopy", "synthetic": "synthetic lesion crops", "synthetic scans": "synthetic lesion crops"}


def training_modality(model) -> str | None:
    """The kind of images a diagnosis model was trained on ("dermoscopy", "synthetic lesion
    crops"; the checkpoint's data "modality", else by its data name or kind), None when unknown."""
    data = (getattr(model, "checkpoint", None) or {}).get("data", {})
    if data.get("modality"):
        return data["modality"]
    return MODALITY.get(data.get("name") or data.get("kind") or "")


def diagnose_scan(scan, lesions, model: DiagnosisModel, size_px: int = 128, saliency: bool = True):
    """The lesions of a scan (a LesionSet or list of Lesion) -> (names, crops (size_px, size_px,
    3) uint8, diagnoses); each lesion's site is its region code (from anatomy), if any. The one
    path of every scan-lesion diagnosis (CLI, GUI, batch). A model trained on dermoscopy is out
    of its distribution on a scan's texture (no dermoscope, 0.3-1 mm texels): its diagnoses are
    marked ``ood`` and carry no melanoma verdict, whatever the feature check says (it passed
    126 of 126 texture crops of the sample patient, 22 of them labelled melanoma)."""
    items = list(getattr(lesions, "lesions", lesions))
    crops = [lesion_crop(scan, les, size_px) for les in items]
    sites = [(les.region or {}).get("code") for les in items]
    diags = model.predict(crops, sites, saliency=saliency) if crops else []
    if training_modality(model) == "dermoscopy":
        for d in diags:
            d.out_of_distribution("the model was trained on dermoscopy images and this is a crop of a scan's texture")
    return [f"lesion_{les.id}" for les in items], crops, diags


def write_diagnoses(out, names: list[str], crops: list[np.ndarray], diagnoses: list[Diagnosis],
                    model: DiagnosisModel, extra: list[dict] | None = None) -> list[Path]:
    """Write diagnoses.csv (name, label, site, out_of_distribution 0/1, melanoma_score,
    melanoma_flag 0/1 or empty where there is no verdict, one probability column per class),
    diagnoses.json (with the model's description and card: training data, licence, held-out
    scores; and any ``extra`` per item) and saliency/<name>.png (the crop beside its Grad-CAM
    overlay). Returns the paths."""
    import csv as _csv

    from PIL import Image

    from bodymap.atomic import atomic_write, open_atomic, write_text

    out = Path(out)
    (out / "saliency").mkdir(parents=True, exist_ok=True)
    paths = [out / "diagnoses.csv", out / "diagnoses.json"]
    names = _unique_names(names)  # two photos called mole.jpg in two folders: two saliency maps
    with open_atomic(paths[0], "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["name", "label", "site", "out_of_distribution", "melanoma_score", "melanoma_flag",
                    *model.classes])
        for n, d in zip(names, diagnoses):
            w.writerow([n, d.label, d.site, int(d.ood), "" if d.melanoma_score is None else f"{d.melanoma_score:.4f}",
                        "" if d.melanoma_flag is None else int(d.melanoma_flag),
                        *[f"{d.probs[c]:.5f}" for c in model.classes]])
    items = []
    for i, (n, c, d) in enumerate(zip(names, crops, diagnoses)):
        png = out / "saliency" / f"{n}.png"
        if d.saliency is not None:
            with atomic_write(png) as tmp:
                Image.fromarray(np.concatenate([c, overlay(c, d.saliency)], 1)).save(tmp)
            paths.append(png)
        items.append({"name": n, **d.to_dict(), "saliency_png": str(png) if d.saliency is not None else None,
                      **((extra or [{}] * len(names))[i])})
    write_text(paths[1], json.dumps({"model": model.description, "card": model.card, "checkpoint": model.path,
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


EXTERNAL = Path(__file__).resolve().parents[3] / "shared" / "external"


def benchmark(external: str | Path | None = None, n_crops: int = 300, device=None) -> dict:
    """Figures for benchmarks/models.py, for the shipped models B (image + site) and A (image):
    HAM10000's held-out lesions (the split recorded in the checkpoints), ISIC 2017 melanoma vs
    rest (never trained on), PAD-UFES-20 clinical photos per class (a domain shift: the models
    saw dermoscopy only), the time to diagnose ``n_crops`` HAM crops with Grad-CAM and
    test-time augmentation (one warm-up batch first), and the checkpoint sizes. ``external``:
    the folder of the real data sets (default ../shared/external); sets absent are skipped."""
    from bodymap.models.diagdata import load_images, split_rows

    ext = Path(external) if external else EXTERNAL
    b = DiagnosisModel.load(device=device)
    a = DiagnosisModel.load(IMAGE_ONLY_PATH, device)
    res: dict = {"checkpoints": {"A": a.path, "B": b.path}, "cards": {"A": a.card, "B": b.card}, "skipped": []}
    for key, name in (("ham", "ham10000"), ("isic2017", "isic2017"), ("pad", "pad_ufes20")):
        f = ext / name / "metadata.csv"
        if f.exists():
            res[key] = evaluate_csv(a, b, str(f))
        else:
            res["skipped"].append(str(f))
    f = ext / "ham10000" / "metadata.csv"
    if f.exists():
        rows = split_rows(f, "test")[:n_crops]
        crops = list(load_images([r["path"] for r in rows], 128))
        sites = [r["site_code"] for r in rows]
        b.predict(crops[:64], sites[:64])
        t0 = time.perf_counter()
        b.predict(crops, sites)
        dt = time.perf_counter() - t0
        import torch

        res["timing"] = {"crops": len(crops), "seconds": round(dt, 2), "crops_per_s": round(len(crops) / dt, 1),
                         "device": str(b.device), "threads": torch.get_num_threads(), "saliency": True, "tta": b.tta}
    res["sizes_mb"] = {p.name: round(p.stat().st_size / 1e6, 2) for p in NAMED.values() if p.exists()}
    return res


def _fmt(v, ci=None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def melanoma_line(m: dict) -> str:
    """One line of melanoma-vs-rest figures (binary_scores' dict)."""
    line = (f"AUC {_fmt(m['auc'], m['auc_ci'])}; sensitivity at specificity >= {m['at_specificity']:.2f} (ROC) "
            f"{_fmt(m['sensitivity_at_specificity'], m['sensitivity_at_specificity_ci'])}")
    if "sensitivity" in m:
        line += (f"; at the dev threshold {m['threshold']:.3f}: sensitivity {_fmt(m['sensitivity'], m['sensitivity_ci'])}, "
                 f"specificity {_fmt(m['specificity'], m['specificity_ci'])}")
    return line + f" ({m['positives']} melanomas of {m['n']}; score {m.get('score', 'p(mel)')})"


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``."""
    lines = []
    for k in ("B", "A"):
        c = res["cards"][k]
        lines.append(f"model {k}: {res['checkpoints'][k]}: {c['name']}; trained on {c['trained_on']}; licence {c['licence']}")
    if "ham" in res:
        h = res["ham"]
        d = h["data"]
        lines += ["", f"HAM10000 held-out lesions (test part of the recorded split by {d['split']['by']}, seed "
                  f"{d['split']['seed']}; never seen in training or tuning): {h['n']} lesions, {d['n']} images",
                  score_table(h)]
        for k in ("B", "A"):
            s = h[k]
            lines.append(f"{k}: balanced accuracy {_fmt(s['mean_sensitivity'], s['mean_sensitivity_ci'])}, "
                         f"accuracy {_fmt(s['accuracy'], s['accuracy_ci'])}; melanoma: {melanoma_line(s['melanoma'])}")
        for k in ("B", "A"):
            s = h["per_image"][k]
            lines.append(f"{k} per image ({h['per_image']['n']} images): balanced accuracy "
                         f"{_fmt(s['mean_sensitivity'], s['mean_sensitivity_ci'])}; melanoma AUC "
                         f"{_fmt(s['melanoma']['auc'], s['melanoma']['auc_ci'])}"
                         + (f"; out of distribution: {100 * s['ood_share']:.1f} % of images" if "ood_share" in s else ""))
        lines += ["confusion B (lesions; rows true, columns predicted):", confusion_table(h["B"])]
    if "isic2017" in res:
        r = res["isic2017"]
        lines += ["", f"ISIC 2017 (2,000 training + 150 validation images, never trained on; models trained on HAM10000 "
                  f"only), melanoma vs rest, {r['n']} images, {r['with_site']} with a site:"]
        for k in ("B", "A"):
            lines.append(f"{k}: {melanoma_line(r[k])}" + (f"; out of distribution: {100 * r[k]['ood_share']:.1f} %"
                                                          if "ood_share" in r[k] else ""))
    if "pad" in res:
        r = res["pad"]
        lines += ["", f"PAD-UFES-20 clinical smartphone photos ({r['n']} images; a domain shift: the models saw "
                  f"dermoscopy only; classes mapped {r['class_map']}):", score_table(r)]
        for k in ("B", "A"):
            s = r[k]
            lines.append(f"{k}: balanced accuracy over the classes present {_fmt(s['mean_sensitivity'], s['mean_sensitivity_ci'])}"
                         + (f"; flagged out of distribution by the feature check: {100 * s['ood_share']:.1f} % "
                            "(photo mode flags every clinical photo)" if "ood_share" in s else ""))
    if "timing" in res:
        t = res["timing"]
        lines += ["", f"speed: {t['crops']} HAM crops with Grad-CAM and {t['tta']} test-time views in {t['seconds']:.2f} s "
                  f"({t['crops_per_s']:.0f} crops/s) on {t['device']}, {t['threads']} threads"]
    lines.append("sizes: " + ", ".join(f"{k} {v:.2f} MB" for k, v in res["sizes_mb"].items()))
    if res.get("skipped"):
        lines.append("skipped (absent): " + ", ".join(res["skipped"]))
    return "\n".join(lines)


def benchmark_synthetic(n_crops: int = 300, held_out: int = 2000, seed: int = 9600, device=None) -> dict:
    """The synthetic-trained models (kept by name: NAMED "synthetic", "synthetic_image_only") on
    held-out synthetic crops (seed 9600; they were trained on seed 600): A vs B, McNemar."""
    res = evaluate_held_out(NAMED["synthetic"], NAMED["synthetic_image_only"], n=held_out, seed=seed, device=device)
    return res


def benchmark_synthetic_text(res: dict) -> str:
    """The printed report of ``benchmark_synthetic``."""
    d = res["data"]
    return "\n".join([f"held-out synthetic crops: {d['n']} (seed {d.get('seed')}, sha256 {d['sha256'][:12]}); "
                      f"checkpoints A {res['checkpoints']['A']}, B {res['checkpoints']['B']}",
                      score_table(res), "confusion B:", confusion_table(res["B"])])
