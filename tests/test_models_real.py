"""Models for real photographs: site mapping, reading and splitting real data sets, the real
recipe's augmentation, test-time views, the out-of-distribution check, checkpoint metadata,
the ear locator's decisions and the photo-kind classifier (fast, on tiny data)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from bodymap.models import diagdata
from bodymap.models.checkpoint import load_checkpoint, save_checkpoint

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def test_site_names_of_public_sets_map_onto_the_taxonomy():
    from bodymap import taxonomy as tx

    sc = diagdata.site_code
    assert sc("lower extremity") == "lower_extremity" and sc("back") == "trunk/posterior"
    assert sc("posterior torso") == "trunk/posterior" and sc("head/neck") == "head_neck"
    assert sc("FOREARM") == "upper_extremity/forearm" and sc("NOSE") == "head_neck/head/face"
    assert sc("EAR") == "head_neck/head/ear" and sc("acral") == "unknown"
    assert sc("back of hand") == "upper_extremity/hand/dorsal"  # a taxonomy name
    assert sc("upper_extremity/forearm") == "upper_extremity/forearm"  # a code
    assert sc("") is None and sc(None) is None and sc("elbowpit") is None
    assert all(v in tx.SITE_INDEX for v in diagdata.SITE_CODES.values())


def _fake_set(tmp_path, n_lesions=24):
    """A HAM10000-like folder: metadata.csv (image_id, lesion_id, dx, localization), images/*.jpg;
    some lesions have two images."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    dxs = ["nv", "mel", "bkl"]
    for les in range(n_lesions):
        for k in range(1 + les % 2):
            iid = f"ISIC_{les:04d}{k}"
            Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "images" / f"{iid}.jpg")
            rows.append({"image_id": iid, "lesion_id": f"L{les}", "dx": dxs[les % 3],
                         "localization": ["back", "lower extremity", "unknown", "face"][les % 4]})
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return tmp_path / "metadata.csv"


def test_read_csv_finds_images_maps_sites_caches_and_splits_by_lesion(tmp_path):
    p = _fake_set(tmp_path)
    d = diagdata.read_csv(p, size=16, cache=tmp_path / "cache")
    assert d["images"].shape == (36, 16, 16, 3) and d["classes"] == ["bkl", "mel", "nv"]
    assert set(d["sites"]) == {"trunk/posterior", "lower_extremity", "unknown", "head_neck/head/face"}
    assert d["description"]["group_column"] == "lesion_id" and d["description"]["groups"] == 24
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = diagdata.read_csv(p, size=16, cache=tmp_path / "cache")  # from the cache
    assert again["description"]["sha256"] == d["description"]["sha256"]
    parts = diagdata.group_split(d["groups"], d["labels"], (0.5, 0.25, 0.25), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(36))
    seen = [set(d["groups"][p_]) for p_ in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])  # never split a lesion
    for p_ in parts:  # stratified: every diagnosis in every part
        assert set(d["labels"][p_]) == {0, 1, 2}
    assert [x.tolist() for x in diagdata.group_split(d["groups"], d["labels"], (0.5, 0.25, 0.25), seed=3)] == \
        [x.tolist() for x in parts]
    rows = diagdata.split_rows(p, "test", (0.5, 0.25, 0.25), 3)
    assert sorted(Path(r["path"]).stem for r in rows) == sorted(np.array([Path(r["image"]).stem for r in d["records"]])[parts[2]])


def test_roc_auc_and_sensitivity_at_specificity():
    from bodymap.models.metrics import binary_scores, roc_auc, sensitivity_at_specificity

    y = np.array([0] * 5 + [1] * 5, bool)
    s = np.array([0, 1, 2, 3, 6, 4, 5, 7, 8, 9.0])
    assert roc_auc(y, s) == pytest.approx(0.92)
    assert roc_auc(y, np.ones(10)) == 0.5  # ties count half
    sens, t = sensitivity_at_specificity(y, s, 0.8)
    assert (sens, t) == (1.0, 4.0)  # threshold 4: negatives 0-3 below (4/5), all positives at or above
    assert sensitivity_at_specificity(y, s, 1.0)[0] == pytest.approx(0.6)  # above 6: 7, 8, 9
    b = binary_scores(y, s, threshold=5.0, n_boot=50)
    assert b["sensitivity"] == 0.8 and b["specificity"] == 0.8 and b["auc_ci"][0] <= 0.92 <= b["auc_ci"][1]


def test_strong_augmentation_and_test_time_views():
    from bodymap.models.diagnosis import strong_augment, tta_views

    u8 = torch.randint(0, 256, (5, 40, 40, 3), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    x = strong_augment(u8, 32, g)
    assert x.shape == (5, 3, 32, 32) and torch.isfinite(x).all()
    assert not torch.allclose(x, strong_augment(u8, 32, g))  # random
    v = tta_views(torch.arange(16.0).view(1, 1, 4, 4), 8)
    assert len(v) == 8 and torch.equal(v[0], torch.arange(16.0).view(1, 1, 4, 4))
    assert len({tuple(t.flatten().tolist()) for t in v}) == 8  # the eight flips and turns differ
    assert len(tta_views(v[0], 2)) == 2 and torch.equal(tta_views(v[0], 2)[1], v[0].flip(3))


def test_colour_constancy_takes_out_a_light_cast():
    """Shades of gray: the same skin under a reddish and a bluish light comes out with the same
    colours (chromaticities; the brightness may differ), and a checkpoint's normalisation applies
    it only when it names it."""
    from bodymap.models.preprocess import normalise

    rng = np.random.default_rng(0)
    skin = rng.uniform(0.2, 0.7, (2, 24, 24, 3)) * np.array([0.9, 0.6, 0.5])
    warm = torch.from_numpy((skin * [1.2, 1.0, 0.8] * 255).astype(np.uint8))
    cool = torch.from_numpy((skin * [0.8, 1.0, 1.2] * 255).astype(np.uint8))
    unit = {"mean": [0.0] * 3, "std": [1.0] * 3}

    def chroma_gap(norm):
        a, b = normalise(warm, norm), normalise(cool, norm)
        return (a / a.sum(1, keepdim=True) - b / b.sum(1, keepdim=True)).abs().mean()

    plain, sog = chroma_gap(unit), chroma_gap({**unit, "shades_of_gray": 6})
    assert plain > 0.05 and sog < 0.05 * plain


def test_real_recipe_ood_check_and_checkpoint_card(tmp_path):
    """A tiny model trained by the real recipe: balanced sampling and logit adjustment run, the
    checkpoint carries the data's name, licence, the lesion split and an OOD check that flags
    an image unlike the training ones."""
    from bodymap.models.diagnosis import DiagnosisModel, train_diagnosis

    p = _fake_set(tmp_path)
    r = train_diagnosis(tmp_path / "run", csv=str(p), size=16, load_size=20, epochs=1, batch=8, n_boot=50,
                        split=(0.5, 0.25, 0.25), data_name="fake set", licence="CC BY-NC 4.0", command="test")
    b = DiagnosisModel.load(r["B"])
    ck = b.checkpoint
    assert ck["data"]["licence"] == "CC BY-NC 4.0" and ck["data"]["split"]["by"] == "lesion_id"
    assert ck["training"]["recipe"]["name"] == "real" and ck["training"]["recipe"]["logit_adjust"]
    assert ck["metrics"]["held_out_unit"] == "lesions" and "mcnemar_A_vs_B" in ck["metrics"]
    assert ck["state_dict"]["ood_precision"].dtype == torch.float32 and b.tta == 8
    assert b.normalisation["shades_of_gray"] == 6  # the colour constancy training applied, kept for prediction
    card = b.card
    assert card["trained_on"] == "fake set" and card["licence"] == "CC BY-NC 4.0" and "balanced accuracy" in card["held_out"]
    assert "CC BY-NC 4.0" in b.description
    rng = np.random.default_rng(1)
    noise = [(rng.random((20, 20, 3)) * 255).astype(np.uint8)]
    flat = [np.full((20, 20, 3), 255, np.uint8)]  # a white square: far from every training image
    d_noise, d_flat = b.predict(noise, ["back"])[0], b.predict(flat, [None])[0]
    assert d_flat.ood and d_flat.ood_score > d_noise.ood_score
    assert d_flat.to_dict()["ood"] is True and d_flat.saliency.shape == (20, 20)


def test_checkpoint_keeps_statistics_in_fp32(tmp_path):
    sd = {"w": torch.randn(3, 3), "ood_precision": torch.tensor([[1e6, 1e-6]])}
    save_checkpoint(tmp_path / "m.pt", task="diagnosis", arch={}, state_dict=sd, classes=["a"], input_size=8,
                    normalisation={}, data={"licence": "CC BY 4.0"}, metrics={}, training={}, keep_fp32=("ood_",))
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["state_dict"]["w"].dtype == torch.float16 and raw["state_dict"]["ood_precision"].dtype == torch.float32
    ck = load_checkpoint(tmp_path / "m.pt", "diagnosis")
    assert ck["state_dict"]["ood_precision"][0, 0] == 1e6 and ck["data"]["licence"] == "CC BY 4.0"
    from bodymap.models.checkpoint import record_metrics

    record_metrics(tmp_path / "m.pt", "diagnosis", {"real": {"rate": 0.01}})
    ck2 = load_checkpoint(tmp_path / "m.pt", "diagnosis")
    assert ck2["metrics"]["real"] == {"rate": 0.01} and torch.equal(ck2["state_dict"]["w"], ck["state_dict"]["w"])


def test_shipped_diagnosis_models_by_name():
    from bodymap.models.diagnosis import NAMED, DiagnosisModel

    for name in ("default", "image_only", "synthetic", "synthetic_image_only"):
        if not NAMED[name].exists():
            pytest.skip(f"{NAMED[name].name} not built")
    b, syn = DiagnosisModel.load("default"), DiagnosisModel.load("synthetic")
    assert b.uses_site and b.card["trained_on"] == "HAM10000" and "CC BY-NC" in b.card["licence"]
    assert b.ood_threshold is not None and b.checkpoint["metrics"]["held_out_unit"] == "lesions"
    assert syn.checkpoint["data"]["kind"] == "synthetic" and syn.path.endswith("diagnosis_synthetic.pt")
    assert not DiagnosisModel.load("image_only").uses_site


# ----------------------------------------------------------------------- ear locator
def test_locator_network_and_decisions():
    from bodymap.models.earfind import ARCH, build_model, decide

    net = build_model(ARCH).eval()
    assert sum(p.numel() for p in net.parameters()) < 1e6  # 1.8 MB in fp16: the checkpoints' 60 MB budget
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 96, 128))
    assert y[0].shape == (1, 5, 12 * 16 + 6 * 8 + 3 * 4)  # box + score at strides 8, 16, 32
    assert not decide(np.zeros((0, 4)), np.zeros(0), (100, 100), {}).found
    boxes = np.array([[10.2, 10.0, 19.6, 20.0], [50, 50, 60, 60], [95, 95, 130, 130]])
    s = decide(boxes, np.array([0.9, 0.3, 0.6]), (100, 100), {"conf": 0.5})
    assert s.found and s.boxes.tolist() == [[10, 10, 20, 20], [95, 95, 100, 100]]  # whole pixels, in the photo
    assert s.scores.tolist() == pytest.approx([0.9, 0.6]) and s.peak == pytest.approx(0.9)
    assert s.mask.sum() == 100 + 25 and s.prob[55, 55] == pytest.approx(0.3) and not s.mask[55, 55]
    assert not decide(boxes, np.array([0.9, 0.3, 0.6]), (100, 100), {"conf": 0.95}).found


def test_locator_decodes_boxes_into_photo_pixels():
    """The network sees the photo at its input size (long side), padded below and right; the
    boxes it gives in input pixels come back in photo pixels."""
    from bodymap.models.earfind import INPUT, NORMALISATION, EarLocator

    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            out = torch.zeros(1, 5, 3)
            out[0, :, 0] = torch.tensor([64.0, 32.0, 20.0, 10.0, 0.9])  # an ear
            out[0, :, 1] = torch.tensor([66.0, 33.0, 20.0, 10.0, 0.5])  # the same ear again: suppressed
            out[0, :, 2] = torch.tensor([200.0, 100.0, 8.0, 8.0, 0.01])  # below any threshold
            return out, {}

    ck = {"arch": {"thresholds": {"conf": 0.3}}, "classes": ["background", "ear"], "input_size": INPUT,
          "normalisation": NORMALISATION}
    loc = EarLocator(ck, "cpu", Net())
    photo = (np.random.default_rng(0).random((2 * 100, 2 * INPUT, 3)) * 255).astype(np.uint8)  # 512 x 200: seen at 256 x 100, padded to 256 x 128
    s = loc.find(photo)
    assert seen == [(1, 3, 128, 256)]
    assert s.found and s.boxes.tolist() == [[108, 54, 148, 74]] and s.mask.shape == (200, 512)
    # searched at another size and mirrored too (the checkpoint's inference settings): the
    # mirror image's box comes back mirrored, and the two are merged where they overlap
    seen.clear()
    loc = EarLocator({**ck, "arch": {**ck["arch"], "inference": {"size": 2 * INPUT, "mirror": True}}}, "cpu", Net())
    b, sc = loc.detect(photo, conf=0.3)
    assert seen == [(1, 3, 224, 512)] * 2  # 512 x 200 at long side 512: padded to 512 x 224
    assert sorted(b[:, 0].round().tolist()) == [54.0, 438.0] and np.allclose(sc, 0.9)  # x 54..74 and 438..458


def test_find_and_segment_keeps_labels_on_found_ears_only():
    from bodymap.models.earfind import EarLocator, decide, find_and_segment

    class Loc(EarLocator):
        def __init__(self, box):
            self.box = box

        def find(self, image, name="image"):
            boxes = np.array([self.box], float) if self.box else np.zeros((0, 4))
            return decide(boxes, np.full(len(boxes), 0.99), image.shape[:2], {})

    class Seg:
        def segment(self, image, name=None):
            assert image.shape[0] == image.shape[1] >= 16  # a square crop around the ear, as large as the U-Net reads
            return np.full(image.shape[:2], 8)

    img = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    r = find_and_segment(img, Loc(None), Seg())
    assert not r.found and not (r.labels > 0).any()  # no ear: no ear pixel
    r = find_and_segment(img, Loc((140, 50, 160, 80)), Seg())  # at the photo's edge
    assert r.found and r.labels[65, 150] == 8 and r.labels[65, 100] == 0 and r.labels[10, 150] == 0
    assert r.labels[65, 140] == 8 and r.labels[65, 137] == 0  # the box's edge, not beyond (the crop reaches 131)
    assert len(r.crops) == 1
    r = find_and_segment(img, Loc((100, 60, 104, 68)), Seg())  # a box of 8 px: the crop is the U-Net's 16 px at least
    assert r.found and r.crops[0][2] - r.crops[0][0] == 16 and r.labels[64, 102] == 8


def test_locator_training_set_has_ear_boxes_and_photos_without_ears(tmp_path):
    from PIL import Image

    from bodymap.models.earfind import ear_boxes, write_yolo_dataset

    ear = np.zeros((40, 40), bool)
    ear[5:10, 5:10] = True
    ear[5:10, 11:14] = True  # the same ear split by a strand of hair
    ear[30:32, 30:32] = True  # 4 pixels at the frame's edge: too little to be a box
    assert ear_boxes(ear) == [(5, 5, 14, 10)]
    rng = np.random.default_rng(0)
    n, s = 4, 32
    heads = {"images": (rng.random((n, s, s, 3)) * 255).astype(np.uint8), "body": np.zeros((n, s, s), bool),
             "ear": np.zeros((n, s, s), bool)}
    heads["body"][:, 8:24, 8:24] = True
    heads["ear"][:2, 12:18, 12:16] = True  # two views with an ear, two without
    photos = []
    for i in range(5):
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray((rng.random((30, 50, 3)) * 255).astype(np.uint8)).save(photos[-1])
    d = write_yolo_dataset(heads, tmp_path / "data", [str(p) for p in photos[:4]], seed=0, views=2, n_pool=2,
                           n_negatives=3, val_bodies=0.5, whole_paths=[str(photos[4])])
    # 2 of the 4 pooled photos are left for whole negatives (of 3 asked), and the whole_paths photo is one too
    assert d["train"] == 2 + 2 and d["val"] == 2 + 1 and d["boxes"] == 2 and d["negatives"] == 3
    lab = (tmp_path / "data" / "labels" / "train" / "r00000.txt").read_text().split()
    assert lab[0] == "0" and [float(v) for v in lab[1:]] == pytest.approx([14 / 32, 15 / 32, 4 / 32, 6 / 32])
    assert (tmp_path / "data" / "labels" / "val" / "r00002.txt").read_text() == ""  # no ear, no box
    neg = sorted((tmp_path / "data" / "images" / "train").glob("n*.jpg"))
    assert len(neg) == 2 and Image.open(neg[0]).size == (32, 19)  # whole photo, long side the render's
    assert "names:\n  0: ear" in (tmp_path / "data" / "data.yaml").read_text()



def test_region_unet_crops_are_the_crops_photo_mode_gives_it():
    """`bodymap train ear --head-crops`: square crops around each ear's box, loosened or
    tightened as a locator's are, and decoy boxes elsewhere on the body, each with the true
    region labels wherever they fall (none on a decoy that misses the ear)."""
    from bodymap.models.earfind import CROP_FILL, locator_crops, square_crop

    img = np.arange(40 * 60).reshape(40, 60)
    crop, (a, b, a1, b1) = square_crop(img, (20, 10, 36, 26))  # the box fills CROP_FILL of the side
    assert crop.shape == (20, 20) and (a, b, a1, b1) == (18, 8, 38, 28) and crop[0, 0] == img[8, 18]
    crop, (a, b, _, _) = square_crop(img, (52, 0, 60, 16))  # at the corner: mirrored past the edge
    assert crop.shape == (20, 20) and (a, b) == (46, -2) and crop[2, 0] == img[0, 46] and crop[0, 0] == img[2, 46]
    assert square_crop(img, (5, 5, 7, 7))[0].shape == (16, 16)  # never under the U-Net's 16 px
    rng = np.random.default_rng(0)
    n, s = 3, 64
    heads = {"images": (rng.random((n, s, s, 3)) * 255).astype(np.uint8), "body": np.zeros((n, s, s), bool),
             "regions": np.zeros((n, s, s), np.uint8), "description": {"seed": 0}}
    heads["body"][:, 8:56, 8:56] = True
    heads["regions"][:2, 20:32, 24:30] = 5  # two photos with an ear, one without
    heads["regions"][:2, 26:32, 24:30] = 9
    d = locator_crops(heads, seed=1, size=32, decoys=2)
    assert d["images"].shape == (2 + 3 * 2, 32, 32, 3) and d["masks"].shape == (8, 32, 32)
    ear_share = (d["masks"] > 0).mean((1, 2))
    # an ear's crop: the ear spans about 47-89 % of the crop's side
    # per photo: its ear's crop, then its decoys (the third photo has no ear: decoys only)
    for k in (0, 3):
        assert 0.05 < ear_share[k] < CROP_FILL and set(np.unique(d["masks"][k])) == {0, 5, 9}
    assert set(np.unique(d["masks"][[1, 2, 4, 5]])) <= {0, 5, 9} and (d["masks"][6:] == 0).all()
    assert d["description"]["images"] == 8 and len(d["description"]["sha256"]) == 64
    with pytest.raises(ValueError, match="region labels"):
        locator_crops({k: v for k, v in heads.items() if k != "regions"}, seed=1)


def test_a_further_training_round_starts_from_the_checkpoints_weights(tmp_path):
    """`bodymap train earfind --resume CK`: ultralytics' trainer is handed CK's weights as a file
    of its own format, and the network it builds from them is CK's network, every tensor."""
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    from bodymap.models.checkpoint import save_checkpoint
    from bodymap.models.earfind import ARCH, TASK, _checkpoint_dict, _ultralytics_start, build_model, yolo_config

    torch.manual_seed(3)
    net = build_model(ARCH)
    ck = _checkpoint_dict(net.state_dict(), {"conf": 0.5}, input_size=320)
    save_checkpoint(tmp_path / "ck.pt", task=TASK, arch=ck["arch"], state_dict=net.state_dict(), classes=ck["classes"],
                    input_size=ck["input_size"], normalisation=ck["normalisation"], data={}, metrics={"held_out": {}},
                    training={"command": "round one"})
    to, prev = _ultralytics_start(tmp_path / "ck.pt", tmp_path / "start.pt")
    assert prev["training"]["command"] == "round one" and prev["arch"]["inference"] == {"size": 320, "mirror": False}
    weights, _ = load_checkpoint(to)  # what the trainer reads for pretrained=<file>
    fresh = DetectionModel(yolo_config(prev["arch"]), nc=1, verbose=False)
    fresh.load(weights)
    want = net.state_dict()
    # (saved as fp16: the weights come back to within fp16 rounding)
    assert all(torch.allclose(v.float(), want[k].float(), rtol=1e-3, atol=1e-3) for k, v in fresh.state_dict().items())
    assert not torch.allclose(DetectionModel(yolo_config(prev["arch"]), nc=1, verbose=False).state_dict()["model.0.conv.weight"],
                              want["model.0.conv.weight"])


def test_the_threshold_holds_false_finds_on_each_real_set_not_on_their_pool():
    """choose_thresholds: one clinical photo of ten scoring 0.5 must not be outvoted by 300
    dermoscopy images (pooled, 2 of 310 found is under 1 %; alone it is 10 %)."""
    from bodymap.models.earfind import choose_thresholds

    class Loc:
        def detect(self, image, name="image", conf=0.05):  # a real photo's score is written in its pixels
            score = image[0, 0, 0] / 250.0 if image.shape[:2] == (20, 30) else 0.0
            return np.zeros((1, 4)), np.array([score])

    photo = lambda score: np.full((20, 30, 3), round(score * 250), np.uint8)  # noqa: E731
    dermoscopy = [photo(0.1)] * 299 + [photo(0.6)]
    clinical = [photo(0.1)] * 9 + [photo(0.5)]
    rng = np.random.default_rng(0)
    heads = {"images": (rng.random((2, 32, 32, 3)) * 255).astype(np.uint8), "body": np.ones((2, 32, 32), bool),
             "ear": np.zeros((2, 32, 32), bool)}
    heads["ear"][0, 10:20, 10:14] = True
    per_set = choose_thresholds(Loc(), heads, {"ham10000": dermoscopy, "pad_ufes20": clinical})
    assert per_set["conf"] == pytest.approx(0.51) and per_set["dev_false_by_set"] == {"ham10000": 0.0033, "pad_ufes20": 0.0}
    assert choose_thresholds(Loc(), heads, dermoscopy + clinical)["conf"] == pytest.approx(0.11)  # one pool

# ----------------------------------------------------------------------- photo kind
def test_photo_kind_checkpoint_round_trip(tmp_path):
    from bodymap.models import photokind as pk

    net = pk.build_model()
    assert sum(p.numel() for p in net.parameters()) < 0.5e6
    save_checkpoint(tmp_path / "k.pt", task=pk.TASK, arch=pk.ARCH, state_dict=net.state_dict(), classes=pk.CLASSES,
                    input_size=pk.SIZE, normalisation=pk.NORMALISATION, data={"name": "test", "licence": "L"},
                    metrics={"held_out": {"dermoscopy_vs_clinical": {"accuracy": 0.99}}}, training={})
    clf = pk.PhotoKindClassifier.load(tmp_path / "k.pt")
    k = clf.classify((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8))
    assert k.label in pk.CLASSES and abs(sum(k.probs.values()) - 1) < 1e-5 and k.description
    assert clf.card["licence"] == "L" and "0.990" in clf.card["held_out"]


@pytest.mark.external
@pytest.mark.skipif(not EXTERNAL.exists(), reason="../shared/external is absent")
def test_every_site_of_the_real_sets_is_mapped():
    for name in ("ham10000", "isic2017", "pad_ufes20"):
        rows = diagdata.split_rows(EXTERNAL / name / "metadata.csv", "all")
        col = {"ham10000": "localization", "isic2017": "anatom_site_general", "pad_ufes20": "region"}[name]
        unmapped = {r[col] for r in rows if r[col] and diagdata.site_code(r[col]) is None}
        assert not unmapped, (name, unmapped)
    # the standard split never puts a patient on two sides (HAM: lesions, checked on fake data above)
    for name, key in (("pad_ufes20", "patient_id"),):
        parts = [{r[key] for r in diagdata.split_rows(EXTERNAL / name / "metadata.csv", p)} for p in ("train", "dev", "test")]
        assert not (parts[0] & parts[2]) and not (parts[0] & parts[1]) and not (parts[1] & parts[2])
