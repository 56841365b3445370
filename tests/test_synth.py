"""Synthetic patients: determinism, ground truth, visits, lesion sizes on the 3D surface."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from bodymap.io import load_scan
from bodymap.synth.lesions import LESION_TYPES, LesionSpec, lesion_area_mm2, lesion_outline, lesion_profile
from bodymap.synth.patient import SynthOptions, synthesize_patient
from bodymap.synth.truth import read_visit_truth


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files(tmp_path):
    opts = SynthOptions(n_lesions=15, texture_size=256, target_faces=6000, visits=2)
    a = synthesize_patient(9, opts, tmp_path / "a")[0].parent
    b = synthesize_patient(9, opts, tmp_path / "b")[0].parent
    c = synthesize_patient(10, opts, tmp_path / "c", patient_id="SYN00009")[0].parent
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert set(da) >= {"patient.json", "visit1/scan.obj", "visit1/scan.png", "visit1/truth.json",
                       "visit1/truth.npz", "visit2/scan.obj"}
    assert da == db
    assert da["visit1/scan.png"] != dc["visit1/scan.png"]  # another seed, another patient


def test_painted_shape_has_the_recorded_diameter_and_area():
    """lesion_profile (what is painted) puts alpha = 0.5 on the outline whose longest diameter
    is diameter_mm and whose area is lesion_area_mm2."""
    rng = np.random.default_rng(0)
    for t in list(LESION_TYPES) + ["freckle"]:
        for _ in range(4):
            les = LesionSpec(1, t, 0, (1, 0, 0), float(rng.uniform(1, 15)), float(rng.uniform(0.7, 1)),
                             0.0, 1.0, int(rng.integers(1 << 30)))
            o = lesion_outline(les, 2000)
            feret = np.sqrt(((o[:, None] - o[None]) ** 2).sum(-1).max())
            assert feret == pytest.approx(les.diameter_mm, rel=2e-3)
            g = les.diameter_mm / 400
            ax = np.arange(-0.8 * les.diameter_mm, 0.8 * les.diameter_mm, g)
            x, y = np.meshgrid(ax, ax)
            alpha, _, _ = lesion_profile(les, x.ravel(), y.ravel(), min_edge_mm=0.0)
            inside = alpha >= 0.5
            assert inside.sum() * g * g == pytest.approx(lesion_area_mm2(les), rel=0.01), t
            pts = np.stack([x.ravel()[inside], y.ravel()[inside]], 1)
            hull = pts[ConvexHull(pts).vertices]
            assert np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1).max()) == pytest.approx(les.diameter_mm, rel=0.01)


def test_truth_is_consistent_with_the_scans(small_patient):
    truths = []
    for vdir in small_patient:
        scan = load_scan(vdir / "scan.obj")
        truth, arrays = read_visit_truth(vdir)
        truths.append(truth)
        assert truth["scan"]["faces"] == scan.n_faces and truth["scan"]["vertices"] == scan.n_vertices
        assert scan.texture.shape[:2] == (512, 512) and 1000 < scan.height_mm < 2300
        recs = truth["lesions"] + truth["confounders"]
        assert len(truth["lesions"]) >= 30
        for r in recs:
            assert r["type"] in LESION_TYPES or r["type"] == "freckle"
            assert 1.0 <= r["diameter_mm"] <= 20.0
            p = np.asarray(r["scan_bary"]) @ scan.vertices[scan.faces[r["scan_face"]]]
            np.testing.assert_allclose(p, r["point_mm"], atol=0.01)
        on = [r for r in recs if r["on_scan"]]
        assert len(on) >= 0.9 * len(recs)
        # painted where the truth says: most of each visible lesion's label lies in its scan face's UVs
        lab = arrays["lesion_label"]
        assert lab.shape == (512, 512) and set(np.unique(lab)) - {0} <= {r["id"] for r in recs}
        # dense scan -> template map: neighbouring scan vertices map to nearby template points
        from bodymap.anatomy.body import body_model

        tmpl = body_model().template()
        vf, vb = arrays["vertex_template_face"], arrays["vertex_template_bary"]
        assert vf.shape == (scan.n_vertices,) and vb.shape == (scan.n_vertices, 3)
        np.testing.assert_allclose(vb.sum(1), 1.0, atol=1e-4)
        tp = np.einsum("nj,njd->nd", vb, tmpl.vertices[tmpl.faces[vf]])
        e = scan.faces[:, [0, 1]]
        scan_len = np.linalg.norm(scan.vertices[e[:, 0]] - scan.vertices[e[:, 1]], axis=1)
        tmpl_len = np.linalg.norm(tp[e[:, 0]] - tp[e[:, 1]], axis=1)
        assert np.median(tmpl_len / scan_len) == pytest.approx(1.0, abs=0.25)
        assert np.percentile(tmpl_len, 99.9) < 6 * np.percentile(scan_len, 99.9)
    # visits: persistent ids, removed, new, grown, darker
    v1 = {r["id"]: r for r in truths[0]["lesions"]}
    v2 = {r["id"]: r for r in truths[1]["lesions"]}
    removed = set(truths[1]["removed"])
    assert removed and removed <= set(v1) and not removed & set(v2)
    new = {i for i, r in v2.items() if "new" in r["changes"]}
    assert new and not new & set(v1)
    assert set(v2) - new == set(v1) - removed
    grown = [i for i, r in v2.items() if "grown" in r["changes"]]
    darker = [i for i, r in v2.items() if "darker" in r["changes"]]
    assert grown and darker
    assert all(v2[i]["diameter_mm"] > v1[i]["diameter_mm"] for i in grown)
    assert all(v2[i]["darkness"] > v1[i]["darkness"] for i in darker)
    assert all(v2[i]["diameter_mm"] == v1[i]["diameter_mm"] for i in set(v2) - new - set(grown))
    # another pose and another mesh, same person
    assert truths[0]["pose"] != truths[1]["pose"]
    assert truths[0]["scan"]["vertices"] != truths[1]["scan"]["vertices"]


def test_skin_types_span_light_to_dark(tmp_path):
    lum = []
    for fitz in (1, 6):
        opts = SynthOptions(n_lesions=5, texture_size=256, target_faces=5000, visits=1, fitzpatrick=fitz)
        vdir = synthesize_patient(4, opts, tmp_path)[0]
        tex = load_scan(vdir / "scan.obj").texture.astype(float)
        truth, arrays = read_visit_truth(vdir)
        skin = arrays["tissue"] == 1
        lum.append(tex[skin].mean())
        assert truth["skin"]["fitzpatrick"] == fitz
    assert lum[0] > lum[1] + 80


def test_painted_lesions_measure_their_true_size_on_the_3d_surface(big_patient):
    """Painted lesions, measured on the scan's surface, have the size the truth records.

    Two measurements on the scan (remeshed, noisy, with its own UVs): (1) the truth's label
    image read through the scan's UV layout, each texel weighted by its area on the scan's
    surface; (2) an independent instrument that sees only the texture's colours
    (tests/lesion_measure.py). Both compare the area-equivalent diameter with the exact area
    inside each lesion's border. Lesions under 4 texels across are a blur at any texture
    resolution and are reported, not required.
    """
    from lesion_measure import LesionMeter

    scan = load_scan(big_patient / "scan.obj")
    truth, arrays = read_visit_truth(big_patient)
    assert len(truth["lesions"]) == 300
    meter = LesionMeter(scan)
    label = arrays["lesion_label"].ravel()[meter.atlas.flat]
    label_area = np.bincount(label, weights=meter.texel_area, minlength=label.max() + 1)
    rows = []
    for r in truth["lesions"]:
        if not r["on_scan"]:
            continue
        area, _ = meter.measure(np.array(r["point_mm"]), np.array(r["normal"]), r["diameter_mm"])
        rows.append((r["diameter_mm"], r["texel_mm"], np.sqrt(label_area[r["id"]] / r["area_mm2"]) - 1.0,
                     np.sqrt(area / r["area_mm2"]) - 1.0))
    d, texel, err_label, err_colour = np.array(rows).T
    ok = d >= 4 * texel  # at least 4 texels across
    for name, err in (("label on scan", err_label), ("colour instrument", err_colour)):
        print(f"{name}: {len(d)} lesions on the scan, {ok.sum()} >= 4 texels across; equivalent-diameter "
              f"error median {np.median(np.abs(err[ok])):.3f}, 95th pct {np.percentile(np.abs(err[ok]), 95):.3f}; "
              f"within 10%: {(np.abs(err[ok]) <= 0.10).mean():.3f} (>= 4 texels), {(np.abs(err) <= 0.10).mean():.3f} (all)")
    assert len(d) >= 280 and ok.sum() >= 180
    assert np.median(np.abs(err_label[ok])) < 0.03 and (np.abs(err_label[ok]) <= 0.10).mean() >= 0.96
    assert np.median(np.abs(err_colour[ok])) < 0.04 and (np.abs(err_colour[ok]) <= 0.10).mean() >= 0.95
    assert (np.abs(err_colour) <= 0.10).mean() >= 0.85
