"""Ear segmentation: synthetic data and masks, a user folder, training (loss falls), scores,
the shipped checkpoint on unseen rendered ears and on a scan (labels carried back)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import torch  # noqa: E402
import segmentation_models_pytorch  # noqa: E402,F401  (a dependency: must fail, not skip)

from bodymap.models import earseg  # noqa: E402
from bodymap.models.checkpoint import CheckpointError  # noqa: E402
from bodymap.models.eardata import load_ear_folder, load_mask, render_ear_dataset  # noqa: E402
from bodymap.taxonomy import EAR_COLOURS, EAR_REGIONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = earseg.DEFAULT_PATH
AGREE_FINE = 0.65  # carried-back labels on a fine synthetic body (benchmark: 0.79 over 3 bodies)
# on the coarse sample scan (about 70 vertices per ear): measured 0.56-0.62 with the weights to
# stop 51, 0.44 with stop 52's, trained on photo mode's crops too, which call fewer of this scan's
# blunt ear vertices ear (on six textured scans of 100k-300k faces the same: 0.755 -> 0.749); 0.53
# with stop 53's seventh round (read with mirror images)
AGREE_SAMPLE = 0.40


@pytest.fixture(scope="module")
def tiny():
    """One unseen body, both ears, two views each, 64 px."""
    return render_ear_dataset(1, 2, 64, seed=424242)


def test_rendered_masks_hold_every_ear_region(tiny):
    assert tiny["images"].shape == (4, 64, 64, 3) and tiny["images"].dtype == np.uint8
    assert tiny["masks"].shape == (4, 64, 64)
    counts = np.bincount(tiny["masks"].ravel(), minlength=len(EAR_REGIONS))
    assert (counts[1:] > 0).sum() >= 10  # the small regions can hide at 64 px, most cannot
    # the ear fills a good part of a close-up, but not all of it
    ear = (tiny["masks"] > 0).mean((1, 2))
    assert (ear > 0.08).all() and (ear < 0.8).all()
    again = render_ear_dataset(1, 2, 64, seed=424242)
    assert again["description"]["sha256"] == tiny["description"]["sha256"]


def _write_folder(tmp_path, data, colour_masks=False):
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for i, (im, m) in enumerate(zip(data["images"], data["masks"])):
        Image.fromarray(im).save(tmp_path / "images" / f"ear{i}.jpg" if i % 2 else tmp_path / "images" / f"ear{i}.png")
        mm = np.array(EAR_COLOURS, np.uint8)[m] if colour_masks else m
        Image.fromarray(mm).save(tmp_path / "masks" / f"ear{i}.png")
    return tmp_path


def test_training_on_a_user_folder_lowers_the_loss(tiny, tmp_path):
    folder = _write_folder(tmp_path / "photos", tiny, colour_masks=True)
    data = load_ear_folder(folder, 64)
    assert (data["masks"] == tiny["masks"]).all()  # colour masks decode to the same labels
    path = earseg.train_ear(tmp_path / "run", folder=folder, size=64, crop=64, steps=12, batch=4, lr=3e-3,
                            command="test")
    ck = torch.load(path, weights_only=True)
    t = ck["training"]
    assert t["final_loss"] < 0.9 * t["first_loss"], t
    assert ck["data"]["sha256"] == data["description"]["sha256"]
    seg = earseg.EarSegmenter.load(path)
    assert seg.segment(tiny["images"][0]).shape == (64, 64)
    assert (tmp_path / "run" / "ear_train.log").read_text().count("step") >= 2


def test_user_folder_errors_name_the_file(tiny, tmp_path):
    folder = _write_folder(tmp_path / "f", tiny)
    Image.fromarray(tiny["masks"][0][:, :50]).save(folder / "masks" / "ear0.png")
    with pytest.raises(ValueError, match=r"ear0\.png: mask is 50x64 but its image ear0\.png is 64x64"):
        load_ear_folder(folder, 64)
    (folder / "masks" / "ear0.png").unlink()
    with pytest.raises(ValueError, match=r"ear0\.png: no mask"):
        load_ear_folder(folder, 64)
    bad = np.zeros((8, 8, 3), np.uint8)
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png: colour \(1, 2, 3\) is not an ear-region colour"):
        load_mask(tmp_path / "bad.png")
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big\.png: mask values 40\.\.40"):
        load_mask(tmp_path / "big.png")
    with pytest.raises(ValueError, match="no images/ folder"):
        load_ear_folder(tmp_path, 64)


def test_pixel_scores():
    t = np.zeros((4, 8, 8), np.uint8)
    t[:, 2:6, 2:6] = 7
    t[:, 3, 3] = 1
    perfect = earseg.pixel_scores(t, t, n_boot=50)
    assert perfect["classes"]["helix"]["precision"] == 1.0 and perfect["classes"]["helix"]["sensitivity"] == 1.0
    p = t.copy()
    p[:2, 2:6, 2:6] = 0  # half the helix pixels missed
    s = earseg.pixel_scores(t, p, n_boot=200)
    h = s["classes"]["helix"]
    assert h["precision"] == 1.0 and h["sensitivity"] == pytest.approx(0.5)
    assert h["sensitivity_ci"][0] < 0.5 < h["sensitivity_ci"][1]
    # classes absent from truth do not enter the means; a class never predicted counts 0 precision
    assert s["classes"]["anti_helix"]["sensitivity"] == pytest.approx(0.5)
    assert "| **mean, 12 ear regions** |" in earseg.score_table(s)


def test_photo_errors_and_overlay():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    lab = np.zeros((40, 50), int)
    lab[10:20, 10:20] = 7
    ov = earseg.overlay(img, lab)
    assert ov.shape == img.shape and ov.dtype == np.uint8
    assert (ov[lab == 0] == img[lab == 0]).all() and (ov[lab > 0] != img[lab > 0]).any()
    with pytest.raises(ValueError, match="photo.jpg: image is one flat colour"):
        earseg.as_rgb(np.zeros((30, 30, 3), np.uint8), "photo.jpg")
    with pytest.raises(ValueError, match=r"image: expected an \(H, W, 3\) colour image"):
        earseg.as_rgb(np.zeros((30, 30, 5)))
    with pytest.raises(ValueError, match="at least 16x16"):
        earseg.as_rgb(np.zeros((0, 0, 3)))
    with pytest.raises(ValueError, match="labels are"):
        earseg.overlay(img, lab[:10])


needs_shipped = pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped ear checkpoint")


@needs_shipped
def test_wrong_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        earseg.EarSegmenter.load(tmp_path / "none.pt")
    macro = ROOT / "bodymap" / "data" / "macro_anatomy.pt"
    if macro.exists():
        with pytest.raises(CheckpointError, match="'macro' model, not 'earseg'"):
            earseg.EarSegmenter.load(macro)
    with pytest.raises(CheckpointError, match="not a BodyMap checkpoint"):
        earseg.EarSegmenter.load(ROOT / "bodymap" / "data" / "detector_yolo.pt")


@needs_shipped
def test_shipped_weights_segment_unseen_ears():
    seg = earseg.EarSegmenter.load()
    assert seg.classes == list(EAR_REGIONS) and str(seg.device) == "cpu"
    assert SHIPPED.stat().st_size < 25e6
    assert seg.info["metrics"]["held_out"]["mean_ear"]["precision"] > 0.5
    d = render_ear_dataset(2, 2, seg.input_size, seed=515151)  # bodies never used anywhere
    pred = np.stack([seg.segment(im) for im in d["images"]])
    s = earseg.pixel_scores(d["masks"], pred, n_boot=50)
    assert s["mean_all"]["sensitivity"] > 0.6 and s["mean_all"]["precision"] > 0.6, earseg.summary_line(s)
    # any photo size: resized in and out
    big = np.asarray(Image.fromarray(d["images"][0]).resize((300, 260)))
    assert seg.segment(big).shape == (260, 300)
    # photo mode's crops: ear wherever the ear regions together pass the weights' own threshold
    assert seg.crop_ear_prob is not None and 0 < seg.crop_ear_prob < 0.5
    p = seg.probabilities(d["images"][0])
    loose, plain, strict = (seg.segment(d["images"][0], ear_prob=t) for t in (seg.crop_ear_prob, None, 0.9))
    assert ((strict > 0) <= (plain > 0)).all() and ((plain > 0) <= (loose > 0)).all() and (loose > 0).sum() > (strict > 0).sum()
    np.testing.assert_array_equal(loose > 0, 1 - p[..., 0] > seg.crop_ear_prob)
    assert (loose[loose > 0] == p[..., 1:].argmax(2)[loose > 0] + 1).all()
    # the shipped weights average each photo with its mirror image: a mirrored ear gets the
    # mirrored probabilities (without, it does not), and close-ups are labelled the same way
    assert seg.test_time_flip
    im = d["images"][1]
    p1 = seg.probabilities(im)
    np.testing.assert_allclose(seg.probabilities(im[:, ::-1].copy()), p1[:, ::-1], atol=1e-5)
    np.testing.assert_array_equal(seg.label_batches(d["images"][:2])[1], p1.argmax(2))
    seg.info["arch"]["test_time_flip"] = False
    assert np.abs(seg.probabilities(im[:, ::-1].copy()) - seg.probabilities(im)[:, ::-1]).max() > 0.05


@needs_shipped
def test_scan_ears_carried_back_to_vertices():
    from bodymap.anatomy.template import load_template
    from bodymap.io import load_scan

    vdir = ROOT / "sample_meshes" / "SYN00101" / "visit1"
    scan = load_scan(vdir / "scan.obj")
    with np.load(vdir / "truth.npz") as z:
        tf, tb = z["vertex_template_face"], z["vertex_template_bary"]
    t = load_template()
    corner = t.faces[tf, np.asarray(tb).argmax(1)]
    site, side, ear = t.site[corner], t.side[corner], t.ear[corner]
    res = earseg.segment_scan_ears(scan, site, side, size=192)
    assert res.vertex_labels.shape == (len(scan.vertices),) and len(res.views) == 10
    on_ear = res.seen & (ear > 0)
    assert on_ear.sum() > 40  # the sample scan is coarse: about 70 vertices per ear
    agree = (res.vertex_labels[on_ear] == ear[on_ear]).mean()
    assert agree > AGREE_SAMPLE, agree
    # far from the ears nothing is labelled
    assert (res.vertex_labels[site != site[ear > 0][0]] > 0).mean() < 0.01


@needs_shipped
def test_carry_back_on_a_fine_synthetic_body():
    """An anny body (632 ear vertices, as the template) coloured like the training renders:
    the carried-back vertex labels agree with the template's ear labels."""
    from bodymap.anatomy.template import load_template
    from bodymap.models.synthviews import random_body, skin_colours
    from bodymap.scan import Scan

    t = load_template()
    rng = np.random.default_rng(777)
    V = random_body(rng)
    scan = Scan(V, t.faces, vertex_colors=skin_colours(rng, hair=False))
    res = earseg.segment_scan_ears(scan, t.site, t.side, size=192)
    on_ear = res.seen & (t.ear > 0)
    assert on_ear.sum() > 600
    agree = (res.vertex_labels[on_ear] == t.ear[on_ear]).mean()
    assert agree > AGREE_FINE, agree
