"""The lesion index of a batch output folder: an embedded DuckDB file, OUT/index.duckdb.

    build_index(OUT)                                  # from OUT/items/*.json and the outputs
    res = query(OUT, "site = 'ear' and diameter_mm >= 4 and status = 'grown'")
    res = query(OUT, sql="select site, count(*) from lesion_view group by site")

Tables: patients, visits, lesions, tracks, photos, items (one row per item of the batch: status,
error, key, seconds, peak memory). ``lesion_view`` is the documented surface for queries (its
columns: ``LESION_COLUMNS``, docs/batch.md); a WHERE clause given to ``query`` runs against it.

The index is rebuilt from the files at the end of every batch run (written to a temporary file
and renamed over the old one), so the same outputs always give the same index. Persistent
lesion ids come from bodymap.followup.chain_ids over each patient's tracking links; they are
also written to OUT/patients/P/series.json.

Queries open the file read-only with DuckDB's external access off (no reading or writing other
files, no ATTACH, settings locked) and accept exactly one SELECT statement: a query is the
user's own question about their own archive, and it can neither change the index nor reach
other files. Paths in the tables are relative to OUT; ``query`` returns them absolute.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

INDEX_FILE = "index.duckdb"

# measure keys whose column name would clash with a lesion field
_RENAMED = {"area_mm2": "outline_area_mm2"}


def measure_column(key: str) -> str:
    """The lesion-view column of a measure (bodymap.measures.MEASURES key): the key itself,
    except area_mm2 (the outline's area) -> outline_area_mm2."""
    return _RENAMED.get(key, key)


def _measure_columns() -> list[tuple[str, str]]:
    from bodymap.measures import MEASURE_KEYS

    return [(measure_column(k), "DOUBLE") for k in MEASURE_KEYS]


# (column, type): what each table holds; docs/batch.md describes them
PATIENT_COLUMNS = [("patient_id", "VARCHAR"), ("name", "VARCHAR"), ("sex", "VARCHAR"), ("birth_year", "INTEGER"),
                   ("visits", "INTEGER"), ("photos", "INTEGER"), ("lesions", "INTEGER"), ("failed_items", "INTEGER")]
VISIT_COLUMNS = [("patient_id", "VARCHAR"), ("visit_id", "VARCHAR"), ("visit_date", "DATE"),
                 ("visit_index", "INTEGER"), ("status", "VARCHAR"), ("error", "VARCHAR"), ("lesions", "INTEGER"),
                 ("scan_path", "VARCHAR"), ("analysis_dir", "VARCHAR")]
LESION_COLUMNS = [
    ("patient_id", "VARCHAR"), ("visit_id", "VARCHAR"), ("visit_date", "DATE"), ("visit_index", "INTEGER"),
    ("lesion_id", "INTEGER"), ("persistent_id", "INTEGER"), ("status", "VARCHAR"), ("previous_lesion_id", "INTEGER"),
    ("site", "VARCHAR"), ("site_code", "VARCHAR"), ("site_l1", "VARCHAR"), ("site_l2", "VARCHAR"),
    ("site_l3", "VARCHAR"), ("side", "VARCHAR"), ("macro", "VARCHAR"), ("ear_region", "VARCHAR"),
    ("region", "VARCHAR"), ("diameter_mm", "DOUBLE"), ("area_mm2", "DOUBLE"), ("diameter_change_mm", "DOUBLE"),
    ("area_change_mm2", "DOUBLE"), ("colour_delta_e", "DOUBLE"), ("growth_mm_per_year", "DOUBLE"),
    ("track_confidence", "DOUBLE"), ("flags", "VARCHAR"), ("diagnosis", "VARCHAR"), ("diagnosis_prob", "DOUBLE"),
    ("diagnosis_ood", "BOOLEAN"), ("melanoma_flag", "BOOLEAN"), ("scan_x_mm", "DOUBLE"), ("scan_y_mm", "DOUBLE"),
    ("scan_z_mm", "DOUBLE"), ("colour_l", "DOUBLE"),
    ("colour_a", "DOUBLE"), ("colour_b", "DOUBLE"), ("skin_l", "DOUBLE"), ("skin_a", "DOUBLE"), ("skin_b", "DOUBLE"),
    ("contrast_de", "DOUBLE"), ("confidence", "DOUBLE"), ("source", "VARCHAR"), ("on_skin", "BOOLEAN"),
    ("note", "VARCHAR")]
LESION_TAIL = [("closeup_path", "VARCHAR"), ("analysis_dir", "VARCHAR"), ("scan_path", "VARCHAR")]
TRACK_COLUMNS = [("patient_id", "VARCHAR"), ("persistent_id", "INTEGER"), ("visit_from", "VARCHAR"),
                 ("visit_to", "VARCHAR"), ("date_from", "DATE"), ("date_to", "DATE"), ("lesion_from", "INTEGER"),
                 ("lesion_to", "INTEGER"), ("status", "VARCHAR"), ("confidence", "DOUBLE"), ("distance_mm", "DOUBLE"),
                 ("diameter_from_mm", "DOUBLE"), ("diameter_to_mm", "DOUBLE"), ("diameter_change_mm", "DOUBLE"),
                 ("colour_delta_e", "DOUBLE"), ("flags", "VARCHAR"), ("reviewed", "BOOLEAN"),
                 ("tracking_dir", "VARCHAR")]
PHOTO_COLUMNS = [("patient_id", "VARCHAR"), ("visit_id", "VARCHAR"), ("visit_date", "DATE"), ("name", "VARCHAR"),
                 ("site", "VARCHAR"), ("quality_ok", "BOOLEAN"), ("problems", "VARCHAR"), ("sharpness", "DOUBLE"),
                 ("brightness", "DOUBLE"), ("photo_kind", "VARCHAR"), ("macro", "VARCHAR"), ("macro_prob", "DOUBLE"),
                 ("region", "VARCHAR"),
                 ("ear_found", "BOOLEAN"), ("ear_share", "DOUBLE"), ("ear_regions", "VARCHAR"),
                 ("diagnosis", "VARCHAR"), ("diagnosis_prob", "DOUBLE"), ("out_of_distribution", "BOOLEAN"),
                 ("melanoma_flag", "BOOLEAN"), ("photo_path", "VARCHAR"),
                 ("overlay_path", "VARCHAR"), ("output_dir", "VARCHAR")]
ITEM_COLUMNS = [("item_id", "VARCHAR"), ("kind", "VARCHAR"), ("patient_id", "VARCHAR"), ("visit_id", "VARCHAR"),
                ("path", "VARCHAR"), ("status", "VARCHAR"), ("error", "VARCHAR"), ("key", "VARCHAR"),
                ("seconds", "DOUBLE"), ("peak_rss_mb", "DOUBLE"), ("host", "VARCHAR"), ("finished", "VARCHAR")]

# what `bodymap query` prints for each lesion (the CSV has every column of lesion_view)
SHOWN = ["patient_id", "visit_date", "lesion_id", "persistent_id", "site", "side", "diameter_mm", "status",
         "diagnosis", "closeup_path"]


def lesion_columns() -> list[tuple[str, str]]:
    """Every column of the lesions table and lesion_view: (name, DuckDB type)."""
    return LESION_COLUMNS + _measure_columns() + LESION_TAIL


def tables() -> dict[str, list[tuple[str, str]]]:
    """Table name -> its columns (name, type)."""
    return {"patients": PATIENT_COLUMNS, "visits": VISIT_COLUMNS, "lesions": lesion_columns(),
            "tracks": TRACK_COLUMNS, "photos": PHOTO_COLUMNS, "items": ITEM_COLUMNS}


# ----------------------------------------------------------------------------- building
def _site_levels(code: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(finest name, level-1 name, level-2 name, level-3 name) of a taxonomy site code."""
    from bodymap import taxonomy as tx

    if not code or code not in tx.SITE_INDEX:
        return None, None, None, None
    parts = code.split("/")
    names = [tx.SITES[tx.SITE_INDEX["/".join(parts[:i])]].name for i in range(1, len(parts) + 1)]
    names += [None] * (3 - len(names))
    return tx.SITES[tx.SITE_INDEX[code]].name, names[0], names[1], names[2]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _years(d1: str | None, d2: str | None) -> float | None:
    import datetime

    if not d1 or not d2:
        return None
    days = (datetime.date.fromisoformat(d2) - datetime.date.fromisoformat(d1)).days
    return days / 365.25 if days > 0 else None


def _rnd(x, n: int = 4):
    return None if x is None else round(float(x), n)


def _with_second_look(out: Path, sets: list, trackings: list, tdirs: list) -> tuple[list, list]:
    """The visits' lesion lists and link trackings as the index numbers them, with the lesions a
    tracking's second look found (bodymap.secondlook: its folder's visit1_lesions.json /
    visit2_lesions.json hold the lists its ids refer to; an analysis folder's lesions.json never
    has them). Visit k takes link k's visit-2 list (k >= 1) or link 1's visit-1 list (k = 0).
    A middle visit's lesions found by its later link are left out, with that link's pairs
    naming them (the two links may give different lesions one new id): those lesions of the
    later visit start a new persistent id, as when the link had not paired them."""
    import dataclasses

    from bodymap.lesions import LesionSet

    def listed(k: int, which: int):
        d = tdirs[k] if k < len(tdirs) else None
        f = out / d / f"visit{which}_lesions.json" if d else None
        if f is None or trackings[k] is None or not f.is_file():
            return None
        try:
            return LesionSet.load_json(f)
        except ValueError:
            return None

    sets = list(sets)
    for k in range(len(sets)):
        own = {l.id for l in sets[k].lesions}
        got = listed(k - 1, 2) if k else listed(0, 1)
        if got is not None and own <= {l.id for l in got.lesions}:
            sets[k] = got
    fixed = []
    for k, tr in enumerate(trackings):
        v1 = listed(k, 1)
        if tr is None or v1 is None:
            fixed.append(tr)
            continue
        mine = {l.id: l.point_mm for l in sets[k].lesions}
        # a visit-1 id of this link that the index's list of that visit lacks, or that names
        # another lesion there (more than 1 mm away): not chained through this link
        foreign = {l.id for l in v1.lesions if l.id not in mine
                   or sum((a - b) ** 2 for a, b in zip(l.point_mm, mine[l.id])) > 1.0}
        fixed.append(dataclasses.replace(tr, pairs=[p for p in tr.pairs if p.id1 not in foreign])
                     if foreign else tr)
    return sets, fixed


def build_index(out: str | Path) -> Path:
    """(Re)build OUT/index.duckdb from the item records and outputs under OUT; write each
    patient's persistent ids to OUT/patients/P/series.json. Returns the index path."""
    from bodymap.batch import read_records, safe_name
    from bodymap.followup import chain_ids
    from bodymap.jsonfile import write_json
    from bodymap.lesions import LesionSet
    from bodymap.measures import MEASURE_KEYS
    from bodymap.track import Tracking

    out = Path(out)
    recs = read_records(out)
    rows = {name: [] for name in tables()}
    for r in recs:
        rows["items"].append({"item_id": r["id"], "kind": r["kind"], "patient_id": r.get("patient"),
                              "visit_id": r.get("visit"), "path": r.get("path"), "status": r["status"],
                              "error": r.get("error") or None, "key": r.get("key") or None,
                              "seconds": r.get("seconds"), "peak_rss_mb": r.get("peak_rss_mb"),
                              "host": r.get("host"), "finished": r.get("finished")})
    by_id = {r["id"]: r for r in recs}
    scans = [r for r in recs if r["kind"] == "scan"]
    patients = sorted({r.get("patient") or "" for r in recs if r["kind"] in ("scan", "photo")} - {""})
    for pid in patients:
        mine = sorted((r for r in scans if r["patient"] == pid), key=lambda r: (r.get("date") or "9999", r["visit"]))
        done, sets = [], []
        for r in mine:
            error = r.get("error") or None
            if r["status"] == "done":
                try:
                    sets.append(LesionSet.load_json(out / r["dest"] / "lesions.json"))
                    done.append(r)
                    continue
                except ValueError as e:  # its outputs were damaged since: the visit is out of the chain
                    error = str(e)
            rows["visits"].append({"patient_id": pid, "visit_id": r["visit"], "visit_date": r.get("date") or None,
                                   "visit_index": None, "status": "failed", "error": error, "lesions": None,
                                   "scan_path": r.get("path"), "analysis_dir": None})
        trackings, tdirs = [], []
        for a, b in zip(done, done[1:]):
            t = by_id.get(f"track/{pid}/{a['visit']}--{b['visit']}")
            f = out / t["dest"] / "tracking.json" if t and t["status"] == "done" else None
            try:
                trackings.append(Tracking.load_json(f) if f is not None else None)
            except ValueError:
                trackings.append(None)
            tdirs.append(t["dest"] if t else None)
        sets, trackings = _with_second_look(out, sets, trackings, tdirs)
        series = chain_ids([[l.id for l in s.lesions] for s in sets], trackings)
        (out / "patients" / safe_name(pid)).mkdir(parents=True, exist_ok=True)
        write_json(out / "patients" / safe_name(pid) / "series.json", {
            "schema": "bodymap.series/1", "patient": pid,
            "visits": [{"visit": r["visit"], "date": r.get("date") or "", "analysis": r["dest"],
                        "ids": {str(i): p for i, p in sorted(series.ids[k].items())},
                        "status": {str(i): st for i, st in sorted(series.status[k].items())}}
                       for k, r in enumerate(done)]})
        for k, (r, ls) in enumerate(zip(done, sets)):
            rows["visits"].append({"patient_id": pid, "visit_id": r["visit"], "visit_date": r.get("date") or None,
                                   "visit_index": k, "status": "done", "error": None, "lesions": len(ls.lesions),
                                   "scan_path": r.get("path"), "analysis_dir": r["dest"]})
            diag = _read_json(out / r["dest"] / "diagnoses.json").get("lesions", {})
            tr = trackings[k - 1] if k else None
            pairs = {p.id2: p for p in tr.pairs} if tr is not None else {}
            years = _years(done[k - 1].get("date"), r.get("date")) if k else None
            for l in ls.lesions:
                reg = l.region or {}
                site, l1, l2, l3 = _site_levels(reg.get("code", ""))
                p = pairs.get(l.id)
                d = diag.get(str(l.id)) or {}
                dd = p.diameter_change_mm if p else None
                m = l.measures or {}
                row = {"patient_id": pid, "visit_id": r["visit"], "visit_date": r.get("date") or None,
                       "visit_index": k, "lesion_id": l.id, "persistent_id": series.ids[k][l.id],
                       "status": series.status[k][l.id], "previous_lesion_id": series.previous[k].get(l.id),
                       "site": site, "site_code": reg.get("code"), "site_l1": l1, "site_l2": l2, "site_l3": l3,
                       "side": reg.get("side"), "macro": reg.get("macro"),
                       "ear_region": reg.get("ear") if reg.get("ear") not in (None, "non_ear") else None,
                       "region": reg.get("description"), "diameter_mm": _rnd(l.diameter_mm),
                       "area_mm2": _rnd(l.area_mm2), "diameter_change_mm": dd,
                       "area_change_mm2": _rnd(p.area2_mm2 - p.area1_mm2, 3) if p and p.area1_mm2
                       is not None and p.area2_mm2 is not None else None,
                       "colour_delta_e": p.colour_delta_e if p else None,
                       "growth_mm_per_year": _rnd(dd / years, 3) if dd is not None and years else None,
                       "track_confidence": p.confidence if p else None,
                       "flags": ";".join(p.flags) if p else None,
                       "diagnosis": d.get("label"), "diagnosis_prob": _rnd((d.get("probs") or {}).get(d.get("label"))),
                       "diagnosis_ood": d.get("ood") if d else None, "melanoma_flag": d.get("melanoma_flag"),
                       "scan_x_mm": _rnd(l.point_mm[0], 3), "scan_y_mm": _rnd(l.point_mm[1], 3),
                       "scan_z_mm": _rnd(l.point_mm[2], 3), "colour_l": _rnd(l.colour_lab[0]),
                       "colour_a": _rnd(l.colour_lab[1]), "colour_b": _rnd(l.colour_lab[2]),
                       "skin_l": _rnd(l.skin_lab[0]), "skin_a": _rnd(l.skin_lab[1]), "skin_b": _rnd(l.skin_lab[2]),
                       "contrast_de": _rnd(l.contrast_de), "confidence": _rnd(l.confidence), "source": l.source,
                       "on_skin": bool(l.on_skin), "note": l.note or None,
                       **{measure_column(key): _rnd(m.get(key), 6) for key in MEASURE_KEYS},
                       "closeup_path": f"{r['dest']}/closeups/lesion_{l.id}.jpg"
                       if (out / r["dest"] / "closeups" / f"lesion_{l.id}.jpg").is_file() else None,
                       "analysis_dir": r["dest"], "scan_path": r.get("path")}
                rows["lesions"].append(row)
        for k in range(1, len(done)):
            tr = trackings[k - 1]
            if tr is None:
                continue
            a, b = done[k - 1], done[k]
            base = {"patient_id": pid, "visit_from": a["visit"], "visit_to": b["visit"],
                    "date_from": a.get("date") or None, "date_to": b.get("date") or None, "tracking_dir": tdirs[k - 1]}
            for p in tr.pairs:
                rows["tracks"].append({**base, "persistent_id": series.ids[k].get(p.id2), "status": p.status.value,
                                       "lesion_from": p.id1, "lesion_to": p.id2,
                                       "confidence": p.confidence, "distance_mm": p.distance_mm,
                                       "diameter_from_mm": p.diameter1_mm, "diameter_to_mm": p.diameter2_mm,
                                       "diameter_change_mm": p.diameter_change_mm,
                                       "colour_delta_e": p.colour_delta_e, "flags": ";".join(p.flags),
                                       "reviewed": p.reviewed})
            for p in tr.new:
                rows["tracks"].append({**base, "persistent_id": series.ids[k].get(p.id2), "status": p.status.value,
                                       "lesion_to": p.id2, "diameter_to_mm": p.diameter_mm, "flags": ";".join(p.flags)})
            for p in tr.missing:
                rows["tracks"].append({**base, "persistent_id": series.ids[k - 1].get(p.id1),
                                       "status": p.status.value, "lesion_from": p.id1,
                                       "diameter_from_mm": p.diameter_mm, "flags": ";".join(p.flags)})
        photos = [r for r in recs if r["kind"] == "photo" and r["patient"] == pid]
        for r in photos:
            if r["status"] != "done":
                continue
            ph = _read_json(out / r["dest"] / "photo.json")
            q, d, ear = ph.get("quality") or {}, ph.get("diagnosis") or {}, ph.get("ear")
            macro = ph.get("macro") or {}
            rows["photos"].append({
                "patient_id": pid, "visit_id": r["visit"], "visit_date": r.get("date") or None,
                "name": Path(r["path"]).name, "site": r.get("site"), "quality_ok": q.get("ok"),
                "problems": "; ".join(q.get("problems", [])) or None, "sharpness": _rnd(q.get("sharpness")),
                "brightness": _rnd(q.get("brightness")), "photo_kind": (ph.get("kind") or {}).get("label"),
                "macro": macro.get("label"),
                "macro_prob": _rnd((macro.get("probs") or {}).get(macro.get("label"))), "region": ph.get("region"),
                "ear_found": ear is not None, "ear_share": _rnd(ph.get("ear_share")),
                "ear_regions": ";".join(f"{k}:{v}" for k, v in (ear or {}).get("regions", {}).items()) or None,
                "diagnosis": d.get("label"), "diagnosis_prob": _rnd((d.get("probs") or {}).get(d.get("label"))),
                "out_of_distribution": d.get("out_of_distribution", d.get("ood")) if d else None,
                "melanoma_flag": d.get("melanoma_flag"), "photo_path": r["path"],
                "overlay_path": f"{r['dest']}/ear_overlay.png" if ear else None,
                "output_dir": r["dest"]})
        prec = _read_json(out / done[0]["dest"] / "patient.json") if done else {}
        rows["patients"].append({
            "patient_id": pid, "name": prec.get("name") or prec.get("pseudonym") or None,
            "sex": (prec.get("sex") or (prec.get("body") or {}).get("sex") or None),
            "birth_year": prec.get("birth_year"), "visits": len(done), "photos": sum(r["status"] == "done" for r in photos),
            "lesions": series.n_persistent, "failed_items": sum(r["status"] == "failed" for r in recs
                                                                if r.get("patient") == pid)})
    return write_tables(out / INDEX_FILE, rows)


def write_tables(path: Path, rows: dict[str, list[dict]]) -> Path:
    """Write the tables (name -> list of row dicts; missing keys are NULL) and lesion_view to a
    new DuckDB file at path, atomically (a temporary file renamed over it). Rows are written in
    a fixed order (sorted by their first columns), so the same rows give the same file content."""
    import duckdb
    import numpy as np

    tmp = path.with_name(path.name + ".tmp")
    for p in (tmp, tmp.with_name(tmp.name + ".wal")):
        p.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for name, cols in tables().items():
            con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols)})")
            data = rows.get(name, [])
            if not data:
                continue
            names = [c for c, _ in cols]
            data = sorted(data, key=lambda r: tuple(_sort_key(r.get(c)) for c in names[:6]))
            frame = {c: np.array([r.get(c) for r in data], dtype=object) for c in names}  # noqa: F841 (read by SQL)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM frame")
        con.execute("CREATE VIEW lesion_view AS SELECT * FROM lesions")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def _sort_key(v):
    return (v is None, str(v) if not isinstance(v, (int, float)) else "", v if isinstance(v, (int, float)) else 0)


# columns that differ from run to run of the same batch (timing, memory, machine)
RUN_COLUMNS = {"items": ("seconds", "peak_rss_mb", "host", "finished")}


def snapshot(path: str | Path, patients: set | None = None) -> dict[str, list[tuple]]:
    """Every table of an index as sorted rows, without RUN_COLUMNS: two runs over the same
    inputs give equal snapshots. patients: keep only these patients' rows."""
    import duckdb

    con = duckdb.connect(str(index_path(path)), read_only=True)
    try:
        out = {}
        for name in tables():
            cols = [c for c, _ in tables()[name] if c not in RUN_COLUMNS.get(name, ())]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {name}").fetchall()
            if patients is not None:
                rows = [r for r in rows if r[cols.index("patient_id")] in patients]
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


# ----------------------------------------------------------------------------- queries
class QueryError(ValueError):
    """A query that cannot run: not one SELECT statement, or DuckDB's complaint (one line)."""


class QueryResult:
    """A query's answer, held by column. columns: names; data: {name: list of values} (paths
    absolute); sql: the statement run. rows: the same as tuples (made on first use)."""

    def __init__(self, columns: list[str], data: dict[str, list], sql: str):
        self.columns, self.data, self.sql = columns, data, sql
        self._rows = None

    def __len__(self) -> int:
        return len(self.data[self.columns[0]]) if self.columns else 0

    @property
    def rows(self) -> list[tuple]:
        if self._rows is None:
            self._rows = list(zip(*(self.data[c] for c in self.columns)))
        return self._rows

    def column(self, name: str) -> list:
        return self.data[name]

    def write_csv(self, path: str | Path) -> None:
        """All columns and rows as CSV."""
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.columns)
            w.writerows(self.rows)

    def table(self, columns: list[str] | None = None, limit: int | None = 50) -> str:
        """A plain-text table of the given columns (default all), at most limit rows."""
        cols = [c for c in (columns or self.columns) if c in self.columns]
        n = len(self) if limit is None else min(limit, len(self))
        cells = [[_fmt(self.data[c][k]) for c in cols] for k in range(n)]
        widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        if len(self) > n:
            lines.append(f"... {len(self) - n} more rows (--csv writes them all)")
        lines.append(f"{len(self)} row{'s' if len(self) != 1 else ''}")
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def index_path(folder: str | Path) -> Path:
    """The index file of a batch output folder (or the file itself)."""
    p = Path(folder)
    f = p / INDEX_FILE if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"{folder}: no lesion index (run `bodymap batch MANIFEST --out {folder}` first)")
    return f


def connect(folder: str | Path):
    """A read-only DuckDB connection to a batch folder's index, with external access off and
    settings locked (no other file can be read or written through it)."""
    import duckdb

    con = duckdb.connect(str(index_path(folder)), read_only=True, config={"enable_external_access": False})
    con.execute("SET lock_configuration = true")
    return con


def lesion_sql(where: str | None, columns: list[str] | None = None,
               order: str = "patient_id, visit_date, visit_id, lesion_id") -> str:
    """SELECT of columns (default all) over lesion_view with a WHERE clause (None: every lesion)."""
    w = f"WHERE ({where})" if where and where.strip() else ""
    cols = ", ".join(columns) if columns else "*"
    return f"SELECT {cols} FROM lesion_view {w} ORDER BY {order}"


def query(folder: str | Path, where: str | None = None, sql: str | None = None, columns: list[str] | None = None,
          con=None) -> QueryResult:
    """Run a lesion query on a batch folder's index: a WHERE clause over lesion_view (e.g.
    "site = 'ear' and diameter_mm >= 4 and status = 'grown'") returning columns (default every
    column of lesion_view), or one plain SELECT statement (sql). Path columns (*_path, *_dir)
    come back absolute. con: an open connection (else one is opened and closed). Raises
    QueryError for anything but one SELECT, or a DuckDB error."""
    import duckdb

    if columns:
        known = {c for c, _ in lesion_columns()}
        bad = [c for c in columns if c not in known]
        if bad:
            raise QueryError(f"lesion_view has no column {', '.join(bad)}")
    text = sql if sql is not None else lesion_sql(where, columns)
    own = con is None
    con = connect(folder) if own else con
    try:
        try:
            stmts = con.extract_statements(text)
        except duckdb.Error as e:
            raise QueryError(_one(e)) from None
        if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT:
            raise QueryError("a query is one SELECT statement (the index opens read-only)")
        try:
            cur = con.execute(text)
            cols = [d[0] for d in cur.description]
            types = [str(d[1]) for d in cur.description]
            if len(set(cols)) != len(cols):
                raise QueryError(f"the result has two columns named alike ({', '.join(cols)}): name them apart")
            arrays = cur.fetchnumpy()  # by column: far faster than rows of Python objects
        except duckdb.Error as e:
            raise QueryError(_one(e)) from None
    finally:
        if own:
            con.close()
    data = {c: _values(arrays[c], t) for c, t in zip(cols, types)}
    base = str(index_path(folder).parent)
    for c in cols:
        if c.endswith("_path") or c.endswith("_dir"):
            data[c] = [os.path.join(base, v) if isinstance(v, str) and v and not os.path.isabs(v) else v
                       for v in data[c]]
    return QueryResult(cols, data, text)


def _values(a, dtype: str) -> list:
    """A fetched column (numpy, masked where NULL) as Python values: None for NULL,
    datetime.date for a DATE column."""
    vals = a.tolist()
    if dtype == "DATE":
        vals = [v.date() if v is not None and hasattr(v, "date") else v for v in vals]
    return vals


def _one(e: Exception) -> str:
    return " ".join(str(e).split())[:400]
