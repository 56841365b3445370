"""Training data for the diagnosis models.

Synthetic (``synthetic_crops``): lesion crops as ``lesion_crop`` cuts them from a scan's texture
map, painted by the same painter, the same lesion types and the same site preferences as
``bodymap synth`` (bodymap.synth.lesions: LESION_TYPES, lesion_profile). Each crop:

- class: one of the six lesion types, drawn uniformly (balanced classes);
- site: drawn from the type's relative density per body part times that part's share of the
  skin (real predilection sites: lentigines on the sun-exposed face, forearms and backs of the
  hands; angiomas, atypical nevi and keratoses on the trunk; ...), so location carries real
  information about the class;
- image: Fitzpatrick I-VI skin (mottling, pores, some hair), the lesion painted at its true size
  in mm, sampled at a texture-map resolution of 0.3-1.0 mm per texel over a field of
  max(2.5 x diameter, 8 mm) (exactly the field ``lesion_crop`` takes), light gradient, blur and
  noise, then resized to the network's input;
- look-alikes (``LOOKALIKES``): 40% of solar lentigines are painted like common nevi and 40% of
  common nevi like lentigines, 30% of seborrheic keratoses like lentigines (flat pigmented
  macules that the image cannot tell apart). Only the site can separate these, so a model
  that uses location (model B) can beat one that does not (model A) on held-out data.

Real data (``read_csv``): an ISIC-style CSV with an image path, a diagnosis and an anatomic site
column (site may be empty), and optionally a lesion or patient id (``lesion_id``,
``patient_id``) to split by: HAM10000's metadata.csv, ISIC 2017's and PAD-UFES-20's are read
as they come (images in the CSV's folder or its ``images/`` sub-folder). Dataset site names
("lower extremity", "posterior torso", "FOREARM") are mapped onto BodyMap's taxonomy codes
(``SITE_CODES``), so a model trained on one data set understands the sites of another and of
the app. Decoded images can be cached as one .npz per CSV and size (``cache``).
``group_split`` splits rows by lesion (or patient), stratified by diagnosis, never by image.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

# synth body parts -> the taxonomy code used as the site of a synthetic crop
PART_SITE = {"trunk": "trunk", "head": "head_neck/head", "neck": "head_neck/neck", "arm": "upper_extremity",
             "hand": "upper_extremity/hand", "leg": "lower_extremity", "foot": "lower_extremity/foot"}
# share of the body's skin per part (adult, rule-of-nines-like)
PART_AREA = {"trunk": 0.33, "head": 0.07, "neck": 0.03, "arm": 0.17, "hand": 0.05, "leg": 0.30, "foot": 0.05}

Progress = Callable[[str, float], None]
# texture resolution of the crops, mm per texel (3D-scan textures: 0.3-1 mm; sample_meshes 0.95)
TEXEL_MM = (0.3, 1.0)
# Look-alikes: a share of the lesions of a type is painted with another type's appearance, as in
# the clinic, where a flat pigmented macule may be a solar lentigo or a junctional nevus, and a
# flat seborrheic keratosis (which grows out of a lentigo) looks like a lentigo. The image cannot
# tell these apart; their predilection sites can (lentigines: face, forearms, backs of hands;
# nevi and keratoses: trunk). type -> (look painted, share of that type's crops)
LOOKALIKES = {"solar_lentigo": ("common_nevus", 0.4), "common_nevus": ("solar_lentigo", 0.4),
              "seborrheic_keratosis": ("solar_lentigo", 0.3)}


def crop_field_mm(diameter_mm: float) -> float:
    """Side (mm) of the square skin field a diagnosis crop shows around a lesion of this diameter."""
    return max(2.5 * float(diameter_mm), 8.0)


def lesion_crop(scan, lesion, size_px: int = 128) -> np.ndarray:
    """A square crop (size_px, size_px, 3) uint8 of the scan's texture around a lesion.

    scan: a Scan with UVs and a texture; lesion: a bodymap.lesions.Lesion (face, bary,
    diameter_mm). The crop shows a field of max(2.5 x diameter, 8 mm) on the body (the field the
    synthetic training crops show), at the texel size of the lesion's face, centred on its UV
    point, resized bilinearly. Texels beyond the texture's edge repeat the edge. Charts are not
    followed across UV seams."""
    from PIL import Image

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


def site_probabilities(lesion_type: str) -> dict[str, float]:
    """P(site | type) for synthetic crops: the synth type's density per part x the part's area."""
    from bodymap.synth.lesions import LESION_TYPES

    w = {PART_SITE[p]: LESION_TYPES[lesion_type]["site"].get(p, 0.0) * a for p, a in PART_AREA.items()}
    s = sum(w.values())
    return {k: v / s for k, v in w.items()}


def _smooth_noise(rng: np.random.Generator, n: int, scale_px: float) -> np.ndarray:
    """(n, n) smooth noise, ~unit std, features about scale_px pixels."""
    from scipy import ndimage

    g = rng.standard_normal((n + 8, n + 8))
    g = ndimage.gaussian_filter(g, min(max(scale_px, 0.5), n / 3), mode="wrap")[4:-4, 4:-4]
    return (g - g.mean()) / max(float(g.std()), 1e-6)


def paint_crop(rng: np.random.Generator, lesion_type: str, size: int, look: str | None = None) -> tuple[np.ndarray, dict]:
    """One synthetic lesion crop of a ``lesion_type`` lesion (its size range), painted with the
    appearance of ``look`` (default: its own type). Returns image (size, size, 3) uint8 sRGB and
    its record (type, look, diameter_mm, texel_mm, fitzpatrick)."""
    from PIL import Image

    from bodymap.colour import srgb_to_linear
    from bodymap.synth.lesions import LESION_TYPES, LesionSpec, lesion_profile
    from bodymap.synth.texture import FITZPATRICK_SRGB, linear_to_srgb

    lo, hi = LESION_TYPES[lesion_type]["d"]
    d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    les = LesionSpec(id=1, type=look or lesion_type, base_face=0, base_bary=(1.0, 0.0, 0.0), diameter_mm=d,
                     aspect=float(rng.uniform(0.7, 1.0)), angle=float(rng.uniform(0, np.pi)),
                     darkness=float(rng.uniform(0.8, 1.25)), seed=int(rng.integers(0, 2**31 - 1)))
    texel = float(rng.uniform(*TEXEL_MM))
    field = crop_field_mm(d)
    n = max(int(round(field / texel)), 8)
    fz = int(rng.integers(1, 7))
    base = srgb_to_linear(np.array(FITZPATRICK_SRGB[fz]) / 255.0) + rng.normal(0, 0.012, 3)
    img = np.tile(base.astype(np.float32), (n, n, 1))
    img *= (1 + 0.05 * _smooth_noise(rng, n, 12.0 / texel) + 0.025 * _smooth_noise(rng, n, 3.0 / texel))[..., None]
    red = 0.03 * _smooth_noise(rng, n, 8.0 / texel) + 0.02
    img *= np.stack([1 + red, 1 - 0.5 * red, 1 - 0.6 * red], -1)
    # the lesion, off-centre by up to a tenth of the field (detections are not perfectly centred)
    c = (np.arange(n) + 0.5) * texel - field / 2
    off = rng.uniform(-0.1, 0.1, 2) * field
    X, Y = np.meshgrid(c - off[0], c - off[1])
    alpha, trans, overlay = lesion_profile(les, X.ravel(), Y.ravel(), min_edge_mm=0.6 * texel)
    a = alpha.reshape(n, n, 1)
    img = img * (1 - a + a * trans.reshape(n, n, 3))
    ov = overlay.reshape(n, n, 4)
    img = img * (1 - ov[..., 3:]) + ov[..., :3] * ov[..., 3:]
    img *= (1.0 + rng.normal(0, 0.02, (n, n)))[..., None]  # pores
    # hair strands: dark thin lines
    if rng.random() < 0.3:
        from PIL import ImageDraw

        m = Image.new("L", (n, n), 0)
        dr = ImageDraw.Draw(m)
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = rng.uniform(0, n, 2)
            ang = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(3, 8) / texel
            dr.line([(x0, y0), (x0 + ln * np.cos(ang), y0 + ln * np.sin(ang))], fill=int(rng.integers(40, 120)))
        h = (np.asarray(m, np.float32) / 255.0)[..., None]
        img = img * (1 - h) + h * srgb_to_linear(np.array([0.12, 0.08, 0.06]))
    # light: exposure and a gradient across the field
    gx, gy = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    g = rng.normal(0, 0.08, 2)
    img *= (rng.uniform(0.75, 1.25) * (1 + g[0] * gx + g[1] * gy))[..., None]
    srgb = linear_to_srgb(img)
    if rng.random() < 0.5:
        from scipy import ndimage

        srgb = ndimage.gaussian_filter(srgb, (rng.uniform(0.3, 0.9),) * 2 + (0,))
    srgb = np.clip(srgb + rng.normal(0, 0.01, srgb.shape), 0, 1)
    im = Image.fromarray((srgb * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(im), {"type": lesion_type, "look": look or lesion_type, "diameter_mm": round(d, 2),
                            "texel_mm": round(texel, 3), "fitzpatrick": fz}


def synthetic_crops(n: int, seed: int, size: int = 64, classes: list[str] | None = None,
                    progress: Progress | None = None) -> dict:
    """n synthetic lesion crops (see module docstring), reproducible from ``seed`` (each crop i
    from SeedSequence([seed, i])). Returns {"images": (n, size, size, 3) uint8, "labels": (n,)
    int64 into "classes", "sites": list of n site codes, "classes", "records", "description"}."""
    from bodymap.synth.lesions import LESION_TYPES

    classes = list(classes or LESION_TYPES)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.zeros(n, np.int64)
    sites, records = [], []
    probs = {t: site_probabilities(t) for t in classes}
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        k = int(rng.integers(0, len(classes)))
        t = classes[k]
        names, p = list(probs[t]), np.array(list(probs[t].values()))
        site = names[int(rng.choice(len(names), p=p))]
        look = None
        if t in LOOKALIKES and rng.random() < LOOKALIKES[t][1]:
            look = LOOKALIKES[t][0]
        images[i], rec = paint_crop(rng, t, size, look)
        labels[i] = k
        sites.append(site)
        records.append({**rec, "site": site})
        if progress and (i % 50 == 0 or i == n - 1):
            progress("painting crops", (i + 1) / n)
    desc = {"kind": "synthetic", "n": n, "seed": seed, "size": size, "texel_mm": list(TEXEL_MM),
            "lookalikes": {k: list(v) for k, v in LOOKALIKES.items()},
            "generator": "bodymap.models.diagdata.synthetic_crops (bodymap.synth.lesions painter and site table)",
            "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
            "sha256": data_hash(images, labels, sites)}
    return {"images": images, "labels": labels, "sites": sites, "classes": classes, "records": records,
            "description": desc}


def data_hash(images: np.ndarray, labels: np.ndarray, sites: list) -> str:
    """sha256 (hex) of a data set's pixels, labels and sites: what the checkpoint records."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    h.update("\n".join("" if s is None else str(s) for s in sites).encode())
    return h.hexdigest()


# column names accepted for the fields of an ISIC-style CSV (case-insensitive)
_IMAGE_COLS = ("image", "image_path", "path", "file", "filename", "image_name", "image_id", "isic_id", "img_id")
_DIAG_COLS = ("diagnosis", "dx", "diagnostic", "label", "class", "target")
_SITE_COLS = ("anatomic_site", "anatom_site_general", "anatom_site_general_challenge", "site", "localization",
              "anatom_site", "region")
_GROUP_COLS = ("patient_id", "lesion_id", "group")  # the stricter grouping first

# Site names of public dermatology data sets (HAM10000 "localization", ISIC "anatom_site_general",
# PAD-UFES-20 "region"; lower case) -> BodyMap taxonomy codes. A coarse name maps to the coarse
# code ("trunk"), so model B learns the levels the data has; "acral" and "palms/soles" (palm or
# sole, the data does not say which) and "unknown" map to unknown.
SITE_CODES = {
    "abdomen": "trunk/anterior", "chest": "trunk/anterior", "anterior torso": "trunk/anterior",
    "back": "trunk/posterior", "posterior torso": "trunk/posterior", "lateral torso": "trunk/lateral",
    "trunk": "trunk", "torso": "trunk",
    "upper extremity": "upper_extremity", "arm": "upper_extremity/upper_arm",
    "forearm": "upper_extremity/forearm", "hand": "upper_extremity/hand",
    "lower extremity": "lower_extremity", "thigh": "lower_extremity/thigh", "foot": "lower_extremity/foot",
    "face": "head_neck/head/face", "nose": "head_neck/head/face", "lip": "head_neck/head/face",
    "scalp": "head_neck/head/scalp", "ear": "head_neck/head/ear", "neck": "head_neck/neck",
    "head/neck": "head_neck", "genital": "anogenital/genital", "oral/genital": "anogenital",
    "acral": "unknown", "palms/soles": "unknown", "unknown": "unknown",
}


def site_code(name: str | None) -> str | None:
    """The taxonomy code of a site given as a data set's name ("lower extremity", "BACK"), a
    taxonomy name ("back of hand") or a code ("upper_extremity/hand/dorsal"); None for an empty
    or unrecognised name."""
    from bodymap import taxonomy as tx

    if name is None or not str(name).strip():
        return None
    s = str(name).strip()
    if s in tx.SITE_INDEX:
        return s
    low = s.lower().replace("_", " ")
    if low in SITE_CODES:
        return SITE_CODES[low]
    return next((x.code for x in tx.SITES if x.name.lower() == low), None)


def read_csv(path, size: int = 64, classes: list[str] | None = None, cache: str | Path | None = None,
             class_map: dict[str, str] | None = None, progress: Progress | None = None) -> dict:
    """An ISIC-style CSV: one row per image with an image path or id (relative to the CSV's
    folder or its ``images/`` sub-folder; ``.jpg`` / ``.png`` are tried when the value has no
    suffix, as ISIC ids have none), a diagnosis, an anatomic site (may be empty) and optionally a
    lesion or patient id. Column names are matched case-insensitively among common ones
    (image/image_id/isic_id/img_id, diagnosis/dx/diagnostic, anatom_site_general/localization/
    region, lesion_id/patient_id). Sites are mapped to taxonomy codes (``site_code``; an
    unrecognised name is kept as written). ``class_map`` renames diagnoses first (e.g. PAD's
    "NEV" -> "nv"). Images are resized to (size, size) (the whole image, squeezed to a square).
    ``cache``: a folder where the decoded images are kept (one .npz per CSV, size and file
    list), so a second read costs no decoding.

    Returns the same dict as ``synthetic_crops`` plus "groups" (n,) str (the lesion/patient id,
    or the image name when there is none). Raises ValueError naming the file, row and problem
    for a missing column, an unreadable image or an empty table."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.lower().strip(): c for c in (reader.fieldnames or [])}
        rows = list(reader)

    def col(options, what, required=True):
        for o in options:
            if o in cols:
                return cols[o]
        if required:
            raise ValueError(f"{path}: no {what} column (expected one of {', '.join(options)}); "
                             f"columns are {', '.join(cols.values()) or 'none'}")
        return None

    ci, cd = col(_IMAGE_COLS, "image path"), col(_DIAG_COLS, "diagnosis")
    cs, cg = col(_SITE_COLS, "anatomic site", False), col(_GROUP_COLS, "lesion id", False)
    if not rows:
        raise ValueError(f"{path}: no rows")
    diag = [r[cd].strip() for r in rows]
    if any(not d for d in diag):
        raise ValueError(f"{path}: row {diag.index('') + 2} has an empty diagnosis")
    if class_map:
        diag = [class_map.get(d, d) for d in diag]
    classes = list(classes) if classes else sorted(set(diag))
    unknown = sorted(set(diag) - set(classes))
    if unknown:
        raise ValueError(f"{path}: diagnoses not among the model's classes: {', '.join(unknown)}")
    files = [_image_file(path, r[ci].strip(), i) for i, r in enumerate(rows)]
    images = None
    key = hashlib.sha256(f"{path.resolve()}|{size}|{'|'.join(map(str, files))}".encode()).hexdigest()[:16]
    cfile = Path(cache) / f"{path.parent.name}_{path.stem}_{size}_{key}.npz" if cache else None
    if cfile is not None and cfile.exists():
        with np.load(cfile) as z:
            images = z["images"]
    if images is None:
        images = np.zeros((len(rows), size, size, 3), np.uint8)
        for i, p in enumerate(files):
            try:
                with Image.open(p) as im:
                    images[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=2.0))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: row {i + 2}: cannot read image {p} ({e})") from None
            if progress and (i % 200 == 0 or i == len(files) - 1):
                progress("reading images", (i + 1) / len(files))
        if cfile is not None:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            tmp = cfile.with_suffix(".tmp.npz")
            np.savez(tmp, images=images)
            tmp.replace(cfile)
    raw_sites = [(r[cs].strip() or None) if cs else None for r in rows]
    sites = [site_code(s) or s for s in raw_sites]
    labels = np.array([classes.index(d) for d in diag], np.int64)
    groups = [(r[cg].strip() or Path(r[ci]).stem) if cg else Path(r[ci].strip()).stem for r in rows]
    desc = {"kind": "csv", "csv": str(path), "n": len(rows), "size": size,
            "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
            "group_column": cg, "groups": len(set(groups)),
            "sha256": data_hash(images, labels, sites)}
    return {"images": images, "labels": labels, "sites": sites, "classes": classes, "groups": np.array(groups),
            "records": [{"image": r[ci], "site_as_written": s} for r, s in zip(rows, raw_sites)], "description": desc}


def _image_file(csv_path: Path, value: str, row: int) -> Path:
    """The image file a CSV row names: the value as a path relative to the CSV's folder or its
    images/ sub-folder, with .jpg / .png tried when it has no suffix. Raises ValueError naming
    the CSV and row when no such file exists."""
    p = Path(value)
    if p.is_absolute():
        cands = [p]
    else:
        cands = [csv_path.parent / p, csv_path.parent / "images" / p]
    for c in cands:
        for q in ([c] if c.suffix else [c, c.with_suffix(".jpg"), c.with_suffix(".png"), c.with_suffix(".jpeg")]):
            if q.is_file():
                return q
    raise ValueError(f"{csv_path}: row {row + 2}: cannot read image {cands[0]} (no such file)")


def group_split(groups, labels, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> list[np.ndarray]:
    """Split rows into parts by group (a lesion or patient id: all images of a group land in one
    part), stratified by the group's label (its rows' most common label), in the proportions
    ``fractions``. Returns one sorted index array per part. Deterministic for a seed."""
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    uniq, inv = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(uniq), int(labels.max()) + 1 if len(labels) else 1), np.int64)
    np.add.at(counts, (inv, labels), 1)
    glab = counts.argmax(1)
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, float) / np.sum(fractions)
    part_of_group = np.zeros(len(uniq), int)
    for c in np.unique(glab):
        gs = rng.permutation(np.flatnonzero(glab == c))
        # cut points by cumulative share, rounded per class so each part gets its share of every class
        cuts = np.round(np.cumsum(frac)[:-1] * len(gs)).astype(int)
        for k, part in enumerate(np.split(gs, cuts)):
            part_of_group[part] = k
    rows = part_of_group[inv]
    return [np.flatnonzero(rows == k) for k in range(len(frac))]


def visit_dirs(paths: list) -> list[Path]:
    """Visit folders (holding truth.json) under each of ``paths`` (a visit, patient or output
    folder of ``bodymap synth``), sorted. Raises ValueError naming a path with none."""
    out = []
    for p in map(Path, paths):
        found = [p] if (p / "truth.json").exists() else sorted(q.parent for q in p.rglob("truth.json"))
        if not found:
            raise ValueError(f"{p}: no synthetic visit (truth.json) found")
        out += found
    return out


def scan_crops(visit_dirs: list, size: int = 64, progress: Progress | None = None) -> dict:
    """Crops cut by ``lesion_crop`` from the textures of synthetic
    patients (``bodymap synth`` output: visit folders holding scan.obj and truth.json), one per
    true lesion on the scan, labelled with its type and with the site of its body part.
    Returns the same dict as ``synthetic_crops`` (classes: the synth lesion types)."""
    from bodymap.io import load_scan
    from bodymap.lesions import Lesion
    from bodymap.synth.lesions import LESION_TYPES
    from bodymap.synth.truth import read_visit_truth

    classes = list(LESION_TYPES)
    images, labels, sites, records = [], [], [], []
    dirs = [Path(v) for v in visit_dirs]
    for k, v in enumerate(dirs):
        truth, _ = read_visit_truth(v)
        scan = load_scan(v / truth["scan"]["file"])
        for r in truth["lesions"]:
            if not r.get("on_scan", True) or r["type"] not in classes:
                continue
            les = Lesion(id=r["id"], point_mm=r["point_mm"], face=r["scan_face"], bary=r["scan_bary"],
                         normal=r["normal"], diameter_mm=r["diameter_mm"], area_mm2=r["area_mm2"],
                         colour_lab=[0, 0, 0], skin_lab=[0, 0, 0], contrast_de=0.0, confidence=1.0)
            images.append(lesion_crop(scan, les, size))
            labels.append(classes.index(r["type"]))
            sites.append(PART_SITE[r["part"]])
            records.append({"visit": str(v), "id": r["id"], "type": r["type"], "diameter_mm": r["diameter_mm"],
                            "texel_mm": r["texel_mm"], "site": sites[-1]})
        if progress:
            progress("cutting crops", (k + 1) / len(dirs))
    if not images:
        raise ValueError(f"no lesions found in {', '.join(map(str, dirs))}")
    images = np.stack(images)
    labels = np.array(labels, np.int64)
    desc = {"kind": "synthetic scans", "visits": [str(v) for v in dirs], "n": int(len(labels)), "size": size,
            "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
            "sha256": data_hash(images, labels, sites)}
    return {"images": images, "labels": labels, "sites": sites, "classes": classes, "records": records,
            "description": desc}


# The splits BodyMap uses for the public sets in ../shared/external (by the CSV's folder name):
# shares of lesions / patients for training, development and held-out test, and the seed. The
# diagnosis, photo-kind and ear-locator models all train on the same "train" parts, so a
# "test" image is never seen by any of them. ISIC 2017 is never trained on.
STANDARD_SPLITS = {"ham10000": ((0.7, 0.1, 0.2), 0), "pad_ufes20": ((0.4, 0.1, 0.5), 0),
                   "isic2017": ((0.0, 0.0, 1.0), 0)}
PAD_CLASSES = {"ACK": "akiec", "SCC": "akiec", "BCC": "bcc", "MEL": "mel", "NEV": "nv", "SEK": "bkl"}


def split_rows(csv_path, part: str, fractions=None, seed: int | None = None) -> list[dict]:
    """The rows of one part ("train", "dev", "test" or "all") of a data set's CSV under its
    standard split (``STANDARD_SPLITS`` by the CSV's folder name, else 0.7 / 0.1 / 0.2 seed 0),
    by lesion or patient id (``group_split``, stratified by diagnosis). Each row is the CSV's
    dict plus "path" (the image file) and "site_code". No image is read."""
    path = Path(csv_path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.lower().strip(): c for c in (reader.fieldnames or [])}
        rows = list(reader)
    pick = lambda opts: next((cols[o] for o in opts if o in cols), None)  # noqa: E731
    ci, cd, cs, cg = pick(_IMAGE_COLS), pick(_DIAG_COLS), pick(_SITE_COLS), pick(_GROUP_COLS)
    if ci is None or cd is None:
        raise ValueError(f"{path}: needs an image and a diagnosis column")
    std = STANDARD_SPLITS.get(path.parent.name, ((0.7, 0.1, 0.2), 0))
    fractions = std[0] if fractions is None else fractions
    seed = std[1] if seed is None else seed
    for i, r in enumerate(rows):
        r["path"] = str(_image_file(path, r[ci].strip(), i))
        r["site_code"] = site_code(r[cs]) if cs else None
    if part == "all":
        return rows
    names = ["train", "dev", "test"]
    if part not in names:
        raise ValueError(f"part {part!r}: expected one of train, dev, test, all")
    groups = [r[cg] if cg else Path(r[ci]).stem for r in rows]
    diag = [r[cd] for r in rows]
    classes = sorted(set(diag))
    idx = group_split(groups, [classes.index(d) for d in diag], fractions, seed)[names.index(part)]
    return [rows[i] for i in idx]


def load_photos(paths, long_side: int) -> list[np.ndarray]:
    """Image files as (h, w, 3) uint8 arrays, aspect kept, the long side resized to long_side."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            s = long_side / max(im.size)
            out.append(np.asarray(im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                                            Image.BILINEAR, reducing_gap=2.0)))
    return out


def load_images(paths, size: int, square: bool = True) -> np.ndarray:
    """(n, size, size, 3) uint8 of image files, each resized whole to a square (``square``) or
    centre-cropped to one first."""
    from PIL import Image

    out = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if not square:
                s = min(im.size)
                im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
            out[i] = np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return out
