"""Macro-anatomy classifier for photographs: an EfficientNet-B2 (timm, random init) that puts an
image patch into one of arm, leg, foot, hand, head, trunk or other (bodymap.taxonomy.MACRO),
and a region map of a whole photograph by tiling it into patches.

    clf = MacroClassifier.load()        # the shipped bodymap/data/macro_anatomy.pt
    pred = clf.classify(photo)          # MacroPrediction(label, probs, region_map, classes)

Training data (``bodymap train macro``): patches rendered from random synthetic bodies (anny
phenotypes and poses, skin types I-VI, random light, background and camera), each framed as
a photograph of one region (FIELD_MM), its class the region covering most of its central
window (from the face-id buffer and the labelled template; ambiguous views are redrawn), plus
synthetic non-skin images (cloth-like patterns, gradients, noise, blurred shapes) for "other".
``bodymap evaluate macro`` scores a checkpoint on patches of held-out bodies: per-class average precision (one class against the rest) with 95%
bootstrap intervals, and per-class precision and sensitivity.
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
from bodymap.models.preprocess import as_rgb, fit_size, predict_batched, to_tensor
from bodymap.scan import vertex_normals
from bodymap.taxonomy import MACRO

TASK = "macro"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "macro_anatomy.pt"
ARCH = {"library": "timm", "name": "efficientnet_b2", "classes": len(MACRO)}
NORMALISATION = {"scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HELD_OUT = {"seed": 9001, "bodies": 16, "views": 28}  # bodies and cameras never used for training
CACHE = Path(__file__).resolve().parents[2] / "out" / "models" / "cache"  # rendered data sets, kept for reuse
RENDER_SIZE = 96  # patches are rendered at this side and resized to the network's input size
Progress = Callable[[str, float], None]


def build_model(arch: dict = ARCH):
    """The classifier described by ``arch`` (random weights; nothing is downloaded)."""
    import timm

    if arch.get("library") != "timm":
        raise ValueError(f"unsupported macro-anatomy architecture {arch}")
    return timm.create_model(arch["name"], pretrained=False, num_classes=int(arch["classes"]))


def stable_init(model) -> int:
    """Make a randomly initialised timm EfficientNet trainable from scratch with Adam: zero the
    classifier (initial logits 0, loss ln 7) and the last BatchNorm scale of every residual block
    (each block starts as the identity). Without this the random network's logits reach ~10 and
    training stalls above chance. Returns the number of blocks zeroed."""
    import torch

    n = 0
    head = model.get_classifier()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    for mod in model.modules():
        if not getattr(mod, "has_skip", False):
            continue
        bn = getattr(mod, "bn3", None) if hasattr(mod, "bn3") else getattr(mod, "bn2", None)
        if bn is not None and getattr(bn, "weight", None) is not None:
            torch.nn.init.zeros_(bn.weight)
            n += 1
    return n


# ---------------------------------------------------------------- data

# How much of the body a photograph of each region shows (mm across the field, log-uniform):
# a clinician frames the region photographed, so a hand fills the picture and a back does too.
FIELD_MM = {"arm": (220.0, 700.0), "leg": (280.0, 900.0), "foot": (150.0, 400.0), "hand": (120.0, 320.0),
            "head": (200.0, 480.0), "trunk": (300.0, 900.0)}
CENTRE = 0.5  # the label is the region covering most of the patch's central window (this fraction of its side)
MIN_MAJORITY = 0.6  # ... when it covers at least this share of the body seen there (else the view is redrawn)


def patch_camera(point: np.ndarray, normal: np.ndarray, rng: np.random.Generator, size: int,
                 field_mm: tuple[float, float] = (150.0, 700.0)):
    """A random camera looking at ``point`` (3,) mm from near its surface ``normal`` (within 35
    degrees), seeing a field ``field_mm`` across (log-uniform), rolled up to +-60 degrees."""
    from renderers.camera import Camera

    n = normal / np.linalg.norm(normal)
    d = n + rng.normal(0, 0.35, 3)
    d /= np.linalg.norm(d)
    if np.dot(d, n) < 0.5:
        d = n
    field = float(np.exp(rng.uniform(np.log(field_mm[0]), np.log(field_mm[1]))))
    fov = rng.uniform(25, 50)
    dist = 0.5 * field / np.tan(np.deg2rad(fov) / 2)
    up0 = np.array([0.0, 0, 1]) if abs(d[2]) < 0.9 else np.array([0.0, 1, 0])
    roll = np.deg2rad(rng.uniform(-60, 60))
    up = up0 * np.cos(roll) + np.cross(-d, up0) * np.sin(roll)
    return Camera.look_at(point + dist * d, point, up=up, fov_deg=fov, width=size, height=size)


def central_label(labels: np.ndarray, seen: np.ndarray, n_classes: int) -> int | None:
    """The region a patch shows: labels (s, s) int, seen (s, s) bool (surface hit). The class
    covering most of the central window (CENTRE of the side) when the body fills at least a
    quarter of that window and the class at least MIN_MAJORITY of the body there; else None
    (a view of a boundary or of mostly background is ambiguous and is not used)."""
    s = labels.shape[0]
    a, b = int(round(s * (1 - CENTRE) / 2)), int(round(s * (1 + CENTRE) / 2))
    win, hit = labels[a:b, a:b], seen[a:b, a:b]
    if hit.mean() < 0.25:
        return None
    counts = np.bincount(win[hit], minlength=n_classes)
    c = int(counts.argmax())
    return c if counts[c] >= MIN_MAJORITY * hit.sum() else None


def render_macro_dataset(n_bodies: int, views: int, size: int = 96, seed: int = 0,
                         progress: Progress | None = None) -> dict:
    """Patches of ``n_bodies`` random bodies, ``views`` per body, plus views / 6 non-skin images
    per body for "other" (so the seven classes come in about equal numbers).

    Body i uses the generator seeded (seed, i). Each rendered patch looks at a random vertex of
    a class drawn uniformly from the six body regions, framed as a photograph of that region
    (FIELD_MM); its label is central_label's (the face-id buffer can show another part in
    front), and an ambiguous view is redrawn (up to 4 times, then dropped). Returns
    {"images": (N, size, size, 3) uint8, "labels": (N,) uint8 index into MACRO, "description"}.
    """
    from bodymap.models.eardata import data_hash
    from bodymap.models.synthviews import BodyRenderer, _template, background, finish, random_body, skin_colours
    from bodymap.anatomy.body import body_model, pose_rotations
    from bodymap.taxonomy import macro_lut

    t = _template()
    vmacro = macro_lut()[t.site].astype(np.int64)
    by_class = {c: np.flatnonzero(vmacro == c) for c in range(1, len(MACRO))}
    say = progress or (lambda s, f: None)
    imgs, labels = [], []
    for i in range(n_bodies):
        rng = np.random.default_rng([seed, i])
        if rng.random() < 0.5:
            V = random_body(rng)
        else:  # arms down or raised: hands and arms against the trunk or the head
            from bodymap.anatomy.body import BodySpec

            pose = str(rng.choice(["arms-down", "arms-raised", "a-pose"]))
            V = body_model().vertices(BodySpec.random(rng, adult=bool(rng.random() < 0.85)), pose_rotations(pose))
        br = BodyRenderer(V, skin_colours(rng))
        N = vertex_normals(V, t.faces)
        for _ in range(views):
            c = int(rng.integers(1, len(MACRO)))
            for _try in range(4):
                v = int(rng.choice(by_class[c]))
                cam = patch_camera(V[v], N[v], rng, size, FIELD_MM[MACRO[c]])
                img, r = br.render(cam, rng)
                lab = central_label(br.vertex_label_image(r, vmacro, fill=0), r.face_id >= 0, len(MACRO))
                if lab is not None:
                    imgs.append(img)
                    labels.append(lab)
                    break
        for _ in range(max(1, views // 6)):
            imgs.append(finish(background(size, size, rng), rng))
            labels.append(0)
        say(f"rendering patches (body {i + 1}/{n_bodies})", (i + 1) / n_bodies)
    images, labels_a = np.stack(imgs), np.array(labels, np.uint8)
    return {"images": images, "labels": labels_a,
            "description": {"source": "synthetic patches (anny bodies, labelled template) + synthetic non-skin images",
                            "protocol": "framed on a region (FIELD_MM), central-window majority label", "seed": seed, "bodies": n_bodies, "views": views, "images": len(images),
                            "size": size,
                            "per_class": dict(zip(MACRO, np.bincount(labels_a, minlength=len(MACRO)).tolist())),
                            "sha256": data_hash(images, labels_a)}}


def cached_macro_dataset(cache: Path, n_bodies: int, views: int, size: int, seed: int,
                         progress: Progress | None = None) -> dict:
    """render_macro_dataset stored as cache/macro_<seed>_<bodies>x<views>_<size>.npz and reused."""
    from bodymap.models.training import cached_dataset

    return cached_dataset(cache, "macro", n_bodies, views, size, seed, render_macro_dataset, progress)


# ---------------------------------------------------------------- training and scores

def train_macro(out: str | Path, *, bodies: int = 80, views: int = 60, size: int = 64, seed: int = 1,
                steps: int = 2000, batch: int = 16, lr: float = 1e-3, device: str | None = None,
                threads: int = 1, held_out: dict | None = None, minutes: float | None = None,
                progress: Progress | None = None,
                command: str = "", data: dict | None = None, resume: str | Path | None = None) -> Path:
    """Train the EfficientNet-B2 from random weights; write out/macro_anatomy.pt and
    out/macro_train.log. Data: render_macro_dataset(bodies, views, RENDER_SIZE, seed) cached
    under out/cache, resized to the network input ``size``. ``steps`` AdamW steps of ``batch`` patches (one-cycle learning rate peaking at
    ``lr``, or over ``minutes`` when that ends first; label smoothing 0.05, flips and colour jitter), then scores on held-out bodies
    (HELD_OUT) stored in the checkpoint; ``held_out=False`` skips them. ``resume``: start from
    that checkpoint's weights (its record is kept under "resumed_from"). ``data`` (a dict like
    render_macro_dataset's) trains on given patches instead. Returns the checkpoint path."""
    import torch

    from bodymap.models.checkpoint import pick_device, save_checkpoint
    from bodymap.models.training import Schedule, Shuffled, TrainingLog, fit, resume_weights, training_record

    settings = {"bodies": bodies, "views": views, "size": size, "seed": seed, "steps": steps, "batch": batch,
                "lr": lr, "minutes": minutes, "held_out": held_out, "input_size": size}
    torch.set_num_threads(max(1, min(2, threads)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s, f: None)
    with TrainingLog(out / "macro_train.log", command or "train_macro") as log:
        if data is None:
            data = cached_macro_dataset(out / "cache", bodies, views, RENDER_SIZE, seed,
                                        progress=lambda s, f: say(s, 0.1 * f))
        data = dict(data, images=fit_size(data["images"], size))
        log.note(f"data: {json.dumps(data['description'])}")
        dev = pick_device(device)
        torch.manual_seed(seed)
        model = build_model()
        n_zeroed = stable_init(model)
        log.note(f"stable init: classifier and the last BatchNorm of {n_zeroed} residual blocks zeroed")
        prev = resume_weights(model, resume, TASK, log.note)
        model = model.to(dev, memory_format=torch.channels_last)  # about 20% faster depthwise convolutions on a CPU
        images, labels = data["images"], data["labels"]
        n = len(images)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        batches = Shuffled(n, batch, rng)

        def next_batch(step):
            idx = batches.next()
            x = to_tensor(images[idx], NORMALISATION)
            y = torch.as_tensor(labels[idx].astype(np.int64))
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            x = x * (1 + 0.2 * (torch.rand(len(idx), 3, 1, 1, generator=gen) - 0.5)) \
                + 0.3 * (torch.rand(len(idx), 3, 1, 1, generator=gen) - 0.5)
            return x.to(dev, memory_format=torch.channels_last), y.to(dev)

        run = fit(model, next_batch, lambda logits, y: torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.05),
                  opt, Schedule(opt, lr, steps, minutes), steps, log=log, say=say, grad_clip=2.0,
                  score=lambda logits, y: (logits.argmax(1) == y).float().mean())
        metrics: dict = {}
        if held_out is not False:
            ho = dict(HELD_OUT, **(held_out or {}))
            say("held-out evaluation", 0.9)
            hd = cached_macro_dataset(out / "cache", ho["bodies"], ho["views"], RENDER_SIZE, ho["seed"])
            probs = predict_probs(model.eval(), fit_size(hd["images"], size), dev)
            metrics = {"held_out": dict(patch_scores(hd["labels"], probs), data=hd["description"])}
            log.note("held-out: " + summary_line(metrics["held_out"]))
        training = training_record(settings, run, dev, log, command=command, resumed_from=prev,
                                   optimiser="AdamW, one-cycle", loss="cross-entropy, label smoothing 0.05",
                                   init="stable_init (zeroed head and last BN per block)", grad_clip=2.0,
                                   augmentation="horizontal flip, colour jitter")
        path = out / "macro_anatomy.pt"
        save_checkpoint(path, task=TASK, arch=ARCH, state_dict=model.state_dict(), classes=list(MACRO),
                        input_size=size, normalisation=NORMALISATION, data=data["description"], metrics=metrics,
                        training=training, half=True)
        log.note(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {run['seconds']:.0f} s")
    say("done", 1.0)
    return path


def predict_probs(model, images: np.ndarray, device=None, batch: int = 32,
                  normalisation: dict = NORMALISATION) -> np.ndarray:
    """(N, 7) float32 softmax probabilities of a model on (N, s, s, 3) uint8 patches."""
    return predict_batched(model, images, normalisation, lambda y: y.softmax(1), batch, device,
                           np.zeros((0, len(MACRO)), np.float32)).astype(np.float32)


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision of one class against the rest: positive (m,) bool, score (m,) float.
    The area under the precision-recall step curve (sum over positives of the precision at
    their rank, divided by the number of positives); nan without positives."""
    positive = np.asarray(positive, bool)
    if not positive.any():
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="stable")
    hit = positive[order]
    prec_at = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float(prec_at[hit].mean())


def patch_scores(labels: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Held-out scores of patch predictions. labels (m,) index into MACRO; probs (m, 7).

    Returns per_class_scores (precision / sensitivity with 95% bootstrap CIs, patches resampled)
    extended with "average_precision": {class: {"ap", "ap_ci"}} and "mean_ap", "mean_ap_ci"."""
    from bodymap.models.metrics import bootstrap_ci, per_class_scores

    labels = np.asarray(labels).astype(int)
    res = per_class_scores(labels, probs.argmax(1), list(MACRO), n_boot=n_boot, seed=seed)
    k = len(MACRO)
    idx = np.arange(len(labels))

    def ap_of(j):
        return lambda ii: average_precision(labels[ii] == j, probs[ii, j])

    def mean_ap(ii):
        return float(np.nanmean([average_precision(labels[ii] == j, probs[ii, j]) for j in range(k)]))

    res["average_precision"] = {}
    for j, name in enumerate(MACRO):
        lo, hi = bootstrap_ci(ap_of(j), idx, n=n_boot, seed=seed)
        res["average_precision"][name] = {"ap": round(average_precision(labels == j, probs[:, j]), 4),
                                          "ap_ci": [round(lo, 4), round(hi, 4)]}
    res["mean_ap"] = round(mean_ap(idx), 4)
    res["mean_ap_ci"] = [round(x, 4) for x in bootstrap_ci(mean_ap, idx, n=n_boot, seed=seed)]
    return res


def summary_line(scores: dict) -> str:
    """One line: mean AP, mean precision and sensitivity with intervals."""
    return (f"mean average precision {scores['mean_ap']:.3f} [{scores['mean_ap_ci'][0]:.3f}, "
            f"{scores['mean_ap_ci'][1]:.3f}]; mean precision {scores['mean_precision']:.3f} "
            f"[{scores['mean_precision_ci'][0]:.3f}, {scores['mean_precision_ci'][1]:.3f}], mean sensitivity "
            f"{scores['mean_sensitivity']:.3f} [{scores['mean_sensitivity_ci'][0]:.3f}, "
            f"{scores['mean_sensitivity_ci'][1]:.3f}] ({scores['n']} patches)")


def score_table(scores: dict) -> str:
    """Markdown table: per class AP, precision, sensitivity with 95% intervals, support."""
    rows = ["| region | average precision [95% CI] | precision [95% CI] | sensitivity [95% CI] | patches |",
            "|---|---|---|---|---|"]
    f = lambda v, c: f"{v:.3f} [{c[0]:.3f}, {c[1]:.3f}]"  # noqa: E731
    for name in MACRO:
        a, c = scores["average_precision"][name], scores["classes"][name]
        rows.append(f"| {name} | {f(a['ap'], a['ap_ci'])} | {f(c['precision'], c['precision_ci'])} | "
                    f"{f(c['sensitivity'], c['sensitivity_ci'])} | {c['support']} |")
    rows.append(f"| **mean** | {f(scores['mean_ap'], scores['mean_ap_ci'])} | "
                f"{f(scores['mean_precision'], scores['mean_precision_ci'])} | "
                f"{f(scores['mean_sensitivity'], scores['mean_sensitivity_ci'])} | {scores['n']} |")
    return "\n".join(rows)


def evaluate_held_out(path: str | Path | None = None, *, seed: int = HELD_OUT["seed"], bodies: int = HELD_OUT["bodies"],
                      views: int = HELD_OUT["views"], cache: str | Path | None = CACHE,
                      device: str | None = None, progress: Progress | None = None, clf: "MacroClassifier | None" = None,
                      photo_labels: bool = False) -> dict:
    """Score a checkpoint (default: the shipped one, or the loaded ``clf``) on patches of
    held-out bodies (generator seed ``seed``; training uses other seeds). Returns
    patch_scores(...) plus the data description and the checkpoint path, and with
    ``photo_labels`` also "photo_label" (photo_label_scores on the same photos)."""
    clf = clf or MacroClassifier.load(path, device=device)
    if cache is None:
        hd = render_macro_dataset(bodies, views, RENDER_SIZE, seed, progress)
    else:
        hd = cached_macro_dataset(Path(cache), bodies, views, RENDER_SIZE, seed, progress)
    probs = clf.patch_probs(hd["images"])
    res = dict(patch_scores(hd["labels"], probs), data=hd["description"], checkpoint=str(clf.path))
    if photo_labels:
        res["photo_label"] = photo_label_scores(clf, hd["images"], hd["labels"])
    return res


def photo_label_scores(clf: "MacroClassifier", images: np.ndarray, labels) -> dict:
    """Share of the photos ``images`` (n, H, W, 3) uint8, true class indices ``labels`` (n,),
    whose ``classify`` label (what photo mode reports) is right, overall and per class:
    {"images", "right", "per_class": {class: share}}."""
    labels = np.asarray(labels)
    pred = np.array([clf.classes.index(clf.classify(im).label) for im in images])
    ok = pred == labels
    return {"images": int(len(ok)), "right": round(float(ok.mean()), 4),
            "per_class": {c: round(float(ok[labels == i].mean()), 3) for i, c in enumerate(clf.classes)
                          if (labels == i).any()}}


def benchmark(path: str | Path | None = None) -> dict:
    """benchmarks/models.py section: held-out scores of the shipped (or given) checkpoint (its
    patches, and the label photo mode gives each held-out photo), its size, and CPU time per
    patch and per tiled 1024x768 photo."""
    clf = MacroClassifier.load(path)
    res = evaluate_held_out(clf=clf, photo_labels=True)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, (32, clf.input_size, clf.input_size, 3)).astype(np.uint8)
    photo = rng.integers(0, 255, (768, 1024, 3)).astype(np.uint8)
    clf.patch_probs(patches[:2])
    t0 = time.perf_counter()
    clf.patch_probs(patches)
    t1 = time.perf_counter()
    pred = clf.classify(photo)
    t2 = time.perf_counter()
    ck = clf.info
    res.update({"file_mb": round(Path(clf.path).stat().st_size / 1e6, 2),
                "ms_per_patch": round(1000 * (t1 - t0) / len(patches), 1),
                "ms_per_photo_1024x768": round(1000 * (t2 - t1), 1), "tiles_per_photo": len(pred.tiles),
                "device": str(clf.device), "training": ck.get("training", {}), "train_data": ck.get("data", {})})
    return res


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``."""
    d, t = res["data"], res.get("training", {})
    return "\n".join([
        f"checkpoint {res['checkpoint']} ({res['file_mb']} MB, {stored_as(t)}), trained by: {t.get('command', '?')} "
        f"({t.get('steps', '?')} steps, {t.get('seconds', '?')} s on {t.get('device', '?')})",
        f"held-out: {d['images']} patches of {d['bodies']} bodies never used in training plus non-skin images "
        f"(seed {d['seed']}, sha256 {d['sha256'][:12]}); 95% intervals from 1000 bootstrap resamples of patches",
        "", score_table(res), "", summary_line(res),
        *([f"photo label (classify, what photo mode reports) right on {res['photo_label']['right']:.3f} of the "
           f"{res['photo_label']['images']} held-out photos; per class "
           + ", ".join(f"{k} {v:.2f}" for k, v in res["photo_label"]["per_class"].items())]
          if "photo_label" in res else []),
        f"speed ({res['device']}): {res['ms_per_patch']} ms per patch, "
        f"{res['ms_per_photo_1024x768']} ms per 1024x768 photo ({res['tiles_per_photo']} tiles)"])


# ---------------------------------------------------------------- inference

@dataclasses.dataclass
class MacroPrediction:
    """label: the photo's region (a name in classes); probs: {class: probability} for the photo;
    region_map (H, W) int index into classes, per pixel; classes: the class names;
    tiles: (t, 4) int tile boxes x0, y0, x1, y1 and tile_probs (t, 7) their probabilities."""

    label: str
    probs: dict
    region_map: np.ndarray
    classes: list
    tiles: np.ndarray
    tile_probs: np.ndarray


class MacroClassifier(LoadedModel):
    """A loaded macro-anatomy checkpoint. Use ``MacroClassifier.load(path)``."""

    TASK = TASK
    DEFAULT_PATH = DEFAULT_PATH
    NAME = "macro-anatomy classifier (EfficientNet-B2)"
    TRAINED_ON = "synthetic renders of bodies (no real photos)"

    @classmethod
    def build(cls, checkpoint: dict):
        return build_model(checkpoint["arch"])

    def held_out_line(self) -> str:
        ho = (self.info.get("metrics") or {}).get("held_out") or {}
        return f"mean average precision {ho['mean_ap']:.2f} on held-out synthetic patches" if "mean_ap" in ho else ""

    def patch_probs(self, patches: np.ndarray) -> np.ndarray:
        """(N, 7) probabilities for patches (N, s, s, 3) uint8 (resized to the input size)."""
        return predict_probs(self.model, fit_size(np.asarray(patches), self.input_size), self.device,
                             normalisation=self.normalisation)

    def classify(self, image, tile_fraction: float = 0.4, overlap: float = 0.5, name: str = "image") -> MacroPrediction:
        """Classify a photograph (H, W, 3) uint8 by tiling it.

        Square tiles of side tile_fraction * min(H, W) (stride (1 - overlap) of that), plus the
        whole image resized as one more tile, each resized to the input size and classified.
        region_map: per pixel, the class with the highest mean probability over the tiles that
        cover it. label / probs: the whole image's probabilities, the view the network was
        trained and scored on (photos framed on one region); only when that view is more likely
        "other" than body while some tiles are body (a limb photographed against a wall), the
        mean of those body tiles.
        """
        from PIL import Image

        rgb = as_rgb(image, name)
        H, W = rgb.shape[:2]
        side = max(16, int(round(tile_fraction * min(H, W))))
        stride = max(1, int(round(side * (1 - overlap))))
        ys = list(range(0, max(H - side, 0) + 1, stride))
        xs = list(range(0, max(W - side, 0) + 1, stride))
        if ys[-1] != H - side:
            ys.append(max(H - side, 0))
        if xs[-1] != W - side:
            xs.append(max(W - side, 0))
        boxes = [(x, y, x + side, y + side) for y in ys for x in xs] + [(0, 0, W, H)]
        s = self.input_size
        pim = Image.fromarray(rgb)
        patches = np.stack([np.asarray(pim.crop(b).resize((s, s), Image.BILINEAR)) for b in boxes])
        tp = self.patch_probs(patches)
        acc = np.zeros((H, W, len(self.classes)), np.float32)
        cnt = np.zeros((H, W, 1), np.float32)
        for (x0, y0, x1, y1), p in zip(boxes[:-1], tp[:-1]):
            acc[y0:y1, x0:x1] += p
            cnt[y0:y1, x0:x1] += 1
        region = (acc / np.maximum(cnt, 1)).argmax(2)
        other = self.classes.index("other") if "other" in self.classes else None
        body = tp[:, other] < 0.5 if other is not None else np.ones(len(tp), bool)
        # the whole view, not the tiles' mean: a tile of 0.4 of a face or a foot is a patch of
        # plain skin, which the network takes for trunk (that mean called 0.22 of development
        # head photos head, the whole view 0.64; docs/benchmarks.md, "Macro-anatomy")
        mean = tp[-1] if body[-1] or not body.any() else tp[body].mean(0)
        mean = mean / mean.sum()
        probs = {c: float(mean[i]) for i, c in enumerate(self.classes)}
        return MacroPrediction(self.classes[int(mean.argmax())], probs, region, list(self.classes),
                               np.array(boxes, np.int64), tp)
