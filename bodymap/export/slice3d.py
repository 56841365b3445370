"""The SLICE-3D lesion table: one row per lesion with the ISIC 2024 SLICE-3D metadata columns.

    write_slice3d(visit, "lesions.csv", tiles="tiles/")   # visit: bodymap.export.record.ExportVisit

Models trained on SLICE-3D (ISIC 2024: 3D total-body photography tiles and their Vectra WB360
``tbp_lv_*`` measures) read these columns. BodyMap fills them from its own measures
(bodymap.measures; definitions and how they relate to Canfield's in docs/measures.md), its
anatomic sites (the location tables below) and the patient record. With ``tiles`` each lesion's
15 mm x 15 mm tile (the SLICE-3D tile's field) is written as a JPEG named by its isic_id.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from bodymap.atomic import atomic_write, open_atomic
from bodymap.export.record import ExportVisit, lesion_region

# The columns of the ISIC 2024 SLICE-3D metadata BodyMap writes (issue 19), in this order; then
# the tile columns SLICE-3D also has, then BodyMap's own (bodymap_*).
COLUMNS: tuple[str, ...] = (
    "isic_id", "patient_id", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm",
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext",
    "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean",
    "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm",
    "tbp_lv_eccentricity", "tbp_lv_location", "tbp_lv_location_simple", "tbp_lv_minorAxisMM",
    "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max",
    "tbp_lv_stdL", "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y",
    "tbp_lv_z",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "image_type", "tbp_tile_type", "tbp_lv_dnn_lesion_confidence",
    "bodymap_visit", "bodymap_lesion_id", "bodymap_site", "bodymap_side", "bodymap_ear", "bodymap_status",
    "tile",
)
TILE_FIELD_MM = 15.0  # SLICE-3D tiles show 15 mm x 15 mm of skin centred on the lesion
TILE_PX = 128

# The 21 values of tbp_lv_location: arms and legs split into upper and lower, the torso front into
# halves and the back into thirds; the unsplit values for a lesion known only to level 1.
LOCATIONS: tuple[str, ...] = (
    "Head & Neck",
    "Left Arm", "Left Arm - Upper", "Left Arm - Lower", "Right Arm", "Right Arm - Upper", "Right Arm - Lower",
    "Left Leg", "Left Leg - Upper", "Left Leg - Lower", "Right Leg", "Right Leg - Upper", "Right Leg - Lower",
    "Torso Front", "Torso Front Top Half", "Torso Front Bottom Half",
    "Torso Back", "Torso Back Top Third", "Torso Back Middle Third", "Torso Back Bottom Third",
    "Unknown",
)
LOCATIONS_SIMPLE: tuple[str, ...] = ("Head & Neck", "Left Arm", "Right Arm", "Left Leg", "Right Leg", "Torso Front",
                                     "Torso Back", "Unknown")

# BodyMap site -> tbp_lv_location with {side} for the limbs; "front" / "back" for the torso are
# split by height in the body frame (TORSO_Z); the lateral torso goes to the front or the back
# by depth (TORSO_MID_Y). The elbow counts with the upper arm, the knee with the upper leg, the
# buttock with the back's bottom third, the genitals with the front's bottom half.
SITE_LOCATION: dict[str, str] = {
    "unknown": "Unknown",
    "head_neck": "Head & Neck", "head_neck/head": "Head & Neck", "head_neck/head/face": "Head & Neck",
    "head_neck/head/scalp": "Head & Neck", "head_neck/head/ear": "Head & Neck", "head_neck/neck": "Head & Neck",
    "trunk": "torso", "trunk/anterior": "front", "trunk/lateral": "torso", "trunk/posterior": "back",
    "upper_extremity": "{side} Arm", "upper_extremity/shoulder": "{side} Arm - Upper",
    "upper_extremity/upper_arm": "{side} Arm - Upper", "upper_extremity/elbow": "{side} Arm - Upper",
    "upper_extremity/forearm": "{side} Arm - Lower", "upper_extremity/wrist": "{side} Arm - Lower",
    "upper_extremity/hand": "{side} Arm - Lower", "upper_extremity/hand/palm": "{side} Arm - Lower",
    "upper_extremity/hand/dorsal": "{side} Arm - Lower",
    "lower_extremity": "{side} Leg", "lower_extremity/buttock": "Torso Back Bottom Third",
    "lower_extremity/thigh": "{side} Leg - Upper", "lower_extremity/knee": "{side} Leg - Upper",
    "lower_extremity/lower_leg": "{side} Leg - Lower", "lower_extremity/ankle": "{side} Leg - Lower",
    "lower_extremity/foot": "{side} Leg - Lower", "lower_extremity/foot/sole": "{side} Leg - Lower",
    "lower_extremity/foot/dorsal": "{side} Leg - Lower",
    "anogenital": "Torso Front Bottom Half", "anogenital/genital": "Torso Front Bottom Half",
}
# The trunk of the template body (bodymap.anatomy.template): its lowest and highest points (mm,
# z up, floor at 0) and the depth between its front and back (y, the back at +y); checked
# against the template by tests/test_standards.py.
TORSO_Z = (756.0, 1381.0)
TORSO_MID_Y = 100.0

# anatom_site_general (the ISIC challenge vocabulary) of each BodyMap site, by prefix (first match).
SITE_GENERAL: tuple[tuple[str, str], ...] = (
    ("head_neck", "head/neck"), ("trunk/anterior", "anterior torso"), ("trunk/posterior", "posterior torso"),
    ("trunk/lateral", "lateral torso"), ("trunk", "torso"), ("upper_extremity/hand/palm", "palms/soles"),
    ("lower_extremity/foot/sole", "palms/soles"), ("upper_extremity", "upper extremity"),
    ("lower_extremity", "lower extremity"), ("anogenital", "oral/genital"),
)


def location(site: str, side: str, body_mm=None) -> str:
    """tbp_lv_location of a lesion: its BodyMap site code, laterality ('left', 'right',
    'midline') and body-frame position (3,) mm (None when the scan was not registered: the
    torso is then not split, an arm or leg without a side is 'Unknown')."""
    loc = SITE_LOCATION.get(site, "Unknown")
    if "{side}" in loc:
        if side not in ("left", "right"):
            if body_mm is None or not math.isfinite(body_mm[0]):
                return "Unknown"
            side = "left" if body_mm[0] > 0 else "right"  # the subject's left is +x
        return loc.format(side=side.capitalize())
    if loc in ("front", "back", "torso"):
        if body_mm is None or not all(math.isfinite(v) for v in body_mm):
            return {"front": "Torso Front", "back": "Torso Back"}.get(loc, "Unknown")
        if loc == "torso":
            loc = "front" if body_mm[1] < TORSO_MID_Y else "back"
        t = min(max((body_mm[2] - TORSO_Z[0]) / (TORSO_Z[1] - TORSO_Z[0]), 0.0), 1.0)
        if loc == "front":
            return "Torso Front Top Half" if t >= 0.5 else "Torso Front Bottom Half"
        return ("Torso Back Bottom Third", "Torso Back Middle Third", "Torso Back Top Third")[min(int(3 * t), 2)]
    return loc


def location_simple(loc: str) -> str:
    """tbp_lv_location_simple of a tbp_lv_location: limbs without upper / lower, the torso
    without halves and thirds."""
    for s in LOCATIONS_SIMPLE:
        if loc.startswith(s):
            return s
    return "Unknown"


def site_general(site: str) -> str:
    """anatom_site_general (ISIC vocabulary) of a BodyMap site code; '' when unknown."""
    for prefix, name in SITE_GENERAL:
        if site == prefix or site.startswith(prefix + "/"):
            return name
    return ""


def isic_like_id(visit: ExportVisit, lesion_id: int) -> str:
    """A lesion's isic_id-like identifier: BM_<patient>_<visit>_<lesion id, 4 digits>."""
    return f"BM_{visit.patient.id}_{visit.visit_id}_{lesion_id:04d}"


def rows(visit: ExportVisit, tiles: dict | None = None) -> list[dict]:
    """The table's rows (dicts keyed by COLUMNS + EXTRA_COLUMNS) of a visit's lesions; tiles:
    {lesion id: tile file name} when tiles were written."""
    from bodymap.export.record import lesion_status
    from bodymap.measures import MEASURES

    age = visit.patient.age_at(visit.visit_date)
    out = []
    for l in visit.lesions.lesions:
        m = l.measures or {}
        site, side, ear = lesion_region(l)
        body = (m.get("x_mm"), m.get("y_mm"), m.get("z_mm"))
        body = tuple(float("nan") if v is None else float(v) for v in body) if m.get("x_mm") is not None else None
        loc = location(site, side, body)
        r = {
            "isic_id": isic_like_id(visit, l.id), "patient_id": visit.patient.id,
            "age_approx": 5 * round(age / 5) if age is not None else "",
            "sex": {"F": "female", "M": "male"}.get(visit.patient.sex, ""),
            "anatom_site_general": site_general(site), "clin_size_long_diam_mm": l.diameter_mm,
            "tbp_lv_location": loc, "tbp_lv_location_simple": location_simple(loc),
            "image_type": "TBP tile: close-up", "tbp_tile_type": "3D: white",
            "tbp_lv_dnn_lesion_confidence": round(100 * l.confidence, 2),
            "bodymap_visit": visit.visit_id, "bodymap_lesion_id": l.id, "bodymap_site": site, "bodymap_side": side,
            "bodymap_ear": ear if ear != "non_ear" else "", "bodymap_status": lesion_status(visit.change.get(l.id)),
            "tile": (tiles or {}).get(l.id, ""),
        }
        for meas in MEASURES:
            if meas.column and meas.column in COLUMNS:
                v = m.get(meas.key)
                r[meas.column] = "" if v is None else v
        out.append(r)
    return out


def write_tiles(visit: ExportVisit, folder: str | Path, field_mm: float = TILE_FIELD_MM, size_px: int = TILE_PX,
                progress=None) -> dict[int, str]:
    """Write each lesion's tile (field_mm x field_mm of skin seen straight down its normal,
    size_px square, JPEG) into folder as <isic_id>.jpg. Returns {lesion id: file name}."""
    from PIL import Image

    from bodymap.export.closeup import CloseUps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cu = CloseUps(visit.scan)
    out = {}
    n = len(visit.lesions)
    for k, l in enumerate(visit.lesions.lesions):
        if progress and k % 10 == 0:
            progress("tiles", k / max(n, 1))
        img, _, _ = cu(l.point_mm, l.normal, field_mm, size_px)
        name = f"{isic_like_id(visit, l.id)}.jpg"
        with atomic_write(folder / name) as tmp:
            Image.fromarray(img).save(tmp, format="JPEG", quality=92)
        out[l.id] = name
    return out


def write_slice3d(visit: ExportVisit, path: str | Path, tiles: str | Path | None = None, progress=None) -> list[Path]:
    """Write the SLICE-3D table (CSV, one row per lesion) and, given a folder, the tiles.
    Returns the files written (the table first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = write_tiles(visit, tiles, progress=progress) if tiles else None
    with open_atomic(path, "w", newline="") as fh:  # never a half-written table
        w = csv.DictWriter(fh, list(COLUMNS) + list(EXTRA_COLUMNS))
        w.writeheader()
        w.writerows(rows(visit, names))
    return [path] + ([Path(tiles) / n for n in names.values()] if names else [])


def read_slice3d(path: str | Path) -> list[dict]:
    """The rows of a SLICE-3D table (strings), for checks and round trips."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
