"""The main job: a scan in, anatomy + lesions out. The CLI and the GUI call these same functions.

    analyze(scan, detector="classical", progress=...) -> Result
    write_result(result, out_dir) -> files (labels, region maps, lesion table, annotated texture)
    load_visit(path) -> Visit (a scan, or an analysis folder: scan + lesions + correspondence)
    track_visits(visit1, visit2, reviews_file) -> Tracking;  write_tracking(tracking, out_dir)
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.scan import Scan

Progress = Callable[[str, float], None]


@dataclasses.dataclass
class Result:
    """What analyze() found on one scan. correspondence / labels are None when anatomy was
    skipped; timings: seconds per stage."""

    scan: Scan
    lesions: "LesionSet"  # noqa: F821
    correspondence: object | None = None
    labels: object | None = None
    timings: dict = dataclasses.field(default_factory=dict)


def _sub(progress: Progress | None, lo: float, hi: float) -> Progress:
    """A progress callback mapping a stage's 0..1 onto lo..hi of the whole job."""
    return lambda stage, f: progress(stage, lo + (hi - lo) * f) if progress else None


# Larger than this on the body is a patch of skin tone (a shadow, a tan line), not one lesion
# a mole map tracks; giant congenital nevi are documented by hand.
MAX_DIAMETER_MM = 30.0


def detect_lesions(scan: Scan, detector="classical", progress: Progress | None = None,
                   max_diameter_mm: float = MAX_DIAMETER_MM):
    """Lesions on scan's texture map: tiled detection, lifted to 3D and measured, seam pieces
    merged; those over max_diameter_mm kept as suppressed ('too_large'). detector: a name (see
    bodymap.detect.get_detector) or a Detector. Returns a LesionSet."""
    from bodymap.detect import get_detector
    from bodymap.detect.texture import detect_image_tiled
    from bodymap.lesions import LesionMeasurer, TextureImage
    from bodymap.project import texel_atlas

    det = get_detector(detector) if isinstance(detector, str) else detector
    warning = det.resolution_warning(scan) if hasattr(det, "resolution_warning") else None
    say = progress or (lambda s, f: None)
    say("texture atlas", 0.0)
    img = TextureImage(scan, texel_atlas(scan))
    boxes = detect_image_tiled(scan.texture, img.inside, det, _sub(progress, 0.1, 0.8))
    say("measuring lesions", 0.8)
    lesions = LesionMeasurer(scan).measure(img, boxes, det.name)
    say("done", 1.0)
    extra = {"warnings": [warning]} if warning else {}
    return _lesion_set(scan, lesions, det.name, max_diameter_mm, boxes=len(boxes), **extra)


def _lesion_set(scan: Scan, lesions: list, detector: str, max_diameter_mm: float, **info):
    """A LesionSet of lesions; those over max_diameter_mm suppressed ('too_large'); renumbered."""
    from bodymap.lesions import LesionSet

    ls = LesionSet(lesions, scan=scan.meta.source or "", detector=detector, info=info)
    ls.suppress(lambda l: l.diameter_mm <= max_diameter_mm, "too_large")
    ls.renumber()
    return ls


def detect_lesions_in_views(scan: Scan, cameras: list, detector="classical", progress: Progress | None = None,
                            max_diameter_mm: float = MAX_DIAMETER_MM):
    """Lesions found on rendered views of scan (renderers.Camera list), back-projected through
    each view's face-id and barycentric buffers and merged in 3D across views. Works on scans
    whose texture is fragmented or absent (vertex colours). Returns a LesionSet (source 'view:K')."""
    from bodymap.detect import get_detector
    from bodymap.lesions import LesionMeasurer, ViewImage
    from renderers import RaycastRenderer

    det = get_detector(detector) if isinstance(detector, str) else detector
    say = progress or (lambda s, f: None)
    renderer, meas = RaycastRenderer(scan), LesionMeasurer(scan)
    pieces = []
    for k, cam in enumerate(cameras):
        say(f"view {k + 1} of {len(cameras)}", k / max(len(cameras), 1))
        # flat lighting: shading gradients would read as darker skin
        img = ViewImage(scan, renderer.render(cam, ambient=1.0))
        pieces += meas.pieces(img, det.detect(img.image, img.inside))
    lesions = meas.lesions(pieces, det.name, source="view")
    say("done", 1.0)
    return _lesion_set(scan, lesions, det.name, max_diameter_mm, views=len(cameras), pieces=len(pieces))


def locate_lesions(lesion_set, scan: Scan, correspondence, labels, drop_off_skin: bool = True) -> int:
    """Give each lesion (suppressed candidates too) its region (every taxonomy level) and its
    position in the body frame (measures x_mm, y_mm, z_mm: the registered template's), and mark
    those on non-skin tissue (lips, nipples, nails, eyes: from the registered template). With
    drop_off_skin those are moved to the suppressed candidates, their reason the tissue
    ('lips', 'nipple', 'nail', 'eye'; also for a candidate already suppressed as too large).
    Returns how many counted lesions were off skin. Ids are renumbered (LesionSet.renumber)
    in place."""
    from bodymap.anatomy.labels import RegionIndex
    from bodymap.anatomy.template import NON_SKIN_KINDS, load_template, non_skin_kind

    every = lesion_set.all
    if not every:
        return 0
    regions = RegionIndex(scan.vertices, scan.faces, labels).region_at(np.array([l.point_mm for l in every]))
    template = load_template()
    kind = non_skin_at(every, scan, correspondence, template.faces, non_skin_kind(), len(NON_SKIN_KINDS))
    tissue = {}
    for l, r, k in zip(every, regions, kind):
        l.region, l.on_skin = r, not k
        tissue[id(l)] = NON_SKIN_KINDS[k]
    n_off = int(sum(not l.on_skin for l in lesion_set.lesions))
    if drop_off_skin:
        lesion_set.suppress(lambda l: l.on_skin, lambda l: tissue[id(l)])
        for l in lesion_set.suppressed:  # a patch over 30 mm centred on a nipple is the areola
            if not l.on_skin:
                l.suppressed = tissue[id(l)]
    lesion_set.renumber()
    lesion_set.info["off_skin"] = n_off
    from bodymap.measures import body_positions

    body_positions(every, scan, correspondence, template)  # tbp_lv_x, y, z: the body frame
    return n_off


def non_skin_at(lesions: list, scan: Scan, correspondence, template_faces: np.ndarray, kind: np.ndarray,
                n_kinds: int) -> np.ndarray:
    """(k,) the tissue kind under each lesion's point (0: skin; else an index into
    anatomy.template.NON_SKIN_KINDS): each kind's indicator on the template (kind (v,) per
    template vertex) interpolated to the point through its scan face's corners and their template
    points (face + barycentric), and taken where it reaches one half, as the synthetic painter
    blends tissue, rather than the nearest template vertex's kind (which reaches a vertex
    spacing, ~10 mm, beyond a nipple or a lip)."""
    faces = np.array([l.face for l in lesions], np.int64)
    bary = np.array([l.bary for l in lesions], np.float64)
    corners = scan.faces[faces]  # (k, 3) scan vertices
    tf, tb = correspondence.template_face[corners], correspondence.template_bary[corners]  # (k, 3), (k, 3, 3)
    tv = template_faces[tf]  # (k, 3, 3) template vertices of each corner's template face
    out = np.zeros(len(lesions), np.int64)
    best = np.zeros(len(lesions))
    for k in range(1, n_kinds):
        at_corner = ((kind[tv] == k) * tb).sum(-1)  # (k, 3) indicator at each scan corner
        w = (at_corner * bary).sum(-1)
        take = (w >= 0.5) & (w > best)
        out[take], best[take] = k, w[take]
    return out


def analyze(scan: Scan, detector="classical", progress: Progress | None = None, anatomy: bool = True,
            correspondence=None) -> Result:
    """Anatomy (registration + region labels) and lesion detection on one textured scan (mm).
    progress(stage, fraction) is called throughout. correspondence: this scan's registration
    from an earlier run (see reusable_registration), used instead of fitting again. Returns a
    Result."""
    from bodymap.anatomy.labels import label_scan, transfer_labels

    timings = {}
    corr = labels = None
    t0 = time.perf_counter()
    if anatomy and correspondence is not None:
        from bodymap.anatomy.template import load_template

        corr, labels = correspondence, transfer_labels(correspondence, load_template())
        timings["anatomy_s"] = round(time.perf_counter() - t0, 2)
        timings["registration_reused"] = True
    elif anatomy:
        corr, labels = label_scan(scan, progress=_sub(progress, 0.0, 0.55))
        timings["anatomy_s"] = round(time.perf_counter() - t0, 2)
    t1 = time.perf_counter()
    lesions = detect_lesions(scan, detector, progress=_sub(progress, 0.55 if anatomy else 0.0, 0.98))
    timings["detection_s"] = round(time.perf_counter() - t1, 2)
    if anatomy:
        locate_lesions(lesions, scan, corr, labels)
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    lesions.info["timings"] = timings
    if progress:
        progress("done", 1.0)
    return Result(scan, lesions, corr, labels, timings)


def annotated_texture(scan: Scan, lesion_set) -> np.ndarray:
    """The scan's texture (H, W, 3) uint8 with each lesion's box outlined and numbered."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(scan.texture.copy())
    draw = ImageDraw.Draw(img)
    for l in lesion_set.lesions:
        if l.box_px is None:
            continue
        x0, y0, x1, y1 = l.box_px
        pad = 2
        draw.rectangle([x0 - pad, y0 - pad, x1 + pad, y1 + pad], outline=(0, 255, 0), width=2)
        draw.text((x1 + pad + 1, y0 - pad), str(l.id), fill=(0, 255, 0))
    return np.asarray(img)


def write_anatomy(scan: Scan, correspondence, labels, out: Path, source: str | None = None, **record) -> list[Path]:
    """Write labels.npz (labels + correspondence), regions.json (source file (default: the
    scan's), fit, area per region, and any extra record fields) and the region maps under out/.
    Returns the files written."""
    from bodymap.anatomy.labels import summary, write_json
    from bodymap.export.regionmap import write_region_maps

    labels.save(out / "labels.npz", correspondence)
    rel, absolute = scan_record(source or scan.meta.source, out)
    write_json(out / "regions.json", {"scan": rel, "scan_abs": absolute, "scan_sha1": scan_fingerprint(scan),
                                      "vertices": scan.n_vertices, "faces": scan.n_faces,
                                      **record, "fit": correspondence.info,
                                      **summary(labels, scan.face_areas, scan.faces)})
    return [out / "labels.npz", out / "regions.json", *write_region_maps(scan, labels, out)]


def write_result(result: Result, out: str | Path) -> list[Path]:
    """Write everything analyze() found under out/: lesions.json, lesions.csv,
    annotated_texture.jpg and, with anatomy, labels.npz, regions.json and the region maps."""
    from PIL import Image

    from bodymap.atomic import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    scan = result.scan
    if result.labels is not None:
        paths += write_anatomy(scan, result.correspondence, result.labels, out)
    rel, absolute = scan_record(result.lesions.scan or scan.meta.source, out)
    dataclasses.replace(result.lesions, scan=rel, info={**result.lesions.info, "scan_abs": absolute}).save_json(
        out / "lesions.json")
    result.lesions.save_csv(out / "lesions.csv")
    paths += [out / "lesions.json", out / "lesions.csv"]
    if scan.texture is not None:
        with atomic_write(out / "annotated_texture.jpg") as tmp:
            Image.fromarray(annotated_texture(scan, result.lesions)).save(tmp, quality=90)
        paths.append(out / "annotated_texture.jpg")
    return paths


def scan_fingerprint(scan: Scan) -> str:
    """sha1 of the scan's vertices and faces: whether a saved registration was made on this mesh."""
    import hashlib

    h = hashlib.sha1(np.ascontiguousarray(scan.vertices, np.float64).tobytes())
    h.update(np.ascontiguousarray(scan.faces, np.int64).tobytes())
    return h.hexdigest()


def reusable_registration(scan: Scan, folder: str | Path):
    """The registration (Correspondence) an earlier `label` / `analyze` of this very mesh left in
    folder (labels.npz + regions.json recording the same vertices and faces), or None. A
    changed scan, another scan or a damaged file gives None (the caller registers again)."""
    import json

    folder = Path(folder)
    try:
        rec = json.loads((folder / "regions.json").read_text())
        if not isinstance(rec, dict) or rec.get("scan_sha1") != scan_fingerprint(scan):
            return None
        from bodymap.anatomy.labels import load_correspondence

        corr = load_correspondence(folder / "labels.npz", scan.n_vertices)
    except (OSError, ValueError):
        return None
    if corr is not None:  # the fit's record (residuals, pose, phenotype) goes on with it
        corr.info = {**(rec.get("fit") if isinstance(rec.get("fit"), dict) else {}), "reused_from": str(folder)}
    return corr


def scan_record(scan_source: str, out: Path) -> tuple[str, str]:
    """How an output folder records its scan: (path relative to the folder, absolute path), so
    the folder finds its scan wherever the command was run from and after both move together."""
    import os

    if not scan_source:
        return "", ""
    src = Path(scan_source).resolve()
    try:
        rel = os.path.relpath(src, Path(out).resolve())
    except ValueError:  # another drive
        rel = str(src)
    return rel, str(src)


def folder_scan(folder: Path, ls) -> Path:
    """The scan of an analysis folder: its lesion list's `scan`, relative to the folder (never to
    the current folder: that would read another visit's scan), else the absolute path recorded
    beside it (`info.scan_abs`). FileNotFoundError naming the folder when neither is there."""
    rec = Path(ls.scan)
    cands = [rec] if rec.is_absolute() else [folder / rec]
    if ls.info.get("scan_abs"):
        cands.append(Path(ls.info["scan_abs"]))
    for c in cands:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{folder}: its scan {ls.scan} is not there any more"
                            + ("" if rec.is_absolute() else f" (looked for {folder / rec}"
                               + (f" and {ls.info['scan_abs']})" if ls.info.get("scan_abs") else ")")))


def load_visit(path: str | Path, lesions: str | Path | None = None, units: str | None = None):
    """One visit for tracking (bodymap.track.Visit). path: an analysis folder written by
    write_result (its scan is read from the path recorded in lesions.json) or a scan file;
    lesions: a lesion JSON for a scan file (its folder's labels.npz, when it was made for this
    scan, supplies the correspondence). Lesions stay None when neither gives them (the caller
    runs analyze); the correspondence stays None when none was saved (track registers)."""
    from bodymap.anatomy.labels import load_correspondence
    from bodymap.io import load_scan
    from bodymap.lesions import LesionSet
    from bodymap.track import Visit

    path = Path(path)
    folder = None
    if path.is_dir():
        if not (path / "lesions.json").exists():
            raise FileNotFoundError(f"{path}: not an analysis folder (no lesions.json); give a scan file or "
                                    "the folder `bodymap analyze` wrote")
        lesions, folder = path / "lesions.json", path
    ls = LesionSet.load_json(lesions) if lesions else None
    if folder is not None:
        scan_path = folder_scan(folder, ls)
    else:
        scan_path = path
    scan = load_scan(scan_path, units=units)
    if ls is not None:
        bad = [l.id for l in ls.lesions if not 0 <= l.face < scan.n_faces]
        if bad:
            raise ValueError(f"{lesions}: lesions {bad[:5]} lie on faces {scan.meta.source or scan_path} does not "
                             f"have ({scan.n_faces} faces): the list was made for another scan")
    corr = None
    if lesions and (Path(lesions).parent / "labels.npz").exists():
        corr = load_correspondence(Path(lesions).parent / "labels.npz", scan.n_vertices)
    return Visit(scan, ls, corr)


def track_visits(visit1, visit2, reviews=None, progress: Progress | None = None, second_look: bool = True,
                 pair_points=None, **options):
    """Track visit 2's lesions against visit 1's (bodymap.track.track) respecting a clinician's
    reviews (confirmed, rejected, reassigned matches, lesions marked new): a bodymap.track.Reviews
    (see bodymap.reviewfiles.gather for finding every review of two visits), a reviews file, a
    function gather(visit1, visit2) -> Reviews, or None. Visits without lesions must have been
    analysed first. With second_look (default), lesions called new or missing are looked for on
    the other scan (bodymap.secondlook): those found are added to visit1.lesions /
    visit2.lesions (in place) and the visits tracked again, so they pair by the normal path;
    info["second_look"] records them. A review may name a lesion an earlier second look found
    (`bodymap review` of that tracking): a gather function is called again once the lists hold
    the lesions found now, so its checks (ids, points) see them, and a found lesion a review
    names is kept whatever it pairs with. Returns the Tracking; info["reviews"] holds the reviews
    applied, and info records both visits (scan file and each lesion's point), which `bodymap
    review` checks ids against and keys the reviews by. pair_points (n2, 3) mm: the pair map of
    an earlier tracking of these two scans with these correspondences (Tracking.pair_points),
    not computed again."""
    from bodymap.reviewfiles import VisitIds, read_reviews
    from bodymap.track import Reviews, TrackOptions, track

    for k, v in enumerate((visit1, visit2), 1):
        if v.lesions is None:
            raise ValueError(f"visit {k} ({v.scan.meta.source}) has no lesion list: analyse it first")
    if isinstance(reviews, (str, Path)):
        rv = read_reviews(reviews)[0] if Path(reviews).exists() else Reviews()
        regather = None
    elif callable(reviews):
        rv, regather = reviews(visit1, visit2), reviews
    else:
        rv, regather = reviews or Reviews(), None
    o = TrackOptions(**options)
    look = second_look and all(v.scan.texture is not None for v in (visit1, visit2))
    t = track(visit1, visit2, reviews=rv, options=o, progress=_sub(progress, 0.0, 0.8 if look else 1.0),
              pair_points=pair_points)
    if look:
        t = _second_look(t, visit1, visit2, rv, o, _sub(progress, 0.8, 1.0), regather)
    t.info["visit1"], t.info["visit2"] = VisitIds.of(visit1).to_dict(), VisitIds.of(visit2).to_dict()
    return t


def _second_look(t, visit1, visit2, rv, o, progress: Progress | None, regather=None):
    """The second look (bodymap.secondlook) after tracking t: recovered lesions added to the
    visits, the reviews gathered again when regather (visit1, visit2 -> Reviews) is given (a
    review may name a lesion found now: an earlier second look found it, and a clinician
    reviewed that tracking), tracked again; a recovered lesion the new tracking does not pair
    with the lesion that led to it was no find and is taken out again (and the visits tracked
    once more), unless a review names it: the clinician has seen it. Returns the final Tracking."""
    import time as _time

    from bodymap.secondlook import second_look
    from bodymap.track import track

    t0 = _time.perf_counter()
    added = second_look(t, visit1, visit2, progress=_sub(progress, 0.0, 0.3))
    rec = {"visit1": added["visit1"], "visit2": added["visit2"], "suppressed_there": added["suppressed"],
           "dropped": {"visit1": [], "visit2": []}}
    if added["visit1"] or added["visit2"]:
        if regather is not None:
            rv = regather(visit1, visit2)
        t = track(visit1, visit2, reviews=rv, options=o, progress=_sub(progress, 0.3, 0.9), pair_points=t.pair_points)
        # a recovered lesion must pair with the lesion that led to it: one left unpaired, or
        # paired with another (taking a persistent lesion's partner), was no find; one a review
        # names stays (confirmed elsewhere, marked new, or its pair rejected: the clinician's call)
        partner = t.partner()  # {id2: id1}
        named1 = set(rv.confirmed.values()) | {i for _, i in rv.rejected}
        named2 = set(rv.confirmed) | {j for j, _ in rv.rejected} | set(rv.new)
        drop = {"visit1": [r["id"] for r in added["visit1"]
                           if partner.get(r["from_id"]) != r["id"] and r["id"] not in named1],
                "visit2": [r["id"] for r in added["visit2"]
                           if partner.get(r["id"]) != r["from_id"] and r["id"] not in named2]}
        if drop["visit1"] or drop["visit2"]:
            for v, key in ((visit1, "visit1"), (visit2, "visit2")):
                gone = set(drop[key])
                v.lesions.lesions = [l for l in v.lesions.lesions if l.id not in gone]
                rec[key] = [r for r in rec[key] if r["id"] not in gone]
            rec["dropped"] = drop
            t = track(visit1, visit2, reviews=rv, options=o, progress=_sub(progress, 0.9, 1.0),
                      pair_points=t.pair_points)
    for v, key in ((visit1, "visit1"), (visit2, "visit2")):
        if rec[key]:
            v.lesions.info["second_look"] = [r["id"] for r in rec[key]]
    rec["seconds"] = round(_time.perf_counter() - t0, 2)
    t.info["second_look"] = rec
    return t


def write_tracking(tracking, out: str | Path, visit1=None, visit2=None) -> list[Path]:
    """Write tracking.json and tracking.csv (matched, new, missing; change and flags) under out/
    and, given the two visits, tracking_bodymap.png (both visits front and back, lesions
    circled and numbered by status) and the two lesion lists the tracking's ids refer to,
    visit1_lesions.json / visit2_lesions.json (+ .csv): the visits' lists with any lesions the
    second look added (an analysis folder's own lesions.json is never rewritten)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracking.save_json(out / "tracking.json")
    tracking.save_csv(out / "tracking.csv")
    paths = [out / "tracking.json", out / "tracking.csv"]
    if visit1 is not None and visit2 is not None:
        from bodymap.export.changemap import write_change_map

        for k, v in enumerate((visit1, visit2), 1):
            rel, absolute = scan_record(v.scan.meta.source or v.lesions.scan, out)
            dataclasses.replace(v.lesions, scan=rel, info={**v.lesions.info, "scan_abs": absolute}).save_json(
                out / f"visit{k}_lesions.json")
            v.lesions.save_csv(out / f"visit{k}_lesions.csv")
            paths += [out / f"visit{k}_lesions.json", out / f"visit{k}_lesions.csv"]
        from bodymap.anatomy.labels import registered_view_frame as upright

        paths.append(write_change_map(visit1.scan, visit1.lesions, visit2.scan, visit2.lesions, tracking,
                                      out / "tracking_bodymap.png",
                                      frames=(upright(visit1.scan.vertices, visit1.correspondence),
                                              upright(visit2.scan.vertices, visit2.correspondence))))
    return paths
