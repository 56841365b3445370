"""Real photographs through `bodymap batch` (issue 15 in the archive path): what the index says
each photo is.

    python benchmarks/batch_photos.py --work DIR [--per-set 60] [--seed 0] [--sites] [--external ../shared/external]

A manifest of real photos never trained on, drawn at random (``--seed``) from the test parts
(``diagdata.split_rows``) of HAM10000 and PAD-UFES-20 and from ISIC 2017, photos taken of the
ear left out, referenced by path (never copied); one "patient" per data set; with ``--sites``
the data set's anatomic site of each photo goes in the manifest's site column, as a clinic's
archive would give it (photo mode then does not search a close-up of the back for ears). `bodymap batch`
runs them with 2 local workers; the index's photos table then gives, per set: how many photos
were called head, had an ear found, what kind photo mode took them for, how many diagnoses it
called out of distribution, how many got a melanoma verdict over the threshold, how many were
told to retake (the quality check); and the time per photo. Nothing is trained or tuned here.
"""
import argparse
import csv
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.models.diagdata import split_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = (("ham10000", "test"), ("isic2017", "test"), ("pad_ufes20", "test"))
EAR = "head_neck/head/ear"


def write_manifest(path: Path, external: Path, per_set: int, seed: int, sites: bool = False) -> int:
    """The manifest CSV (patient_id = the data set, one visit, photo = the file's path; with
    ``sites`` a site column, the taxonomy code of the data set's site, empty where it has none);
    returns how many photos it lists. The same seed draws the same photos either way."""
    rng = random.Random(seed)
    rows = []
    for name, part in SETS:
        f = external / name / "metadata.csv"
        if not f.exists():
            continue
        pool = [r for r in split_rows(f, part) if r["site_code"] != EAR]
        rows += [(name, "2024-01-01", r["path"], r["site_code"] or "")
                 for r in rng.sample(pool, min(per_set, len(pool)))]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "visit_date", "photo"] + (["site"] if sites else []))
        w.writerows(r if sites else r[:3] for r in rows)
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for the manifest and the batch output")
    ap.add_argument("--per-set", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sites", action="store_true", help="give each photo its data set's anatomic site")
    ap.add_argument("--external", default=str(ROOT.parent / "shared" / "external"))
    a = ap.parse_args()
    from bodymap.batch import run_batch
    from bodymap.index import query

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    n = write_manifest(work / "manifest.csv", Path(a.external), a.per_set, a.seed, a.sites)
    if not n:
        print(f"no photos: {a.external} holds none of {', '.join(s for s, _ in SETS)}")
        return 1
    out = work / f"out_{int(time.time())}"
    t0 = time.perf_counter()
    s = run_batch(work / "manifest.csv", out, workers=2, progress=False)
    wall = time.perf_counter() - t0
    print(f"{n} photos, {s.counts.get('done', 0)} done, {len(s.failed)} failed; {wall:.0f} s with 2 workers "
          f"({wall / n:.2f} s per photo, models loaded once per worker)")
    sql = ("select patient_id, count(*), count(*) filter (where region = 'head'), count(*) filter (where ear_found), "
           "count(*) filter (where photo_kind = 'dermoscopy'), count(*) filter (where photo_kind = 'clinical'), "
           "count(*) filter (where photo_kind = 'body'), count(*) filter (where photo_kind = 'other'), "
           "count(*) filter (where out_of_distribution), count(*) filter (where melanoma_flag), "
           "count(*) filter (where not quality_ok) "
           "from photos group by 1 order by 1")
    print("| set | photos | called head | ear found | dermoscopy / clinical / body / other | diagnosis out of "
          "distribution | melanoma check over | told to retake (quality) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, k, head, ear, de, cl, bo, ot, ood, mel, bad in query(out, sql=sql).rows:
        print(f"| {name} | {k} | {head} | {ear} | {de} / {cl} / {bo} / {ot} | {ood} | {mel} | {bad} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
