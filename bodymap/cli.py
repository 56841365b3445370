"""The ``bodymap`` command. Each subcommand is a thin layer over library functions.

    bodymap info SCAN [--units m|cm|mm|in] [--json]

Outputs go to --out, else under ./bodymap-out/<scan name>/ in the current folder (never beside
the input). A scan is checked to be a body (bodymap.bodycheck) before any long work.
    bodymap label SCAN [--out DIR]
    bodymap render SCAN OUT.png [--views front back left right] [--size 400x800]
    bodymap synth OUT [--seed N] [--patients K] [--lesions N] [--texture 4096] [--faces 300000] ...
    bodymap detect SCAN [--out DIR] [--detector classical|yolo] [--views] [--via-import CSV] [--via-export CSV]
    bodymap analyze SCAN [--out DIR] [--detector classical|yolo]
    bodymap track VISIT1 VISIT2 [--lesions1 J --lesions2 J] [--out DIR] [--reviews FILE]  (scans or analysis folders)
    bodymap review TRACKING_DIR [--confirm ID1:ID2] [--reassign ID1:ID2] [--reject ID1:ID2] [--new ID2]
    bodymap train detector --out DIR [--patients 6] [--epochs 30] [--device cpu|0]
    bodymap report ANALYSIS_DIR OUT.pdf [--previous EARLIER_ANALYSIS_DIR]   (also .svg/.png region map, .glb/.ply mesh)
    bodymap export ANALYSIS_DIR --format slice3d|dicom|fhir OUT [--previous DIR | --tracking DIR] [--patient JSON] [--tiles DIR]
    bodymap train ear|macro --out DIR [--steps N] [--bodies N] [--views N] [--size PX] [--folder DIR (ear)]
    bodymap train diagnosis --out DIR [--csv FILE [--test-csv FILE]] [--n-train 3000] [--epochs 10]
    bodymap evaluate diagnosis [--weights B.pt] [--weights-a A.pt] [--csv FILE | --n 2000 --seed 9600]
    bodymap diagnose PHOTO... [--site SITE...] | SCAN --lesions JSON  [--out DIR]
    bodymap evaluate ear|macro [--weights PT] [--json OUT]
    bodymap photo PHOTO... [--site SITE...] [--json]   (photo mode: kind, site, ears, diagnosis)
    bodymap train earfind --out DIR [--negatives CSV...] [--epochs N] | photokind --out DIR --dermoscopy CSV --clinical CSV
    bodymap batch MANIFEST --out DIR [--workers N | --ray ADDRESS|auto|local] [--threads T] [--detector D]
    bodymap query DIR ["WHERE CLAUSE" | --sql "SELECT ..."] [--csv OUT] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bodymap.atomic import atomic_write, write_text


class _Bar:
    """A progress bar on stderr (tqdm), fed by progress(stage, fraction) callbacks."""

    def __init__(self, desc: str, enabled: bool = True):
        from tqdm import tqdm

        self._bar = tqdm(total=1000, desc=desc, disable=not enabled, file=sys.stderr,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def __call__(self, stage: str, fraction: float) -> None:
        self._bar.set_postfix_str(stage)
        self._bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


#: Where outputs go unless --out says otherwise: under the current folder, never beside the input
#: (the input may be package data, a read-only share or another patient's folder).
OUT_ROOT = Path("bodymap-out")
UNITS = ["m", "cm", "mm", "in"]


def scan_name(path: str | Path) -> str:
    """A readable name for a scan's outputs: its last two folders and file name
    (sample_meshes/SYN00102/visit2/scan.obj -> SYN00102_visit2_scan), so scans that share a file
    name (every visit's scan.obj) get their own folders."""
    p = Path(path).resolve()
    return "_".join(x for x in (p.parent.parent.name, p.parent.name, p.stem) if x) or "scan"


def _records_other_scan(folder: Path, scan: Path) -> bool:
    """folder holds outputs made from another scan than `scan` (regions.json / lesions.json say so)."""
    for name in ("regions.json", "lesions.json"):
        f = folder / name
        if f.is_file():
            try:
                d = json.loads(f.read_text())
                rec = d.get("scan_abs") or d.get("info", {}).get("scan_abs")
            except (OSError, ValueError, AttributeError):
                return True  # unreadable: not ours to overwrite
            if rec and Path(rec).resolve() != scan.resolve():
                return True
    return False


def _out_dir(args: argparse.Namespace, scan: str | Path | None, sub: str = "") -> Path:
    """The output folder: --out, else ./bodymap-out/<scan name>[/sub] (a numbered sibling when
    that folder holds another scan's outputs). Created; printed when it is the default."""
    if getattr(args, "out", None):
        out = Path(args.out)
    else:
        name = scan_name(scan)
        out, k = OUT_ROOT / name / sub, 2
        while _records_other_scan(out, Path(scan)):
            out, k = OUT_ROOT / f"{name}-{k}" / sub, k + 1
        print(f"output folder: {out}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_body(args: argparse.Namespace, texture: bool = False):
    """Read args.scan and check, before any long work, that it is a body (bodymap.bodycheck) and,
    when texture, that it is textured."""
    from bodymap.io import load_scan

    scan = load_scan(args.scan, units=args.units)
    _check_body(scan)
    if texture:
        scan.require_texture()
    return scan


def _check_body(scan) -> None:
    """Refuse a mesh that cannot be a body scan (ScanError, one line); print the check's warnings."""
    from bodymap.bodycheck import check_body

    for w in check_body(scan).warnings:
        print(f"warning: {scan.meta.source}: {w}", file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    """Print a scan's summary (counts, size in mm, units, texture, texel size)."""
    from bodymap.io import load_scan

    from bodymap.bodycheck import check_body
    from bodymap.scan import ScanError

    scan = load_scan(args.scan, units=args.units)
    s = scan.summary()
    try:
        chk, problem = check_body(scan), None
        s["body_check"] = "passed" + (f" ({'; '.join(chk.warnings)})" if chk.warnings else "")
    except ScanError as e:
        problem = e
        s["body_check"] = f"NOT A BODY: {e.problem}"
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        for k, v in s.items():
            print(f"{k:>16}: {v}")
    if problem is not None:
        raise problem
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate synthetic patients with ground truth."""
    from bodymap.anatomy.body import BodySpec
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    body = None
    given = {k: getattr(args, k) for k in ("sex", "age", "height", "weight", "muscle")}
    if any(v is not None for v in given.values()):
        # unspecified phenotype fields take the average body's values
        body = BodySpec(sex=given["sex"] or "female",
                        age_years=35.0 if given["age"] is None else given["age"],
                        **{k: given[k] for k in ("height", "weight", "muscle") if given[k] is not None})
    opts = SynthOptions(
        n_lesions=args.lesions, texture_size=args.texture, target_faces=args.faces, remesh=not args.no_remesh,
        noise_mm=args.noise, holes=not args.no_holes, visits=args.visits, poses=tuple(args.poses),
        fitzpatrick=args.fitzpatrick, body=body,
        freckles=None if args.freckles is None else args.freckles == "yes")
    out = Path(args.out)
    for i in range(args.patients):
        seed = args.seed + i
        t0 = time.perf_counter()
        bar = _Bar(f"patient seed {seed}", enabled=not args.quiet)
        try:
            dirs = synthesize_patient(seed, opts, out, progress=bar)
        finally:
            bar.close()
        print(f"{dirs[0].parent}: {len(dirs)} visits in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Label a scan's surface with anatomic regions; write labels and region maps."""
    from bodymap.anatomy.labels import label_scan
    from bodymap.pipeline import write_anatomy

    scan = _load_body(args)
    out = _out_dir(args, args.scan)
    t0 = time.perf_counter()
    bar = _Bar("labelling", enabled=not args.quiet)
    try:
        corr, labels = label_scan(scan, progress=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    paths = write_anatomy(scan, corr, labels, out, source=str(args.scan), seconds=round(elapsed, 1))
    print(f"labelled {scan.n_vertices} vertices in {elapsed:.1f} s "
          f"(median distance to the fitted body {corr.info['median_residual_mm']} mm)")
    _fit_verdict(corr)
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Detect lesions on a scan's texture (no anatomy); write the lesion table and an annotated
    texture. With --via-import, place a VIA CSV's boxes on the scan instead of detecting."""
    from bodymap.pipeline import Result, detect_lesions, detect_lesions_in_views, write_result
    from bodymap.via import export_via, import_via

    scan = _load_body(args, texture=not args.views)
    out = _out_dir(args, args.scan, "detections")
    t0 = time.perf_counter()
    if args.via_import:
        lesions = import_via(scan, args.via_import)
    else:
        bar = _Bar("detecting", enabled=not args.quiet)
        try:
            if args.views:  # rendered views around the body, back-projected through the face-id buffer
                from renderers import orbit_rig

                from bodymap.anatomy.labels import axes_view_frame

                # about the scan's up axis: a y-up scan seen from below and above misses its sides
                rig = orbit_rig(scan.bounds, frame=axes_view_frame(scan.vertices))
                lesions = detect_lesions_in_views(scan, rig, _detector(args), progress=bar)
            else:
                lesions = detect_lesions(scan, _detector(args), progress=bar)
        finally:
            bar.close()
    paths = write_result(Result(scan, lesions), out)
    _warn(lesions)
    if args.via_export:
        export_via(lesions, args.via_export, Path(args.scan).with_suffix(".png").name)
        paths.append(Path(args.via_export))
    print(f"{len(lesions)} lesions in {time.perf_counter() - t0:.1f} s")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """The main job: anatomic regions + lesions (placed, measured, located) + exports."""
    from bodymap.pipeline import analyze, reusable_registration, write_result

    scan = _load_body(args, texture=True)
    out = _out_dir(args, args.scan)
    corr = None if args.register else reusable_registration(scan, out)
    if corr is not None:
        print(f"reusing this scan's registration in {out / 'labels.npz'} (--register to fit again)", file=sys.stderr)
    bar = _Bar("analysing", enabled=not args.quiet)
    try:
        result = analyze(scan, _detector(args), progress=bar, correspondence=corr)
    finally:
        bar.close()
    paths = write_result(result, out)
    _warn(result.lesions)
    t = result.timings
    print(f"{len(result.lesions)} lesions on {scan.n_faces} faces in {t['total_s']:.1f} s "
          f"(anatomy {t.get('anatomy_s', 0):.1f} s, detection {t['detection_s']:.1f} s)")
    if result.correspondence is not None:
        _fit_verdict(result.correspondence)
    if args.previous:
        from bodymap.track import Visit

        before = _visit(args, args.previous, None, out / "previous_analysis")
        now = Visit(scan, result.lesions, result.correspondence)
        paths += _write_tracking(_track(args, before, now, out, [out]), out, before, now)
    for p in paths:
        print(f"  {p}")
    return 0


def _fit_verdict(corr) -> None:
    """Print the registration's fit verdict; a fit that is not good is a warning (stderr)."""
    from bodymap.anatomy.register import fit_summary

    line = fit_summary(corr.info)
    verdict = corr.info.get("quality", {}).get("verdict")
    print(f"warning: {line}" if verdict in ("fair", "poor") else line, file=sys.stderr if verdict in ("fair", "poor") else sys.stdout)


def _warn(lesion_set) -> None:
    """Print the warnings a detection left in its LesionSet (e.g. texture resolution)."""
    for w in lesion_set.info.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)


def _visit(args: argparse.Namespace, path: str, lesions: str | None, analysis_out: Path | None):
    """A visit for tracking: an analysis folder, or a scan with a lesion JSON, or a bare scan
    (analysed now when analysis_out is given; its outputs written there)."""
    from bodymap.pipeline import load_visit

    v = load_visit(path, lesions, units=args.units)
    if v.lesions is None:
        _check_body(v.scan)
        v.scan.require_texture()
        if analysis_out is not None:
            _analyse_visit(args, v, analysis_out)
    return v


def _analyse_visit(args: argparse.Namespace, v, analysis_out: Path) -> None:
    """Analyse a visit given as a bare scan; its outputs go to analysis_out."""
    from bodymap.pipeline import analyze, write_result

    bar = _Bar(f"analysing {Path(v.scan.meta.source).name}", enabled=not args.quiet)
    try:
        r = analyze(v.scan, _detector(args), progress=bar)
    finally:
        bar.close()
    write_result(r, analysis_out)
    v.lesions, v.correspondence = r.lesions, r.correspondence


def _track(args: argparse.Namespace, v1, v2, out: Path, folders: list):
    """Track v2 against v1 with every review of the pair (bodymap.reviewfiles: the folders'
    reviews.json, the per-user store, --reviews; gathered by the tracking, so reviews of lesions
    a second look found apply too); the merged reviews are kept in out and the store."""
    from bodymap import reviewfiles
    from bodymap.track import Reviews
    from bodymap.workspace import Workspace

    explicit = getattr(args, "reviews", None)
    if explicit is not None and not Path(explicit).is_file():  # said before minutes of tracking
        raise FileNotFoundError(f"{explicit}: reviews file not found")
    ws = Workspace.of(v1, v2)  # the GUI's application layer: the same reviews, the same tracking
    bar = _Bar("tracking", enabled=not args.quiet)
    try:
        t = ws.compute_tracking(bar, folders=folders, explicit=explicit,
                                second_look=not getattr(args, "no_second_look", False))
    finally:
        bar.close()
    rv = Reviews.from_dict(t.info["reviews"], "tracking")  # the reviews applied (second-look finds' too)
    for n in t.info.get("review_notes", []):
        print(f"note: {n}", file=sys.stderr)
    if t.info.get("review_files"):
        print(f"reviews respected: {len(rv.confirmed)} confirmed, {len(rv.rejected)} rejected, "
              f"{len(rv.new)} marked new (from {', '.join(t.info['review_files'])})")
    ws.set_tracking(t)  # lesions the second look found join v1 / v2's lists (written with the tracking)
    reviewfiles.keep(rv, v1, v2, [out])
    return t


def _write_tracking(tracking, out: Path, v1, v2) -> list[Path]:
    from bodymap.pipeline import write_tracking
    from bodymap.records import UNCERTAIN, Status, counts, summary

    print(f"{summary(tracking)} in {tracking.info['timings']['total_s']:.1f} s")
    unsure = counts(tracking)[Status.UNCERTAIN]
    if unsure:
        print(f"{unsure} of the matches are uncertain (confidence < {UNCERTAIN:g}): review them "
              f"(tracking.csv status 'uncertain'; `bodymap review`)")
    for k, verdict in enumerate(tracking.info.get("fit") or [], 1):
        if verdict in ("fair", "poor"):
            print(f"warning: visit {k}'s body fit is {verdict}: matches there are less reliable", file=sys.stderr)
    sl = tracking.info.get("second_look")
    if sl and (sl["visit1"] or sl["visit2"]):
        print(f"second look: {len(sl['visit1'])} lesions found on visit 1 and {len(sl['visit2'])} on visit 2 where "
              f"the other visit had one (listed in visit1_lesions.json / visit2_lesions.json)")
    return write_tracking(tracking, out, v1, v2)


def cmd_track(args: argparse.Namespace) -> int:
    """Match the lesions of a later visit to an earlier one's; flag new, missing, grown."""
    # read (and check) both visits before any analysis or output
    v1 = _visit(args, args.visit1, args.lesions1, None)
    v2 = _visit(args, args.visit2, args.lesions2, None)
    if args.out:
        out = _out_dir(args, None)
    else:
        name1 = scan_name(v1.scan.meta.source)
        out = _out_dir(args, v2.scan.meta.source, f"tracking-vs-{name1}")
    for k, v in enumerate((v1, v2), 1):
        if v.lesions is None:
            _analyse_visit(args, v, out / f"visit{k}_analysis")
    folders = [out] + [Path(p) for p in (args.visit1, args.visit2) if Path(p).is_dir()]
    for p in _write_tracking(_track(args, v1, v2, out, folders), out, v1, v2):
        print(f"  {p}")
    return 0


def _pair_arg(text: str) -> tuple[int, int]:
    """'ID1:ID2' (visit-1 id, visit-2 id: the order of tracking.csv's id1, id2 columns) or the
    older 'ID2=ID1'. Returns (id2, id1)."""
    t = text.replace(" ", "")
    try:
        if ":" in t and "=" not in t:
            a, b = t.split(":")
            return int(b), int(a)
        if "=" in t and ":" not in t:
            a, b = t.split("=")
            print(f"note: read {text!r} as visit-2 lesion {int(a)} = visit-1 lesion {int(b)} (ID2=ID1); "
                  f"write {int(b)}:{int(a)} (ID1:ID2, tracking.csv's order) to avoid doubt", file=sys.stderr)
            return int(a), int(b)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected ID1:ID2 (visit-1 lesion id : visit-2 lesion id, as in "
                                     "tracking.csv's id1, id2 columns)")


def cmd_review(args: argparse.Namespace) -> int:
    """Record a clinician's decisions on a tracking folder's matches: kept beside the tracking and
    in the per-user review store, so every later tracking of the same two visits applies them."""
    from bodymap import reviewfiles
    from bodymap.track import Tracking

    folder = Path(args.tracking)
    tfile = folder / "tracking.json"
    if not tfile.is_file():
        raise FileNotFoundError(f"{folder}: no tracking.json here; give the folder `bodymap track` wrote")
    t = Tracking.load_json(tfile)
    ids1 = {p.id1 for p in t.pairs} | {p.id1 for p in t.missing}
    ids2 = {p.id2 for p in t.pairs} | {p.id2 for p in t.new}
    bad = []
    pairs = [("confirm", p) for p in args.confirm or []] + [("reassign", p) for p in args.reassign or []] \
        + [("reject", p) for p in args.reject or []]
    for what, (j, i) in pairs:
        miss = ([f"visit 1 has no lesion {i}"] if i not in ids1 else []) + ([f"visit 2 has no lesion {j}"] if j not in ids2 else [])
        if miss:
            bad.append(f"--{what} {i}:{j}: {' and '.join(miss)}")
    for j in args.new or []:
        if j not in ids2:
            bad.append(f"--new {j}: visit 2 has no lesion {j}")
    if bad:
        raise ValueError(f"{tfile}: {'; '.join(bad)} (visit-1 ids {_span(ids1)}, visit-2 ids {_span(ids2)}; "
                         "see tracking.csv)")
    path = folder / "reviews.json"
    v1 = reviewfiles.VisitIds.from_dict(t.info["visit1"], tfile) if isinstance(t.info.get("visit1"), dict) else None
    v2 = reviewfiles.VisitIds.from_dict(t.info["visit2"], tfile) if isinstance(t.info.get("visit2"), dict) else None
    if v1 is not None and v2 is not None:  # earlier decisions on these visits, wherever they were kept
        rv, _, notes = reviewfiles.gather(v1, v2, [folder])
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    else:  # a tracking.json from an older BodyMap: only this folder's reviews
        from bodymap.track import Reviews

        rv = reviewfiles.read_reviews(path)[0] if path.exists() else Reviews()
    for what, (j, i) in pairs:
        if what == "reject":
            rv.reject(j, i)
        else:
            rv.confirm(j, i)
    for j in args.new or []:
        rv.mark_new(j)
    written = [reviewfiles.write_reviews(rv, path, v1, v2)]
    if v1 is not None and v2 is not None:
        written.append(reviewfiles.write_reviews(rv, reviewfiles.store_path(v1.scan, v2.scan), v1, v2))
    print(f"{path}: {len(rv.confirmed)} confirmed, {len(rv.rejected)} rejected, {len(rv.new)} marked new; "
          "every later `bodymap track` of these two visits applies them, whatever its --out"
          + (f" (also kept in {written[1]})" if len(written) > 1 else ""))
    return 0


def _span(ids: set) -> str:
    return f"{min(ids)}-{max(ids)}" if ids else "none"


def _train_ear_macro(args: argparse.Namespace) -> int:
    """`bodymap train ear|macro`: see bodymap.models.earseg.train_ear and macro.train_macro."""
    kw = {k: getattr(args, k) for k in ("seed", "steps", "batch", "lr", "size", "bodies", "views", "minutes",
                                       "threads", "resume", "head_crops")
          if getattr(args, k, None) is not None}
    if "head_crops" in kw and args.model != "ear":
        raise ValueError("--head-crops: only the ear model trains on photo mode's crops")
    cmd = " ".join([f"bodymap train {args.model} --out {args.out}"] + [f"--{k.replace('_', '-')} {v}" for k, v in kw.items()]
                   + ([f"--folder {args.folder}"] if args.folder else []))
    bar = _Bar(f"training {args.model}", enabled=not args.quiet)
    try:
        if args.model == "ear":
            from bodymap.models.earseg import train_ear

            path = train_ear(Path(args.out), folder=args.folder, device=args.device, progress=bar, command=cmd, **kw)
            ship = "bodymap/data/ear_segmentation.pt"
        else:
            from bodymap.models.macro import train_macro

            path = train_macro(Path(args.out), device=args.device, progress=bar, command=cmd, **kw)
            ship = "bodymap/data/macro_anatomy.pt"
    finally:
        bar.close()
    print(f"{path} (copy it to {ship} to ship it)")
    return 0


def _evaluate_diagnosis(args: argparse.Namespace) -> int:
    """`bodymap evaluate diagnosis`: models A and B on held-out crops or a CSV (its held-out
    lesions when the models were trained on it; per class; or melanoma vs rest): precision /
    sensitivity with 95% bootstrap intervals, confusion matrices, McNemar A vs B."""
    from bodymap.models.diagnosis import confusion_table, evaluate_held_out, melanoma_line, score_table

    res = evaluate_held_out(args.weights, args.weights_a, csv=args.csv, n=args.n, seed=args.seed, device=args.device,
                            synth=args.synth)
    d = res["data"]
    print(f"A: {res['checkpoints']['A']}\nB: {res['checkpoints']['B']}")
    where = f"seed {d['seed']}" if "seed" in d else d.get("csv") or f"{len(d.get('visits', []))} visits"
    print(f"held-out {d['kind']} data ({res.get('kind', 'per case')}): {res['n']} cases, {where}, sha256 {d['sha256'][:12]}")
    if res.get("kind") == "melanoma vs rest":
        for k in ("B", "A"):
            print(f"{k}: {melanoma_line(res[k])}")
    else:
        print(score_table(res))
        for k in ("A", "B"):
            if "melanoma" in res[k]:
                print(f"{k} melanoma: {melanoma_line(res[k]['melanoma'])}")
            print(f"confusion {k}:\n{confusion_table(res[k])}")
    if args.json:
        write_text(args.json, json.dumps(res, indent=1))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """`bodymap diagnose`: photographs (with --site), or a scan's lesions (with --lesions):
    class probabilities (CSV, JSON) and Grad-CAM overlays (PNG)."""
    from bodymap.models.diagnosis import DiagnosisModel, diagnose_photos, diagnose_scan, write_diagnoses

    if not args.lesions:  # a bad photo or site is reported before the network is built
        from bodymap.models.quality import load_photo

        for p in args.inputs:
            load_photo(p)
        if args.site:
            from bodymap.models.checkpoint import load_checkpoint
            from bodymap.models.diagnosis import DEFAULT_PATH, TASK

            ck = load_checkpoint(DEFAULT_PATH if args.weights is None else args.weights, TASK)
            _check_sites(args.site, list(ck["arch"].get("sites", [])))
    model = DiagnosisModel.load(args.weights, device=args.device)
    print(model.description)
    if args.lesions:
        from bodymap.pipeline import load_visit

        if len(args.inputs) != 1:
            raise ValueError("with --lesions give exactly one scan")
        v = load_visit(args.inputs[0], args.lesions, units=args.units)  # lesions checked against the scan
        names, crops, diags = diagnose_scan(v.scan, v.lesions, model)
        extra = None
        out = _out_dir(args, args.inputs[0], "diagnosis")
    else:
        sites = args.site or [None]
        if len(sites) not in (1, len(args.inputs)):
            raise ValueError(f"--site: give one site for all photos or one per photo ({len(args.inputs)})")
        sites = sites * len(args.inputs) if len(sites) == 1 else sites
        names, crops, quals, diags = diagnose_photos(args.inputs, sites, model)
        for q in quals:
            if not q.ok:
                print(f"warning: {q.message()}", file=sys.stderr)
        extra = [{"quality": q.to_dict()} for q in quals]
        out = Path(args.out) if args.out else OUT_ROOT / "diagnosis"
    paths = write_diagnoses(out, names, crops, diags, model, extra)
    for n, d in zip(names, diags):
        top = sorted(d.probs.items(), key=lambda kv: -kv[1])[:2]
        why = getattr(d, "ood_reason", None) or "unlike the training images"
        ood = f"; out of distribution ({why}): not a confident label" if d.ood else ""
        print(f"{n}: {d.label} ({', '.join(f'{k} {v:.2f}' for k, v in top)}; site {d.site}{ood})")
        if d.melanoma_check:
            print(f"  melanoma check: {d.melanoma_check}")
    if not args.lesions:
        print("(`bodymap photo` first tells dermoscopy from clinical photos; this model's training data is named above)")
    print(f"  {paths[0]}\n  {paths[1]}\n  {out / 'saliency'}/ ({len(paths) - 2} PNG)")
    return 0


def cmd_photo(args: argparse.Namespace) -> int:
    """`bodymap photo`: photo mode on photographs, the same rules as the GUI's photo tab
    (bodymap.photo): kind, quality, site, ears, diagnosis, each model named with its training
    data and held-out scores. Exit code 2 when a photo cannot be read (the others still run)."""
    from bodymap.photo import _site_code, analyse_files

    sites = args.site or [None]
    if len(sites) not in (1, len(args.photos)):
        raise ValueError(f"--site: give one site for all photos or one per photo ({len(args.photos)})")
    for s in sites:
        _site_code(s)  # an unknown site is an error before any model loads
    sites = sites * len(args.photos) if len(sites) == 1 else sites
    results = analyse_files(args.photos, sites)
    bad = [r for r in results if isinstance(r, str)]
    for r in bad:
        print(f"error: {r}", file=sys.stderr)
    good = [r for r in results if not isinstance(r, str)]
    if args.json:
        print(json.dumps([r.to_dict() for r in good], indent=1))
    else:
        for r in good:
            print("\n".join(r.summary()))
    return 2 if bad else 0


def _train_earfind_photokind(args: argparse.Namespace) -> int:
    """`bodymap train earfind|photokind` (bodymap.models.earfind.train_locator,
    bodymap.models.photokind.train_photokind)."""
    bar = _Bar(f"training {args.model}", enabled=not args.quiet)
    seed = 1 if args.seed is None else args.seed
    try:
        if args.model == "earfind":
            from bodymap.models.earfind import train_locator

            kw = {k: getattr(args, k) for k in ("bodies", "views", "epochs", "batch", "n_pool", "n_negatives", "threads",
                                                "resume") if getattr(args, k, None) is not None}
            if args.size is not None:
                kw["imgsz"] = args.size
            cmd = " ".join([f"bodymap train earfind --out {args.out} --seed {seed}"]
                           + [f"--{'size' if k == 'imgsz' else k.replace('_', '-')} {v}" for k, v in kw.items()]
                           + ([f"--negatives {' '.join(args.negatives)}"] if args.negatives else [])
                           + ([f"--whole-negatives {' '.join(args.whole_negatives)}"] if args.whole_negatives else [])
                           + ([f"--cache {args.cache}"] if args.cache else []))
            path = train_locator(Path(args.out), negatives=args.negatives, whole_negatives=args.whole_negatives,
                                 seed=seed, cache=args.cache,
                                 device=args.device, progress=bar, command=cmd, **kw)
            ship = "bodymap/data/ear_locator.pt"
        else:
            from bodymap.models.photokind import train_photokind

            if not args.dermoscopy or not args.clinical:
                raise ValueError("train photokind needs --dermoscopy CSV and --clinical CSV")
            kw = {k: getattr(args, k) for k in ("bodies", "views", "steps", "batch", "lr", "threads")
                  if getattr(args, k, None) is not None}
            cmd = " ".join([f"bodymap train photokind --out {args.out} --seed {seed} --dermoscopy "
                            f"{' '.join(args.dermoscopy)} --clinical {' '.join(args.clinical)} --cache {args.cache}"]
                           + [f"--{k} {v}" for k, v in kw.items()])
            path = train_photokind(Path(args.out), dermoscopy=args.dermoscopy, clinical=args.clinical,
                                   heads_cache=args.cache or Path(args.out) / "cache", seed=seed, device=args.device,
                                   progress=bar, command=cmd, **kw)
            ship = "bodymap/data/photo_kind.pt"
    finally:
        bar.close()
    print(f"{path} (copy it to {ship} to ship it)")
    return 0


def _check_sites(sites: list, vocabulary: list[str]) -> None:
    """Every --site must be a taxonomy code or name, a data set's site name ("back", "lower
    extremity": diagdata.site_code), one of the model's sites (vocabulary), or 'unknown': a
    misspelt site would silently become 'unknown' and change the diagnosis."""
    from bodymap.models.diagdata import site_code

    known = {s.lower() for s in vocabulary} | {"unknown"}
    bad = [s for s in sites if s is not None and str(s).strip().lower() not in known and site_code(s) is None]
    if bad:
        examples = ", ".join(repr(s) for s in vocabulary[1:6])
        raise ValueError(f"--site {', '.join(repr(b) for b in bad)}: unknown anatomic site; give a taxonomy code or "
                         f"name (e.g. upper_extremity/forearm, 'back of hand', 'back'), one of the model's sites "
                         f"({examples}, ...) or 'unknown'")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`bodymap evaluate ear|macro`: score a checkpoint on held-out rendered data; print the table."""
    if args.model == "diagnosis":
        return _evaluate_diagnosis(args)
    if args.model == "ear":
        from bodymap.models.earseg import evaluate_held_out, score_table, summary_line
    else:
        from bodymap.models.macro import evaluate_held_out, score_table, summary_line
    res = evaluate_held_out(args.weights, device=args.device)
    print(f"{res['checkpoint']}: held-out {res['data']['source']} (seed {res['data']['seed']}, "
          f"{res['data']['images']} images, sha256 {res['data']['sha256'][:12]})")
    print(score_table(res))
    print(summary_line(res))
    if args.json:
        write_text(args.json, json.dumps(res, indent=1))
    return 0


def _train_diagnosis(args: argparse.Namespace) -> int:
    """`bodymap train diagnosis`: models A (image) and B (image + site), same recipe, compared on
    held-out data (see bodymap.models.diagnosis.train_diagnosis)."""
    from bodymap.models.diagnosis import train_diagnosis

    epochs = 10 if args.epochs is None else args.epochs
    seed = 600 if args.seed is None else args.seed
    batch = 64 if args.batch is None else args.batch
    lr = 2e-3 if args.lr is None else args.lr
    size = 64 if args.size is None else args.size
    if args.csv:
        src = f"--csv {args.csv}" + (f" --test-csv {args.test_csv}" if args.test_csv else "")
        src += f" --split {' '.join(str(f) for f in args.split)} --split-seed {args.split_seed}"
        if args.load_size:
            src += f" --load-size {args.load_size}"
        if args.data_name:
            src += f" --data-name {args.data_name!r}"
        if args.licence:
            src += f" --licence {args.licence!r}"
        if args.skip_test:
            src += " --skip-test"
    elif args.synth:
        src = f"--synth {' '.join(args.synth)}" + (f" --test-synth {' '.join(args.test_synth)}" if args.test_synth
                                                    else f" --n-test {args.n_test} --test-seed {args.test_seed}")
    else:
        src = f"--n-train {args.n_train} --n-test {args.n_test} --test-seed {args.test_seed}"
    cmd = (f"bodymap train diagnosis --out {args.out} {src} --seed {seed} --epochs {epochs} --batch {batch} "
           f"--lr {lr} --size {size}" + (f" --recipe {args.recipe}" if args.recipe else "")
           + (f" --steps {args.steps}" if args.steps else "") + (f" --threads {args.threads}" if args.threads else "")
           + (" --parallel" if args.parallel else "") + (f" --device {args.device}" if args.device else ""))
    bar = _Bar("training diagnosis", enabled=not args.quiet)
    try:
        r = train_diagnosis(Path(args.out), csv=args.csv, test_csv=args.test_csv, synth=args.synth,
                            test_synth=args.test_synth, n_train=args.n_train,
                            n_test=args.n_test, seed=seed, test_seed=args.test_seed, size=size, epochs=epochs,
                            batch=batch, lr=lr, device=args.device, command=cmd, progress=bar,
                            max_steps=args.steps, recipe=args.recipe, load_size=args.load_size,
                            split=tuple(args.split), split_seed=args.split_seed, score_test=not args.skip_test,
                            cache=args.cache, data_name=args.data_name, licence=args.licence,
                            threads=args.threads, parallel=args.parallel)
    finally:
        bar.close()
    for line in r["log"][-3:]:
        print(line)
    print(f"{r['B']} (model B; copy it to bodymap/data/diagnosis.pt to ship it)")
    print(f"{r['A']} (model A; copy it to bodymap/data/diagnosis_image_only.pt)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from random weights on data our code makes (see bodymap.detect.yolo)."""
    if args.model in ("ear", "macro"):
        return _train_ear_macro(args)
    if args.model == "diagnosis":
        return _train_diagnosis(args)
    if args.model in ("earfind", "photokind"):
        return _train_earfind_photokind(args)
    from bodymap.detect.yolo import train_detector

    bar = _Bar(f"training {args.model}", enabled=not args.quiet)
    try:
        path = train_detector(Path(args.out), patients=args.patients, seed=500 if args.seed is None else args.seed,
                              epochs=30 if args.epochs is None else args.epochs, model=args.arch, batch=16 if args.batch is None else args.batch, device=args.device, texture=args.texture,
                              lesions=args.lesions, faces=args.faces, tile=args.tile, scale=args.scale,
                              progress=bar)
    finally:
        bar.close()
    print(f"{path} (to ship it: copy it to bodymap/data/detector_yolo.pt, then run scripts/ship_weights.py)")
    return 0


def _detector(args: argparse.Namespace):
    from bodymap.detect import get_detector

    kw = {}
    if args.detector == "yolo":
        kw = {k: v for k, v in (("weights", args.weights), ("conf", getattr(args, "conf", None))) if v is not None}
        kw["trust"] = bool(getattr(args, "trust_weights", False))
    return get_detector(args.detector, **kw)


VIEWS = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}


def cmd_render(args: argparse.Namespace) -> int:
    """Render whole-body views of a scan side by side into a PNG."""
    from PIL import Image

    from bodymap.io import load_scan
    from renderers import render_views

    scan = load_scan(args.scan, units=args.units)
    w, h = (int(x) for x in args.size.lower().split("x"))
    from bodymap.anatomy.labels import axes_view_frame

    # standing in the picture whichever of z or y the scanner calls up
    img = render_views(scan, [VIEWS[v] for v in args.views], w, h, frame=axes_view_frame(scan.vertices))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    print(f"{args.out}: {', '.join(args.views)} views of {args.scan}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Export an analysis folder: PDF report (of the visit, or of the comparison with --previous:
    tracking respects the reviews in the folder), region map (SVG, PNG) or annotated mesh (GLB, PLY)."""
    from bodymap.anatomy.labels import RegionLabels
    from bodymap.export import annotated, report
    from bodymap.pipeline import load_visit

    out = Path(args.out)
    ext = out.suffix.lower()
    if ext not in (".pdf", ".svg", ".png", ".glb", ".ply"):
        raise ValueError(f"{out}: the output must be .pdf, .svg, .png, .glb or .ply")
    out.parent.mkdir(parents=True, exist_ok=True)
    v = load_visit(args.analysis, units=args.units)
    labels_file = Path(args.analysis) / "labels.npz"
    labels = RegionLabels.load(labels_file) if labels_file.exists() else None
    if ext in (".svg", ".png") and labels is None:
        raise ValueError(f"{args.analysis}: no labels.npz; region maps need `bodymap analyze` output")
    if ext == ".pdf":
        comparison = None
        if args.previous:
            before = load_visit(args.previous, units=args.units)
            comparison = (before.scan, before.lesions, _track(args, before, v, Path(args.analysis),
                                                              [Path(args.analysis), Path(args.previous)]))
        hs = None
        if comparison is not None:  # a page per flagged lesion: its close-ups at both visits
            from bodymap.history import HistoryVisit, flagged_histories
            from bodymap.followup import chain_ids

            from bodymap.export.record import visit_date_of

            hv = [HistoryVisit(x.scan, x.lesions, visit_date_of(x.scan) or None, x.correspondence) for x in (before, v)]
            hs = flagged_histories(hv, chain_ids([[l.id for l in x.lesions.lesions] for x in hv], [comparison[2]]))
        from bodymap.anatomy.labels import registered_view_frame as upright

        frames = (upright(v.scan.vertices, v.correspondence),
                  upright(before.scan.vertices, before.correspondence) if comparison is not None else None)
        report.write_report(out, v.scan, v.lesions, comparison=comparison, histories=hs, frames=frames)
    elif ext == ".svg":
        report.write_region_svg(v.scan, labels, v.lesions, out)
    elif ext == ".png":
        report.write_region_png(v.scan, labels, v.lesions, out)
    else:
        annotated.write_annotated_mesh(v.scan, v.lesions, out)
    print(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export an analysis folder in a standard: SLICE-3D lesion table (CSV, + tiles), DICOM
    (close-ups, body maps, measurement report) or FHIR (a Bundle, JSON)."""
    from bodymap.export import standard_export

    if args.tiles and args.format != "slice3d":
        raise ValueError("--tiles: only with --format slice3d")
    bar = _Bar(f"exporting {args.format}", enabled=not args.quiet)
    try:
        paths = standard_export(args.format, args.analysis, args.out, patient=args.patient, previous=args.previous,
                                tracking=args.tracking, tiles=args.tiles, units=args.units, progress=bar)
    finally:
        bar.close()
    shown = paths if len(paths) <= 6 else paths[:3] + [f"... ({len(paths) - 4} more)"] + paths[-1:]
    for p in shown:
        print(f"  {p}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """Analyse, track and index an archive (bodymap.batch.run_batch); a summary at the end.
    Exit code 0 when every item is done, 1 when some failed (they are in the summary and the
    index), 2 for a manifest that cannot be read."""
    from bodymap.batch import run_batch

    try:
        summary = run_batch(args.manifest, args.out, workers=args.workers, ray=args.ray, threads=args.threads,
                            detector=args.detector, progress=not args.quiet)
    except RuntimeError as e:  # another batch holds the folder, Ray missing or unreachable
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.text())
    return 1 if summary.failed else 0


def cmd_query(args: argparse.Namespace) -> int:
    """Lesions of a batch's index matching a WHERE clause over lesion_view (or one SELECT with
    --sql): a table on stdout or every column as CSV."""
    from bodymap.index import SHOWN, QueryError, query

    if args.where and args.sql:
        raise ValueError("give a WHERE clause or --sql, not both")
    try:
        # the printed table needs a few columns (fetching all ~70 of many rows takes seconds)
        shown = None if (args.sql or args.csv) else SHOWN
        res = query(args.folder, where=args.where, sql=args.sql, columns=shown)
    except QueryError as e:
        raise ValueError(f"query: {e}") from None
    if args.csv:
        res.write_csv(args.csv)
        print(f"{len(res)} rows -> {args.csv}")
    else:
        print(res.table(None if args.sql else SHOWN, limit=args.limit or None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bodymap`` command."""
    p = argparse.ArgumentParser(prog="bodymap", description="3D total-body skin-lesion mapping")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("info", help="describe a scan file (OBJ, PLY, OFF, GLB/glTF)")
    q.add_argument("scan")
    q.add_argument("--units", choices=UNITS, help="units of the file (default: detect)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("label", help="label a scan's surface with anatomic regions; write region maps")
    q.add_argument("scan")
    q.add_argument("--out", help="output folder (default: ./bodymap-out/<scan name>/)")
    q.add_argument("--units", choices=UNITS, help="units of the file (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_label)

    q = sub.add_parser("render", help="render whole-body views of a scan to a PNG")
    q.add_argument("scan")
    q.add_argument("out", help="output PNG")
    q.add_argument("--views", nargs="+", choices=list(VIEWS), default=["front", "back"])
    q.add_argument("--size", default="400x800", help="size of one view, WxH pixels")
    q.add_argument("--units", choices=UNITS, help="units of the file (default: detect)")
    q.set_defaults(func=cmd_render)

    q = sub.add_parser("synth", help="generate synthetic patients (scans of several visits + ground truth)")
    q.add_argument("out", help="output folder (one sub-folder per patient)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--patients", type=int, default=1)
    q.add_argument("--lesions", type=int, default=300, help="lesions at the first visit")
    q.add_argument("--texture", type=int, default=4096, help="texture side in texels")
    q.add_argument("--faces", type=int, default=300_000, help="target face count of each scan")
    q.add_argument("--visits", type=int, default=2)
    q.add_argument("--poses", nargs="+", default=["a-pose", "random"],
                   help="pose per visit (a-pose, arms-down, arms-raised, random); the last repeats")
    q.add_argument("--fitzpatrick", type=int, choices=range(1, 7), help="skin type (default: random)")
    q.add_argument("--sex", choices=["female", "male"])
    q.add_argument("--age", type=float, help="years")
    q.add_argument("--height", type=float, help="anny height parameter 0..1")
    q.add_argument("--weight", type=float, help="anny weight parameter 0..1")
    q.add_argument("--muscle", type=float, help="anny muscle parameter 0..1")
    q.add_argument("--freckles", choices=["yes", "no"])
    q.add_argument("--noise", type=float, default=0.2, help="scanner noise, mm")
    q.add_argument("--no-remesh", action="store_true", help="midpoint subdivision instead of remeshing")
    q.add_argument("--no-holes", action="store_true", help="keep soles and armpits")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_synth)

    q = sub.add_parser("train", help="train a model from random weights (detector: YOLO on synthetic texture tiles; "
                                     "ear: U-Net on rendered ear close-ups; macro: EfficientNet-B2 on rendered patches)")
    q.add_argument("model", choices=["detector", "ear", "macro", "diagnosis", "earfind", "photokind"])
    q.add_argument("--out", required=True, help="work folder: synthetic patients, tiles, runs, checkpoint")
    q.add_argument("--patients", type=int, default=6)
    q.add_argument("--seed", type=int, help="default: detector 500, ear and macro 1")
    q.add_argument("--epochs", type=int, help="default: detector 30, diagnosis 10, earfind 35")
    q.add_argument("--arch", default="yolov8n.yaml", help="ultralytics model yaml (random weights)")
    q.add_argument("--batch", type=int, help="default: detector 16, ear 8, macro 16")
    q.add_argument("--device", help="cpu, 0 (first GPU); default: GPU when present")
    q.add_argument("--texture", type=int, default=4096)
    q.add_argument("--lesions", type=int, default=300)
    q.add_argument("--faces", type=int, default=60_000)
    q.add_argument("--tile", type=int, default=192, help="texture tile side, texels")
    q.add_argument("--scale", type=int, default=2, help="tile enlargement for the network")
    q.add_argument("--quiet", action="store_true")
    q.add_argument("--folder", help="ear: train on a folder of photos (images/) and label masks (masks/) instead")
    q.add_argument("--steps", type=int, help="ear/macro: optimiser steps")
    q.add_argument("--resume", help="ear/macro/earfind: start from this checkpoint's weights (a further training round)")
    q.add_argument("--threads", type=int, help="ear/macro/diagnosis: torch CPU threads (default 1: on a busy machine more "
                                               "threads wait on each other)")
    q.add_argument("--minutes", type=float, help="ear/macro: stop after this much training time (the learning-rate "
                                                 "schedule follows the clock)")
    q.add_argument("--lr", type=float, help="peak learning rate")
    q.add_argument("--size", type=int, help="network input side, pixels")
    q.add_argument("--bodies", type=int, help="ear/macro: synthetic bodies rendered for training")
    q.add_argument("--views", type=int, help="ear: close-ups per ear; macro: patches per body")
    q.add_argument("--head-crops", type=int, help="ear: also train on photo mode's crops (ears found in head photos, "
                                                  "decoy boxes) of this many rendered head bodies x --views photos")
    q.add_argument("--csv", help="diagnosis: train on an ISIC-style CSV (image path, diagnosis, anatomic site)")
    q.add_argument("--test-csv", help="diagnosis: held-out CSV (default: a seeded 20%% of --csv)")
    q.add_argument("--synth", nargs="+", help="diagnosis: train on crops cut from the textures of `bodymap synth` "
                                              "patients (folders)")
    q.add_argument("--test-synth", nargs="+", help="diagnosis: held-out `bodymap synth` patients "
                                                   "(default: synthetic crops of --test-seed)")
    q.add_argument("--n-train", type=int, default=3000, help="diagnosis: synthetic training crops")
    q.add_argument("--n-test", type=int, default=2000, help="diagnosis: synthetic held-out crops")
    q.add_argument("--test-seed", type=int, default=9600, help="diagnosis: seed of the held-out crops")
    q.add_argument("--recipe", choices=["synthetic", "real"],
                   help="diagnosis: training recipe (default: real with --csv, else synthetic)")
    q.add_argument("--split", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "DEV", "TEST"),
                   help="diagnosis --csv: shares of lesions (or patients) for training, development, held-out test")
    q.add_argument("--split-seed", type=int, default=0, help="diagnosis --csv: seed of the lesion split")
    q.add_argument("--load-size", type=int, help="diagnosis --csv: side the images are stored at for training "
                                                 "(default 8/7 of --size: room for zoom and shifts)")
    q.add_argument("--parallel", action="store_true", help="diagnosis: train models A and B at the same time in two "
                                                           "processes (--threads each)")
    q.add_argument("--skip-test", action="store_true", help="diagnosis --csv: a tuning run: leave the held-out "
                                                            "test part unscored")
    q.add_argument("--cache", help="diagnosis --csv: folder for the decoded images (one .npz per CSV and size); "
                                   "earfind / photokind: folder of the rendered heads")
    q.add_argument("--negatives", nargs="+", metavar="CSV", help="earfind: real photos without ears (the training "
                                                                 "part of each data set's CSV)")
    q.add_argument("--whole-negatives", nargs="+", metavar="CSV", help="earfind: data sets whose every training-part "
                                                                       "photo is added whole as a photo without an ear "
                                                                       "(clinical close-ups: what photo mode searches)")
    q.add_argument("--n-pool", type=int, help="earfind: real photos lending skin texture and backgrounds (default 1500)")
    q.add_argument("--n-negatives", type=int, help="earfind: real photos added whole as photos without an ear "
                                                   "(default 600)")
    q.add_argument("--dermoscopy", nargs="+", metavar="CSV", help="photokind: dermoscopy data sets (training parts)")
    q.add_argument("--clinical", nargs="+", metavar="CSV", help="photokind: clinical photo data sets (training parts)")
    q.add_argument("--data-name", help="diagnosis --csv: name of the data set, written into the checkpoints")
    q.add_argument("--licence", help="diagnosis --csv: licence of the data (weights trained on it inherit it), "
                                     "written into the checkpoints")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("evaluate", help="score the ear or macro model on held-out rendered data (precision, "
                                        "sensitivity / average precision with 95%% bootstrap intervals)")
    q.add_argument("model", choices=["ear", "macro", "diagnosis"])
    q.add_argument("--weights", help="checkpoint (default: the shipped one; diagnosis: model B)")
    q.add_argument("--device", help="cpu, cuda, 0 (default: GPU when present)")
    q.add_argument("--json", help="also write the scores to this JSON file")
    q.add_argument("--weights-a", help="diagnosis: model A checkpoint (default: the shipped image-only one)")
    q.add_argument("--csv", help="diagnosis: score on an ISIC-style CSV instead of synthetic crops")
    q.add_argument("--synth", nargs="+", help="diagnosis: score on crops cut from the textures of `bodymap synth` "
                                              "patients (folders)")
    q.add_argument("--n", type=int, default=2000, help="diagnosis: held-out synthetic crops")
    q.add_argument("--seed", type=int, default=9600, help="diagnosis: seed of the held-out crops")
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("diagnose", help="diagnose lesion photos (or a scan's lesions): probabilities + Grad-CAM PNGs")
    q.add_argument("inputs", nargs="+", help="photos (JPEG/PNG), or one scan with --lesions")
    q.add_argument("--site", nargs="+", help="anatomic site of the photos: one for all or one per photo "
                                              "(taxonomy code or name, e.g. upper_extremity/forearm, 'back of hand')")
    q.add_argument("--lesions", help="lesion JSON of the scan (from bodymap detect/analyze): diagnose its lesions")
    q.add_argument("--weights", help="diagnosis checkpoint (default: the shipped model B)")
    q.add_argument("--out", help="output folder (default: ./diagnosis, or beside the scan)")
    q.add_argument("--device", help="cpu, cuda, 0 (default: GPU when present)")
    q.add_argument("--units", choices=UNITS, help="units of the scan (default: detect)")
    q.set_defaults(func=cmd_diagnose)

    q = sub.add_parser("photo", help="photo mode: what a photo shows (dermoscopy, clinical close-up, body region, "
                                     "not skin), its site, ears, and a diagnosis where the models allow one")
    q.add_argument("photos", nargs="+", help="photographs (JPEG/PNG)")
    q.add_argument("--site", nargs="+", help="anatomic site: one for all photos or one per photo (taxonomy code or "
                                              "name, e.g. upper_extremity/forearm, back, ear)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_photo)

    q = sub.add_parser("track", help="match lesions between two visits; flag new, missing and grown lesions")
    q.add_argument("visit1", help="earlier visit: an analysis folder, or a scan (analysed unless --lesions1)")
    q.add_argument("visit2", help="later visit: an analysis folder, or a scan (analysed unless --lesions2)")
    q.add_argument("--lesions1", help="lesion JSON of visit 1 (beside its labels.npz, the registration is reused)")
    q.add_argument("--lesions2", help="lesion JSON of visit 2")
    q.add_argument("--out", help="output folder (default: ./bodymap-out/<visit-2 scan>/tracking-vs-<visit-1 scan>); "
                                 "reviews of the two visits are applied whatever it is")
    q.add_argument("--detector", choices=["classical", "yolo"], default="classical")
    q.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
    q.add_argument("--trust-weights", action="store_true",
                   help="load --weights that are not the shipped ones (a YOLO file is a pickle that can run code)")
    q.add_argument("--reviews", help="also apply this reviews file (reviews of the two visits are found in "
                                     "the output folder and the per-user review store anyway)")
    q.add_argument("--units", choices=UNITS, help="units of the files (default: detect)")
    q.add_argument("--no-second-look", action="store_true",
                   help="call lesions new / missing without looking for them on the other scan first")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_track)

    q = sub.add_parser("report", help="export an analysis folder: PDF report, region map (SVG/PNG), annotated mesh (GLB/PLY)")
    q.add_argument("analysis", help="a folder written by `bodymap analyze`")
    q.add_argument("out", help="OUT.pdf | OUT.svg | OUT.png | OUT.glb | OUT.ply")
    q.add_argument("--previous", metavar="ANALYSIS", help="PDF only: an earlier visit's analysis folder (comparison report)")
    q.add_argument("--units", choices=UNITS, help="units of the scan file (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_report)

    q = sub.add_parser("export", help="export an analysis folder in a standard: SLICE-3D lesion table, DICOM, FHIR")
    q.add_argument("analysis", help="a folder written by `bodymap analyze`")
    q.add_argument("--format", required=True, choices=["slice3d", "dicom", "fhir"],
                   help="slice3d: ISIC 2024 SLICE-3D columns (CSV); dicom: a folder of DICOM files; fhir: a Bundle (JSON)")
    q.add_argument("out", help="OUT.csv (slice3d), OUT_DIR (dicom) or OUT.json (fhir)")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--previous", metavar="ANALYSIS", help="an earlier visit's analysis folder: change since then "
                                                          "(tracked now, respecting the folder's reviews.json)")
    g.add_argument("--tracking", metavar="DIR", help="a folder with tracking.json (from `bodymap track`) instead")
    q.add_argument("--patient", metavar="JSON", help="the patient record (default: patient.json beside the scan)")
    q.add_argument("--tiles", metavar="DIR", help="slice3d: also write each lesion's 15 mm tile (JPEG) here")
    q.add_argument("--units", choices=UNITS, help="units of the scan file (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_export)

    q = sub.add_parser("review", help="confirm, reject or reassign matches of a tracking folder (applied by every "
                                      "later `bodymap track` of the same two visits)",
                       description="Pairs are written ID1:ID2 = visit-1 lesion id : visit-2 lesion id, the order of "
                                   "tracking.csv's id1, id2 columns (the older form ID2=ID1 is still read). Ids are "
                                   "checked against the folder's tracking.json. Reviews are kept in the folder and "
                                   "in the per-user review store, and every later tracking of the same two visits "
                                   "applies them, whatever its output folder.")
    q.add_argument("tracking", help="the folder `bodymap track` wrote (holds tracking.json)")
    q.add_argument("--confirm", type=_pair_arg, nargs="+", metavar="ID1:ID2",
                   help="these pairs are right: visit-1 lesion ID1 is visit-2 lesion ID2")
    q.add_argument("--reassign", type=_pair_arg, nargs="+", metavar="ID1:ID2",
                   help="visit-2 lesion ID2 is visit-1 lesion ID1, not the one it was matched to")
    q.add_argument("--reject", type=_pair_arg, nargs="+", metavar="ID1:ID2",
                   help="these pairs are wrong: never match ID1 of visit 1 with ID2 of visit 2")
    q.add_argument("--new", type=int, nargs="+", metavar="ID2", help="these visit-2 lesions are new (no partner)")
    q.set_defaults(func=cmd_review)

    q = sub.add_parser("batch", help="analyse an archive: every scan and photo of a manifest, each patient's visits "
                                     "tracked, a lesion index (resumable)")
    q.add_argument("manifest", help="CSV (patient_id, visit_date, path or scan / photo, site) or a folder PATIENT/VISIT/")
    q.add_argument("--out", required=True, help="output folder (analysis folders, tracking, index.duckdb); "
                                                "a re-run skips finished items")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=1, help="local worker processes (0: in this process)")
    g.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: auto (the cluster of `ray start`), "
                                                   "HOST:PORT, or local (start one here); needs bodymap[cluster]")
    q.add_argument("--threads", type=int, help="CPU threads per item (default: the cores shared among the workers)")
    q.add_argument("--detector", choices=["classical", "yolo"], default="classical")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_batch)

    q = sub.add_parser("query", help="query the lesion index of a batch folder (read-only)")
    q.add_argument("folder", help="the --out folder of `bodymap batch` (or its index.duckdb)")
    q.add_argument("where", nargs="?", help="WHERE clause over lesion_view, e.g. \"site = 'ear' and diameter_mm >= 4 "
                                            "and status = 'grown'\" (default: every lesion)")
    q.add_argument("--sql", help="one SELECT statement instead (tables: patients, visits, lesions, tracks, photos, "
                                 "items; view lesion_view)")
    q.add_argument("--csv", metavar="OUT", help="write every column of the result to this CSV")
    q.add_argument("--limit", type=int, default=50, help="rows printed (0: all; the CSV has all)")
    q.set_defaults(func=cmd_query)

    for name, helptext in (("detect", "detect lesions on a scan's texture; write the lesion table (CSV, JSON)"),
                           ("analyze", "the main job: anatomic regions, lesions, lesion table and region maps")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("scan")
        q.add_argument("--out", help="output folder (default: ./bodymap-out/<scan name>/"
                                     + ("detections/)" if name == "detect" else ")"))
        q.add_argument("--detector", choices=["classical", "yolo"], default="classical")
        q.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
        q.add_argument("--trust-weights", action="store_true",
                       help="load --weights that are not the shipped ones (a YOLO file is a pickle that can run "
                            "code: only weights you trust)")
        q.add_argument("--conf", type=float, help="YOLO score threshold (default: the checkpoint's operating point)")
        q.add_argument("--units", choices=UNITS, help="units of the file (default: detect)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "analyze":
            q.add_argument("--previous", metavar="VISIT",
                           help="an earlier visit (analysis folder or scan): also track lesions against it")
            q.add_argument("--no-second-look", action="store_true",
                           help="with --previous: call lesions new / missing without looking for them on the "
                                "other scan first")
            q.add_argument("--register", action="store_true",
                           help="fit the body again even when the output folder holds this scan's registration")
        if name == "detect":
            q.add_argument("--via-import", metavar="CSV", help="place these VIA (Skin3D) boxes instead of detecting")
            q.add_argument("--via-export", metavar="CSV", help="also write the lesions as a VIA CSV")
            q.add_argument("--views", action="store_true",
                           help="detect on 24 rendered views (1024x2048) instead of the texture map")
        q.set_defaults(func=cmd_detect if name == "detect" else cmd_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point. Errors about the user's files are printed as one line, exit code 2."""
    from bodymap.memory import reuse_freed_memory
    from bodymap.scan import ScanError

    args = build_parser().parse_args(argv)
    _quiet_libraries()
    reuse_freed_memory()
    try:
        return args.func(args)
    except ScanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # RegistrationError is a ValueError
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: name the file, no traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    """Before any command: ultralytics stays offline even when a checkpoint imports it."""
    from bodymap.detect.yolo import offline_env

    offline_env()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
