"""Every file BodyMap writes is written atomically; a killed analysis leaves the previous
outputs whole; nothing reaches the network; the tests never touch the user's home."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bodymap.atomic import atomic_write, write_text
from bodymap.cli import main

from conftest import REAL_HOME, ROOT, SANDBOX
from test_hostile import textured_body


def _hashes(folder: Path) -> dict:
    """sha1 of each output file (hidden temporaries left out)."""
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "labels.npz"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".npz") and tmp != target
            np.savez_compressed(tmp, a=np.arange(10))
            raise RuntimeError("killed")
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["labels.npz"]
    with atomic_write(target) as tmp:
        np.savez_compressed(tmp, a=np.arange(10))
    assert np.load(target)["a"].sum() == 45
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    """Two writers of one file (two windows autosaving, two commands on one folder): each
    writes its own temporary, the file always holds one writer's whole text."""
    target = tmp_path / "reviews.json"
    texts = ["a" * 200_000, "b" * 300_000]
    errors = []

    def writer(text):
        try:
            for _ in range(20):
                write_text(target, text)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for th in threads:
        th.start()
    seen = set()
    while any(th.is_alive() for th in threads):
        if target.exists():
            seen.add(len(target.read_text()))
    for th in threads:
        th.join()
    assert not errors and seen <= {200_000, 300_000}  # a reader never saw a partial file
    assert target.read_text() in texts and sorted(p.name for p in tmp_path.iterdir()) == ["reviews.json"]


KILL_SCRIPT = r"""
import csv, sys, time
from pathlib import Path

marker = Path(sys.argv[1])
real = csv.writer


class Slow:  # the lesion table is written row by row: stop half-way and wait to be killed
    def __init__(self, w):
        self.w, self.n = w, 0

    def writerow(self, row):
        self.w.writerow(row)
        self.n += 1
        if self.n == 3:
            marker.touch()
            time.sleep(120)


csv.writer = lambda fh, *a, **k: Slow(real(fh, *a, **k))
from bodymap.cli import main

sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_an_analysis_killed_mid_write_leaves_the_previous_outputs_whole(tmp_path):
    scan = textured_body(tmp_path / "in", tex=_spotted_texture())
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--out", str(out), "--quiet"]) == 0
    before = _hashes(out)
    assert {"lesions.json", "lesions.csv", "annotated_texture.jpg"} <= set(before)
    marker = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(marker), "detect", str(scan), "--out", str(out),
                             "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    t0 = time.time()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < 120, "the analysis never reached its lesion table"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-write: half the table is in a temporary file
    proc.wait(30)
    after = {k: v for k, v in _hashes(out).items()}
    assert after == before, "a file the killed analysis was writing is not the previous one"
    import csv

    rows = list(csv.reader(open(out / "lesions.csv")))
    assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)
    # what it leaves is at most the hidden temporary it was writing, never a truncated output
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(n.startswith(".lesions.") and ".tmp" in n for n in hidden), hidden


def _spotted_texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    tex = np.full((256, 256, 3), (205, 160, 130), np.uint8)
    yy, xx = np.mgrid[:256, :256]
    for cy, cx in rng.integers(20, 236, (8, 2)):
        tex[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = (90, 60, 45)
    return tex


NET_SCRIPT = r"""
import socket, sys

calls = []


def deny(*a, **k):
    calls.append(a[:2])
    raise OSError("network disabled by the test")


class NoSocket(socket.socket):
    def __init__(self, *a, **k):
        calls.append(("socket", a[:2]))
        raise OSError("network disabled by the test")


socket.getaddrinfo = deny
socket.create_connection = deny
socket.gethostbyname = deny
socket.socket = NoSocket
from bodymap.cli import main

rc = main(sys.argv[1:])
print("network calls:", calls)
sys.exit(rc if not calls else 3)
"""


@pytest.mark.slow
def test_yolo_detection_runs_with_networking_disabled(tmp_path):
    """With every socket and DNS call refused (and recorded), `bodymap detect --detector yolo`
    works and asks for none: YOLO_OFFLINE is set by BodyMap itself before ultralytics is first
    imported (also through torch.load of the checkpoint)."""
    scan = textured_body(tmp_path / "in", tex=_spotted_texture())
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    r = subprocess.run([sys.executable, "-c", NET_SCRIPT, "detect", str(scan), "--detector", "yolo", "--out",
                        str(tmp_path / "out"), "--quiet"], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "network calls: []" in r.stdout and (tmp_path / "out" / "lesions.json").exists()


def test_the_tests_run_in_a_sandbox_and_leave_home_untouched(tmp_path):
    """Settings, recent files, autosaves, review store and caches of a test run go to the
    sandbox (conftest), never to the user's home."""
    watched = [REAL_HOME / ".config" / "BodyMap", REAL_HOME / ".local" / "share" / "bodymap",
               REAL_HOME / ".config" / "Ultralytics", REAL_HOME / ".cache" / "anny"]

    def state():
        return {str(p): sorted((str(q), q.stat().st_mtime_ns) for q in p.rglob("*")) if p.exists() else None
                for p in watched}

    before = state()
    assert Path.home() != REAL_HOME and SANDBOX in Path.home().parents
    from bodymap.session import AutosaveSlot, Project, data_dir

    assert SANDBOX in data_dir().parents
    slot = AutosaveSlot()
    slot.save(Project())
    assert SANDBOX in slot.path.parents
    slot.close(keep=False)
    from PySide6 import QtCore

    s = QtCore.QSettings("BodyMap", "BodyMap")
    s.setValue("recent", [str(tmp_path)])
    s.sync()
    assert SANDBOX in Path(s.fileName()).parents
    import matplotlib

    assert SANDBOX in Path(matplotlib.get_configdir()).parents
    anny_cache = Path(os.environ["ANNY_CACHE_DIR"]).resolve()  # what anny reads at import
    assert REAL_HOME not in anny_cache.parents and anny_cache != REAL_HOME / ".cache" / "anny"
    assert state() == before


@pytest.mark.slow
def test_the_body_model_starts_quietly_and_repairs_a_truncated_cache(tmp_path):
    """No "Warp CUDA warning" on a machine without a GPU; a truncated file in anny's cache (a
    killed first run) is removed to be rebuilt, not left to break every later run."""
    r = subprocess.run([sys.executable, "-c", "from bodymap.anatomy.body import body_model; body_model(); print('ok')"],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert "Warp CUDA warning" not in r.stderr and "Warp CUDA warning" not in r.stdout
    from anny.models.model_data import CURRENT_DATA_VERSION
    from anny.paths import get_anny_cache_path, set_anny_cache_path

    from bodymap.anatomy.body import _prepare_anny_cache

    real = get_anny_cache_path()
    folder = tmp_path / f"v{CURRENT_DATA_VERSION}"
    folder.mkdir()
    good = min(Path(real, folder.name).glob("*.safetensors"), key=lambda p: p.stat().st_size)
    cut = folder / good.name
    with open(good, "rb") as fh:
        cut.write_bytes(fh.read(100_000))
    set_anny_cache_path(tmp_path)
    try:
        assert _prepare_anny_cache() == str(folder)  # nothing usable left: the first-run notice is due
    finally:
        set_anny_cache_path(real)
    assert not cut.exists()


def test_the_cache_build_reads_anny_targets_as_anny_does(tmp_path):
    """The first run's cache build reads anny's 1,136 target files with numpy's parser instead of
    anny's line-by-line loop (140 -> 33 s on 2 cores): the same tensors to the bit, in float32 and
    float64; a file unlike the "id dx dy dz" lines, or with an id twice, is left to anny's own."""
    import gzip
    from types import SimpleNamespace

    import anny
    import torch

    from bodymap.anatomy import body

    body._fast_blend_shapes()
    ours, theirs = body._load_blend_shape, body._ANNY_LOAD_BLEND_SHAPE
    assert theirs is not None and theirs is not ours
    scale = SimpleNamespace(apply=lambda t: t * 0.1)  # (anny's is a world transform; any function will do)
    targets = Path(anny.__file__).resolve().parent / "data" / "mpfb2" / "targets"
    files = [targets / "macrodetails" / "african-female-baby.target.gz", *sorted(targets.glob("ears/*.target.gz"))[:2]]
    for f in files:
        for dtype in (torch.float32, torch.float64):
            a, b = ours(str(f), 20000, scale, dtype), theirs(str(f), 20000, scale, dtype)
            assert a.dtype == b.dtype and torch.equal(a, b) and a.abs().sum() > 0
    # a repeated id (anny keeps its last line) and a short line (anny raises): anny's loader decides
    twice = tmp_path / "twice.target.gz"
    twice.write_bytes(gzip.compress(b"3 0.5 0.25 -1\n3 1.5 2 3\n7 1e-3 2.5e2 0\n"))
    a, b = ours(str(twice), 10, scale, torch.float32), theirs(str(twice), 10, scale, torch.float32)
    assert torch.equal(a, b) and torch.allclose(a[3], torch.tensor([0.15, 0.2, 0.3]))
    short = tmp_path / "short.target.gz"
    short.write_bytes(gzip.compress(b"3 0.5 0.25\n"))
    with pytest.raises(AssertionError):
        ours(str(short), 10, scale, torch.float32)


def test_background_writer_writes_in_order_skips_superseded_and_reports_errors(tmp_path):
    """The GUI's saves and autosaves: written off the UI thread, the newest data last, a write
    superseded while queued skipped, a failure returned (never lost in the thread)."""
    import json

    from bodymap.jsonfile import BackgroundWriter

    w = BackgroundWriter()
    gate = threading.Event()
    blocker = w._pool.submit(gate.wait)  # hold the writer so the next writes queue up
    target = tmp_path / "project.bodymap"
    futures = [w.submit(target, {"n": n}) for n in range(5)]
    other = w.submit(tmp_path / "other.json", {"x": 1})
    gate.set()
    w.flush(10)
    assert blocker.done()
    assert [f.result() for f in futures] == [False, False, False, False, True]  # only the newest written
    assert other.result() is True
    assert json.loads(target.read_text()) == {"n": 4}
    (tmp_path / "dir").mkdir()
    bad = w.submit(tmp_path / "dir", {"n": 0})  # a folder where the file should go
    with pytest.raises(OSError):
        bad.result(10)
    assert json.loads(target.read_text()) == {"n": 4}
