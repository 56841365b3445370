"""Photo mode: what a photograph shows, and what BodyMap can honestly say about it.

The rules live here, so ``bodymap photo`` and the GUI's photo tab give the same answer:

1. Quality (blur, exposure, size): advice to retake, never a refusal.
2. Kind (bodymap.models.photokind): dermoscopy, a clinical close-up of a lesion, a body region,
   or not skin. Not skin: nothing more is run.
3. Site: the user's when given; else, for a photo of a body region, the macro-anatomy
   classifier's region. A close-up (dermoscopy or clinical) does not show where on the body it
   is: its site stays unknown unless the user gives it. The ear models never set the site.
4. Ears (clinical close-ups and body regions): the ear locator searches the photo first; only
   a found ear is segmented into the 12 regions (bodymap.models.earfind.find_and_segment).
   On a photo without an ear there is no ear pixel. A clinical close-up whose site the user
   gave outside the head and neck is not searched (``searches_ears``): a close-up of the
   back shows no ear, and there the locator took raised lesions for ears.
5. Diagnosis (dermoscopy and clinical close-ups): the whole photo; on a body-region photo
   the user picks a lesion (``diagnose_at``). The diagnosis model was trained on dermoscopy:
   a clinical photo, or an image whose features lie far from the training images', is said to
   be out of distribution instead of getting a confident label.
6. Every model used is named with what it was trained on, its licence and held-out scores
   (``PhotoResult.models``).

    res = analyse_file("lesion.jpg", site="forearm")   # or analyse_photo(image (H, W, 3) uint8, ...)
    print("\\n".join(res.summary()))                    # or res.to_dict() for JSON

``analyse_file`` is the one entry point of `bodymap photo` and the GUI's photo tab: the same
reader (``read_photo``), the same model loader (``load_model``, cached), the same rules.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Callable

import numpy as np

# macro-anatomy classes -> the taxonomy site a region photo is given
MACRO_SITE = {"head": "head_neck/head", "arm": "upper_extremity", "hand": "upper_extremity/hand",
              "leg": "lower_extremity", "foot": "lower_extremity/foot", "trunk": "trunk"}
CROP_PX = 128  # side of the crop diagnosed around a clicked point of a body-region photo
EAR_KINDS = ("clinical", "body")  # photo kinds searched for ears
EAR_SITES = "head_neck"  # a close-up of a site under this taxonomy code may show an ear
DIAGNOSIS_KINDS = ("dermoscopy", "clinical")  # photo kinds diagnosed whole

Progress = Callable[[str, float], None]


class ModelUnavailable(Exception):
    """A model cannot be used here; str() says why."""


class _NoSegmenter(Exception):
    """The ear-region model could not be loaded (photo mode tells it apart from a failed ear search)."""


# kind -> (module, class or function); classes are loaded with .load()
MODELS = {
    "quality": ("bodymap.models.quality", "check_photo"),
    "kind": ("bodymap.models.photokind", "PhotoKindClassifier"),
    "macro": ("bodymap.models.macro", "MacroClassifier"),
    "earfind": ("bodymap.models.earfind", "EarLocator"),
    "earseg": ("bodymap.models.earseg", "EarSegmenter"),
    "diagnosis": ("bodymap.models.diagnosis", "DiagnosisModel"),
}
_cache: dict = {}
_lock = threading.Lock()


def clear_models() -> None:
    """Forget the loaded models (tests swap fakes in; a new checkpoint is read on next use)."""
    with _lock:
        _cache.clear()


def model_module(kind: str):
    """The module of a kind (for its helpers: earseg.overlay, diagnosis.lesion_crop).
    ModelUnavailable when it cannot be imported."""
    import importlib

    try:
        return importlib.import_module(MODELS[kind][0])
    except ImportError as e:
        raise ModelUnavailable(f"model not available ({e})") from None


def load_model(kind: str):
    """The shipped model of a kind (cached; for "quality" the check_photo function). Imports
    torch on first use. Raises ModelUnavailable (with the reason) when the module or its
    checkpoint cannot be loaded."""
    import importlib

    with _lock:
        if kind in _cache:
            return _cache[kind]
        mod_name, attr = MODELS[kind]
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ModelUnavailable(f"model not available ({mod_name} is not installed: {e})") from None
        if kind != "quality":
            try:
                obj = obj.load()
            except Exception as e:  # CheckpointError, a missing file, a foreign checkpoint
                raise ModelUnavailable(f"model not available ({type(e).__name__}: {e})") from None
        _cache[kind] = obj
        return obj


@dataclasses.dataclass
class PhotoResult:
    """What photo mode found in one photograph (see the module docstring for the rules).

    kind: PhotoKind or None (model unavailable); site: taxonomy code or None; site_source:
    "user", "macro classifier" or None; macro: MacroPrediction or None; ears: earfind.PhotoEars
    or None (not searched); diagnosis: Diagnosis of the whole photo (close-ups) or None; ood: the
    diagnosis is out of distribution (not to be trusted); notes: sentences for the user;
    models: {role: card} of every model that ran; messages: {role: why it could not run}."""

    name: str
    size: tuple[int, int]
    quality: object = None
    kind: object = None
    site: str | None = None
    site_source: str | None = None
    macro: object = None
    ears: object = None
    diagnosis: object = None
    ood: bool = False
    notes: list = dataclasses.field(default_factory=list)
    models: dict = dataclasses.field(default_factory=dict)
    messages: dict = dataclasses.field(default_factory=dict)

    @property
    def region(self) -> str | None:
        """The site in words ("lower extremity"), None when unknown."""
        if not self.site:
            return None
        from bodymap import taxonomy as tx

        return tx.SITES[tx.SITE_INDEX[self.site]].name if self.site in tx.SITE_INDEX else self.site

    def ear_regions(self) -> list[str]:
        """Names of the ear regions shown (empty without a found ear)."""
        if self.ears is None or not self.ears.found:
            return []
        from bodymap.taxonomy import EAR_REGIONS

        return [EAR_REGIONS[i] for i in np.unique(self.ears.labels) if 0 < i < len(EAR_REGIONS)]

    def to_dict(self) -> dict:
        """JSON-ready record (no arrays)."""
        d: dict = {"name": self.name, "size": list(self.size),
                   "quality": self.quality.to_dict() if self.quality is not None else None,
                   "kind": self.kind.to_dict() if self.kind is not None else None,
                   "site": self.site, "region": self.region, "site_source": self.site_source}
        if self.macro is not None:
            d["macro"] = {"label": self.macro.label, "probs": {k: round(float(v), 4) for k, v in self.macro.probs.items()}}
        if self.ears is not None:
            d["ears"] = {"found": bool(self.ears.found), "count": int(len(self.ears.boxes)),
                         "boxes": self.ears.boxes.tolist(), "regions": self.ear_regions(),
                         "peak": round(float(self.ears.search.peak), 4)}
        if self.diagnosis is not None:
            d["diagnosis"] = {**self.diagnosis.to_dict(), "out_of_distribution": bool(self.ood)}
        d["notes"] = list(self.notes)
        d["models"] = self.models
        d["unavailable"] = dict(self.messages)
        return d

    def summary(self) -> list[str]:
        """Lines for a terminal: kind, quality, site, ears, diagnosis, notes, models."""
        from bodymap.models.diagnosis import CLASS_NAMES

        out = []
        k = self.kind
        kind = f"{k.description} ({100 * k.probs[k.label]:.0f} %)" if k is not None else \
            f"kind unknown ({self.messages.get('kind', 'not checked')})"
        q = self.quality
        qual = "quality ok" if q is not None and q.ok else ("; ".join(q.problems) if q is not None else "quality not checked")
        out.append(f"{self.name}: {kind}; {qual}")
        if k is None or k.label != "other":
            where = {"user": "given", "macro classifier": "macro-anatomy classifier"}.get(self.site_source or "", "")
            out.append(f"  site: {self.region} ({where})" if self.site else "  site: unknown")
            if self.macro is not None:
                top = sorted(self.macro.probs.items(), key=lambda t: -t[1])[:3]
                out.append("  region model: " + ", ".join(f"{n} {100 * v:.0f} %" for n, v in top))
            if self.ears is not None:
                out.append(f"  ears: {len(self.ears.boxes)} found ({', '.join(self.ear_regions())})" if self.ears.found
                           else "  ears: none found")
            if self.diagnosis is not None:
                dg = self.diagnosis
                top = sorted(dg.probs.items(), key=lambda t: -t[1])[:3]
                lab = f"{dg.label} ({CLASS_NAMES.get(dg.label, dg.label)})"
                probs = ", ".join(f"{n} {v:.2f}" for n, v in top)
                if self.ood:
                    out.append(f"  diagnosis: out of distribution, no confident label (model's view: {probs})")
                else:
                    out.append(f"  diagnosis: {lab}; {probs}")
                    if dg.melanoma_check:
                        out.append(f"  melanoma check: {dg.melanoma_check}")
        for n in self.notes:
            out.append(f"  note: {n}")
        for role, card in self.models.items():
            bits = [card.get("name", role), f"trained on {card.get('trained_on', '?')}"]
            if card.get("licence"):
                bits.append(f"licence {card['licence']}")
            if card.get("held_out"):
                bits.append(f"held-out: {card['held_out']}")
            out.append(f"  model ({role}): " + "; ".join(bits))
        for role, why in self.messages.items():
            out.append(f"  {role}: {why}")
        return out


def _card(model, role: str) -> dict:
    """A model's card (name, training data, licence, held-out scores); a minimal one for models
    without a card (fakes in tests, older checkpoints)."""
    c = getattr(model, "card", None)
    if isinstance(c, dict):
        return c
    info = getattr(model, "info", None) or getattr(model, "checkpoint", None) or {}
    data = info.get("data", {}) if isinstance(info, dict) else {}
    return {"name": role, "trained_on": data.get("name") or data.get("source") or data.get("kind", "?"),
            "licence": data.get("licence"), "held_out": ""}


def _site_code(site: str | None) -> str | None:
    """A user's site (taxonomy code or name, data-set name) as a taxonomy code; ValueError
    naming it when unrecognised."""
    if site is None or not str(site).strip():
        return None
    from bodymap.models.diagdata import site_code

    code = site_code(site)
    if code is None:
        raise ValueError(f"site {site!r}: not a known anatomic site (give a taxonomy code such as "
                         "'upper_extremity/forearm' or a name such as 'forearm', 'back', 'ear')")
    return code


def searches_ears(kind: str | None, user_site: str | None) -> bool:
    """Whether photo mode searches a photo of ``kind`` (photokind label, None when unknown) for
    ears, given the user's site (taxonomy code or None). Clinical close-ups and body-region
    photos are searched, dermoscopy and non-skin images are not; a clinical close-up whose site
    the user gave outside the head and neck is not either: it shows a patch of that site, not an
    ear. (A body-region photo is searched whatever its site: a photo of the upper back or chest
    can hold the head. The macro classifier's region never stops a search: on real photos it is
    not sure enough to lose an ear by.)"""
    if kind not in (None,) + EAR_KINDS:
        return False
    return not (kind == "clinical" and user_site and not user_site.startswith(EAR_SITES))


def analyse_photo(image: np.ndarray, site: str | None = None, models: Callable | None = None,
                  progress: Progress | None = None, name: str = "photo") -> PhotoResult:
    """Analyse one photograph (H, W, 3) uint8 by the rules of the module docstring.

    site: the user's site for the photo (taxonomy code or name; None: unknown). models: a
    callable kind -> loaded model (default ``load_model``; the GUI passes its own, tests pass
    fakes); a model that raises is reported in ``messages`` and the rest still runs."""
    get = models or load_model
    say = progress or (lambda s, f: None)
    img = np.asarray(image)
    res = PhotoResult(name=name, size=(int(img.shape[0]), int(img.shape[1])))

    def run(role: str, fn):
        try:
            m = get(role)
        except Exception as e:  # ModelUnavailable, or any loader failure: say so, go on
            res.messages[role] = str(e) if "not available" in str(e) else f"model not available ({e})"
            return None
        out = fn(m)
        if role != "quality":
            res.models[role] = _card(m, role)
        return out

    say("photo quality", 0.05)
    res.quality = run("quality", lambda f: f(img))
    say("photo kind", 0.15)
    res.kind = run("kind", lambda m: m.classify(img, name))
    kind = res.kind.label if res.kind is not None else None
    if kind == "other":
        res.notes.append("this does not look like skin: no region, ear or diagnosis")
        say("done", 1.0)
        return res
    user_site = _site_code(site)
    if user_site:
        res.site, res.site_source = user_site, "user"
    if kind in (None, "body"):
        say("macro region", 0.3)
        res.macro = run("macro", lambda m: m.classify(img))
        if res.macro is not None and not user_site and res.macro.label in MACRO_SITE:
            res.site, res.site_source = MACRO_SITE[res.macro.label], "macro classifier"
    elif not user_site:
        res.notes.append("a close-up does not show where on the body it is: give the site for a site-aware "
                         "diagnosis")
    if searches_ears(kind, user_site):
        say("ear search", 0.55)

        def ears(loc):
            try:
                seg = get("earseg")
            except Exception as e:  # the region U-Net missing: said as such, apart from a failed search
                raise _NoSegmenter(e) from e
            res.models["earseg"] = _card(seg, "earseg")
            from bodymap.models.earfind import find_and_segment

            return find_and_segment(img, loc, seg, name)

        try:
            res.ears = run("earfind", ears)
        except _NoSegmenter as e:
            res.messages["earseg"] = f"model not available ({e})"
        except Exception as e:  # a failure in the search itself is said as such, not as a missing model
            res.messages["earseg"] = f"ear search failed ({e})"
        if res.ears is not None and res.ears.found:
            if res.site_source == "macro classifier" and res.macro is not None and res.macro.label != "head":
                res.notes.append(f"an ear was found, but the region model says {res.macro.label}: the region is "
                                 "kept (the ear model never sets it alone)")
            elif res.site is None:
                res.notes.append("an ear was found; the region is not set from the ear model alone")
    elif kind == "clinical":  # searches_ears: the user's site is outside the head and neck
        res.notes.append(f"a close-up of the {res.region}: not searched for ears (only close-ups of the head and "
                         "neck, or of a site not given, are)")
    if kind in DIAGNOSIS_KINDS:
        say("diagnosis", 0.8)
        def diag(m):
            # the whole photo, squeezed to a square as the training images were
            d = m.predict([img], [res.site])[0]
            res.ood, note = _ood(m, d, kind)
            if note:
                res.notes.append(note)
            return _no_verdict_if(res.ood, d)

        res.diagnosis = run("diagnosis", diag)
    elif kind == "body":
        res.notes.append("a body-region photo: pick a lesion to diagnose it")
    say("done", 1.0)
    return res


def _ood(model, d, kind: str | None) -> tuple[bool, str]:
    """Whether a diagnosis is out of distribution, and the sentence saying why ('' if not)."""
    from bodymap.models.diagnosis import training_modality

    modality = training_modality(model)
    if modality and kind and kind != modality and modality == "dermoscopy":
        return True, (f"the diagnosis model was trained on {modality} images and this is "
                      f"{'a clinical photo' if kind in ('clinical', 'body') else kind}: out of distribution, "
                      "its answer is not a diagnosis")
    if getattr(d, "ood", False):
        return True, ("this image is unlike the diagnosis model's training images (feature distance "
                      f"{getattr(d, 'ood_score', 0) or 0:.1f} x its limit): out of distribution, no confident label")
    return False, ""


def _no_verdict_if(ood: bool, d):
    """The Diagnosis ``d`` without its melanoma verdict when photo mode calls it out of
    distribution (the operating point was validated on in-distribution images only)."""
    if ood and getattr(d, "melanoma_flag", None) is not None:
        d.melanoma_flag, d.melanoma_check = None, None
    return d


def crop_at(image: np.ndarray, x: int, y: int, size: int = CROP_PX) -> np.ndarray:
    """(size, size, 3) crop centred on pixel (x, y), shifted to stay inside the image (edge-padded
    when the image is smaller)."""
    h, w = image.shape[:2]
    x0 = int(np.clip(x - size // 2, 0, max(w - size, 0)))
    y0 = int(np.clip(y - size // 2, 0, max(h - size, 0)))
    c = image[y0:y0 + size, x0:x0 + size]
    if c.shape[:2] != (size, size):
        c = np.pad(c, ((0, size - c.shape[0]), (0, size - c.shape[1]), (0, 0)), mode="edge")
    return c


def diagnose_at(image: np.ndarray, x: int, y: int, result: PhotoResult | None = None,
                models: Callable | None = None, size: int = CROP_PX):
    """Diagnose the lesion the user picked at pixel (x, y): the (size, size) crop around it, with
    the photo's site (``result``). Returns (crop, Diagnosis, ood, note)."""
    get = models or load_model
    crop = crop_at(np.asarray(image), x, y, size)
    m = get("diagnosis")
    site = result.site if result is not None else None
    d = m.predict([crop], [site])[0]
    kind = result.kind.label if result is not None and result.kind is not None else "clinical"
    # a crop of a close-up keeps the photo's kind; a crop of a body photo is a clinical close-up
    ood, note = _ood(m, d, "clinical" if kind == "body" else kind)
    return crop, _no_verdict_if(ood, d), ood, note


def read_photo(path: str | Path) -> np.ndarray:
    """A photo file as (H, W, 3) uint8 RGB (EXIF rotation applied; bodymap.models.quality.load_photo).
    FileNotFoundError / ValueError naming the file when it is missing, not an image or too small."""
    from bodymap.models.quality import load_photo

    return load_photo(path)


def analyse_file(path: str | Path, site: str | None = None, models: Callable | None = None,
                 progress: Progress | None = None) -> PhotoResult:
    """Photo mode on one photo file: read_photo + analyse_photo (named by the file's name). The
    one entry point of `bodymap photo` and the GUI's photo tab. Errors as read_photo's."""
    return analyse_photo(read_photo(path), site, models, progress, name=Path(path).name)


def analyse_files(paths: list, sites: list | None = None, models: Callable | None = None) -> list:
    """analyse_file for each photo file: [PhotoResult or error string]. A file that cannot be
    read gives its one-line error instead of a result; an unknown site is a ValueError before
    any photo is read."""
    sites = sites or [None] * len(paths)
    for s in sites:
        _site_code(s)
    out = []
    for p, s in zip(paths, sites):
        try:
            out.append(analyse_file(p, s, models))
        except (ValueError, FileNotFoundError) as e:
            out.append(str(e))
    return out
