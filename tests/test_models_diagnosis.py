"""Diagnosis models A (image) and B (image + site): data, training, evaluation, inference, CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import torch  # noqa: E402
import timm  # noqa: E402,F401  (a dependency: a missing one must fail, not skip)

from bodymap.models import diagdata  # noqa: E402
from bodymap.models.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from bodymap.models.diagnosis import (NAMED, DiagnosisModel,  # noqa: E402
                                      lesion_crop, recorded_part, site_index, train_model)

shipped = pytest.mark.skipif(not all(p.exists() for p in NAMED.values()),
                             reason="shipped diagnosis checkpoints not built")


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def test_synthetic_crops_reproducible_and_site_dependent():
    a = diagdata.synthetic_crops(24, seed=5, size=32)
    b = diagdata.synthetic_crops(24, seed=5, size=32)
    c = diagdata.synthetic_crops(24, seed=6, size=32)
    assert a["images"].shape == (24, 32, 32, 3) and a["images"].dtype == np.uint8
    assert a["description"]["sha256"] == b["description"]["sha256"] != c["description"]["sha256"]
    assert len(a["sites"]) == 24 and set(a["labels"]) <= set(range(len(a["classes"])))
    # location carries information: lentigines favour sun-exposed sites, angiomas the trunk
    lent, ang = diagdata.site_probabilities("solar_lentigo"), diagdata.site_probabilities("angioma")
    assert lent["upper_extremity/hand"] > 10 * ang["upper_extremity/hand"]
    assert ang["trunk"] > 2 * lent["trunk"]
    assert all(abs(sum(diagdata.site_probabilities(t).values()) - 1) < 1e-9 for t in a["classes"])



def test_lookalikes_are_painted_with_another_types_appearance():
    d = diagdata.synthetic_crops(90, seed=8, size=32)
    pairs = {(r["type"], r["look"]) for r in d["records"]}
    assert ("common_nevus", "solar_lentigo") in pairs or ("solar_lentigo", "common_nevus") in pairs
    assert all(look == t or diagdata.LOOKALIKES[t][0] == look for t, look in pairs)
    assert "melanoma" in {t for t, look in pairs if t == look}


def test_site_index_walks_up_the_taxonomy():
    vocab = ["unknown", "trunk", "upper_extremity", "upper_extremity/hand", "head_neck/head"]
    assert site_index("trunk", vocab) == 1
    assert site_index("upper_extremity/forearm", vocab) == 2
    assert site_index("upper_extremity/hand/dorsal", vocab) == 3
    assert site_index("back of hand", vocab) == 3  # taxonomy name
    assert site_index("head_neck/head/ear", vocab) == 4
    assert site_index(None, vocab) == 0 and site_index("", vocab) == 0
    assert site_index("lower_extremity/foot", vocab) == 0  # not in the vocabulary: unknown
    assert site_index("Upper Extremity", ["unknown", "upper extremity"]) == 1  # ISIC style
    # what a clinician types, as the data sets write it: "back" is the posterior trunk
    assert site_index("back", vocab) == 1 and site_index("Lower extremity", vocab) == 0
    assert site_index("scalp", vocab) == 4 and site_index("elbw", vocab) == 0


@pytest.mark.parametrize("use_site", [False, True])
def test_training_reduces_the_loss(use_site):
    data = diagdata.synthetic_crops(48, seed=11, size=32)
    net, arch, hist = train_model(data, use_site=use_site, epochs=6, batch=16, lr=3e-3, seed=0)
    assert arch["use_site"] is use_site and arch["sites"][0] == "unknown"
    assert len(hist) == 6
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.1, hist
    assert (net.site_embedding is not None) == use_site
    if use_site:
        assert net.site_embedding.embedding_dim == 128


def _tiny_csv(tmp_path, n=30, name="train.csv"):
    """An ISIC-style CSV: isic_id (no suffix), dx, anatom_site_general; images in a sub-folder."""
    from PIL import Image

    d = diagdata.synthetic_crops(n, seed=21, size=48)
    (tmp_path / "img").mkdir(exist_ok=True)
    names = {"common_nevus": "nevus", "melanoma": "melanoma", "seborrheic_keratosis": "seborrheic keratosis"}
    rows = []
    for i, (im, lab, site) in enumerate(zip(d["images"], d["labels"], d["sites"])):
        t = d["classes"][lab]
        dx = names.get(t, "other")
        Image.fromarray(im).save(tmp_path / "img" / f"ISIC_{i:07d}.jpg")
        rows.append({"isic_id": f"img/ISIC_{i:07d}", "dx": dx,
                     "anatom_site_general": {"trunk": "anterior torso", "head_neck/head": "head/neck"}.get(site, "")})
    with open(tmp_path / name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["isic_id", "dx", "anatom_site_general"])
        w.writeheader()
        w.writerows(rows)
    return tmp_path / name


def test_read_csv_and_its_errors(tmp_path):
    p = _tiny_csv(tmp_path, 12)
    d = diagdata.read_csv(p, size=32)
    assert d["images"].shape == (12, 32, 32, 3)
    assert set(d["classes"]) <= {"nevus", "melanoma", "seborrheic keratosis", "other"}
    assert d["description"]["kind"] == "csv" and len(d["description"]["sha256"]) == 64
    assert None in d["sites"] or "anterior torso" in d["sites"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,whatever\nx.jpg,1\n")
    with pytest.raises(ValueError, match="bad.csv: no diagnosis column"):
        diagdata.read_csv(bad)
    bad.write_text("image,diagnosis,site\nmissing.jpg,nevus,trunk\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 2: cannot read image"):
        diagdata.read_csv(bad)
    bad.write_text("image,diagnosis,site\n")
    with pytest.raises(ValueError, match="bad.csv: no rows"):
        diagdata.read_csv(bad)


def test_melanoma_score_is_the_log_odds_against_nevus():
    from bodymap.models.diagnosis import melanoma_score

    classes = ["bkl", "mel", "nv"]
    p = np.array([[0.8, 0.1, 0.1],    # a keratosis: melanoma and nevus alike
                  [0.1, 0.3, 0.6],    # more nevus than melanoma
                  [0.0, 0.2, 0.8]])
    s = melanoma_score(p, classes, "mel")
    assert s[0] == pytest.approx(0.0, abs=1e-5) and s[1] == pytest.approx(np.log(0.5), abs=1e-5)
    # p(mel) would rank the second above the first; against nevus it is the other way round
    assert s[0] > s[1] > s[2]
    # without the nevus class "nv" (the synthetic models' classes): p(mel) itself
    assert np.allclose(melanoma_score(p, ["bkl", "mel", "common_nevus"], "mel"), p[:, 1])


def test_an_operating_point_in_another_score_is_not_applied():
    from bodymap.models.diagnosis import MELANOMA_SCORE, melanoma_threshold

    class M:
        classes = ["bkl", "mel", "nv"]
        checkpoint = {"metrics": {"operating_point": {"melanoma_threshold": 0.3, "at_specificity": 0.8}}}

    assert melanoma_threshold(M()) is None  # an older checkpoint's threshold on p(mel)
    M.checkpoint["metrics"]["operating_point"]["score"] = MELANOMA_SCORE
    assert melanoma_threshold(M()) == 0.3
    M.classes = ["common_nevus", "melanoma"]  # the synthetic models' classes: scored on p(mel)
    assert melanoma_threshold(M()) is None
    del M.checkpoint["metrics"]["operating_point"]["score"]
    assert melanoma_threshold(M()) == 0.3


def test_train_and_evaluate_on_an_isic_style_csv_via_the_cli(tmp_path, capsys):
    from bodymap.cli import main

    p = _tiny_csv(tmp_path, 30)
    out = tmp_path / "run"
    rc = main(["train", "diagnosis", "--csv", str(p), "--out", str(out), "--epochs", "2", "--size", "32",
               "--batch", "8", "--quiet", "--data-name", "tiny set", "--licence", "CC BY-NC 4.0"])
    assert rc == 0
    a, b = DiagnosisModel.load(out / "diagnosis_A.pt"), DiagnosisModel.load(out / "diagnosis_B.pt")
    assert not a.uses_site and b.uses_site and a.classes == b.classes
    assert "trunk/anterior" in b.sites  # ISIC site names mapped onto the taxonomy
    ck = b.checkpoint
    assert ck["data"]["kind"] == "csv" and ck["training"]["command"].startswith("bodymap train diagnosis --out")
    split = ck["data"]["split"]
    assert split["by"] == "image" and set(split["parts"]) == {"train", "dev", "test"}
    assert ck["metrics"]["held_out"]["n"] == split["parts"]["test"]["groups"] >= 3  # a seeded 20% split
    assert ck["data"]["licence"] == "CC BY-NC 4.0" and ck["data"]["name"] == "tiny set"
    assert "CC BY-NC 4.0" in b.description and "tiny set" in b.description
    assert "mcnemar_A_vs_B" in ck["metrics"] and ck["arch"]["ood"]["threshold"] > 0
    assert "McNemar" in (out / "training_log.txt").read_text()
    ev = json.loads((out / "evaluation.json").read_text())
    assert set(ev) >= {"A", "B", "mcnemar_A_vs_B"}
    capsys.readouterr()
    rc = main(["evaluate", "diagnosis", "--weights", str(out / "diagnosis_B.pt"), "--weights-a",
               str(out / "diagnosis_A.pt"), "--csv", str(p), "--json", str(tmp_path / "ev.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "McNemar" in text and "confusion B" in text and "sensitivity" in text
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["kind"] == "held-out lesions" and ev["n"] == split["parts"]["test"]["groups"]  # never the training rows
    # the dev part the operating point is chosen on is recreated from the same record, and a
    # record that no longer matches the CSV's lesions is refused rather than read on other rows
    raw = diagdata.read_csv(p, size=b.load_size)
    for part in ("dev", "test"):
        assert len(set(recorded_part(raw, b, part)["groups"].tolist())) == split["parts"][part]["groups"]
    b.checkpoint["data"]["split"]["parts"]["dev"]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="dev lesions recreated from the split do not match"):
        recorded_part(raw, b, "dev")
    (tmp_path / "other").mkdir()
    assert recorded_part(diagdata.read_csv(_tiny_csv(tmp_path / "other", 12), size=b.load_size), b, "dev") is None


def test_wrong_checkpoints_are_refused(tmp_path):
    p = tmp_path / "ear.pt"
    save_checkpoint(p, task="earseg", arch={}, state_dict={}, classes=["a"], input_size=8,
                    normalisation={}, data={}, metrics={}, training={})
    with pytest.raises(CheckpointError, match="ear.pt: a checkpoint for the 'earseg' model"):
        DiagnosisModel.load(p)
    (tmp_path / "x.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="x.pt: not a BodyMap checkpoint"):
        DiagnosisModel.load(tmp_path / "x.pt")


def _flat_scan(texel_mm=0.5, size=200):
    """A flat 100 x 100 mm square, UVs = position / 100, with a dark 5 mm disc at (30, 70) mm."""
    from bodymap.scan import Scan

    v = np.array([[0, 0, 0], [100, 0, 0], [100, 100, 0], [0, 100, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = (v[f][..., :2] / 100.0).astype(np.float32)
    tex = np.full((size, size, 3), [210, 160, 130], np.uint8)
    yy, xx = np.mgrid[:size, :size]
    # texel (r, c) centre in mm: x = (c + 0.5) * 0.5, y = 100 - (r + 0.5) * 0.5
    d = np.hypot((xx + 0.5) * texel_mm - 30, 100 - (yy + 0.5) * texel_mm - 70)
    tex[d < 2.5] = [60, 40, 30]
    return Scan(v, f, uv=uv, texture=tex)


def test_lesion_crop_is_centred_on_the_lesion():
    from bodymap.lesions import Lesion

    scan = _flat_scan()
    # point (30, 70) lies in face 1 (0, 2, 3): bary solves p = a v0 + b v2 + c v3
    bary = np.linalg.solve(np.array([[0, 100, 0], [0, 100, 100], [1, 1, 1]], float), [30, 70, 1])
    les = Lesion(id=3, point_mm=[30, 70, 0], face=1, bary=bary.tolist(), normal=[0, 0, 1], diameter_mm=5.0,
                 area_mm2=19.6, colour_lab=[0, 0, 0], skin_lab=[0, 0, 0], contrast_de=30, confidence=1)
    crop = lesion_crop(scan, les, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # field 12.5 mm: the 5 mm disc spans 40% of the crop, in the middle
    assert crop[32, 32].mean() < 70 and crop[2, 2].mean() > 150 and crop[61, 61].mean() > 150
    dark = crop.mean(2) < 110
    ys, xs = np.nonzero(dark)
    assert abs(ys.mean() - 31.5) < 2 and abs(xs.mean() - 31.5) < 2
    assert 0.3 < (xs.max() - xs.min() + 1) / 64 < 0.5
    # near the texture's edge: the border repeats instead of turning black
    les2 = Lesion(**{**les.to_dict(), "bary": [0.998, 0.001, 0.001], "face": 0})
    assert lesion_crop(scan, les2, 32).min() > 100
    with pytest.raises(ValueError, match="face 7"):
        lesion_crop(scan, Lesion(**{**les.to_dict(), "face": 7}), 32)


@shipped
def test_shipped_model_predicts_batched_with_saliency():
    """The synthetic-trained pair, kept by name: their held-out data is synthetic crops."""
    model = DiagnosisModel.load("synthetic")
    assert model.uses_site and model.checkpoint["data"]["kind"] == "synthetic"
    assert "synthetic" in model.description
    d = diagdata.synthetic_crops(40, seed=424242, size=model.input_size)
    crops, sites = list(d["images"]), d["sites"]
    crops[3] = np.asarray(crops[3])[:50, :40]  # any size is accepted
    out = model.predict(crops, sites, batch=16)
    assert len(out) == 40
    for c, r in zip(crops, out):
        assert r.label in model.classes and abs(sum(r.probs.values()) - 1) < 1e-4
        assert r.saliency.shape == c.shape[:2] and 0 <= r.saliency.min() and r.saliency.max() <= 1
        assert r.saliency.max() > 0.5
    # batching does not change the answer
    again = model.predict(crops[:10], sites[:10], batch=3, saliency=False)
    for x, y in zip(out[:10], again):
        assert x.label == y.label and abs(x.probs[x.label] - y.probs[x.label]) < 1e-4
    acc = np.mean([model.classes[lab] == r.label for lab, r in zip(d["labels"], out)])
    assert acc > 0.5  # six balanced classes: chance is 0.17
    # the site matters to model B, not to model A
    a = DiagnosisModel.load("synthetic_image_only")
    assert not a.uses_site
    pa = a.predict(crops[:5], ["trunk"] * 5, saliency=False)
    pa2 = a.predict(crops[:5], ["upper_extremity/hand"] * 5, saliency=False)
    assert all(x.probs == y.probs for x, y in zip(pa, pa2))
    pb = model.predict(crops[:5], ["trunk"] * 5, saliency=False)
    pb2 = model.predict(crops[:5], ["upper_extremity/hand"] * 5, saliency=False)
    assert any(abs(x.probs["solar_lentigo"] - y.probs["solar_lentigo"]) > 1e-3 for x, y in zip(pb, pb2))
    assert all(y.probs["solar_lentigo"] >= x.probs["solar_lentigo"] - 1e-6 for x, y in zip(pb, pb2))


@shipped
def test_shipped_checkpoints_record_their_training():
    for p in NAMED.values():
        ck = DiagnosisModel.load(p).checkpoint
        assert p.stat().st_size < 10e6
        assert ck["training"]["command"].startswith("bodymap train diagnosis")
        assert len(ck["data"]["sha256"]) == 64 and ck["metrics"]["held_out"]["n"] >= 1000
        assert 0.0 <= ck["metrics"]["mcnemar_A_vs_B"]["p"] <= 1.0
    # the default is model B trained on real dermoscopy, its data licence in the card
    card = DiagnosisModel.load().card
    assert card["trained_on"] == "HAM10000" and "CC BY-NC" in card["licence"]


@shipped
def test_diagnose_cli_writes_probabilities_and_saliency(tmp_path, capsys):
    from PIL import Image

    from bodymap.cli import main

    d = diagdata.synthetic_crops(2, seed=31337, size=256)
    paths = []
    for i, im in enumerate(d["images"]):
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(im).save(paths[-1])
    out = tmp_path / "dx"
    assert main(["diagnose", *map(str, paths), "--site", "back of hand", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "diagnoses.csv")))
    assert [r["name"] for r in rows] == ["photo0", "photo1"]
    assert rows[0]["site"] == "upper_extremity/hand"
    assert all(r["melanoma_flag"] in ("", "0", "1") and (r["melanoma_flag"] == "") == (r["out_of_distribution"] == "1")
               for r in rows)
    j = json.loads((out / "diagnoses.json").read_text())
    assert len(j["items"]) == 2 and "quality" in j["items"][0] and "HAM10000" in j["model"]
    png = Image.open(out / "saliency" / "photo0.png")
    assert png.size == (512, 256)
    assert main(["diagnose", str(tmp_path / "none.jpg"), "--out", str(out)]) == 2
    assert "none.jpg: no such file" in capsys.readouterr().err
    assert main(["diagnose", *map(str, paths), "--site", "trunk", "trunk", "trunk", "--out", str(out)]) == 2


@shipped
def test_the_melanoma_check_applies_the_validated_operating_point():
    """Each prediction of the default model says whether its melanoma score reaches the
    operating point chosen on development lesions, with that point's held-out figures; an
    image out of the training distribution gets no verdict."""
    from bodymap.models.diagnosis import melanoma_score, melanoma_threshold

    model = DiagnosisModel.load()
    thr = melanoma_threshold(model)
    assert thr is not None
    crops = list(diagdata.synthetic_crops(12, seed=5150, size=96)["images"])
    rng = np.random.default_rng(0)
    crops += [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)]  # noise: far from any dermoscopy image
    out = model.predict(crops, ["trunk"] * len(crops), saliency=False)
    for d in out:
        p = np.array([[d.probs[c] for c in model.classes]])
        assert d.melanoma_score == pytest.approx(melanoma_score(p, model.classes, "mel")[0], abs=1e-5)
        if d.ood:
            assert d.melanoma_flag is None and d.melanoma_check is None
        else:
            assert d.melanoma_flag == (d.melanoma_score >= thr)
            assert ("over the melanoma threshold" in d.melanoma_check) == d.melanoma_flag
            assert "of held-out melanomas were found" in d.melanoma_check
        assert set(d.to_dict()) >= {"melanoma_score", "melanoma_flag", "melanoma_check"}
    assert out[-1].ood


@shipped
def test_diagnose_real_photo_smoke():
    from pathlib import Path

    from bodymap.models.diagnosis import diagnose_photos

    files = sorted(Path("/work/shared/external/isic_enhance").glob("ISIC_*.jpg"))
    if not files:
        pytest.skip("ISIC samples not present")
    names, crops, quals, diags = diagnose_photos(files[:2], [None, "trunk"], DiagnosisModel.load())
    assert all(q.ok for q in quals) and len(diags) == 2
    assert all(np.isfinite(list(d.probs.values())).all() for d in diags)


@shipped
def test_diagnose_cli_on_a_scans_lesions(tmp_path, capsys):
    from bodymap.cli import main
    from bodymap.io import save_scan
    from bodymap.lesions import Lesion, LesionSet

    from bodymap.scan import Scan

    flat = _flat_scan()  # x10: the reader refuses a 100 mm "body"; the disc is then 50 mm wide
    scan = Scan(flat.vertices * 10, flat.faces, uv=flat.uv, texture=flat.texture)
    save_scan(scan, tmp_path / "scan.obj")
    bary = np.linalg.solve(np.array([[0, 100, 0], [0, 100, 100], [1, 1, 1]], float), [30, 70, 1])
    les = Lesion(id=5, point_mm=[300, 700, 0], face=1, bary=bary.tolist(), normal=[0, 0, 1], diameter_mm=50.0,
                 area_mm2=19.6, colour_lab=[0, 0, 0], skin_lab=[0, 0, 0], contrast_de=30, confidence=1,
                 region={"code": "upper_extremity/forearm"})
    LesionSet([les], scan="scan.obj").save_json(tmp_path / "lesions.json")
    out = tmp_path / "dx"
    assert main(["diagnose", str(tmp_path / "scan.obj"), "--lesions", str(tmp_path / "lesions.json"),
                 "--out", str(out), "--units", "mm"]) == 0
    rows = list(csv.DictReader(open(out / "diagnoses.csv")))
    assert rows[0]["name"] == "lesion_5" and rows[0]["site"] == "upper_extremity"
    assert (out / "saliency" / "lesion_5.png").exists()
    # the default model saw dermoscopy only: a scan's texture is out of its distribution, no verdict
    assert rows[0]["out_of_distribution"] == "1" and rows[0]["melanoma_flag"] == ""
    assert "out of distribution (the model was trained on dermoscopy images and this is a crop of a scan's texture)" \
        in capsys.readouterr().out


def test_compare_on_pairs_two_models_on_the_same_images(tmp_path):
    """compare_on: both models on the same rows, the paired difference consistent with the two
    figures, McNemar on the same cases; a model trained on the CSV is refused on it."""
    from bodymap.models.diagnosis import (DEFAULT_ARCH, build_network, compare_on, compare_on_text, melanoma_score,
                                          model_from_net)
    from bodymap.models.metrics import roc_auc

    p = _tiny_csv(tmp_path, 24)
    raw = diagdata.read_csv(p, size=32)
    classes = list(raw["classes"])
    assert "melanoma" in classes
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        arch = {**DEFAULT_ARCH, "use_site": True, "sites": ["unknown", "trunk/anterior"]}
        models.append(model_from_net(build_network(arch, len(classes)).eval(), arch, classes, 32))
    cand, ship = models
    res = compare_on(cand, ship, str(p), n_boot=50)
    assert res["n"] == 24
    m = res["melanoma"]
    y = np.asarray(raw["labels"]) == classes.index("melanoma")
    auc = roc_auc(y, melanoma_score(cand.predict_arrays(raw["images"], raw["sites"]), classes, "melanoma"))
    assert m["auc"]["candidate"] == pytest.approx(auc)
    assert m["difference"] == pytest.approx(m["auc"]["candidate"] - m["auc"]["shipped"])
    assert m["difference_ci"][0] <= m["difference_ci"][1]
    c = res["classes"]
    assert c["difference"] == pytest.approx(c["balanced_accuracy"]["candidate"] - c["balanced_accuracy"]["shipped"])
    assert c["mcnemar"]["b"] + c["mcnemar"]["c"] <= 24
    assert any("paired" in line for line in compare_on_text(res))
    ship.checkpoint["data"] = {"sha256": raw["description"]["sha256"]}  # as if trained on this CSV
    with pytest.raises(ValueError, match="was trained on this data"):
        compare_on(cand, ship, str(p), n_boot=10)
