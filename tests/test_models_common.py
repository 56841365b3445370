"""Model infrastructure: checkpoints, metrics, photo quality check."""
from __future__ import annotations

import math

import numpy as np
import pytest

import torch  # noqa: E402

from bodymap.models.checkpoint import (CheckpointError, compress_checkpoint, load_checkpoint,  # noqa: E402
                                       pick_device, save_checkpoint)
from bodymap.models.metrics import bootstrap_ci, mcnemar, per_class_scores  # noqa: E402
from bodymap.models.quality import check_photo, load_photo  # noqa: E402


def _save(path, task="diagnosis", **kw):
    net = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.BatchNorm1d(300), torch.nn.Linear(300, 3))
    args = dict(task=task, arch={"kind": "mlp"}, state_dict=net.state_dict(), classes=["a", "b", "c"],
                input_size=32, normalisation={"mean": [0.5] * 3, "std": [0.25] * 3},
                data={"kind": "synthetic", "sha256": "0" * 64}, metrics={"accuracy": 0.5},
                training={"command": "test"})
    args.update(kw)
    save_checkpoint(path, **args)
    return net


def test_checkpoint_round_trip_fp16(tmp_path):
    net = _save(tmp_path / "m.pt")
    ck = load_checkpoint(tmp_path / "m.pt", "diagnosis")
    assert ck["format"] == "bodymap-checkpoint" and ck["version"] == 1
    assert ck["classes"] == ["a", "b", "c"] and ck["input_size"] == 32 and ck["metrics"] == {"accuracy": 0.5}
    sd = net.state_dict()
    for k, v in ck["state_dict"].items():
        assert v.dtype == sd[k].dtype  # fp32 back, ints (num_batches_tracked) untouched
        assert torch.allclose(v.float(), sd[k].float(), atol=1e-2, rtol=1e-3)
    # half precision halves the file
    _save(tmp_path / "full.pt", half=False)
    assert (tmp_path / "m.pt").stat().st_size < 0.7 * (tmp_path / "full.pt").stat().st_size
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind


def test_int8_compression_keeps_the_network_and_says_what_it_did(tmp_path):
    net = _save(tmp_path / "m.pt")
    net.eval()
    rec = compress_checkpoint(tmp_path / "m.pt", tmp_path / "q.pt", command="compress m.pt")
    # the 200 x 300 kernel; the 300 x 3 one is under INT8_MIN_SIZE and stays fp16
    assert rec["tensors"] == 1 and rec["mb_after"] < 0.65 * rec["mb_before"]
    ck = load_checkpoint(tmp_path / "q.pt", "diagnosis")
    assert ck["version"] == 2 and ck["training"]["compressed"]["command"] == "compress m.pt"
    assert ck["training"]["command"] == "test" and ck["metrics"] == {"accuracy": 0.5}
    raw = torch.load(tmp_path / "q.pt", weights_only=True)
    assert set(raw["int8"]) == {"0.weight"} and raw["state_dict"]["0.weight"].dtype == torch.int8
    assert raw["state_dict"]["2.weight"].dtype == torch.float16 and raw["state_dict"]["0.bias"].dtype == torch.float16
    sd = net.state_dict()
    for k, v in ck["state_dict"].items():
        assert v.dtype == sd[k].dtype and v.shape == sd[k].shape
        w = sd[k].float()
        # int8 per output channel: within half a step (max |w| / 127) of each weight, plus fp16's error
        tol = (w.abs().amax(1, keepdim=True) / 254 + 1e-3) if k == "0.weight" else 1e-2
        assert ((v.float() - w).abs() <= tol).all(), k
    # the same network, the same answers (to int8's error)
    net2 = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.BatchNorm1d(300), torch.nn.Linear(300, 3)).eval()
    net2.load_state_dict(ck["state_dict"])
    x = torch.randn(64, 200)
    with torch.no_grad():
        assert (net(x).argmax(1) == net2(x).argmax(1)).float().mean() > 0.9
    # compressing twice changes nothing more; a scale that does not fit is a damaged file, named
    assert compress_checkpoint(tmp_path / "q.pt")["tensors"] == 0
    raw["int8"]["0.weight"] = torch.ones(7)
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="int8 weights unreadable"):
        load_checkpoint(tmp_path / "bad.pt", "diagnosis")
    # a file that is not a checkpoint is named, as a load names it (it was torch's own error)
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(CheckpointError, match="notes.pt: not a BodyMap checkpoint"):
        compress_checkpoint(tmp_path / "notes.pt")


@pytest.mark.parametrize("case", ["missing", "other_task", "text", "empty", "yolo_like", "plain_dict", "newer"])
def test_checkpoint_errors_name_file_and_problem(tmp_path, case):
    p = tmp_path / "model.pt"
    task = "diagnosis"
    if case == "other_task":
        _save(p, task="earseg")
    elif case == "text":
        p.write_text("hello, not a model\n")
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "yolo_like":  # a pickled object (as an ultralytics .pt holds), refused unread
        torch.save({"model": torch.nn.Linear(2, 2), "epoch": 3}, p)
    elif case == "plain_dict":  # a bare state_dict
        torch.save(torch.nn.Linear(2, 2).state_dict(), p)
    elif case == "newer":
        _save(p)
        obj = torch.load(p, weights_only=True)
        obj["version"] = 99
        torch.save(obj, p)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p, task)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ")
    expect = {"missing": "no such file", "other_task": "'earseg'", "text": "not a BodyMap checkpoint",
              "empty": "empty", "yolo_like": "not a BodyMap checkpoint", "plain_dict": "not a BodyMap checkpoint",
              "newer": "newer"}[case]
    assert expect in msg
    assert isinstance(e.value, ValueError)


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")


def test_bootstrap_ci_covers_the_mean_and_shrinks():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 1.0, 400)
    lo, hi = bootstrap_ci(np.mean, x, n=500)
    assert lo < x.mean() < hi and 0.1 < hi - lo < 0.4
    lo2, hi2 = bootstrap_ci(np.mean, x[:40], n=500)
    assert hi2 - lo2 > hi - lo
    assert bootstrap_ci(np.mean, x, n=200, seed=3) == bootstrap_ci(np.mean, x, n=200, seed=3)
    with pytest.raises(ValueError, match="different lengths"):
        bootstrap_ci(lambda a, b: 0.0, x, x[:3])


def test_per_class_scores_known_values():
    t = [0] * 10 + [1] * 10 + [2] * 5
    p = [0] * 8 + [1] * 2 + [1] * 10 + [0] * 5  # class 2 never predicted
    s = per_class_scores(t, p, ["x", "y", "z"], n_boot=300)
    assert s["confusion"] == [[8, 2, 0], [0, 10, 0], [5, 0, 0]]
    assert s["classes"]["x"]["precision"] == pytest.approx(8 / 13)
    assert s["classes"]["x"]["sensitivity"] == pytest.approx(0.8)
    assert s["classes"]["y"]["precision"] == pytest.approx(10 / 12)
    assert s["classes"]["z"]["sensitivity"] == 0.0 and math.isnan(s["classes"]["z"]["precision"])
    assert s["classes"]["z"]["support"] == 5
    assert s["accuracy"] == pytest.approx(18 / 25)
    lo, hi = s["accuracy_ci"]
    assert lo < 18 / 25 < hi
    lo, hi = s["classes"]["x"]["sensitivity_ci"]
    assert lo <= 0.8 <= hi
    assert s["mean_sensitivity"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    # names work as labels too
    s2 = per_class_scores(["x", "y"], ["x", "x"], ["x", "y"], n_boot=50)
    assert s2["confusion"] == [[1, 0], [1, 0]]
    with pytest.raises(ValueError):
        per_class_scores([0, 1], [0], ["a", "b"])


def test_mcnemar_exact_and_chi_square():
    # 10 discordant pairs all for B: exact two-sided p = 2 / 2**10
    a = np.array([False] * 10 + [True] * 50)
    b = np.array([True] * 10 + [True] * 50)
    r = mcnemar(a, b)
    assert (r["b"], r["c"], r["method"]) == (0, 10, "exact")
    assert r["p"] == pytest.approx(2 / 1024)
    # b=20, c=40: chi-square with continuity (|20-40|-1)^2/60 = 6.0167, p = 0.01418
    a = np.array([True] * 20 + [False] * 40 + [True] * 10)
    b = np.array([False] * 20 + [True] * 40 + [True] * 10)
    r = mcnemar(a, b)
    assert r["method"].startswith("chi-square") and r["statistic"] == pytest.approx(361 / 60)
    assert r["p"] == pytest.approx(0.01418, abs=2e-4)
    assert mcnemar([True, False], [True, False])["p"] == 1.0


def _textured(size=400, seed=0):
    """A sharp, well exposed test photo: skin tone with a dark blotch and fine texture."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32) + np.array([200, 150, 120], np.float32)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 6) ** 2
    img[blob] = [90, 60, 40]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_quality_flags_blur_exposure_size():
    from scipy import ndimage

    good = _textured()
    q = check_photo(good, "ok.jpg")
    assert q.ok and q.problems == [] and q.size == (400, 400)
    blurred = ndimage.gaussian_filter(good, (3, 3, 0))
    qb = check_photo(blurred, "b.jpg")
    assert not qb.ok and qb.sharpness < q.sharpness and any(p.startswith("blurred") for p in qb.problems)
    assert "retake" in qb.message() and qb.message().startswith("b.jpg: ")
    dark = (good * 0.12).astype(np.uint8)
    assert any(p.startswith("too dark") for p in check_photo(dark).problems)
    bright = np.clip(good.astype(int) + 120, 0, 255).astype(np.uint8)
    qo = check_photo(bright)
    assert any(p.startswith("overexposed") for p in qo.problems) and qo.clipped_high > 0.15
    pink = good.copy()
    pink[..., 0] = 255  # red saturated (fair skin under a dermoscope), green and blue not
    assert not any(p.startswith("overexposed") for p in check_photo(pink).problems)
    glare = good.copy()
    glare[:200] = 255  # half the photo burnt out to white
    assert any(p.startswith("overexposed") for p in check_photo(glare).problems)
    small = good[:100, :150]
    assert any(p.startswith("too small") for p in check_photo(small).problems)
    assert not any(p.startswith("too small") for p in check_photo(good[:150, :200]).problems)  # HAM10000's size
    assert any(p.startswith("blank") for p in check_photo(np.full((300, 300, 3), 128, np.uint8)).problems)
    assert check_photo(good[..., 0]).ok  # grey accepted
    with pytest.raises(ValueError, match="x.png: not an image"):
        check_photo(np.zeros((10, 10, 5), np.uint8), "x.png")


def test_quality_on_real_isic_photos():
    from pathlib import Path

    from scipy import ndimage

    files = sorted(Path("/work/shared/external/isic_enhance").glob("ISIC_*.jpg"))
    if not files:
        pytest.skip("ISIC samples not present")
    for f in files:
        img = load_photo(f)
        assert check_photo(img, f).ok, check_photo(img, f).message()
        assert not check_photo(ndimage.gaussian_filter(img, (2, 2, 0)), f).ok


def test_quality_passes_the_dermoscopy_the_model_was_measured_on():
    """HAM10000's 200 x 150 images are the diagnosis model's own data: the size check must not
    tell the user to retake them (with a 200-px minimum it told all of them)."""
    from pathlib import Path

    files = sorted(Path("/work/shared/external/ham10000/images").glob("ISIC_*.jpg"))[:40]
    if not files:
        pytest.skip("HAM10000 not present")
    for f in files:
        q = check_photo(load_photo(f), f)
        assert not any(p.startswith("too small") for p in q.problems), q.message()


def test_quality_does_not_call_bright_dermoscopy_overexposed():
    """ISIC 2017's fair-skinned dermoscopy: a saturated red channel is not glare (counting it
    called 10 % of these overexposed)."""
    from pathlib import Path

    files = sorted(Path("/work/shared/external/isic2017/images").glob("ISIC_*.jpg"))[:80]
    if not files:
        pytest.skip("ISIC 2017 not present")
    over = [f.name for f in files if any(p.startswith("overexposed") for p in check_photo(load_photo(f)).problems)]
    assert len(over) <= 0.05 * len(files), over


def test_load_photo_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_photo(tmp_path / "none.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg: empty file"):
        load_photo(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg: not a readable image"):
        load_photo(tmp_path / "text.jpg")
