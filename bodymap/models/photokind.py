"""What kind of photograph is this? Dermoscopy, a clinical close-up of a lesion, a body region,
or not skin at all. Photo mode asks this first and only then chooses what to run
(bodymap.photo): the diagnosis model was trained on dermoscopy, the macro-anatomy classifier
on photographs of body regions, the ear models on heads.

    clf = PhotoKindClassifier.load()        # bodymap/data/photo_kind.pt
    k = clf.classify(photo)                 # PhotoKind(label, probs)

The network: timm resnet10t at a quarter width (channels 16-32-64-128, about 0.3 M
parameters, random init) on the whole photo squeezed to 96 x 96 px.

Training data (``train_photokind``, ``bodymap train photokind``):

- dermoscopy: the training parts (diagdata.split_rows) of HAM10000 and of ISIC 2017 (``SPLITS``:
  half of its images by image id; the set has no lesion ids), a dermoscope circle drawn on
  some of them (``dermoscope_vignette``);
- clinical: the training patients of PAD-UFES-20 (smartphone close-ups of lesions) and
  synthetic lesion crops (diagdata.synthetic_crops: painted lesions on skin);
- body: photograph-like renders of synthetic bodies (earfind.render_head_dataset: heads,
  faces, ears, arms, hands, trunks, legs, feet at 60-900 mm across) on synthetic or real
  backgrounds, their skin given the fine texture of real skin photos;
- other: synthetic non-skin images (synthviews.background: cloth, walls, gradients, shapes).

Classes are drawn equally often; the images get the diagnosis model's strong augmentation
(rotation, zoom, colour and light). Trained on HAM10000 alone (stop 22) the model learnt that
dermoscopy means a lesion filling a pink frame and called 0.76 of ISIC 2017 (lesions small in a
wider field, dermoscope circles, rulers, stickers) clinical or body: one dermoscope's look is
not dermoscopy. Hence the second dermoscopy set and the circles; ISIC 2017's other half is
scored by ``benchmark`` (development data since: it was the set that showed the failure).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.models.base import LoadedModel
from bodymap.models.preprocess import as_rgb, fit_size, to_tensor

TASK = "photokind"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "photo_kind.pt"
CLASSES = ["dermoscopy", "clinical", "body", "other"]
DESCRIPTIONS = {"dermoscopy": "a dermoscopy image of a lesion", "clinical": "a clinical close-up of a lesion",
                "body": "a photograph of a body region", "other": "not skin"}
ARCH = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}}
NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SIZE = 96
LOAD = 112  # training images are stored at this side; the augmentation samples SIZE windows
# synthetic head photographs (earfind.render_head_dataset) for the "body" class: training renders
# at 128 px (seed 1, as the first ear locator's), held-out renders of seed 9101 at 256 px
HEADS_SIZE = 128
HELD_OUT_HEADS = {"seed": 9101, "bodies": 24, "views": 12, "size": 256}
#: Splits of the real sets for this model where they differ from diagdata.STANDARD_SPLITS
#: (fractions train / dev / test, seed): ISIC 2017 is all test data for the diagnosis and ear
#: models, but photo kind trains on half of it (split by image id).
SPLITS = {"isic2017": ((0.5, 0.0, 0.5), 0)}
Progress = Callable[[str, float], None]


def build_model(arch: dict = ARCH, n_classes: int = len(CLASSES)):
    """The classifier (random weights; nothing is downloaded)."""
    import timm

    return timm.create_model(arch["backbone"], pretrained=False, num_classes=n_classes,
                             **arch.get("backbone_kwargs", {}))


@dataclasses.dataclass
class PhotoKind:
    """label: one of CLASSES; probs: {class: probability}; description: the label in words."""

    label: str
    probs: dict

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.label, self.label)

    def to_dict(self) -> dict:
        return {"label": self.label, "description": self.description,
                "probs": {k: round(float(v), 4) for k, v in self.probs.items()}}


class PhotoKindClassifier(LoadedModel):
    """A loaded photo-kind checkpoint. Use ``PhotoKindClassifier.load(path)``."""

    TASK = TASK
    DEFAULT_PATH = DEFAULT_PATH
    NAME = "photo kind (resnet10t, quarter width)"

    @classmethod
    def build(cls, checkpoint: dict):
        return build_model(checkpoint["arch"], len(checkpoint["classes"]))

    def held_out_line(self) -> str:
        ho = (self.info.get("metrics") or {}).get("held_out") or {}
        if "dermoscopy_vs_clinical" in ho:
            return f"dermoscopy vs clinical right on {ho['dermoscopy_vs_clinical']['accuracy']:.3f} of held-out photos"
        return ""

    def probs(self, images: np.ndarray, tta: bool = True) -> np.ndarray:
        """(n, k) probabilities of photos (n, s, s, 3) uint8 already squeezed to a square (any s),
        averaged over the photo and its mirror image when ``tta``."""
        import torch

        x = to_tensor(fit_size(np.asarray(images), self.input_size), self.normalisation)  # copies a read-only array
        out = []
        with torch.no_grad():
            for b0 in range(0, len(x), 128):
                xb = x[b0:b0 + 128].to(self.device)
                p = torch.softmax(self.model(xb), 1)
                if tta:
                    p = (p + torch.softmax(self.model(xb.flip(3)), 1)) / 2
                out.append(p.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def classify(self, image, name: str = "image") -> PhotoKind:
        """The kind of one photo (H, W, 3) uint8 (the whole photo, squeezed to a square)."""
        from PIL import Image

        rgb = as_rgb(image, name)
        sq = np.asarray(Image.fromarray(rgb).resize((self.input_size, self.input_size), Image.BILINEAR,
                                                    reducing_gap=2.0))
        p = self.probs(sq[None])[0]
        return PhotoKind(self.classes[int(p.argmax())], {c: float(v) for c, v in zip(self.classes, p)})

# ---------------------------------------------------------------- data and training

def kind_rows(csv_path, part: str) -> list[dict]:
    """diagdata.split_rows under this model's split of the set (``SPLITS``)."""
    from bodymap.models.diagdata import split_rows

    fractions, seed = SPLITS.get(Path(csv_path).parent.name, (None, None))
    return split_rows(csv_path, part, fractions, seed)


def dermoscope_vignette(u8, share: float, gen):
    """Draw a dermoscope's circular field on ``share`` of a uint8 batch (B, H, W, 3) in place:
    black outside a soft-edged circle of radius 0.42-0.75 of the side, its centre shifted up to
    8 % (many dermoscopes show the round edge of their lens; HAM10000's crops never do).
    Returns the batch."""
    import torch

    B, H, W = u8.shape[:3]
    pick = torch.rand(B, generator=gen) < share
    if not pick.any():
        return u8
    n = int(pick.sum())
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, H), torch.linspace(-0.5, 0.5, W), indexing="ij")
    r = 0.42 + 0.33 * torch.rand(n, 1, 1, generator=gen)
    c = 0.08 * (2 * torch.rand(n, 2, 1, 1, generator=gen) - 1)
    d = torch.sqrt((yy[None] - c[:, 0]) ** 2 + (xx[None] - c[:, 1]) ** 2)
    m = ((r - d) / 0.03).clamp(0, 1)  # a 3 %-of-side soft edge
    u8[pick] = (u8[pick].float() * m[..., None]).round().to(torch.uint8)
    return u8



def kind_dataset(derm_paths: list, clinical_paths: list, heads: dict, n_synth_clinical: int, n_other: int,
                 seed: int, texture_paths: list | None = None, progress: Progress | None = None,
                 derm_sets: list | None = None) -> dict:
    """Training images (n, LOAD, LOAD, 3) uint8 and labels (n,) into CLASSES: real dermoscopy and
    clinical photos (files, squeezed to squares), synthetic lesion crops (clinical), renders of
    bodies composed on backgrounds (body; earfind.compose, real textures from
    ``texture_paths``) and synthetic non-skin images (other)."""
    from bodymap.models.diagdata import data_hash, load_images, synthetic_crops
    from bodymap.models.earfind import Pools, compose
    from bodymap.models.synthviews import background, finish

    say = progress or (lambda s, f: None)
    rng = np.random.default_rng(seed)
    say("reading photos", 0.0)
    derm = load_images(derm_paths, LOAD)
    clin = load_images(clinical_paths, LOAD)
    pools = Pools(load_images(texture_paths, 160) if texture_paths else None, heads["images"].shape[1], seed=seed)
    say("painting crops", 0.3)
    syn = synthetic_crops(n_synth_clinical, seed, LOAD)["images"] if n_synth_clinical else np.zeros((0, LOAD, LOAD, 3), np.uint8)
    say("composing renders", 0.6)
    from PIL import Image

    body = np.stack([np.asarray(Image.fromarray(compose(im, b, rng, pools)).resize((LOAD, LOAD), Image.BILINEAR))
                     for im, b in zip(heads["images"], heads["body"])])
    other = np.stack([finish(background(LOAD, LOAD, rng).astype(np.float32), rng) for _ in range(n_other)])
    images = np.concatenate([derm, clin, syn, body, other])
    labels = np.concatenate([np.full(len(derm), 0), np.full(len(clin) + len(syn), 1), np.full(len(body), 2),
                             np.full(len(other), 3)]).astype(np.int64)
    # one source per dermoscopy set (derm_sets: each path's set name), so that training draws
    # each dermoscope's images equally often however many each set has
    derm_src = [f"dermoscopy photo ({s})" for s in derm_sets] if derm_sets else ["dermoscopy photo"] * len(derm)
    source = (derm_src + ["clinical photo"] * len(clin) + ["synthetic crop"] * len(syn)
              + ["render"] * len(body) + ["synthetic non-skin"] * len(other))
    desc = {"dermoscopy": len(derm), "clinical_photos": len(clin), "clinical_synthetic": len(syn),
            "body_renders": len(body), "other_synthetic": len(other), "size": LOAD, "seed": seed,
            "sha256": data_hash(images, labels, source)}
    return {"images": images, "labels": labels, "source": np.array(source), "description": desc}


def train_photokind(out: str | Path, *, dermoscopy: list, clinical: list, heads_cache: str | Path,
                    bodies: int = 160, views: int = 16, n_synth_clinical: int = 1500, n_other: int = 1500,
                    steps: int = 3000, batch: int = 64, lr: float = 2e-3, seed: int = 3, threads: int = 1,
                    device: str | None = None, progress: Progress | None = None, command: str = "") -> Path:
    """Train the photo-kind classifier from random weights; write out/photo_kind.pt and
    out/photokind_train.log. ``dermoscopy`` / ``clinical``: CSVs of real sets whose "train"
    parts are used (``kind_rows``: diagdata.split_rows, ISIC 2017 split by ``SPLITS``); their
    "dev" parts give the scores stored in the checkpoint; the test parts are left to
    ``benchmark``. Renders come from earfind's cache (``heads_cache``: the ear
    locator's training renders, ``bodies`` x ``views``, seed 1)."""
    import torch
    import torch.nn.functional as F

    from bodymap.models.checkpoint import pick_device, save_checkpoint
    from bodymap.models.diagnosis import strong_augment
    from bodymap.models.earfind import cached_head_dataset

    from bodymap.models.training import TorchOneCycle, TrainingLog, fit, training_record

    settings = {"dermoscopy": [str(c) for c in dermoscopy], "clinical": [str(c) for c in clinical],
                "bodies": bodies, "views": views, "n_synth_clinical": n_synth_clinical, "n_other": n_other,
                "steps": steps, "batch": batch, "lr": lr, "seed": seed}
    torch.set_num_threads(max(1, threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s, f: None)
    with TrainingLog(out / "photokind_train.log", command or "train_photokind") as log:
        rows_d = [{**r, "set": Path(c).parent.name} for c in dermoscopy for r in kind_rows(c, "train")]
        rows_c = [r for c in clinical for r in kind_rows(c, "train")]
        heads = cached_head_dataset(heads_cache, bodies, views, HEADS_SIZE, 1)
        data = kind_dataset([r["path"] for r in rows_d], [r["path"] for r in rows_c], heads, n_synth_clinical,
                            n_other, seed, texture_paths=[r["path"] for r in rows_d[:300] + rows_c], progress=say,
                            derm_sets=[r["set"] for r in rows_d])
        data["description"].update({"dermoscopy_csvs": [str(c) for c in dermoscopy],
                                    "clinical_csvs": [str(c) for c in clinical], "part": "train",
                                    "renders": heads["description"]})
        log.note(f"data: {json.dumps(data['description'])}")
        dev = pick_device(device)
        torch.manual_seed(seed)
        model = build_model().to(dev)
        imgs = torch.from_numpy(data["images"])
        labels = torch.from_numpy(data["labels"])
        k = len(CLASSES)
        # classes equally often; within "clinical", real photos as often as synthetic crops, within
        # "dermoscopy" each data set as often as the others
        src = data["source"]
        w = np.zeros(len(labels))
        for c in range(k):
            m = data["labels"] == c
            groups = np.unique(src[m])
            for g in groups:
                mm = m & (src == g)
                w[mm] = 1.0 / k / len(groups) / mm.sum()
        weight = torch.from_numpy(w)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.02)
        gen = torch.Generator().manual_seed(seed)

        def next_batch(step):
            idx = torch.multinomial(weight, batch, replacement=True, generator=gen)
            u8 = imgs[idx].clone()
            derm = labels[idx] == 0
            u8[derm] = dermoscope_vignette(u8[derm], 0.35, gen)
            return strong_augment(u8, SIZE, gen, NORMALISATION).to(dev), labels[idx].to(dev)

        run = fit(model, next_batch, lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.05), opt,
                  TorchOneCycle(opt, lr, steps, pct_start=0.15), steps, log=log, say=say, log_every=50, span=(0.2, 0.7))
        model.eval()
        clf = PhotoKindClassifier({"classes": CLASSES, "input_size": SIZE, "normalisation": NORMALISATION}, dev, model)
        dev_sets = {"dermoscopy": [r["path"] for c in dermoscopy for r in kind_rows(c, "dev")],
                    "clinical": [r["path"] for c in clinical for r in kind_rows(c, "dev")]}
        metrics = {"dev": score_photos(clf, dev_sets)}
        log.note("dev: " + json.dumps(metrics["dev"]))
        training = training_record(settings, run, dev, log, command=command, optimiser="AdamW wd 0.02, one-cycle",
                                   loss="cross-entropy, label smoothing 0.05", sampling="classes equally often; within a class, each source (data set) equally often",
                                   augmentation="dermoscope_vignette on 0.35 of dermoscopy images, "
                                                "diagnosis.strong_augment")
        path = out / "photo_kind.pt"
        save_checkpoint(path, task=TASK, arch=ARCH, state_dict=model.state_dict(), classes=list(CLASSES),
                        input_size=SIZE, normalisation=NORMALISATION,
                        data={**data["description"],
                              "name": "training parts of " + ", ".join(sorted({Path(c).parent.name for c in
                                                                                dermoscopy + clinical}))
                                      + "; synthetic lesion crops, body renders, non-skin images",
                              "splits": {k: v[0] for k, v in SPLITS.items()},
                              "licence": "HAM10000 CC BY-NC 4.0 (non-commercial), PAD-UFES-20 CC BY 4.0, "
                                         "ISIC 2017 CC-0; synthetic: ours"},
                        metrics=metrics, training=training)
        log.note(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) after {run['seconds']:.0f} s")
    return path


def score_photos(clf: PhotoKindClassifier, sets: dict, n_boot: int = 1000) -> dict:
    """Scores on real photos: sets = {"dermoscopy": [files], "clinical": [files]} (each may be
    empty). Per set: the share called each kind; "dermoscopy_vs_clinical": share told apart
    right (a dermoscopy image called dermoscopy, a clinical one called anything else), with a
    95% bootstrap interval."""
    from bodymap.models.diagdata import load_images
    from bodymap.models.metrics import bootstrap_ci

    out, right = {}, []
    for truth, paths in sets.items():
        if not paths:
            continue
        labels = []
        for i in range(0, len(paths), 128):
            p = clf.probs(load_images(paths[i:i + 128], 128))
            labels += [clf.classes[j] for j in p.argmax(1)]
        labels = np.array(labels)
        out[truth] = {"images": len(labels), "called": {c: int((labels == c).sum()) for c in clf.classes}}
        ok = (labels == "dermoscopy") == (truth == "dermoscopy")
        out[truth]["right"] = round(float(ok.mean()), 4)
        right.append(ok)
    if right:
        r = np.concatenate(right).astype(float)
        lo, hi = bootstrap_ci(np.mean, r, n=n_boot)
        out["dermoscopy_vs_clinical"] = {"accuracy": round(float(r.mean()), 4), "accuracy_ci": [round(lo, 4), round(hi, 4)],
                                         "images": int(len(r))}
    return out


# ---------------------------------------------------------------- benchmark

EXTERNAL = Path(__file__).resolve().parents[3] / "shared" / "external"


def benchmark(external: str | Path | None = None, cache: str | Path | None = None) -> dict:
    """Figures for benchmarks/models.py: the shipped classifier on photos it never saw:
    HAM10000's and ISIC 2017's test parts (dermoscopy), PAD-UFES-20's test patients
    (clinical): the share told apart right (dermoscopy vs not), per set and overall, with 95%
    intervals; and on held-out synthetic renders (HELD_OUT_HEADS, body) and non-skin images
    (other, seed 9301): the share called right."""
    from bodymap.models.earfind import _compose_fixed, cached_head_dataset
    from bodymap.models.synthviews import background, finish

    ext = Path(external) if external else EXTERNAL
    clf = PhotoKindClassifier.load()
    sets = {"dermoscopy": [], "clinical": []}
    per = {}
    for name, part, truth in (("ham10000", "test", "dermoscopy"), ("isic2017", "test", "dermoscopy"),
                              ("pad_ufes20", "test", "clinical")):
        f = ext / name / "metadata.csv"
        if f.exists():
            paths = [r["path"] for r in kind_rows(f, part)]
            sets[truth] += paths
            per[name] = score_photos(clf, {truth: paths})[truth]
    res = {"checkpoint": str(clf.path), "card": clf.card, "sets": per, "overall": score_photos(clf, sets)}
    cache = Path(cache) if cache else Path(__file__).resolve().parents[2] / "out" / "models" / "cache"
    h = HELD_OUT_HEADS
    ho = cached_head_dataset(cache, h["bodies"], h["views"], h["size"], h["seed"])
    body = clf.probs(_compose_fixed(ho, h["seed"])).argmax(1)
    rng = np.random.default_rng(9301)
    other = clf.probs(np.stack([finish(background(128, 128, rng).astype(np.float32), rng) for _ in range(200)])).argmax(1)
    res["synthetic"] = {"body_renders": int(len(body)), "called_body": round(float((body == 2).mean()), 4),
                        "non_skin": int(len(other)), "called_other": round(float((other == 3).mean()), 4)}
    res["file_mb"] = round(Path(clf.path).stat().st_size / 1e6, 2)
    return res


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``."""
    c = res["card"]
    o = res["overall"].get("dermoscopy_vs_clinical", {})
    lines = [f"photo kind {res['checkpoint']} ({res['file_mb']} MB): trained on {c['trained_on']}"]
    if o:
        lines.append(f"dermoscopy vs clinical told apart right on {o['accuracy']:.4f} [{o['accuracy_ci'][0]:.4f}, "
                     f"{o['accuracy_ci'][1]:.4f}] of {o['images']} photos never trained on:")
    for name, s in res["sets"].items():
        lines.append(f"   {name}: {s['right']:.4f} right of {s['images']}; called {s['called']}")
    s = res["synthetic"]
    lines.append(f"held-out synthetic: {s['called_body']:.3f} of {s['body_renders']} body renders called body; "
                 f"{s['called_other']:.3f} of {s['non_skin']} non-skin images called other")
    return "\n".join(lines)
