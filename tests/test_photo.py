"""Photo mode's rules (bodymap.photo) and `bodymap photo`, with fake models (fast), plus the
shipped models on a few real photographs (external)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bodymap import photo as bp
from bodymap.models.earfind import decide
from bodymap.models.photokind import PhotoKind

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


class Quality:
    ok, problems = True, []

    def to_dict(self):
        return {"ok": True}


class Kind:
    def __init__(self, label):
        self.label = label

    def classify(self, image, name=None):
        p = {"dermoscopy": 0.02, "clinical": 0.02, "body": 0.02, "other": 0.02}
        p[self.label] = 0.94
        return PhotoKind(self.label, p)


class Macro:
    def __init__(self, label="trunk"):
        self.label = label

    def classify(self, image):
        return type("P", (), {"label": self.label, "probs": {self.label: 0.7, "arm": 0.3}})()


class Locator:
    """Finds an ear in the middle of the photo when ``ear``, else none."""

    card = {"name": "fake locator", "trained_on": "renders", "licence": None, "held_out": "x"}

    def __init__(self, ear=True):
        self.ear = ear

    def find(self, image, name=None):
        h, w = image.shape[:2]
        boxes = np.array([[w // 3, h // 3, 2 * w // 3, 2 * h // 3]] if self.ear else np.zeros((0, 4)), float)
        return decide(boxes, np.full(len(boxes), 0.99), (h, w), {"conf": 0.5})


class Segmenter:
    """Labels every pixel of any crop as helix (7): the ear pixels kept must come from the locator."""

    def segment(self, image, name=None):
        return np.full(image.shape[:2], 7)


class Diag:
    def __init__(self, ood=False, trained_on="HAM10000"):
        self.ood = ood
        self.checkpoint = {"data": {"name": trained_on, "licence": "CC BY-NC 4.0"}}
        self.card = {"name": "diagnosis B", "trained_on": trained_on, "licence": "CC BY-NC 4.0",
                     "held_out": "balanced accuracy 0.7"}
        self.sites = []

    def predict(self, crops, sites):
        self.sites.append(sites[0])
        d = type("D", (), {"label": "nv", "probs": {"nv": 0.8, "mel": 0.2}, "saliency": None, "ood": self.ood,
                           "ood_score": 2.0 if self.ood else 0.5,
                           "melanoma_check": None if self.ood else "under the melanoma threshold (test)"})()
        d.to_dict = lambda: {"label": "nv", "probs": {"nv": 0.8, "mel": 0.2}, "ood": self.ood}
        return [d]


def fakes(kind="dermoscopy", ear=True, macro="trunk", ood=False, missing=()):
    m = {"quality": lambda img: Quality(), "kind": Kind(kind), "macro": Macro(macro), "earfind": Locator(ear),
         "earseg": Segmenter(), "diagnosis": Diag(ood)}

    def get(k):
        if k in missing:
            raise bp.ModelUnavailable("model not available (test)")
        return m[k]

    get.models = m
    return get


IMG = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)


def test_dermoscopy_is_diagnosed_whole_and_never_searched_for_ears():
    get = fakes("dermoscopy")
    r = bp.analyse_photo(IMG, models=get)
    assert r.kind.label == "dermoscopy" and r.ears is None and r.macro is None
    assert r.diagnosis.label == "nv" and not r.ood
    assert r.site is None and any("give the site" in n for n in r.notes)
    assert set(r.models) >= {"kind", "diagnosis"} and r.models["diagnosis"]["licence"] == "CC BY-NC 4.0"
    r = bp.analyse_photo(IMG, site="back of hand", models=get)
    assert (r.site, r.site_source) == ("upper_extremity/hand/dorsal", "user")
    assert get.models["diagnosis"].sites[-1] == "upper_extremity/hand/dorsal"  # the site goes to model B


def test_a_clinical_photo_is_out_of_distribution_for_a_dermoscopy_model():
    r = bp.analyse_photo(IMG, models=fakes("clinical", ear=False))
    assert r.ood and r.diagnosis is not None
    assert any("trained on dermoscopy" in n for n in r.notes)
    assert r.ears is not None and not r.ears.found and not (r.ears.labels > 0).any()
    assert "out of distribution" in "\n".join(r.summary())
    # a dermoscopy photo the feature check rejects is out of distribution too
    r = bp.analyse_photo(IMG, models=fakes("dermoscopy", ood=True))
    assert r.ood and any("unlike the diagnosis model's training images" in n for n in r.notes)


def test_the_ear_model_never_sets_the_region():
    r = bp.analyse_photo(IMG, models=fakes("body", ear=True, macro="trunk"))
    assert r.ears.found and (r.site, r.site_source) == ("trunk", "macro classifier")
    assert any("the region is kept" in n for n in r.notes)
    # labels only on the found ear (the locator's box), not over the whole crop
    lab = r.ears.labels > 0
    assert lab[45, 60] and not lab[2, 2] and 0.08 < lab.mean() < 0.3
    r = bp.analyse_photo(IMG, models=fakes("clinical", ear=True))
    assert r.ears.found and r.site is None and any("not set from the ear model alone" in n for n in r.notes)
    r = bp.analyse_photo(IMG, models=fakes("body", ear=True, macro="head"))
    assert r.site == "head_neck/head" and not any("kept" in n for n in r.notes)
    assert r.ear_regions() == ["helix"]



def test_a_close_up_of_a_site_outside_the_head_is_not_searched_for_ears():
    # a close-up of the back: no search, and the note says why
    r = bp.analyse_photo(IMG, site="back", models=fakes("clinical", ear=True))
    assert r.ears is None and "earfind" not in r.models
    assert any("not searched for ears" in n for n in r.notes)
    # of the neck, the ear itself, or no site given: searched
    for site in ("neck", "ear", None):
        r = bp.analyse_photo(IMG, site=site, models=fakes("clinical", ear=True))
        assert r.ears is not None and r.ears.found, site
    # a body-region photo is searched whatever its site (an upper-back photo can hold the head)
    r = bp.analyse_photo(IMG, site="back", models=fakes("body", ear=True))
    assert r.ears is not None and r.ears.found
    assert bp.searches_ears("clinical", "head_neck/head/face") and not bp.searches_ears("clinical", "trunk/posterior")
    assert not bp.searches_ears("dermoscopy", None) and not bp.searches_ears("other", None)


def test_a_missing_region_model_and_a_failed_ear_search_are_told_apart():
    r = bp.analyse_photo(IMG, models=fakes("body", missing=("earseg",)))
    assert r.ears is None and r.messages["earseg"].startswith("model not available")

    class Broken:
        def segment(self, image, name=None):
            raise ValueError("image: too small")

    get = fakes("body")
    get.models["earseg"] = Broken()
    r = bp.analyse_photo(IMG, models=get)
    assert r.ears is None and r.messages["earseg"] == "ear search failed (image: too small)"
    assert r.macro is not None  # the rest of the photo's analysis stands

def test_not_skin_runs_nothing_else_and_missing_models_are_named():
    r = bp.analyse_photo(IMG, models=fakes("other"))
    assert r.diagnosis is None and r.ears is None and r.macro is None and "not look like skin" in r.notes[0]
    r = bp.analyse_photo(IMG, models=fakes("body", missing=("kind", "earfind")))
    assert r.kind is None and "kind" in r.messages and "earfind" in r.messages
    assert r.macro is not None and r.site == "trunk"  # without a kind, treated as a body photo
    d = r.to_dict()
    assert d["kind"] is None and "kind" in d["unavailable"]
    with pytest.raises(ValueError, match="not a known anatomic site"):
        bp.analyse_photo(IMG, site="elbowpit", models=fakes())


def test_diagnose_at_a_click_on_a_body_photo():
    get = fakes("body", macro="arm")
    r = bp.analyse_photo(IMG, models=get)
    crop, d, ood, note = bp.diagnose_at(IMG, 5, 80, r, get)
    assert crop.shape == (128, 128, 3) and d.label == "nv"
    assert ood and "clinical photo" in note  # a crop of a body photo is not dermoscopy
    assert get.models["diagnosis"].sites[-1] == "upper_extremity"


def test_cli_photo_text_json_and_errors(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from bodymap.cli import main

    monkeypatch.setattr(bp, "load_model", fakes("dermoscopy"))
    p = tmp_path / "lesion.png"
    Image.fromarray(IMG).save(p)
    assert main(["photo", str(p), "--site", "forearm"]) == 0
    out = capsys.readouterr().out
    assert "lesion.png: a dermoscopy image" in out and "site: forearm (given)" in out and "diagnosis: nv" in out
    assert "licence CC BY-NC 4.0" in out and "held-out: balanced accuracy 0.7" in out
    assert "melanoma check: under the melanoma threshold (test)" in out
    assert main(["photo", str(p), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j[0]["kind"]["label"] == "dermoscopy" and j[0]["diagnosis"]["out_of_distribution"] is False
    assert j[0]["models"]["diagnosis"]["trained_on"] == "HAM10000"
    bad = tmp_path / "bad.jpg"
    bad.write_text("no image")
    assert main(["photo", str(bad), str(p)]) == 2
    cap = capsys.readouterr()
    assert "bad.jpg: not a readable image" in cap.err and "lesion.png" in cap.out  # the good one still ran
    assert main(["photo", str(p), "--site", "elbowpit"]) == 2
    assert "elbowpit" in capsys.readouterr().err


def test_cli_and_gui_photo_mode_give_the_same_result_on_a_photo_file(tmp_path, monkeypatch, capsys):
    """`bodymap photo` and the GUI's photo tab run one entry point (bodymap.photo.analyse_file:
    one reader, one model loader, one set of rules): the same record for one photo file (a
    16-bit one: the reader's scaling shows in the quality check's brightness)."""
    pytest.importorskip("PySide6")
    from PIL import Image

    from bodymap.cli import main
    from bodymap.models.quality import check_photo
    from gui import photo as gp

    get = fakes("body", ear=True, macro="head")
    get.models["quality"] = check_photo  # the real check: it reads the pixels
    monkeypatch.setattr(bp, "load_model", get)  # the one loader: the GUI's models come from it too
    p = tmp_path / "neck.png"
    Image.fromarray((IMG[..., 0].astype(np.uint16) * 200)).save(p)  # 16-bit grey
    assert main(["photo", str(p), "--site", "neck", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]
    gui = json.loads(json.dumps(gp.analyse_file(p, lambda s, f: None, "neck").to_dict()))
    assert gui == cli
    assert cli["name"] == "neck.png" and cli["site_source"] == "user" and cli["ears"]["found"]
    assert 60 < cli["quality"]["brightness"] < 140  # 16 bits scaled to 8 (the old GUI reader clipped: 254)


# ----------------------------------------------------------------------- shipped models, real photos
external = pytest.mark.skipif(not EXTERNAL.exists(), reason="../shared/external is absent")


def _files(name, part, n, **match):
    from bodymap.models.diagdata import split_rows

    rows = [r for r in split_rows(EXTERNAL / name / "metadata.csv", part)
            if all(r.get(k) == v for k, v in match.items())]
    return [r["path"] for r in rows[:n]]


@pytest.mark.external
@external
def test_shipped_models_on_a_few_real_photos():
    """Held-out HAM10000 (dermoscopy) and PAD-UFES-20 (clinical) photos: the kind told apart and
    no ear found on most (measured on all held-out photos: 0.91 / 0.88 kind right; docs/
    benchmarks.md). ISIC 2017 is not asserted: the kind classifier fails that domain shift
    (0.24 right), a shortfall recorded in docs/benchmarks.md."""
    from bodymap.models.quality import load_photo

    kinds = bp.load_model("kind")
    loc = bp.load_model("earfind")
    derm = _files("ham10000", "test", 8)
    clin = _files("pad_ufes20", "test", 8)
    right = ears = 0
    for f in derm + clin:
        img = load_photo(f)
        right += (kinds.classify(img).label == "dermoscopy") == (f in derm)
        ears += loc.find(img).found
    assert right >= 13 and ears <= 3, (right, ears)
    r = bp.analyse_photo(load_photo(derm[0]), site="back")
    assert r.kind.label == "dermoscopy" and r.diagnosis is not None and r.ears is None
    assert r.models["diagnosis"]["trained_on"] == "HAM10000" and "CC BY-NC" in r.models["diagnosis"]["licence"]
    r = bp.analyse_photo(load_photo(clin[0]))
    assert r.ood and r.ears is not None and not r.ears.found
