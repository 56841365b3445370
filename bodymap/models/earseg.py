"""Ear segmentation: a U-Net (segmentation-models-pytorch, ResNet-18 encoder, random init)
labelling each pixel of an ear close-up with one of the 12 ear regions or non-ear
(bodymap.taxonomy.EAR_REGIONS, index 0 = non-ear).

    seg = EarSegmenter.load()                 # the shipped bodymap/data/ear_segmentation.pt
    labels = seg.segment(photo)               # (H, W) int, 0..12
    Image.fromarray(overlay(photo, labels))   # coloured mask over the photo
    res = segment_scan_ears(scan, site, side) # labels carried back onto the scan's vertices

Training (``bodymap train ear``) renders synthetic ear close-ups (bodymap.models.eardata) or
reads a user's folder of photos and masks; ``bodymap evaluate ear`` scores a checkpoint on
held-out rendered ears (bodies, phenotypes and cameras never used in training): per-class
pixel precision and sensitivity with 95% bootstrap intervals (images resampled).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.models.base import LoadedModel
from bodymap.models.checkpoint import stored_as
from bodymap.models.preprocess import as_rgb, predict_batched, to_tensor
from bodymap.taxonomy import EAR_COLOURS, EAR_REGIONS, LATERALITY, SITE_INDEX

TASK = "earseg"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "ear_segmentation.pt"
ARCH = {"library": "segmentation_models_pytorch", "name": "Unet", "encoder": "resnet18",
        "decoder_channels": [64, 32, 16, 16, 16], "classes": len(EAR_REGIONS)}
NORMALISATION = {"scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# never used for training: 9001 and 9003 scored the rounds to stop 48, 9005 the int8 weights
# (stop 49; development data since); 9009 holds the figures of the round trained on photo
# mode's crops too (stop 52); 9011 scored it with test-time mirror images beside without
# (stop 53); 9013 a sixth round beside it, 9015 a seventh beside the sixth (stop 53), and 9015
# holds the figures now; a next held-out draw starts at 9017
HELD_OUT = {"seed": 9015, "bodies": 20, "views_per_ear": 5}
Progress = Callable[[str, float], None]


def build_model(arch: dict = ARCH):
    """The U-Net described by ``arch`` (random weights; nothing is downloaded)."""
    import segmentation_models_pytorch as smp

    if arch.get("library") != "segmentation_models_pytorch" or arch.get("name") != "Unet":
        raise ValueError(f"unsupported ear-segmentation architecture {arch}")
    return smp.Unet(encoder_name=arch["encoder"], encoder_weights=None,
                    decoder_channels=tuple(arch["decoder_channels"]), classes=int(arch["classes"]))


def _augment(x, y, gen):
    """Random horizontal flip (a left ear mirrored looks like a right ear) and colour jitter on a
    normalised batch x (N, 3, H, W) and labels y (N, H, W)."""
    import torch

    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    y = torch.where(flip.view(n, 1, 1), y.flip(2), y)
    x = x * (1 + 0.15 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)) + 0.3 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)
    return x, y


def train_ear(out: str | Path, *, folder: str | Path | None = None, bodies: int = 150, views: int = 12,
              size: int = 128, crop: int = 96, seed: int = 1, steps: int = 600, batch: int = 8, lr: float = 3e-3,
              device: str | None = None, threads: int = 1, held_out: dict | None = None,
              minutes: float | None = None, progress: Progress | None = None, command: str = "",
              resume: str | Path | None = None, head_crops: int = 0) -> Path:
    """Train the U-Net from random weights; write out/ear_segmentation.pt and out/ear_train.log.

    Data: ``folder`` (images/ + masks/, see eardata.load_ear_folder) or, by default, synthetic
    close-ups of ``bodies`` bodies x 2 ears x ``views`` (cached under out/cache). ``steps``
    optimiser steps of ``batch`` random ``crop`` x ``crop`` windows of the ``size`` x ``size``
    images (the network is fully convolutional: it is used on whole images; crops save CPU
    time), AdamW with a one-cycle learning rate peaking at ``lr``, cross-entropy + Dice loss. Synthetic runs are then scored on held-out rendered ears
    (HELD_OUT) and the scores stored in the checkpoint. ``minutes`` caps the training time (the
    learning-rate schedule then follows the clock, see training.Schedule). ``resume``: start from that
    checkpoint's weights (a second training round; its record is kept under "resumed_from").
    ``head_crops``: also train on the crops photo mode gives the U-Net (earfind.locator_crops) of
    that many rendered head bodies x ``views`` photos (seed ``seed``): small ears enlarged, boxes
    looser or tighter than the ear, and boxes of face, hair and neck without an ear.
    Returns the checkpoint path.
    """
    import segmentation_models_pytorch as smp
    import torch

    from bodymap.models.checkpoint import pick_device, save_checkpoint
    from bodymap.models.eardata import cached_ear_dataset, load_ear_folder
    from bodymap.models.training import Schedule, Shuffled, TrainingLog, fit, resume_weights, training_record

    settings = {"folder": None if folder is None else str(folder), "bodies": bodies, "views": views, "size": size,
                "crop": crop, "seed": seed, "steps": steps, "batch": batch, "lr": lr, "minutes": minutes,
                "held_out": held_out, "head_crops": head_crops}
    torch.set_num_threads(max(1, min(2, threads)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s, f: None)
    with TrainingLog(out / "ear_train.log", command or "train_ear") as log:
        if folder is not None:
            data = load_ear_folder(folder, size)
        else:
            data = cached_ear_dataset(out / "cache", bodies, views, size, seed,
                                      progress=lambda s, f: say(s, 0.1 * f))
        if head_crops:
            from bodymap.models.earfind import INPUT, cached_head_dataset, locator_crops

            heads = cached_head_dataset(out / "cache", head_crops, views, INPUT, seed,
                                        progress=lambda s, f: say(s, 0.1 * f))
            crops = locator_crops(heads, seed, size)
            data = {"images": np.concatenate([data["images"], crops["images"]]),
                    "masks": np.concatenate([data["masks"], crops["masks"]]),
                    "description": {"close-ups": data["description"], "locator crops": crops["description"]}}
        log.note(f"data: {json.dumps(data['description'])}")
        dev = pick_device(device)
        torch.manual_seed(seed)
        model = build_model()
        prev = resume_weights(model, resume, TASK, log.note)
        model = model.to(dev)
        images, masks = data["images"], data["masks"]
        n = len(images)
        if n < 2:
            raise ValueError(f"{folder or 'synthetic data'}: {n} training images; at least 2 needed")
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        dice = smp.losses.DiceLoss("multiclass", from_logits=True)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        batches = Shuffled(n, batch, rng)

        def next_batch(step):
            idx = batches.next()
            c = min(crop, size)
            oy, ox = (int(v) for v in rng.integers(0, size - c + 1, 2))
            x = to_tensor(images[idx, oy:oy + c, ox:ox + c], NORMALISATION)
            y = torch.as_tensor(masks[idx, oy:oy + c, ox:ox + c].astype(np.int64))
            x, y = _augment(x, y, gen)
            return x.to(dev), y.to(dev)

        run = fit(model, next_batch, lambda logits, y: torch.nn.functional.cross_entropy(logits, y) + dice(logits, y),
                  opt, Schedule(opt, lr, steps, minutes), steps, log=log, say=say)
        metrics: dict = {}
        if folder is None:
            ho = dict(HELD_OUT, **(held_out or {}))
            say("held-out evaluation", 0.9)
            hd = cached_ear_dataset(out / "cache", ho["bodies"], ho["views_per_ear"], size, ho["seed"])
            pred = predict_batches(model.eval(), hd["images"], dev)
            metrics = {"held_out": dict(pixel_scores(hd["masks"], pred), data=hd["description"])}
            log.note("held-out: " + summary_line(metrics["held_out"]))
        training = training_record(settings, run, dev, log, command=command, resumed_from=prev,
                                   optimiser="AdamW, one-cycle", loss="cross-entropy + Dice",
                                   augmentation="horizontal flip, colour jitter")
        path = out / "ear_segmentation.pt"
        save_checkpoint(path, task=TASK, arch=ARCH, state_dict=model.state_dict(), classes=list(EAR_REGIONS),
                        input_size=size, normalisation=NORMALISATION, data=data["description"], metrics=metrics,
                        training=training, half=True)
        log.note(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {run['seconds']:.0f} s")
    say("done", 1.0)
    return path


def predict_batches(model, images: np.ndarray, device=None, batch: int = 16,
                    normalisation: dict = NORMALISATION) -> np.ndarray:
    """(N, H, W) uint8 argmax labels of a model on (N, H, W, 3) uint8 images of its input size."""
    return predict_batched(model, images, normalisation, lambda y: y.argmax(1), batch, device,
                           np.zeros((0, *np.shape(images)[1:3]), np.uint8)).astype(np.uint8)


def pixel_scores(truth: np.ndarray, pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-class pixel precision and sensitivity with 95% bootstrap intervals.

    truth, pred : (N, H, W) labels 0..12. Pixels of one image are not independent, so the
    bootstrap resamples whole images (1000 resamples, percentile intervals). Returns
    {"classes": {name: {precision, precision_ci, sensitivity, sensitivity_ci, support}},
    "mean_ear": {...} (the 12 ear regions, as in the paper), "mean_all": {...} (with non-ear),
    "images": N}.
    """
    k = len(EAR_REGIONS)
    N = len(truth)
    cm = np.zeros((N, k, k), np.int64)  # per image: truth row, prediction column
    for i in range(N):
        cm[i] = np.bincount(truth[i].ravel().astype(np.int64) * k + pred[i].ravel(), minlength=k * k).reshape(k, k)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(N, np.full(N, 1.0 / N), size=n_boot).astype(np.float64)  # (B, N)
    boot = (w @ cm.reshape(N, -1)).reshape(n_boot, k, k)

    def prec_sens(c):
        tp = np.diagonal(c, axis1=-2, axis2=-1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tp / c.sum(-2), tp / c.sum(-1)  # column sums = predicted, row sums = truth

    p, s = prec_sens(cm.sum(0))
    bp, bs = prec_sens(boot)

    def ci(a):
        return [round(float(np.nanpercentile(a, 2.5)), 4), round(float(np.nanpercentile(a, 97.5)), 4)]

    classes = {}
    for j, name in enumerate(EAR_REGIONS):
        classes[name] = {"precision": round(float(p[j]), 4), "precision_ci": ci(bp[:, j]),
                         "sensitivity": round(float(s[j]), 4), "sensitivity_ci": ci(bs[:, j]),
                         "support": int(cm.sum(0)[j].sum())}
    res = {"images": int(N), "classes": classes, "bootstrap": f"{n_boot} resamples of images, 95% percentile"}
    # a class never predicted counts precision 0 (as in bodymap.models.metrics.per_class_scores)
    p, bp = np.nan_to_num(p), np.nan_to_num(bp)
    for key, sl in (("mean_ear", slice(1, k)), ("mean_all", slice(0, k))):
        res[key] = {"precision": round(float(p[sl].mean()), 4), "precision_ci": ci(bp[:, sl].mean(1)),
                    "sensitivity": round(float(np.nanmean(s[sl])), 4), "sensitivity_ci": ci(np.nanmean(bs[:, sl], 1))}
    return res


def summary_line(scores: dict) -> str:
    """One line: mean ear-region precision and sensitivity with intervals."""
    m = scores["mean_ear"]
    return (f"mean over the 12 ear regions: precision {m['precision']:.3f} [{m['precision_ci'][0]:.3f}, "
            f"{m['precision_ci'][1]:.3f}], sensitivity {m['sensitivity']:.3f} [{m['sensitivity_ci'][0]:.3f}, "
            f"{m['sensitivity_ci'][1]:.3f}] ({scores['images']} images)")


def score_table(scores: dict) -> str:
    """Markdown table of per-class precision / sensitivity with intervals, and the means."""
    rows = ["| region | precision [95% CI] | sensitivity [95% CI] | pixels |", "|---|---|---|---|"]
    for name, c in scores["classes"].items():
        rows.append(f"| {name} | {c['precision']:.3f} [{c['precision_ci'][0]:.3f}, {c['precision_ci'][1]:.3f}] | "
                    f"{c['sensitivity']:.3f} [{c['sensitivity_ci'][0]:.3f}, {c['sensitivity_ci'][1]:.3f}] | "
                    f"{c['support']} |")
    for key, label in (("mean_ear", "mean, 12 ear regions"), ("mean_all", "mean, 13 classes")):
        m = scores[key]
        rows.append(f"| **{label}** | {m['precision']:.3f} [{m['precision_ci'][0]:.3f}, {m['precision_ci'][1]:.3f}] | "
                    f"{m['sensitivity']:.3f} [{m['sensitivity_ci'][0]:.3f}, {m['sensitivity_ci'][1]:.3f}] | |")
    return "\n".join(rows)


def evaluate_held_out(path: str | Path | None = None, *, seed: int = HELD_OUT["seed"], bodies: int = HELD_OUT["bodies"],
                      views: int = HELD_OUT["views_per_ear"], cache: str | Path | None = Path(__file__).resolve().parents[2] / "out" / "models" / "cache",
                      device: str | None = None, progress: Progress | None = None) -> dict:
    """Score a checkpoint (default: the shipped one) on held-out rendered ears: bodies of
    generator seed ``seed`` (training uses other seeds). Returns pixel_scores(...) plus the
    data description and the checkpoint path."""
    from bodymap.models.eardata import cached_ear_dataset, render_ear_dataset

    seg = EarSegmenter.load(path, device=device)
    size = seg.input_size
    if cache is None:
        hd = render_ear_dataset(bodies, views, size, seed, progress)
    else:
        hd = cached_ear_dataset(Path(cache), bodies, views, size, seed, progress)
    pred = seg.label_batches(hd["images"])
    return dict(pixel_scores(hd["masks"], pred), data=hd["description"], checkpoint=str(seg.path))


def benchmark(path: str | Path | None = None) -> dict:
    """benchmarks/models.py section: held-out scores of the shipped (or given) checkpoint, its
    size, and CPU time per 128-px close-up and per 1024x768 photo."""
    res = evaluate_held_out(path)
    seg = EarSegmenter.load(path)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (seg.input_size, seg.input_size, 3)).astype(np.uint8)
    photo = rng.integers(0, 255, (768, 1024, 3)).astype(np.uint8)
    seg.segment(img)
    t0 = time.perf_counter()
    for _ in range(5):
        seg.segment(img)
    t1 = time.perf_counter()
    seg.segment(photo)
    t2 = time.perf_counter()
    ck = seg.info
    res["carry_back"] = carry_back_agreement(seg)
    res.update({"file_mb": round(Path(seg.path).stat().st_size / 1e6, 2),
                "ms_per_closeup": round(1000 * (t1 - t0) / 5, 1), "ms_per_photo_1024x768": round(1000 * (t2 - t1), 1),
                "device": str(seg.device), "training": ck.get("training", {}), "train_data": ck.get("data", {})})
    return res


def carry_back_agreement(seg: "EarSegmenter | None" = None, seeds=(777, 778, 779)) -> dict:
    """Labels carried back onto scans: for anny bodies of the given seeds (not training seeds;
    coloured like the training renders, 632 ear vertices each), the share of seen ear vertices
    whose carried-back label equals the template's, pooled and per body."""
    from bodymap.anatomy.template import load_template
    from bodymap.models.synthviews import random_body, skin_colours
    from bodymap.scan import Scan

    seg = seg or EarSegmenter.load()
    t = load_template()
    per = []
    hits = total = 0
    for sd in seeds:
        rng = np.random.default_rng([sd])
        scan = Scan(random_body(rng), t.faces, vertex_colors=skin_colours(rng, hair=False))
        r = segment_scan_ears(scan, t.site, t.side, segmenter=seg, size=192)
        on = r.seen & (t.ear > 0)
        ok = int((r.vertex_labels[on] == t.ear[on]).sum())
        per.append(round(ok / max(int(on.sum()), 1), 4))
        hits, total = hits + ok, total + int(on.sum())
    return {"seeds": list(seeds), "vertices": total, "agreement": round(hits / max(total, 1), 4), "per_body": per}


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``."""
    d, t = res["data"], res.get("training", {})
    cb = res.get("carry_back")
    return "\n".join([
        f"checkpoint {res['checkpoint']} ({res['file_mb']} MB, {stored_as(t)}), trained by: {t.get('command', '?')} "
        f"({t.get('steps', '?')} steps, {t.get('seconds', '?')} s on {t.get('device', '?')})",
        f"held-out: {d['images']} rendered ear close-ups of {d['bodies']} bodies never used in training "
        f"(seed {d['seed']}, sha256 {d['sha256'][:12]}); 95% intervals from {res['bootstrap']}",
        "", score_table(res), "", summary_line(res),
        f"speed ({res['device']}): {res['ms_per_closeup']} ms per {d['size']}-px close-up, "
        f"{res['ms_per_photo_1024x768']} ms per 1024x768 photo"]
        + ([f"labels carried back to the mesh (10 rendered close-ups, face-id votes): {cb['agreement']:.3f} of "
            f"{cb['vertices']} seen ear vertices of {len(cb['seeds'])} unseen bodies agree with the template "
            f"(per body {cb['per_body']})"] if cb else []))


class EarSegmenter(LoadedModel):
    """A loaded ear-segmentation checkpoint. Use ``EarSegmenter.load(path)``."""

    TASK = TASK
    DEFAULT_PATH = DEFAULT_PATH
    NAME = "ear regions (U-Net, ResNet-18)"
    TRAINED_ON = "synthetic ear close-ups and crops of synthetic head photos (no real photos)"

    @classmethod
    def build(cls, checkpoint: dict):
        return build_model(checkpoint["arch"])

    def held_out_line(self) -> str:
        ho = ((self.info.get("metrics") or {}).get("held_out") or {}).get("mean_ear") or {}
        return (f"12 regions: pixel precision {ho['precision']:.2f} / sensitivity {ho['sensitivity']:.2f} on held-out "
                "synthetic ear close-ups" if ho else "")

    @property
    def test_time_flip(self) -> bool:
        """Whether predictions average the logits of the photo and of its mirror image (mirrored
        back): the checkpoint's arch "test_time_flip", chosen on development data after training
        (the U-Net was trained on mirrored ears too, and the 12 regions have no side). A newly
        trained checkpoint has none: its training command scores it on single passes."""
        return bool((self.info.get("arch") or {}).get("test_time_flip"))

    def _logits(self, x):
        """(N, 13, h, w) torch class logits of normalised images x (N, 3, h, w), averaged with
        those of the mirror images (mirrored back) when test_time_flip."""
        import torch

        with torch.no_grad():
            x = x.to(self.device)
            y = self.model(x)
            if self.test_time_flip:
                y = 0.5 * (y + self.model(x.flip(3)).flip(3))
        return y

    def probabilities(self, image, name: str = "image") -> np.ndarray:
        """(H, W, 13) float32 class probabilities for a photo (H, W, 3) uint8 of any size: the
        photo is resized to the network's input size and the output resized back (bilinear)."""
        import torch.nn.functional as F

        rgb = as_rgb(image, name)
        H, W = rgb.shape[:2]
        x = to_tensor(rgb[None], self.normalisation)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                          antialias=True)
        logits = F.interpolate(self._logits(x), size=(H, W), mode="bilinear", align_corners=False)
        return logits.softmax(1)[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)

    def label_batches(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        """(N, H, W) uint8 likeliest-class labels of (N, H, W, 3) uint8 images of the input size
        (close-ups), predicted as ``probabilities`` predicts (test_time_flip included)."""
        return predict_batched(self._logits, images, self.normalisation, lambda y: y.argmax(1), batch, None,
                               np.zeros((0, *np.shape(images)[1:3]), np.uint8)).astype(np.uint8)

    def segment(self, image, name: str = "image", ear_prob: float | None = None) -> np.ndarray:
        """(H, W) int64 labels, 0 = non-ear, 1..12 the ear regions in taxonomy.EAR_REGIONS order:
        the likeliest class, or with ``ear_prob``, ear wherever the ear regions together are
        likelier than that (the likeliest of them)."""
        p = self.probabilities(image, name)
        if ear_prob is None:
            return p.argmax(2)
        return np.where(1.0 - p[..., 0] > ear_prob, p[..., 1:].argmax(2) + 1, 0)

    @property
    def crop_ear_prob(self) -> float | None:
        """The ``ear_prob`` for the crops photo mode cuts around found ears (earfind.find_and_segment),
        chosen on development head photos and stored with the weights (arch "crop_ear_prob");
        None (the likeliest class) for weights without one."""
        v = (self.info.get("arch") or {}).get("crop_ear_prob")
        return None if v is None else float(v)


def overlay(image, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the photo with ear-region pixels (labels 1..12) tinted in their
    taxonomy colours (``alpha`` of the colour); non-ear pixels are left as they are."""
    rgb = as_rgb(image)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels are {labels.shape}, image is {rgb.shape[:2]}")
    cols = np.array(EAR_COLOURS, np.float32)
    out = rgb.astype(np.float32)
    m = labels > 0
    out[m] = (1 - alpha) * out[m] + alpha * cols[labels[m]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclasses.dataclass
class ScanEars:
    """Ear labels carried back onto a scan. vertex_labels (n,) int 0..12 (0 = non-ear or not seen);
    seen (n,) bool (some close-up saw the vertex); votes (n, 13) float accumulated probabilities;
    views: list of (image (h, w, 3) uint8, labels (h, w) int) per rendered close-up."""

    vertex_labels: np.ndarray
    seen: np.ndarray
    votes: np.ndarray
    views: list


def ear_views(scan, site: np.ndarray, side: np.ndarray, size: int = 256, angles=((0, 0), (-25, 0), (25, 0), (0, -20), (0, 20))):
    """Close-up cameras of each ear of a scan from its per-vertex labels.

    site, side : (n,) per scan vertex (taxonomy.SITES indices, taxonomy.LATERALITY indices), e.g.
    RegionLabels.site and .side. For each side with ear vertices: cameras looking at the ear
    from the outward direction (ear centre minus head centre), turned by the (azimuth,
    elevation) degrees in ``angles``. Returns [(laterality name, Camera), ...]."""
    from renderers.camera import Camera

    V = scan.vertices
    site, side = np.asarray(site), np.asarray(side)
    if len(site) != len(V) or len(side) != len(V):
        raise ValueError(f"labels for {len(site)} vertices, scan has {len(V)}")
    ear_i = SITE_INDEX["head_neck/head/ear"]
    head = np.isin(site, [SITE_INDEX[c] for c in ("head_neck/head", "head_neck/head/face", "head_neck/head/scalp",
                                                  "head_neck/head/ear")])
    neck = site == SITE_INDEX["head_neck/neck"]
    if not head.any():
        raise ValueError("no head vertices in the labels: cannot find the ears")
    hc = V[head].mean(0)
    up = hc - V[neck].mean(0) if neck.any() else np.array([0.0, 0, 1])
    up /= np.linalg.norm(up)
    cams = []
    for lat in (1, 2):
        ev = np.flatnonzero((site == ear_i) & (side == lat))
        if len(ev) < 10:
            continue
        P = V[ev]
        c = P.mean(0)
        out = c - hc
        out -= np.dot(out, up) * up
        out /= np.linalg.norm(out)
        front = np.cross(up, out)  # some horizontal direction; sign irrelevant for symmetric turns
        radius = float(np.linalg.norm(P - c, axis=1).max())
        for az, el in angles:
            a, e = np.deg2rad(az), np.deg2rad(el)
            d = out * np.cos(a) * np.cos(e) + front * np.sin(a) * np.cos(e) + up * np.sin(e)
            fov = 30.0
            dist = radius / 0.9 / np.tan(np.deg2rad(fov) / 2)
            cams.append((LATERALITY[lat], Camera.look_at(c + dist * d, c, up=up, fov_deg=fov, width=size, height=size)))
    if not cams:
        raise ValueError("no ear vertices in the labels: nothing to segment")
    return cams


def segment_scan_ears(scan, site, side: np.ndarray | None = None, segmenter: EarSegmenter | None = None,
                      size: int = 256, progress: Progress | None = None) -> ScanEars:
    """Render close-ups of both ears of a scan, segment them, and carry the labels back to the
    scan's vertices through the face-id buffer.

    scan : a textured (or coloured) Scan; site, side : (n,) per-vertex region labels that say
    where the ears are, or ``site`` = the RegionLabels of bodymap.anatomy.labels.label_scan
    (its .site and .side are used). Each pixel adds
    its class probabilities to the three corners of the face it sees, weighted by its
    barycentric coordinates; a vertex takes the class with the most votes.
    """
    from renderers.raycast import RaycastRenderer

    if side is None:
        if not hasattr(site, "site") or not hasattr(site, "side"):
            raise ValueError("segment_scan_ears needs per-vertex site and side arrays, or a RegionLabels")
        site, side = site.site, site.side
    seg = segmenter or EarSegmenter.load()
    say = progress or (lambda s, f: None)
    cams = ear_views(scan, site, side, size)
    rend = RaycastRenderer(scan)
    n = len(scan.vertices)
    votes = np.zeros((n, len(EAR_REGIONS)), np.float64)
    views = []
    for i, (lat, cam) in enumerate(cams):
        r = rend.render(cam)
        prob = seg.probabilities(r.rgb, name=f"{lat} ear view {i}")
        m = r.face_id >= 0
        f = scan.faces[r.face_id[m]]  # (k, 3)
        b = r.bary[m].astype(np.float64)
        p = prob[m].astype(np.float64)
        for j in range(3):
            np.add.at(votes, f[:, j], p * b[:, j:j + 1])
        views.append((r.rgb, prob.argmax(2)))
        say(f"segmenting {lat} ear", (i + 1) / len(cams))
    seen = votes.sum(1) > 0
    labels = np.where(seen, votes.argmax(1), 0)
    return ScanEars(labels, seen, votes, views)
