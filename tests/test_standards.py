"""Standards out (issue 19) and the TBP lesion measures (issue 18 item 3): site codes checked
against pydicom's CID tables, measures on lesions of known shape, the SLICE-3D table, DICOM
(read back, IOD checks, sites, pixel spacing, stable UIDs) and FHIR (validated, round trip).

The export tests use visit 2 of sample patient SYN00101 (tests/data/gui, analysed before the
measures existed: they are measured on export) with a hand-made tracking for the change."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bodymap import taxonomy as tx

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "tests" / "data" / "gui" / "SYN00101_visit2"


# ----------------------------------------------------------------------------- site codes
def _pydicom_concept(c: tx.Coded) -> tuple[str, list[int]]:
    """(meaning, CIDs) of a code in the concept tables shipped with pydicom; KeyError if absent."""
    from pydicom.sr._concepts_dict import concepts

    for entry in concepts[c.scheme].values():
        if c.value in entry:
            return entry[c.value]
    raise KeyError(f"{c.scheme} {c.value} ({c.meaning}) is not in pydicom's code tables")


def test_every_site_has_a_code_from_pydicoms_tables():
    """Every taxonomy site, ear sub-region, laterality and macro region has a code; each code is
    in the tables pydicom ships, with its meaning, in the context group the table claims (CID
    4029 Dermatology Anatomic Site where it has the site). Adding a site without a code fails."""
    import highdicom
    from pydicom.sr._cid_dict import cid_concepts

    assert set(tx.SITE_CODES) == {s.code for s in tx.SITES}
    assert set(tx.EAR_CODES) == set(tx.EAR_REGIONS)
    assert set(tx.LATERALITY_CODES) == set(tx.LATERALITY) and set(tx.MACRO_CODES) == set(tx.MACRO)

    def in_cid(c: tx.Coded, cid: int) -> bool:
        return c.value in _all_values(cid_concepts[cid], c.scheme)

    annex_l = json.loads((Path(highdicom.__file__).parent / "_standard" / "anatomic_regions.json").read_text())
    annex_l = {v[1] for v in annex_l.values()}
    for site, sc in tx.SITE_CODES.items():
        meaning, cids = _pydicom_concept(sc.code)
        assert meaning == sc.code.meaning, site
        if sc.source == "CID 4029":
            assert 4029 in cids and in_cid(sc.code, 4029), site
        elif sc.source == "CID 4":
            assert in_cid(sc.code, 4) and 4029 not in cids, site  # CID 4 only where 4029 lacks one
        else:
            assert sc.source == "Annex L" and sc.code.value in annex_l, site
        if sc.modifier is not None:
            assert in_cid(sc.modifier, 2), site
    coded = {r: c for r, c in tx.EAR_CODES.items() if c is not None}
    assert len(coded) == 8  # CID 4029 has 8 of the 12 ear sub-regions
    for region, c in coded.items():
        assert _pydicom_concept(c)[0] == c.meaning and in_cid(c, 4029), region
    for side, c in tx.LATERALITY_CODES.items():
        assert _pydicom_concept(c)[0] == c.meaning and in_cid(c, 245), side
    for m, c in tx.MACRO_CODES.items():
        assert _pydicom_concept(c)[0] == c.meaning, m


def _all_values(cid: dict, scheme: str) -> set[str]:
    from pydicom.sr._concepts_dict import concepts

    return {v for name in cid.get(scheme, []) for v in concepts[scheme][name]}


def test_site_codes_round_trip_to_the_same_site():
    for s in tx.SITES:
        for ear in tx.EAR_REGIONS if s.code == "head_neck/head/ear" else ["non_ear"]:
            code, mod = tx.site_coding(s.code, ear)
            back, back_ear = tx.site_from_coding(code.scheme, code.value, mod.value if mod else None)
            assert back == s.code
            assert back_ear == (ear if tx.EAR_CODES[ear] is not None else "non_ear")
    for side, c in tx.LATERALITY_CODES.items():
        assert tx.laterality_from_code(c.value) == side
    with pytest.raises(KeyError, match="not a site code"):
        tx.site_from_coding("SCT", "00000")


def test_every_site_has_a_slice3d_location_and_the_torso_split_fits_the_template():
    from bodymap.anatomy.template import load_template
    from bodymap.export import slice3d as s3

    assert len(s3.LOCATIONS) == 21 and set(s3.SITE_LOCATION) == {s.code for s in tx.SITES}
    rng = np.random.default_rng(0)
    seen = set()
    for s in tx.SITES:
        for side in tx.LATERALITY:
            for body in [None, *rng.uniform([-300, -50, 700], [300, 250, 1450], (30, 3))]:
                loc = s3.location(s.code, side, body)
                assert loc in s3.LOCATIONS and s3.location_simple(loc) in s3.LOCATIONS_SIMPLE
                seen.add(loc)
    assert seen == set(s3.LOCATIONS)
    assert s3.location("upper_extremity/forearm", "left") == "Left Arm - Lower"
    assert s3.location("trunk/posterior", "midline", (0, 150, 1300)) == "Torso Back Top Third"
    assert s3.location("trunk/lateral", "right", (-150, 20, 800)) == "Torso Front Bottom Half"
    t = load_template()
    trunk = np.isin(t.site, [tx.SITE_INDEX[c] for c in ("trunk/anterior", "trunk/lateral", "trunk/posterior")])
    z = t.vertices[trunk, 2]
    assert abs(z.min() - s3.TORSO_Z[0]) < 10 and abs(z.max() - s3.TORSO_Z[1]) < 10
    yf = t.vertices[t.site == tx.SITE_INDEX["trunk/anterior"], 1].mean()
    yb = t.vertices[t.site == tx.SITE_INDEX["trunk/posterior"], 1].mean()
    assert yf < s3.TORSO_MID_Y < yb and abs(s3.TORSO_MID_Y - (yf + yb) / 2) < 15


# ----------------------------------------------------------------------------- measures
def _flat_scan(shapes, size_mm=40.0, px=320):
    """A flat textured square (size_mm, z = 0, normal +z) with lesions painted at true size:
    shapes [(cx, cy, a, b, angle)] mm, ellipses whose alpha = 0.5 border has semi-axes a, b,
    mixed into the skin in linear light as the synthetic painter does. Returns (scan, boxes)."""
    from bodymap.colour import srgb_to_linear
    from bodymap.scan import Scan, ScanMeta

    n = 8
    g = np.linspace(0, size_mm, n + 1)
    X, Y = np.meshgrid(g, g)
    verts = np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], 1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    uv = (verts[:, :2] / size_mm)[faces]
    t = size_mm / px
    cols, rows = np.meshgrid(np.arange(px), np.arange(px))
    x, y = (cols + 0.5) * t, size_mm - (rows + 0.5) * t  # texel centres on the plane (row 0 at the top)
    skin = srgb_to_linear(np.array([0.85, 0.68, 0.58]))
    pigment = srgb_to_linear(np.array([0.35, 0.22, 0.15]))
    img = np.broadcast_to(skin, (px, px, 3)).copy()
    boxes = []
    for cx, cy, sa, sb, ang in shapes:
        u = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
        v = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
        rho = np.hypot(u / sa, v / sb)
        alpha = np.clip(0.5 - (rho - 1) / 0.16, 0, 1)[..., None]  # a soft edge, 0.5 on the border
        img = img * (1 - alpha + alpha * pigment / skin)
        r = max(sa, sb) / t
        boxes.append([cx / t - r, (size_mm - cy) / t - r, cx / t + r, (size_mm - cy) / t + r])
    tex = np.clip(np.where(img <= 0.0031308, img * 12.92, 1.055 * img ** (1 / 2.4) - 0.055) * 255 + 0.5, 0, 255)
    scan = Scan(verts, faces, uv=uv, texture=tex.astype(np.uint8), meta=ScanMeta(source="flat.obj"), validate=False)
    return scan, np.array(boxes, np.float32)


def _ellipse_truth(a, b):
    perim = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    return np.pi * a * b, perim, np.sqrt(1 - (min(a, b) / max(a, b)) ** 2)


@pytest.fixture(scope="module")
def flat():
    """A flat scan with a disc, an ellipse and a small ellipse, measured by LesionMeasurer."""
    from bodymap.detect import Boxes
    from bodymap.lesions import LesionMeasurer, TextureImage
    from bodymap.project import texel_atlas

    shapes = [(12.0, 12.0, 3.0, 3.0, 0.0), (27.0, 14.0, 4.5, 2.5, 0.6), (20.0, 30.0, 1.6, 1.1, 2.0)]
    scan, boxes = _flat_scan(shapes)
    les = LesionMeasurer(scan).measure(TextureImage(scan, texel_atlas(scan)), Boxes(boxes, np.ones(len(boxes), np.float32)))
    les = sorted(les, key=lambda l: np.hypot(l.point_mm[0] - 12, l.point_mm[1] - 12))
    order = [int(np.argmin([np.hypot(l.point_mm[0] - s[0], l.point_mm[1] - s[1]) for s in shapes])) for l in les]
    return scan, shapes, [les[order.index(k)] for k in range(len(shapes))]


def test_measures_of_lesions_of_known_shape(flat):
    """On a flat scan (texels 0.125 mm) the outline measures match the painted shapes: area and
    perimeter within 3 %, Feret diameters within 4 %, eccentricity within 0.03 (a disc's below
    0.2), symmetric shapes
    score near 0 on symm_2axis; colour measures see a darker, browner lesion on its skin."""
    _, shapes, lesions = flat
    for (cx, cy, a, b, ang), l in zip(shapes, lesions):
        m = l.measures
        area, perim, ecc = _ellipse_truth(a, b)
        assert m["area_mm2"] == pytest.approx(area, rel=0.03)
        assert m["perimeter_mm"] == pytest.approx(perim, rel=0.03)
        assert m["major_axis_mm"] == pytest.approx(2 * max(a, b), rel=0.04)
        assert m["minor_axis_mm"] == pytest.approx(2 * min(a, b), rel=0.04)
        # sqrt(1 - l2 / l1) is steep near a circle: 1 % in the moments is 0.14 in eccentricity
        assert abs(m["eccentricity"] - ecc) < (0.2 if a == b else 0.03)
        assert m["area_perim_ratio"] == pytest.approx(m["perimeter_mm"] ** 2 / m["area_mm2"], rel=1e-3)
        assert m["symm_2axis"] < 0.06 and 0 <= m["symm_2axis_angle"] < 180
        assert m["deltaL"] < -15 and abs(m["Lext"] - 74.1) < 1.5 and m["stdLExt"] < m["stdL"]  # skin: L* 74.1
        assert m["deltaLB"] == pytest.approx(np.hypot(m["deltaL"], m["deltaB"]), abs=2e-3)
        assert 0 <= m["H"] < 360 and m["C"] == pytest.approx(np.hypot(m["A"], m["B"]), abs=2e-3)
        assert 0 <= m["norm_border"] <= 10 and 0 <= m["norm_color"] <= 10
    # the ellipse's most symmetric axis is one of its own axes (the angle runs from the scan's z
    # projected on the plane, here +y, counter-clockwise seen from outside, towards -x)
    axis = lesions[1].measures["symm_2axis_angle"]
    major = np.degrees(np.arctan2(-np.cos(0.6), np.sin(0.6))) % 180
    assert min(abs(axis - major) % 90, 90 - abs(axis - major) % 90) <= 6


def test_measures_round_trip_and_old_lesion_files_load(flat, tmp_path):
    from bodymap.lesions import LesionSet

    _, _, lesions = flat
    LesionSet(lesions).save_json(tmp_path / "l.json")
    back = LesionSet.load_json(tmp_path / "l.json")
    assert [l.measures for l in back.lesions] == [l.measures for l in lesions]
    old = LesionSet.load_json(V2 / "lesions.json")  # written before the measures existed
    assert len(old) > 100 and all(l.measures == {} for l in old.lesions)


def test_closeup_pixel_spacing_reproduces_the_size(flat):
    """A close-up's pixel spacing times the painted disc's width in pixels is its diameter."""
    from bodymap.export.closeup import CloseUps, closeup_field_mm

    scan, shapes, lesions = flat
    for (cx, cy, a, b, _), l in zip(shapes, lesions):
        img, mask, g = CloseUps(scan)(l.point_mm, l.normal, closeup_field_mm(l.diameter_mm), 128)
        assert mask.all()
        d = _image_diameter(img) * g
        assert d == pytest.approx(2 * max(a, b), rel=0.03)


def _image_diameter(img: np.ndarray) -> float:
    """Longest diameter in pixels of the lesion in the middle of a close-up: pixels past half
    its contrast in linear light (as bodymap.lesions traces borders), Feret of their centres
    plus one pixel."""
    from bodymap.colour import srgb_to_linear
    from bodymap.measures import feret

    lin = srgb_to_linear(img.astype(np.float32) / 255)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    k = np.linalg.norm(lin - np.median(lin[r > 0.45 * h], axis=0), axis=-1)
    centre = r < 0.06 * h
    lab, _ = ndimage.label(k > 0.5 * np.percentile(k[centre], 35))
    ids = np.unique(lab[centre & (lab > 0)])
    m = ndimage.binary_fill_holes(np.isin(lab, ids[ids > 0]))
    return feret(np.argwhere(m)[:, ::-1].astype(float))[0] + 1.0


# ----------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def visit():
    """Visit 2 of SYN00101 gathered for export (lesions measured now), with a hand-made
    tracking: lesion 1 continues visit-1 lesion 3 and grew, lesion 2 is new."""
    from bodymap.export.record import load_export_visit, add_change
    from bodymap.track import Tracking

    v = load_export_visit(V2)
    pair = {"id1": 3, "id2": 1, "diameter_change_mm": 1.2, "area1_mm2": 10.0, "area2_mm2": 14.0,
            "colour_delta_e": 4.5, "flags": ["grown"]}
    tr = Tracking([pair], [{"id2": 2, "diameter_mm": 3.0, "flags": ["new"]}], [], np.zeros((0, 3)),
                  np.zeros(0, np.int64), np.zeros((0, 3)))
    v.previous_id, v.previous_date = "visit1", "2025-08-11"
    add_change(v, tr)
    return v


def test_exported_visit_has_patient_visit_measures_and_change(visit):
    assert visit.patient.id == "SYN00101" and visit.patient.sex == "F"
    assert visit.visit_id == "visit2" and visit.visit_date == "2026-02-10"
    assert all(l.measures and "x_mm" in l.measures for l in visit.lesions.lesions)
    c = visit.change[1]
    assert c["status"] == "matched" and c["area_change_mm2"] == 4.0
    assert c["growth_mm_per_year"] == pytest.approx(1.2 / (183 / 365.25), rel=1e-3)
    assert visit.tracking_key(1) == ("visit1", 3) and visit.tracking_key(2) == ("visit2", 2)


def test_slice3d_table_has_every_column(visit, tmp_path):
    from bodymap.export import slice3d as s3

    issue_columns = ("isic_id patient_id age_approx sex anatom_site_general clin_size_long_diam_mm tbp_lv_A "
                     "tbp_lv_Aext tbp_lv_B tbp_lv_Bext tbp_lv_C tbp_lv_Cext tbp_lv_H tbp_lv_Hext tbp_lv_L tbp_lv_Lext "
                     "tbp_lv_areaMM2 tbp_lv_area_perim_ratio tbp_lv_color_std_mean tbp_lv_deltaA tbp_lv_deltaB "
                     "tbp_lv_deltaL tbp_lv_deltaLB tbp_lv_deltaLBnorm tbp_lv_eccentricity tbp_lv_location "
                     "tbp_lv_location_simple tbp_lv_minorAxisMM tbp_lv_norm_border tbp_lv_norm_color "
                     "tbp_lv_perimeterMM tbp_lv_radial_color_std_max tbp_lv_stdL tbp_lv_stdLExt tbp_lv_symm_2axis "
                     "tbp_lv_symm_2axis_angle tbp_lv_x tbp_lv_y tbp_lv_z").split()
    from bodymap.export import standard_export

    sub = type(visit)(**{**visit.__dict__, "lesions": type(visit.lesions)(visit.lesions.lesions[:4])})
    said = []
    files = standard_export("slice3d", None, tmp_path / "t.csv", tiles=tmp_path / "tiles", visit=sub,
                            progress=lambda stage, f: said.append(f))
    assert said and all(0.5 <= f <= 1.0 for f in said) and said == sorted(said)
    rows = s3.read_slice3d(files[0])
    assert list(rows[0])[:len(issue_columns)] == issue_columns
    assert len(rows) == 4 and len(files) == 5
    for r, l in zip(rows, sub.lesions.lesions):
        assert all(r[c] != "" for c in issue_columns), r
        assert r["isic_id"] == f"BM_SYN00101_visit2_{l.id:04d}" and r["age_approx"] == "35" and r["sex"] == "female"
        assert float(r["clin_size_long_diam_mm"]) == l.diameter_mm
        assert float(r["tbp_lv_areaMM2"]) == l.measures["area_mm2"] and r["tbp_lv_location"] in s3.LOCATIONS
        assert (tmp_path / "tiles" / r["tile"]).exists()
    assert rows[0]["bodymap_status"] == "grown" and rows[1]["bodymap_status"] == "new"


@pytest.fixture(scope="module")
def dicom_export(visit, tmp_path_factory):
    """A DICOM export of 8 lesions (sites of the limbs, trunk, head) and the body maps."""
    from bodymap.export.dicom import write_dicom

    sub = type(visit)(**{**visit.__dict__, "lesions": type(visit.lesions)(_varied(visit.lesions.lesions, 8))})
    out = tmp_path_factory.mktemp("dicom")
    return sub, out, write_dicom(sub, out)


def _varied(lesions, n):
    """n lesions, the first two (tracked, new) and then one per site as far as they go."""
    out, seen = list(lesions[:2]), set()
    for l in lesions[2:]:
        if l.region.get("code") not in seen and len(out) < n:
            out.append(l)
            seen.add(l.region.get("code"))
    return out


def test_dicom_reads_back_validates_and_keeps_sites(dicom_export):
    import pydicom

    from bodymap.export.dicom import iod_problems, read_dicom

    sub, out, files = dicom_export
    assert len(files) == 8 + 2 + 1  # close-ups, body map + region map, report
    for f in files:
        ds = pydicom.dcmread(f)
        assert iod_problems(ds) == [], f
        assert ds.PatientID == "SYN00101" and ds.StudyDate == "20260210"
    r = read_dicom(out)
    assert len({c["study"] for c in r["closeups"]} | {m["study"] for m in r["maps"]}) == 1
    assert len({c["series"] for c in r["closeups"]}) == 1 and len({m["series"] for m in r["maps"]}) == 1
    by_id = {l.id: l for l in sub.lesions.lesions}
    for c in r["closeups"]:
        l = by_id[c["lesion_id"]]
        assert (c["site"], c["side"], c["ear"]) == (l.region["code"], l.region["side"], l.region["ear"])
        assert c["image"].shape == (128, 128, 3) and c["pixel_spacing_mm"] == pytest.approx(
            max(2.5 * l.diameter_mm, 10.0) / 128, rel=1e-5)
    rep = {g["tracking_label"]: g for g in r["report"].values()}
    assert len(rep) == 8
    g = rep["visit1 lesion 3"]  # lesion 1 continues visit-1 lesion 3
    assert g["diameter_mm"] == by_id[1].diameter_mm and g["diameter_mm_unit"] == "mm"
    assert g["area_mm2_unit"] == "mm2" and g["diameter_change_mm"] == 1.2 and g["status"] == "grown"
    assert g["growth_rate"] == pytest.approx(1.2 * 365.25 / 183, abs=1e-3) and g["colour_delta_e"] == 4.5
    assert rep["visit2 lesion 2"]["status"] == "new"
    for g in rep.values():
        l = by_id[int(g["tracking_label"].split()[-1])] if g["tracking_label"].startswith("visit2") else by_id[1]
        assert (g["site"], g["side"], g["ear"]) == (l.region["code"], l.region["side"], l.region["ear"])


def test_dicom_pixel_spacing_reproduces_each_lesions_size(dicom_export):
    """The lesion measured in its close-up (pixels x Pixel Spacing) against BodyMap's outline
    diameter: median within 5 % (textures of ~1 mm texels: each lesion a few texels across)."""
    from bodymap.export.dicom import read_dicom

    sub, out, _ = dicom_export
    by_id = {l.id: l for l in sub.lesions.lesions}
    err = [_image_diameter(c["image"]) * c["pixel_spacing_mm"] / by_id[c["lesion_id"]].measures["major_axis_mm"] - 1
           for c in read_dicom(out)["closeups"]]
    assert np.median(np.abs(err)) < 0.05, np.round(err, 3)


def test_dicom_reexport_gives_the_same_uids(dicom_export, tmp_path):
    import pydicom

    from bodymap.export.dicom import write_dicom

    sub, _, files = dicom_export
    first = {f.name: pydicom.dcmread(f) for f in files}
    write_dicom(sub, tmp_path, body_maps=False)  # a first export there, then one of fewer lesions
    sub2 = type(sub)(**{**sub.__dict__, "lesions": type(sub.lesions)(sub.lesions.lesions[:2])})
    again = write_dicom(sub2, tmp_path, body_maps=False)
    for f in again[:2]:
        a, b = pydicom.dcmread(f), first[f.name]
        assert (a.SOPInstanceUID, a.SeriesInstanceUID, a.StudyInstanceUID) == \
               (b.SOPInstanceUID, b.SeriesInstanceUID, b.StudyInstanceUID)
    assert sorted(p.name for p in (tmp_path / "closeups").iterdir()) == [f.name for f in again[:2]]


def test_fhir_bundle_validates_and_round_trips(visit, tmp_path):
    from bodymap.export.fhir import read_fhir, write_fhir

    sub = type(visit)(**{**visit.__dict__, "lesions": type(visit.lesions)(_varied(visit.lesions.lesions, 12))})
    path = write_fhir(sub, tmp_path / "b.json")
    back = read_fhir(path)
    assert back.patient_id == "SYN00101" and back.visit_id == "visit2"
    assert [l.id for l in back.lesions] == [l.id for l in sub.lesions.lesions]
    for a, b in zip(back.lesions, sub.lesions.lesions):
        assert (a.region["code"], a.region["side"], a.region["ear"]) == (b.region["code"], b.region["side"],
                                                                         b.region["ear"])
        assert (a.diameter_mm, a.area_mm2, a.point_mm, a.face) == (b.diameter_mm, b.area_mm2, b.point_mm, b.face)
        assert a.measures == {k: v for k, v in b.measures.items() if v is not None}
    assert back.changes[1] == {"diameter_change_mm": 1.2, "growth_mm_per_year": pytest.approx(1.2 * 365.25 / 183, abs=1e-3),
                               "colour_delta_e": 4.5, "status": "grown"}
    assert back.changes[2] == {"status": "new"}
    d = json.loads(path.read_text())
    obs = next(e["resource"] for e in d["entry"] if e["resource"]["resourceType"] == "Observation")
    del obs["code"]  # an Observation must say what it observes
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json: not a valid FHIR Bundle"):
        read_fhir(tmp_path / "bad.json")


def test_export_command_says_what_is_wrong_before_working(tmp_path, capsys):
    from bodymap.cli import main

    assert main(["export", str(V2), "--format", "fhir", str(tmp_path / "x.json"), "--tracking", str(tmp_path)]) == 2
    assert "no tracking.json" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "slice3d", str(tmp_path / "x.csv")]) == 2
    assert "not an analysis folder" in capsys.readouterr().err


def test_docs_define_every_measure_column_and_site():
    from bodymap.export.slice3d import COLUMNS
    from bodymap.measures import MEASURES

    doc = (ROOT / "docs" / "measures.md").read_text()
    for m in MEASURES:
        assert f"`{m.key}`" in doc, m.key
    for c in COLUMNS:
        assert f"`{c}`" in doc, c
    for s in tx.SITES:
        assert f"| `{s.code}` |" in doc, s.code
