"""The ``bodymap`` command. Each subcommand is a thin layer over library functions.

    bodymap info SCAN [--units m|cm|mm] [--json]
    bodymap label SCAN [--out DIR]
    bodymap render SCAN OUT.png [--views front back left right] [--size 400x800]
    bodymap synth OUT [--seed N] [--patients K] [--lesions N] [--texture 4096] [--faces 300000] ...
    bodymap detect SCAN [--out DIR] [--detector classical|yolo] [--views] [--via-import CSV] [--via-export CSV]
    bodymap analyze SCAN [--out DIR] [--detector classical|yolo]
    bodymap track VISIT1 VISIT2 [--lesions1 J --lesions2 J] [--out DIR]  (scans or analysis folders)
    bodymap review TRACKING_DIR [--confirm ID2=ID1] [--reject ID2=ID1] [--new ID2]
    bodymap train detector --out DIR [--patients 6] [--epochs 30] [--device cpu|0]
    bodymap report ANALYSIS_DIR OUT.pdf [--previous EARLIER_ANALYSIS_DIR]   (also .svg/.png region map, .glb/.ply mesh)
    bodymap export ANALYSIS_DIR --format slice3d|dicom|fhir OUT [--previous DIR | --tracking DIR] [--patient JSON] [--tiles DIR]
    bodymap train ear|macro --out DIR [--steps N] [--bodies N] [--views N] [--size PX] [--folder DIR (ear)]
    bodymap train diagnosis --out DIR [--csv FILE [--test-csv FILE]] [--n-train 3000] [--epochs 10]
    bodymap evaluate diagnosis [--weights B.pt] [--weights-a A.pt] [--csv FILE | --n 2000 --seed 9600]
    bodymap diagnose PHOTO... [--site SITE...] | SCAN --lesions JSON  [--out DIR]
    bodymap evaluate ear|macro [--weights PT] [--json OUT]
    bodymap batch MANIFEST --out DIR [--workers N | --ray ADDRESS|auto|local] [--threads T] [--detector D]
    bodymap query DIR ["WHERE CLAUSE" | --sql "SELECT ..."] [--csv OUT] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


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


def cmd_info(args: argparse.Namespace) -> int:
    """Print a scan's summary (counts, size in mm, units, texture, texel size)."""
    from bodymap.io import load_scan

    scan = load_scan(args.scan, units=args.units)
    s = scan.summary()
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        for k, v in s.items():
            print(f"{k:>16}: {v}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate synthetic patients with ground truth."""
    from bodymap.synth.body import BodySpec
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
    from bodymap.io import load_scan
    from bodymap.pipeline import write_anatomy

    scan = load_scan(args.scan, units=args.units)
    out = Path(args.out) if args.out else Path(args.scan).with_name(Path(args.scan).stem + "_regions")
    out.mkdir(parents=True, exist_ok=True)
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
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Detect lesions on a scan's texture (no anatomy); write the lesion table and an annotated
    texture. With --via-import, place a VIA CSV's boxes on the scan instead of detecting."""
    from bodymap.io import load_scan
    from bodymap.pipeline import Result, detect_lesions, detect_lesions_in_views, write_result
    from bodymap.via import export_via, import_via

    scan = load_scan(args.scan, units=args.units)
    if not args.views:
        scan.require_texture()
    out = Path(args.out) if args.out else Path(args.scan).with_name(Path(args.scan).stem + "_lesions")
    t0 = time.perf_counter()
    if args.via_import:
        lesions = import_via(scan, args.via_import)
    else:
        bar = _Bar("detecting", enabled=not args.quiet)
        try:
            if args.views:  # rendered views around the body, back-projected through the face-id buffer
                from renderers import orbit_rig

                lesions = detect_lesions_in_views(scan, orbit_rig(scan.bounds), _detector(args), progress=bar)
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
    from bodymap.io import load_scan
    from bodymap.pipeline import analyze, write_result

    scan = load_scan(args.scan, units=args.units)
    scan.require_texture()
    out = Path(args.out) if args.out else Path(args.scan).with_name(Path(args.scan).stem + "_analysis")
    bar = _Bar("analysing", enabled=not args.quiet)
    try:
        result = analyze(scan, _detector(args), progress=bar)
    finally:
        bar.close()
    paths = write_result(result, out)
    _warn(result.lesions)
    t = result.timings
    print(f"{len(result.lesions)} lesions on {scan.n_faces} faces in {t['total_s']:.1f} s "
          f"(anatomy {t.get('anatomy_s', 0):.1f} s, detection {t['detection_s']:.1f} s)")
    if args.previous:
        from bodymap.track import Visit

        before = _visit(args, args.previous, None, out / "previous_analysis")
        now = Visit(scan, result.lesions, result.correspondence)
        paths += _write_tracking(_track(args, before, now, out), out, before, now)
    for p in paths:
        print(f"  {p}")
    return 0


def _warn(lesion_set) -> None:
    """Print the warnings a detection left in its LesionSet (e.g. texture resolution)."""
    for w in lesion_set.info.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)


def _visit(args: argparse.Namespace, path: str, lesions: str | None, analysis_out: Path):
    """A visit for tracking: an analysis folder, or a scan with a lesion JSON, or a bare scan
    (analysed now; its outputs written to analysis_out)."""
    from bodymap.pipeline import analyze, load_visit, write_result

    v = load_visit(path, lesions, units=args.units)
    if v.lesions is None:
        v.scan.require_texture()
        bar = _Bar(f"analysing {Path(path).name}", enabled=not args.quiet)
        try:
            r = analyze(v.scan, _detector(args), progress=bar)
        finally:
            bar.close()
        write_result(r, analysis_out)
        v.lesions, v.correspondence = r.lesions, r.correspondence
    return v


def _track(args: argparse.Namespace, v1, v2, out: Path):
    from bodymap.pipeline import track_visits

    bar = _Bar("tracking", enabled=not args.quiet)
    try:
        return track_visits(v1, v2, reviews=out / "reviews.json", progress=bar)
    finally:
        bar.close()


def _write_tracking(tracking, out: Path, v1, v2) -> list[Path]:
    from bodymap.pipeline import write_tracking

    flagged = tracking.flagged
    print(f"{len(tracking.pairs)} matched, {len(tracking.new)} new, {len(tracking.missing)} missing; "
          f"{len(flagged)} flagged ({sum('grown' in p['flags'] for p in tracking.pairs)} grown) in "
          f"{tracking.info['timings']['total_s']:.1f} s")
    return write_tracking(tracking, out, v1, v2)


def cmd_track(args: argparse.Namespace) -> int:
    """Match the lesions of a later visit to an earlier one's; flag new, missing, grown."""
    out = Path(args.out) if args.out else Path(args.visit2).with_name(Path(args.visit2).stem + "_tracking")
    out.mkdir(parents=True, exist_ok=True)
    v1 = _visit(args, args.visit1, args.lesions1, out / "visit1_analysis")
    v2 = _visit(args, args.visit2, args.lesions2, out / "visit2_analysis")
    for p in _write_tracking(_track(args, v1, v2, out), out, v1, v2):
        print(f"  {p}")
    if (out / "reviews.json").exists():
        print(f"  reviews respected: {out / 'reviews.json'}")
    return 0


def _pair_arg(text: str) -> tuple[int, int]:
    try:
        a, b = text.split("=")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ID2=ID1 (visit-2 lesion id = visit-1 lesion id)") from None


def cmd_review(args: argparse.Namespace) -> int:
    """Record a clinician's decisions on a tracking folder's matches (kept on every re-run)."""
    from bodymap.track import Reviews

    path = Path(args.tracking) / "reviews.json"
    rv = Reviews.load(path) if path.exists() else Reviews()
    for j, i in args.confirm or []:
        rv.confirm(j, i)
    for j, i in args.reject or []:
        rv.reject(j, i)
    for j in args.new or []:
        rv.mark_new(j)
    rv.save(path)
    print(f"{path}: {len(rv.confirmed)} confirmed, {len(rv.rejected)} rejected, {len(rv.new)} marked new "
          "(run `bodymap track` again to apply)")
    return 0


def _train_ear_macro(args: argparse.Namespace) -> int:
    """`bodymap train ear|macro`: see bodymap.models.earseg.train_ear and macro.train_macro."""
    kw = {k: getattr(args, k) for k in ("seed", "steps", "batch", "lr", "size", "bodies", "views", "minutes",
                                       "threads", "resume")
          if getattr(args, k, None) is not None}
    cmd = " ".join([f"bodymap train {args.model} --out {args.out}"] + [f"--{k} {v}" for k, v in kw.items()]
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
    """`bodymap evaluate diagnosis`: models A and B on held-out crops (or a CSV): per-class
    precision / sensitivity with 95% bootstrap intervals, confusion matrices, McNemar A vs B."""
    from bodymap.models.diagnosis import confusion_table, evaluate_held_out, score_table

    res = evaluate_held_out(args.weights, args.weights_a, csv=args.csv, n=args.n, seed=args.seed, device=args.device,
                            synth=args.synth)
    d = res["data"]
    print(f"A: {res['checkpoints']['A']}\nB: {res['checkpoints']['B']}")
    where = f"seed {d['seed']}" if "seed" in d else d.get("csv") or f"{len(d.get('visits', []))} visits"
    print(f"held-out {d['kind']} data: {d['n']} crops, {where}, sha256 {d['sha256'][:12]}")
    print(score_table(res))
    for k in ("A", "B"):
        print(f"confusion {k}:\n{confusion_table(res[k])}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """`bodymap diagnose`: photographs (with --site), or a scan's lesions (with --lesions):
    class probabilities (CSV, JSON) and Grad-CAM overlays (PNG)."""
    from bodymap.models.diagnosis import DiagnosisModel, diagnose_photos, diagnose_scan, write_diagnoses

    model = DiagnosisModel.load(args.weights, device=args.device)
    print(model.description)
    if args.lesions:
        from bodymap.io import load_scan
        from bodymap.lesions import LesionSet

        if len(args.inputs) != 1:
            raise ValueError("with --lesions give exactly one scan")
        scan = load_scan(args.inputs[0], units=args.units)
        names, crops, diags = diagnose_scan(scan, LesionSet.load_json(args.lesions), model)
        extra = None
        out = Path(args.out) if args.out else Path(args.inputs[0]).with_name(Path(args.inputs[0]).stem + "_diagnosis")
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
        out = Path(args.out) if args.out else Path("diagnosis")
    paths = write_diagnoses(out, names, crops, diags, model, extra)
    for n, d in zip(names, diags):
        top = sorted(d.probs.items(), key=lambda kv: -kv[1])[:2]
        print(f"{n}: {d.label} ({', '.join(f'{k} {v:.2f}' for k, v in top)}; site {d.site})")
    print(f"  {paths[0]}\n  {paths[1]}\n  {out / 'saliency'}/ ({len(paths) - 2} PNG)")
    return 0


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
        Path(args.json).write_text(json.dumps(res, indent=1))
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
    elif args.synth:
        src = f"--synth {' '.join(args.synth)}" + (f" --test-synth {' '.join(args.test_synth)}" if args.test_synth
                                                    else f" --n-test {args.n_test} --test-seed {args.test_seed}")
    else:
        src = f"--n-train {args.n_train} --n-test {args.n_test} --test-seed {args.test_seed}"
    cmd = (f"bodymap train diagnosis --out {args.out} {src} --seed {seed} --epochs {epochs} --batch {batch} "
           f"--lr {lr} --size {size}")
    bar = _Bar("training diagnosis", enabled=not args.quiet)
    try:
        r = train_diagnosis(Path(args.out), csv=args.csv, test_csv=args.test_csv, synth=args.synth,
                            test_synth=args.test_synth, n_train=args.n_train,
                            n_test=args.n_test, seed=seed, test_seed=args.test_seed, size=size, epochs=epochs,
                            batch=batch, lr=lr, device=args.device, command=cmd, progress=bar,
                            max_steps=args.steps)
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
    from bodymap.detect.yolo import train_detector

    bar = _Bar(f"training {args.model}", enabled=not args.quiet)
    try:
        path = train_detector(Path(args.out), patients=args.patients, seed=500 if args.seed is None else args.seed,
                              epochs=30 if args.epochs is None else args.epochs, model=args.arch, batch=16 if args.batch is None else args.batch, device=args.device, texture=args.texture,
                              lesions=args.lesions, faces=args.faces, tile=args.tile, scale=args.scale,
                              progress=bar)
    finally:
        bar.close()
    print(f"{path} (copy it to bodymap/data/detector_yolo.pt to ship it)")
    return 0


def _detector(args: argparse.Namespace):
    from bodymap.detect import get_detector

    kw = {}
    if args.detector == "yolo":
        kw = {k: v for k, v in (("weights", args.weights), ("conf", getattr(args, "conf", None))) if v is not None}
    return get_detector(args.detector, **kw)


VIEWS = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}


def cmd_render(args: argparse.Namespace) -> int:
    """Render whole-body views of a scan side by side into a PNG."""
    from PIL import Image

    from bodymap.io import load_scan
    from renderers import render_views

    scan = load_scan(args.scan, units=args.units)
    w, h = (int(x) for x in args.size.lower().split("x"))
    img = render_views(scan, [VIEWS[v] for v in args.views], w, h)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(args.out)
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
            comparison = (before.scan, before.lesions, _track(args, before, v, Path(args.analysis)))
        report.write_report(out, v.scan, v.lesions, comparison=comparison)
    elif ext == ".svg":
        report.write_region_svg(v.scan, labels, v.lesions, out)
    elif ext == ".png":
        report.region_map(v.scan, labels, v.lesions).save(out)
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
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the file (default: detect)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("label", help="label a scan's surface with anatomic regions; write region maps")
    q.add_argument("scan")
    q.add_argument("--out", help="output folder (default: <scan>_regions beside the scan)")
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the file (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_label)

    q = sub.add_parser("render", help="render whole-body views of a scan to a PNG")
    q.add_argument("scan")
    q.add_argument("out", help="output PNG")
    q.add_argument("--views", nargs="+", choices=list(VIEWS), default=["front", "back"])
    q.add_argument("--size", default="400x800", help="size of one view, WxH pixels")
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the file (default: detect)")
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
    q.add_argument("model", choices=["detector", "ear", "macro", "diagnosis"])
    q.add_argument("--out", required=True, help="work folder: synthetic patients, tiles, runs, checkpoint")
    q.add_argument("--patients", type=int, default=6)
    q.add_argument("--seed", type=int, help="default: detector 500, ear and macro 1")
    q.add_argument("--epochs", type=int, help="default: detector 30, diagnosis 10")
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
    q.add_argument("--resume", help="ear/macro: start from this checkpoint's weights (a further training round)")
    q.add_argument("--threads", type=int, help="ear/macro: torch CPU threads (default 1: on a busy machine more "
                                               "threads wait on each other)")
    q.add_argument("--minutes", type=float, help="ear/macro: stop after this much training time (the learning-rate "
                                                 "schedule follows the clock)")
    q.add_argument("--lr", type=float, help="ear/macro: peak learning rate")
    q.add_argument("--size", type=int, help="ear/macro: network input side, pixels")
    q.add_argument("--bodies", type=int, help="ear/macro: synthetic bodies rendered for training")
    q.add_argument("--views", type=int, help="ear: close-ups per ear; macro: patches per body")
    q.add_argument("--csv", help="diagnosis: train on an ISIC-style CSV (image path, diagnosis, anatomic site)")
    q.add_argument("--test-csv", help="diagnosis: held-out CSV (default: a seeded 20%% of --csv)")
    q.add_argument("--synth", nargs="+", help="diagnosis: train on crops cut from the textures of `bodymap synth` "
                                              "patients (folders)")
    q.add_argument("--test-synth", nargs="+", help="diagnosis: held-out `bodymap synth` patients "
                                                   "(default: synthetic crops of --test-seed)")
    q.add_argument("--n-train", type=int, default=3000, help="diagnosis: synthetic training crops")
    q.add_argument("--n-test", type=int, default=2000, help="diagnosis: synthetic held-out crops")
    q.add_argument("--test-seed", type=int, default=9600, help="diagnosis: seed of the held-out crops")
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
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the scan (default: detect)")
    q.set_defaults(func=cmd_diagnose)

    q = sub.add_parser("track", help="match lesions between two visits; flag new, missing and grown lesions")
    q.add_argument("visit1", help="earlier visit: an analysis folder, or a scan (analysed unless --lesions1)")
    q.add_argument("visit2", help="later visit: an analysis folder, or a scan (analysed unless --lesions2)")
    q.add_argument("--lesions1", help="lesion JSON of visit 1 (beside its labels.npz, the registration is reused)")
    q.add_argument("--lesions2", help="lesion JSON of visit 2")
    q.add_argument("--out", help="output folder (default: beside visit 2); its reviews.json is respected")
    q.add_argument("--detector", choices=["classical", "yolo"], default="classical")
    q.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the files (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_track)

    q = sub.add_parser("report", help="export an analysis folder: PDF report, region map (SVG/PNG), annotated mesh (GLB/PLY)")
    q.add_argument("analysis", help="a folder written by `bodymap analyze`")
    q.add_argument("out", help="OUT.pdf | OUT.svg | OUT.png | OUT.glb | OUT.ply")
    q.add_argument("--previous", metavar="ANALYSIS", help="PDF only: an earlier visit's analysis folder (comparison report)")
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the scan file (default: detect)")
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
    q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the scan file (default: detect)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_export)

    q = sub.add_parser("review", help="confirm, reject or reassign matches of a tracking folder")
    q.add_argument("tracking", help="the folder `bodymap track` wrote")
    q.add_argument("--confirm", type=_pair_arg, nargs="+", metavar="ID2=ID1",
                   help="these pairs are right (or: reassign ID2 to ID1)")
    q.add_argument("--reject", type=_pair_arg, nargs="+", metavar="ID2=ID1", help="these pairs are wrong")
    q.add_argument("--new", type=int, nargs="+", metavar="ID2", help="these visit-2 lesions are new")
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
        q.add_argument("--out", help="output folder (default: beside the scan)")
        q.add_argument("--detector", choices=["classical", "yolo"], default="classical")
        q.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
        q.add_argument("--conf", type=float, help="YOLO score threshold (default: the checkpoint's operating point)")
        q.add_argument("--units", choices=["m", "cm", "mm"], help="units of the file (default: detect)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "analyze":
            q.add_argument("--previous", metavar="VISIT",
                           help="an earlier visit (analysis folder or scan): also track lesions against it")
        if name == "detect":
            q.add_argument("--via-import", metavar="CSV", help="place these VIA (Skin3D) boxes instead of detecting")
            q.add_argument("--via-export", metavar="CSV", help="also write the lesions as a VIA CSV")
            q.add_argument("--views", action="store_true",
                           help="detect on 24 rendered views (1024x2048) instead of the texture map")
        q.set_defaults(func=cmd_detect if name == "detect" else cmd_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point. Errors about the user's files are printed as one line, exit code 2."""
    from bodymap.scan import ScanError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # RegistrationError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
