"""Archives at scale: every scan and photo of a manifest analysed, every patient's visits
tracked, everything indexed.

    summary = run_batch(MANIFEST, OUT, workers=2)            # local worker processes
    summary = run_batch(MANIFEST, OUT, ray="auto")           # the same tasks on a Ray cluster

The manifest is a CSV (patient_id, visit_date, path or scan / photo, optional site) or a folder
laid out PATIENT/VISIT/ (see ``read_manifest``). Work is split into items, each one call of
``run_item`` in a worker:

- scan ``scan/P/V``: ``bodymap.pipeline.analyze`` + ``write_result``, then every lesion's
  close-up (``closeups/lesion_ID.jpg``, the texture crop the diagnosis model reads) and
  diagnosis (``diagnoses.json``) -> OUT/patients/P/V/analysis/;
- photo ``photo/P/V/NAME``: photo mode's rules (``bodymap.photo``: quality, photo kind, site,
  ears located then segmented, diagnosis of a close-up; ``photo_step``) ->
  OUT/patients/P/V/photos/NAME/photo.json (+ ear_overlay.png);
- track ``track/P/V1--V2``: visit V2 tracked against the patient's previous analysed visit V1
  (``bodymap.pipeline.track_visits``, respecting that folder's reviews.json) ->
  OUT/patients/P/tracking/V1--V2/; a link is submitted as soon as both its scans are done.

An item writes into OUT/tmp/ and its files are then moved into place one by one (each an atomic
rename), and only then is its record OUT/items/ID.json written (atomically): an item with a
record saying "done" is complete. A re-run skips items whose record says done with the same key
(sha256 of the input files' contents, the BodyMap version and the options) and retries the
rest; an item that fails is recorded with its one-line error and never stops the batch. At the
end the lesion index (bodymap.index, OUT/index.duckdb) is rebuilt from the records.

One task function, two executors: ``LocalExecutor`` (spawned worker processes, each holding one
item at a time and limited to its share of threads) and ``RayExecutor`` (Ray tasks on a
cluster; photo models in GPU actors where the cluster has GPUs). Both return
concurrent.futures.Future objects, so the one scheduling loop in ``run_batch`` drives either.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

ITEM_SCHEMA = "bodymap.batch-item/1"
DIAGNOSES_SCHEMA = "bodymap.batch-diagnoses/1"
PHOTO_SCHEMA = "bodymap.batch-photo/2"  # 2: photo mode's record (kind, site source, ears, notes, models)
SCAN_EXTS = (".obj", ".ply", ".glb", ".gltf", ".off")
PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
CLOSEUP_PX = 128
# relative cost of the item kinds, for the progress bar's time left (a scan = 1)
COST = {"scan": 1.0, "track": 0.4, "photo": 0.03, "error": 0.0}


def version() -> str:
    """The BodyMap version that keys finished items."""
    from bodymap import __version__

    return __version__


# ----------------------------------------------------------------------------- manifest
@dataclasses.dataclass
class Entry:
    """One row of a manifest. patient: patient id; visit: the visit's name (its date, or its
    folder); date: ISO date or ''; path: absolute path of a scan or photo; kind: 'scan' or
    'photo'; site: anatomic site of a photo (taxonomy code or name) or None; where: the
    manifest row or folder it came from (for errors); problem: why it cannot be run, or ''."""

    patient: str
    visit: str
    date: str
    path: str
    kind: str
    site: str | None = None
    where: str = ""
    problem: str = ""


_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def iso_date(text: str) -> str:
    """'2024-05-01' for '2024-05-01' or '20240501'; '' for anything else."""
    m = _DATE.match(text.strip())
    return f"{m[1]}-{m[2]}-{m[3]}" if m else ""


def kind_of(path: str | Path) -> str | None:
    """'scan' or 'photo' from a file's extension, None for neither."""
    ext = Path(path).suffix.lower()
    return "scan" if ext in SCAN_EXTS else "photo" if ext in PHOTO_EXTS else None


def read_manifest(path: str | Path) -> list[Entry]:
    """The entries of a manifest.

    A CSV: a header with patient_id, visit_date and a file column (path, scan or photo; paths
    relative to the CSV's folder), optionally site (of a photo). A row's kind comes from its
    column (scan / photo) or the file's extension (path). The visit's name is its date, or the
    file's folder name when the date is empty.

    A folder: PATIENT/VISIT/ sub-folders; in each visit folder the scan (.obj, .ply, .glb,
    .gltf, .off) and any photos (.jpg, .png, ...; also in sub-folders) other than the scan's
    own texture files. A visit's date is its folder name when that is a date (2024-05-01 or
    20240501), else the visit_date of a synthetic truth.json there, else ''.

    Raises ValueError naming the file for a manifest that cannot be read; a row that cannot
    be run (no patient, unknown file type) becomes an entry with a problem."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest (a CSV or a folder of PATIENT/VISIT/)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable CSV manifest ({e})") from None
    norm = lambda k: (k or "").strip().lower().replace(" ", "_")  # noqa: E731
    rows = [{norm(k): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
    cols = set(rows[0]) if rows else set()
    file_cols = [c for c in ("scan", "photo", "path", "scan_path", "photo_path", "file") if c in cols]
    if rows and ("patient_id" not in cols or not file_cols):
        raise ValueError(f"{path}: a manifest needs the columns patient_id, visit_date and path (or scan / photo); "
                         f"it has {', '.join(sorted(cols))}")
    out = []
    for n, r in enumerate(rows, 2):  # row 1 is the header
        where = f"{path.name} row {n}"
        for col in file_cols:
            f = r.get(col, "")
            if not f:
                continue
            fp = Path(f).expanduser()
            fp = fp if fp.is_absolute() else path.parent / fp
            kind = "scan" if col.startswith("scan") else "photo" if col.startswith("photo") else kind_of(fp)
            date = iso_date(r.get("visit_date", ""))
            visit = date or r.get("visit_date", "") or fp.parent.name
            problem = ""
            if not r.get("patient_id"):
                problem = f"{where}: no patient_id"
            elif kind is None:
                problem = f"{fp}: not a scan ({', '.join(SCAN_EXTS)}) or photo ({', '.join(PHOTO_EXTS)})"
            elif r.get("visit_date") and not date:
                problem = f"{where}: visit_date {r['visit_date']!r} is not a date (YYYY-MM-DD)"
            out.append(Entry(r.get("patient_id", ""), visit, date, str(fp.resolve()), kind or "photo",
                             r.get("site") or None, where, problem))
    return out


def _read_folder(root: Path) -> list[Entry]:
    out = []
    for pdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for vdir in sorted(v for v in pdir.iterdir() if v.is_dir() and not v.name.startswith(".")):
            files = sorted(f for f in vdir.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(vdir).parts))
            scans = [f for f in files if kind_of(f) == "scan" and f.parent == vdir]
            own = {str(x) for s in scans for x in scan_files(s)}
            date = iso_date(vdir.name) or _truth_date(vdir)
            where = f"{pdir.name}/{vdir.name}"
            for f in scans:
                out.append(Entry(pdir.name, vdir.name, date, str(f.resolve()), "scan", None, where))
            for f in files:
                if kind_of(f) == "photo" and str(f) not in own:
                    out.append(Entry(pdir.name, vdir.name, date, str(f.resolve()), "photo", None, where))
    return out


def _truth_date(folder: Path) -> str:
    try:
        return iso_date(str(json.loads((folder / "truth.json").read_text()).get("visit_date") or ""))
    except (OSError, ValueError):
        return ""


def scan_files(path: str | Path) -> list[Path]:
    """The files a scan is made of: the mesh file and, for OBJ, its MTL files (``mtllib`` in
    the first MiB) and their diffuse textures (``map_Kd``); for glTF, its external buffers and
    images. Only those that exist."""
    path = Path(path)
    out = [path]
    ext = path.suffix.lower()
    try:
        if ext == ".obj":
            with open(path, "rb") as fh:
                head = fh.read(1 << 20).decode("utf-8", "replace")
            for m in re.finditer(r"^\s*mtllib\s+(.+?)\s*$", head, re.M):
                mtl = path.parent / m[1].replace("\\", "/")
                if not mtl.is_file():
                    continue
                out.append(mtl)
                for line in mtl.read_text("utf-8", "replace").splitlines():
                    toks = line.split("#", 1)[0].split()
                    if toks and toks[0].lower() == "map_kd" and len(toks) > 1:
                        tex = mtl.parent / toks[-1].replace("\\", "/")
                        if not tex.is_file():
                            tex = mtl.parent / Path(toks[-1]).name
                        if tex.is_file():
                            out.append(tex)
        elif ext == ".gltf":
            d = json.loads(path.read_text())
            for k in ("buffers", "images"):
                for b in d.get(k, []):
                    uri = b.get("uri", "")
                    if uri and not uri.startswith("data:") and (path.parent / uri).is_file():
                        out.append(path.parent / uri)
    except (OSError, ValueError):
        pass  # the reader says what is wrong with the file when the item runs
    return list(dict.fromkeys(out))


def file_digest(path: str | Path, known: dict | None = None) -> dict:
    """{path, size, mtime_ns, sha256} of a file. known: a digest recorded earlier; its sha256 is
    reused when path, size and mtime are unchanged (a re-run does not read the archive again)."""
    p = Path(path)
    st = p.stat()
    d = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if known and all(known.get(k) == d[k] for k in ("path", "size", "mtime_ns")) and known.get("sha256"):
        d["sha256"] = known["sha256"]
        return d
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    d["sha256"] = h.hexdigest()
    return d


def item_key(kind: str, parts: list, options: dict) -> str:
    """The key of an item's result: sha256 over its kind, the BodyMap version, its options and
    its inputs (file digests, or the keys of the items it builds on)."""
    blob = json.dumps({"kind": kind, "version": version(), "options": options, "inputs": parts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def safe_name(text: str) -> str:
    """A file-system-safe name (letters, digits, '.', '_', '-'; others become '_')."""
    s = re.sub(r"[^A-Za-z0-9._-]", "_", str(text)).strip(".") or "_"
    return s[:120]


def record_path(out: Path, item_id: str) -> Path:
    """OUT/items/<item id, '/' as '~'>.json: where an item's record lives."""
    name = re.sub(r"[^A-Za-z0-9._~#-]", "_", item_id.replace("/", "~"))
    return Path(out) / "items" / (name[:200] + ".json")


def read_record(out: Path, item_id: str) -> dict | None:
    """An item's record (None when there is none or it cannot be read)."""
    try:
        d = json.loads(record_path(out, item_id).read_text())
        return d if d.get("schema") == ITEM_SCHEMA else None
    except (OSError, ValueError):
        return None


def read_records(out: str | Path) -> list[dict]:
    """Every item record under OUT/items/, sorted by item id."""
    recs = []
    for f in sorted((Path(out) / "items").glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if d.get("schema") == ITEM_SCHEMA:
            recs.append(d)
    return sorted(recs, key=lambda r: r["id"])


# ----------------------------------------------------------------------------- the task function
def one_line(e: BaseException) -> str:
    """An exception as one line: its message (ScanError and friends name the file), prefixed by
    its type when the message does not say what went wrong by itself."""
    msg = " ".join(str(e).split()) or type(e).__name__
    named = type(e).__name__ in ("ScanError", "RegistrationError", "CheckpointError") or isinstance(
        e, (ValueError, FileNotFoundError))
    text = msg if named else f"{type(e).__name__}: {msg}"
    return text if len(text) <= 400 else text[:397] + "..."


def run_item(task: dict) -> dict:
    """Run one item (the task function of every executor) and return its record.

    task: a JSON-ready dict (see ``run_batch``): kind ('scan', 'photo', 'track'), id, key,
    out (the output folder), dest (its output folder relative to out), patient, visit, date,
    path, site, inputs, options (detector, threads, step overrides). Writes the outputs into
    OUT/tmp/, moves them into OUT/dest, then writes the record OUT/items/ID.json. Never raises:
    a failure is a record with status 'failed' and a one-line error."""
    t0 = time.perf_counter()
    out = Path(task["out"])
    opts = task.get("options", {})
    _limit_threads(opts.get("threads"))
    rec = {"schema": ITEM_SCHEMA, **{k: task.get(k) for k in ("id", "kind", "key", "patient", "visit", "date", "path",
                                                             "site", "dest", "inputs", "input")},
           "version": version(), "status": "failed", "error": "", "outputs": {}}
    work = out / "tmp" / safe_name(task["id"].replace("/", "~"))
    try:
        if task.get("problem"):
            raise ValueError(task["problem"])
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        step = _resolve(opts.get("steps", {}).get(task["kind"]) or STEPS[task["kind"]])
        rec["outputs"] = step(task, work) or {}
        publish(work, out / task["dest"])
        rec["status"] = "done"
    except Exception as e:  # noqa: BLE001 - an item's failure is recorded, never raised
        rec["error"] = one_line(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rec.update(seconds=round(time.perf_counter() - t0, 2), peak_rss_mb=_peak_rss_mb(), host=socket.gethostname(),
               pid=os.getpid(), threads=opts.get("threads"), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_record(out, rec)
    return rec


def write_record(out: Path, rec: dict) -> None:
    """Write an item's record atomically (OUT/items/ID.json)."""
    from bodymap.jsonfile import write_json

    p = record_path(out, rec["id"])
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, rec)


def publish(work: Path, dest: Path) -> None:
    """Move every file under work into dest (same relative paths), each by an atomic rename;
    files of dest that work does not have (a clinician's reviews.json) are left alone."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in work.rglob("*") if p.is_file()):
        target = dest / f.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)


def _resolve(name_or_fn):
    """A step function from 'module:function' (or the function itself)."""
    if callable(name_or_fn):
        return name_or_fn
    import importlib

    mod, _, fn = name_or_fn.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _limit_threads(threads: int | None) -> None:
    """Hold this process to its share of the cores: OMP / MKL / OpenBLAS threads through the
    environment (torch reads OMP_NUM_THREADS when it is first imported), torch's intra-op
    threads directly when it is already imported."""
    if not threads:
        return
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[k] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _init_worker(threads: int | None) -> None:
    """A local worker's start: its thread share, and (Linux) death with the batch that spawned
    it, so a killed batch leaves no worker finishing an item behind the next run's back."""
    from bodymap.memory import reuse_freed_memory

    _limit_threads(threads)
    reuse_freed_memory()
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux: ru_maxrss in KiB)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return 0.0


# models are loaded once per worker process (a worker runs many items)
_MODELS: dict = {}


def model(kind: str):
    """The shipped model of a kind (photo mode's kinds: 'diagnosis', 'macro', 'kind', 'earfind',
    'earseg', 'quality'), loaded once per process (on the GPU when there is one) by
    ``bodymap.photo.load_model``; ``_MODELS`` holds any set in its place (tests)."""
    if kind not in _MODELS:
        from bodymap.photo import load_model

        _MODELS[kind] = load_model(kind)
    return _MODELS[kind]


def scan_step(task: dict, work: Path) -> dict:
    """Analyse one scan into work/: anatomy and lesions (bodymap.pipeline.analyze +
    write_result), each lesion's close-up (closeups/lesion_ID.jpg, the field the diagnosis
    model reads: max(2.5 x diameter, 8 mm), CLOSEUP_PX square) and diagnosis (diagnoses.json),
    and the patient record found beside the scan (patient.json). Returns a short summary."""
    from bodymap.export.record import find_patient
    from bodymap.io import load_scan
    from bodymap.pipeline import analyze, write_result

    opts = task.get("options", {})
    scan = load_scan(task["path"], patient_id=task["patient"], visit_date=task.get("date") or "")
    scan.require_texture()
    result = analyze(scan, opts.get("detector", "classical"))
    write_result(result, work)
    n_diag = diagnose_lesions(scan, result.lesions, work)
    pfile = find_patient(task["path"], work)
    if pfile is not None:
        shutil.copyfile(pfile, work / "patient.json")
    return {"lesions": len(result.lesions), "diagnosed": n_diag, "timings": result.timings,
            "faces": scan.n_faces}


def diagnose_lesions(scan, lesion_set, work: Path) -> int:
    """Close-up (closeups/lesion_ID.jpg) and diagnosis (diagnoses.json: model, then per lesion
    id label, probabilities and the site read) of each lesion of a textured scan. Returns how
    many were diagnosed."""
    from PIL import Image

    from bodymap.jsonfile import write_json
    from bodymap.models.diagnosis import diagnose_scan

    lesions = list(lesion_set.lesions)
    m = model("diagnosis")
    _, crops, diags = diagnose_scan(scan, lesions, m, CLOSEUP_PX, saliency=False)
    (work / "closeups").mkdir(exist_ok=True)
    for les, c in zip(lesions, crops):
        Image.fromarray(c).save(work / "closeups" / f"lesion_{les.id}.jpg", quality=92)
    write_json(work / "diagnoses.json", {"schema": DIAGNOSES_SCHEMA, "model": m.description,
                                         "lesions": {str(les.id): d.to_dict() for les, d in zip(lesions, diags)}})
    return len(diags)


def photo_step(task: dict, work: Path) -> dict:
    """A photograph, by photo mode's rules (``bodymap.photo.analyse_photo``, the same as
    ``bodymap photo`` and the GUI): quality, what the photo is (dermoscopy, clinical close-up, body
    region, not skin), the site (the manifest's, else the region model's for a body-region
    photo), ears searched and segmented on clinical and body-region photos, a diagnosis of a
    close-up (out of distribution said so). Writes photo.json (photo mode's record, plus "ear":
    the found ear's pixel share and its regions' shares, None without one) and ear_overlay.png
    with an ear into work/; returns a short summary."""
    import numpy as np
    from PIL import Image

    from bodymap import taxonomy as tx
    from bodymap.jsonfile import write_json
    from bodymap.models.earseg import overlay
    from bodymap.models.quality import load_photo
    from bodymap.photo import analyse_photo

    path = task["path"]
    img = load_photo(path)
    if min(img.shape[:2]) < 32:
        raise ValueError(f"{path}: the photo is {img.shape[1]}x{img.shape[0]} pixels, too small to analyse")
    res = analyse_photo(img, site=task.get("site"), models=model, name=Path(path).name)
    ear = None
    if res.ears is not None and res.ears.found:
        labels = np.asarray(res.ears.labels)
        counts = np.bincount(labels.ravel(), minlength=len(tx.EAR_REGIONS))
        ear = {"share": round(float((labels > 0).mean()), 4),
               "regions": {tx.EAR_REGIONS[i]: round(float(c) / labels.size, 4)
                           for i, c in enumerate(counts) if i and c}}
        Image.fromarray(np.asarray(overlay(img, labels))).save(work / "ear_overlay.png")
    rec = {"schema": PHOTO_SCHEMA, "path": path, **res.to_dict(), "ear": ear,
           "ear_share": ear["share"] if ear else 0.0}
    write_json(work / "photo.json", rec)
    return {"region": res.region, "kind": res.kind.label if res.kind is not None else None,
            "diagnosis": res.diagnosis.label if res.diagnosis is not None else None,
            "quality_ok": res.quality.ok if res.quality is not None else None}


def track_step(task: dict, work: Path) -> dict:
    """Track the later visit of a link against the earlier one (bodymap.pipeline.track_visits on
    their analysis folders, respecting OUT/dest/reviews.json); tracking.json, tracking.csv and
    the change map into work/."""
    from bodymap.pipeline import load_visit, track_visits, write_tracking

    out = Path(task["out"])
    v1, v2 = (load_visit(out / d) for d in task["inputs"])
    tr = track_visits(v1, v2, reviews=out / task["dest"] / "reviews.json")
    write_tracking(tr, work, v1, v2)
    return {"matched": len(tr.pairs), "new": len(tr.new), "missing": len(tr.missing)}


STEPS = {"scan": "bodymap.batch:scan_step", "photo": "bodymap.batch:photo_step", "track": "bodymap.batch:track_step"}


# ----------------------------------------------------------------------------- executors
class LocalExecutor:
    """Worker processes on this machine (spawned, so no state is shared): workers processes,
    each running one item at a time with threads threads (OMP/MKL/torch). workers = 0 runs
    items in this process (for debugging)."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        import multiprocessing as mp

        self.workers, self.threads = max(int(workers), 0), threads
        self.slots = max(self.workers, 1)
        self._env = {}
        if self.workers:
            # spawned children take the environment at their start: BLAS reads it at import
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                self._env[k] = os.environ.get(k)
                os.environ[k] = str(threads or 1)
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_init_worker, initargs=(threads or 1,))
        self.description = (f"{self.workers} local worker process{'es' if self.workers != 1 else ''}"
                            if self.workers else "in this process") + f", {threads or 1} thread(s) each"

    def submit(self, task: dict) -> cf.Future:
        """Run run_item(task) in a worker; a Future of its record."""
        if self.workers:
            return self._pool.submit(run_item, task)
        f = cf.Future()
        f.set_result(run_item(task))
        return f

    def restart(self) -> None:
        """A new pool after a worker died (its futures are all broken)."""
        import multiprocessing as mp

        if self.workers:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_init_worker, initargs=(self.threads or 1,))

    def close(self, cancel: bool = False) -> None:
        if self.workers:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            for k, v in self._env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class RayExecutor:
    """The same items as Ray tasks. address: a cluster's address ('auto': the cluster this
    machine belongs to, started by `ray start`; 'local': start a private one here). Scans and
    tracks are tasks of threads CPUs each; photos run in actors that keep the photo models
    loaded, one per GPU (num_gpus=1) where the cluster has GPUs. Inputs and OUT must be on
    storage every node sees at the same path. runtime_env: passed to ray.init (e.g. env_vars)."""

    def __init__(self, address: str = "auto", threads: int | None = None, runtime_env: dict | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--ray needs Ray: pip install 'bodymap[cluster]'") from None
        self.ray, self.threads = ray, threads or 1
        self._own = not ray.is_initialized()
        if self._own:
            try:
                ray.init(address=None if address == "local" else address, runtime_env=runtime_env,
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise RuntimeError(f"--ray {address}: no Ray cluster there ({one_line(e)}); start one with "
                                   "`ray start --head`, or use --ray local") from None
        res = ray.cluster_resources()
        self.slots = max(int(res.get("CPU", 1) // self.threads), 1)
        self._task = ray.remote(run_item).options(num_cpus=self.threads)
        gpus = int(res.get("GPU", 0))
        self._actors = [ray.remote(_ModelActor).options(num_gpus=1, num_cpus=1).remote() for _ in range(gpus)]
        self._next = 0
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        self.description = (f"Ray cluster {address}: {nodes} node(s), {int(res.get('CPU', 0))} CPUs, {gpus} GPU(s); "
                            f"{self.slots} task slots of {self.threads} CPU(s)")

    def submit(self, task: dict) -> cf.Future:
        """run_item(task) as a Ray task (a photo on a GPU actor when there are any)."""
        if task["kind"] == "photo" and self._actors:
            actor = self._actors[self._next % len(self._actors)]
            self._next += 1
            return actor.run.remote(task).future()
        return self._task.remote(task).future()

    def restart(self) -> None:
        pass  # Ray replaces dead workers itself

    def close(self, cancel: bool = False) -> None:
        for a in self._actors:
            self.ray.kill(a)
        self._actors = []
        if self._own:  # disconnect (a cluster started elsewhere keeps running)
            self.ray.shutdown()


class _ModelActor:
    """A Ray actor that runs photo items: the photo models stay loaded on its GPU."""

    def run(self, task: dict) -> dict:
        return run_item(task)


# ----------------------------------------------------------------------------- the batch
@dataclasses.dataclass
class Summary:
    """What a batch run did. counts: done (this run), skipped (done before), failed, per kind;
    failed: [(item id, error)]; seconds: wall time; index: path of the lesion index;
    executor: description; records: every item's record of this run."""

    counts: dict
    failed: list
    seconds: float
    index: str
    executor: str
    records: list

    def text(self) -> str:
        """The summary printed at the end of `bodymap batch`."""
        c = self.counts
        kinds = ", ".join(f"{k} {v['done']}+{v['skipped']} skipped/{v['failed']} failed"
                          for k, v in c["by_kind"].items())
        lines = [f"batch: {c['done']} done, {c['skipped']} skipped (finished before), {c['failed']} failed "
                 f"in {self.seconds:.0f} s ({self.executor})", f"  by kind (done+skipped/failed): {kinds}"]
        scans = [r for r in self.records if r["kind"] == "scan" and r["status"] == "done"]
        if scans:
            lines.append(f"  scans: {sum(r['seconds'] for r in scans) / len(scans):.1f} s each on average, "
                         f"peak worker memory {max(r.get('peak_rss_mb') or 0 for r in self.records):.0f} MB")
        for item, err in self.failed[:20]:
            lines.append(f"  failed {item}: {err}")
        if len(self.failed) > 20:
            lines.append(f"  ... {len(self.failed) - 20} more failed items (see the index's items table)")
        lines.append(f"  index: {self.index}")
        return "\n".join(lines)


class _Lock:
    """One batch at a time per output folder (an flock held while the driver runs)."""

    def __init__(self, out: Path):
        import fcntl

        self.fh = open(out / ".batch.lock", "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise RuntimeError(f"{out}: another `bodymap batch` is writing to this folder") from None

    def release(self) -> None:
        self.fh.close()


def plan(entries: list[Entry], out: Path, options: dict) -> tuple[list[dict], dict]:
    """Scan and photo tasks of the entries (see run_item) and, per patient, its scan task ids
    in date order. A second scan of one visit, or a duplicate photo, becomes a failed item."""
    tasks, seen, by_patient = [], set(), {}
    for n, e in enumerate(entries):
        pv = f"{e.patient}/{e.visit}"
        if e.kind == "scan":
            iid, dest = f"scan/{pv}", f"patients/{safe_name(e.patient)}/{safe_name(e.visit)}/analysis"
        else:
            iid = f"photo/{pv}/{Path(e.path).stem}"
            dest = f"patients/{safe_name(e.patient)}/{safe_name(e.visit)}/photos/{safe_name(Path(e.path).stem)}"
        problem = e.problem
        if iid in seen:
            problem = problem or (f"{e.where}: patient {e.patient} visit {e.visit} has a second scan "
                                  f"({e.path}); one scan per visit" if e.kind == "scan"
                                  else f"{e.where}: a second photo named {Path(e.path).name} in this visit")
            iid = f"{iid}#{n}"
        seen.add(iid)
        t = {"id": iid, "kind": e.kind, "patient": e.patient, "visit": e.visit, "date": e.date, "path": e.path,
             "site": e.site, "dest": dest, "out": str(out), "options": options, "problem": problem}
        tasks.append(t)
        if e.kind == "scan" and not problem:
            by_patient.setdefault(e.patient, []).append(t)
    order = {p: [t["id"] for t in sorted(ts, key=lambda t: (t["date"] or "9999", t["visit"]))]
             for p, ts in by_patient.items()}
    return tasks, order


def _key_task(task: dict) -> None:
    """Give a scan or photo task its input digests and key (a missing file: a problem)."""
    if task.get("problem"):
        task["key"] = ""
        return
    old = read_record(Path(task["out"]), task["id"]) or {}
    known = {d["path"]: d for d in (old.get("input") or [])}
    files = scan_files(task["path"]) if task["kind"] == "scan" else [Path(task["path"])]
    try:
        task["input"] = [file_digest(f, known.get(str(f))) for f in files]
    except OSError as e:
        task["problem"] = f"{task['path']}: {e.strerror or e}"
        task["key"] = ""
        return
    opts = {k: v for k, v in task["options"].items() if k in ("detector", "steps")}
    task["key"] = item_key(task["kind"], [[d["sha256"] for d in task["input"]], task.get("site")], opts)


def _failed_record(task: dict, error: str) -> dict:
    """The record of an item that failed outside run_item."""
    return {"schema": ITEM_SCHEMA, **{k: task.get(k) for k in ("id", "kind", "key", "patient", "visit", "date", "path",
                                                               "site", "dest", "inputs", "input")},
            "status": "failed", "error": error, "outputs": {}, "version": version(), "seconds": None,
            "peak_rss_mb": None, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_batch(manifest: str | Path, out: str | Path, workers: int = 1, ray: str | None = None,
              threads: int | None = None, detector: str = "classical", progress: bool = True,
              steps: dict | None = None, runtime_env: dict | None = None, on_record=None) -> Summary:
    """Analyse, track and index an archive (see the module docstring).

    manifest: CSV or PATIENT/VISIT/ folder (read_manifest); out: output folder; workers: local
    worker processes (0: in this process); ray: a Ray address ('auto', 'local', 'HOST:PORT')
    instead; threads: CPU threads per item (default: the cores shared among the workers, at
    least 1); detector: 'classical' or 'yolo'; progress: a progress bar on stderr; steps:
    {kind: 'module:function'} overriding an item kind's step (tests); on_record(record): called
    in the driver after each item. Returns a Summary (also written to OUT/summary.json)."""
    from bodymap.index import build_index
    from bodymap.jsonfile import write_json

    t0 = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = _Lock(out)
    try:
        shutil.rmtree(out / "tmp", ignore_errors=True)  # left by a run that was killed
        entries = read_manifest(manifest)
        if threads is None:
            threads = max((os.cpu_count() or 1) // max(workers, 1), 1) if not ray else 1
        if not ray and workers == 0:
            threads = None  # in this process: its threads are the caller's business
        options = {"detector": detector, "threads": threads, "steps": steps or {}}
        tasks, order = plan(entries, out, options)
        with cf.ThreadPoolExecutor(4) as tp:  # hashing is I/O: overlap the files
            list(tp.map(_key_task, tasks))
        executor = RayExecutor(ray, threads, runtime_env) if ray else LocalExecutor(workers, threads)
        try:
            records = _schedule(executor, tasks, order, out, options, progress, on_record)
        except BaseException:
            executor.close(cancel=True)
            raise
        executor.close()
        shutil.rmtree(out / "tmp", ignore_errors=True)
        index = build_index(out)
    finally:
        lock.release()
    counts = {"done": 0, "skipped": 0, "failed": 0, "by_kind": {}}
    for r in records:
        st = "skipped" if r.get("skipped") else r["status"]
        counts[st] += 1
        k = counts["by_kind"].setdefault(r["kind"], {"done": 0, "skipped": 0, "failed": 0})
        k[st] += 1
    failed = [(r["id"], r["error"]) for r in records if r["status"] == "failed"]
    summary = Summary(counts, failed, round(time.time() - t0, 1), str(index), executor.description, records)
    write_json(out / "summary.json", {"counts": counts, "failed": failed, "seconds": summary.seconds,
                                      "executor": executor.description, "index": str(index),
                                      "version": version(), "manifest": str(Path(manifest).resolve())})
    return summary


def _schedule(executor, tasks: list[dict], order: dict, out: Path, options: dict, progress: bool, on_record) -> list:
    """The scheduling loop shared by every executor: submit ready items (tracking links first,
    then scans, then photos) keeping at most 2 per slot in flight; a link is made once every
    earlier visit of its patient has finished, between consecutive analysed visits."""
    from tqdm import tqdm

    by_id = {t["id"]: t for t in tasks}
    state: dict[str, str] = {}  # item id -> 'done' | 'failed'
    records: list[dict] = []
    queue = {"track": [], "scan": [], "photo": []}
    linked: set = set()
    closed: set = set()
    n_links = sum(max(len(v) - 1, 0) for v in order.values())
    bar = tqdm(total=sum(COST[t["kind"]] for t in tasks) + n_links * COST["track"], disable=not progress,
               file=sys.stderr, bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left",
               desc="batch")
    tally = {"done": 0, "failed": 0, "skipped": 0, "total": len(tasks) + n_links}

    def show():
        bar.set_description_str(f"batch: {tally['done'] + tally['skipped']}/{tally['total']} items done, "
                                f"{tally['failed']} failed", refresh=True)

    def finish(rec: dict, skipped: bool = False) -> None:
        rec = {**rec, "skipped": skipped}
        state[rec["id"]] = rec["status"]
        records.append(rec)
        tally["skipped" if skipped else rec["status"]] += 1
        if skipped:
            bar.total -= COST[rec["kind"]]  # finished before: not part of this run's time left
        else:
            bar.update(COST[rec["kind"]])
        if rec["kind"] == "scan" and rec["patient"] in order:
            new_links(rec["patient"])
        show()
        if on_record is not None:
            on_record(rec)

    def new_links(patient: str) -> None:
        ids = order[patient]
        done_prefix = []
        for sid in ids:
            if sid not in state:
                break
            if state[sid] == "done":
                done_prefix.append(sid)
        for a, b in zip(done_prefix, done_prefix[1:]):
            if (a, b) not in linked:
                linked.add((a, b))
                add(link_task(by_id[a], by_id[b]))
        if patient not in closed and all(s in state for s in ids):
            closed.add(patient)  # links a failed scan prevents leave the total
            unmade = (len(ids) - 1) - max(len(done_prefix) - 1, 0)
            if unmade > 0:
                tally["total"] -= unmade
                bar.total -= unmade * COST["track"]

    def link_task(a: dict, b: dict) -> dict:
        ra, rb = read_record(out, a["id"]), read_record(out, b["id"])
        va, vb = a["visit"], b["visit"]
        dest = f"patients/{safe_name(a['patient'])}/tracking/{safe_name(va)}--{safe_name(vb)}"
        reviews = out / dest / "reviews.json"
        rv = file_digest(reviews)["sha256"] if reviews.is_file() else None
        key = item_key("track", [ra["key"], rb["key"], rv], {k: v for k, v in options.items() if k == "steps"})
        return {"id": f"track/{a['patient']}/{va}--{vb}", "kind": "track", "patient": a["patient"], "visit": vb,
                "date": b["date"], "path": None, "site": None, "dest": dest, "out": str(out), "options": options,
                "inputs": [a["dest"], b["dest"]], "visits": [va, vb], "key": key, "problem": ""}

    def add(t: dict) -> None:
        if t.get("problem"):  # known before running: recorded here, not sent to a worker
            rec = _failed_record(t, t["problem"])
            write_record(out, rec)
            finish(rec)
            return
        old = read_record(out, t["id"])
        if old and old.get("status") == "done" and old.get("key") == t["key"] and t["key"] \
                and (out / t["dest"]).is_dir():
            finish(old, skipped=True)
        else:
            queue[t["kind"]].append(t)

    show()
    for t in tasks:
        add(t)
    running: dict[cf.Future, dict] = {}
    # items in flight when a worker process died: run again one at a time, so that the one that
    # kills its worker is found (and recorded as failed) and the others finish
    suspects: list[dict] = []
    try:
        while running or any(queue.values()) or suspects:
            if suspects:
                if not running:
                    t = suspects.pop(0)
                    t["alone"] = True
                    running[executor.submit(t)] = t
            else:
                while len(running) < 2 * executor.slots and any(queue.values()):
                    t = next(queue[k].pop(0) for k in ("track", "scan", "photo") if queue[k])
                    running[executor.submit(t)] = t
            if not running:
                continue
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            broken = False
            for f in done:
                t = running.pop(f)
                try:
                    rec = f.result()
                except Exception as e:  # noqa: BLE001 - a worker died (memory?), Ray could not run the task
                    if isinstance(e, cf.process.BrokenProcessPool):
                        broken = True
                        if not t.get("alone"):
                            suspects.append(t)
                            continue
                        why = "its worker process died (out of memory?)"
                    else:
                        why = f"its worker failed: {one_line(e)}"
                    rec = _failed_record(t, why)
                    write_record(out, rec)
                finish(rec)
            if broken:  # the pool is gone with every item in it
                suspects += list(running.values())
                running.clear()
                executor.restart()
    finally:
        bar.close()
    return records
