"""Shared fixtures: synthetic patients generated once per test session, and a sandbox.

The sandbox: every test runs with its own home, settings, data and cache folders ($HOME, the
XDG folders, BODYMAP_HOME, Qt's settings, matplotlib's and ultralytics' configuration) and in
its own current folder, so `make test` never reads or writes the user's real settings, recent
files, autosaves or review store, and a default output (./bodymap-out/) lands in a temporary
folder. The body model's caches (anny's, about 800 MB and half a minute to build; warp's compiled
kernels) are kept between runs in .test-cache/ under the repository (ignored by git), filled on
the first run from the user's own caches when they exist (read only: hard links or copies).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_meshes"
EXTERNAL = ROOT.parent / "shared" / "external"

#: The user's real home, as it was before the sandbox (tests check it stays untouched).
REAL_HOME = Path(os.path.expanduser("~")).resolve()
SANDBOX = Path(tempfile.mkdtemp(prefix="bodymap-tests-"))
TEST_CACHE = Path(os.environ.get("BODYMAP_TEST_CACHE") or ROOT / ".test-cache")


def _seed(src: Path, dst: Path) -> None:
    """Fill the test cache dst from a user's cache src once (hard links, else copies); never
    writes into src."""
    if dst.exists() or not src.is_dir():
        return
    tmp = dst.with_name(dst.name + f".{os.getpid()}.part")
    try:
        shutil.copytree(src, tmp, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".*"))  # another run's temporary files
        os.replace(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(a, b):
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def _sandbox() -> None:
    """Point every per-user location at SANDBOX (and the body-model caches at TEST_CACHE). Runs
    when pytest loads this file, before any test module imports bodymap, Qt, matplotlib,
    anny, warp or ultralytics."""
    home = SANDBOX / "home"
    env = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
        "BODYMAP_HOME": SANDBOX / "bodymap-home",
        "MPLCONFIGDIR": home / ".config" / "matplotlib",
        "YOLO_CONFIG_DIR": home / ".config" / "Ultralytics",
        "TORCH_HOME": home / ".cache" / "torch",
    }
    for k, v in env.items():
        Path(v).mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(v)
    os.environ["YOLO_OFFLINE"] = "1"
    if "ANNY_CACHE_DIR" not in os.environ:
        _seed(REAL_HOME / ".cache" / "anny", TEST_CACHE / "anny")
        os.environ["ANNY_CACHE_DIR"] = str(TEST_CACHE / "anny")
    if "WARP_CACHE_PATH" not in os.environ:
        _seed(REAL_HOME / ".cache" / "warp", TEST_CACHE / "warp")
        os.environ["WARP_CACHE_PATH"] = str(TEST_CACHE / "warp")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs one pytest-xdist worker per core: one thread each, or torch's and
        # numpy's pools would fight over the same cores.
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[k] = "1"


_sandbox()

import pytest  # noqa: E402


#: Tests sharing the small patient's analysis (the ``small_analysed`` fixture): whole files,
#: or file::test. They run together on one worker (see pytest_xdist_make_scheduler).
SMALL_ANALYSED = {"tests/test_anatomy.py", "tests/test_reviews.py", "tests/test_secondlook.py", "tests/test_track.py",
                  "tests/test_detect.py::test_analyze_locates_lesions_and_suppresses_non_skin"}
#: Long tests in those files that do not use it: each goes to whichever worker is free.
ON_THEIR_OWN = {"tests/test_anatomy.py::test_partial_scan_labels_the_part_it_has",
                "tests/test_track.py::test_faust_poses_as_unrelated_scans"}


#: The longest work units, handed out first in this order (each worker's first two units, then
#: whichever worker is free): xdist otherwise orders units by their number of tests, which put
#: the two long single tests last, one after the other on one worker (a 130 s tail, 2026-12-03).
FIRST = ("small_analysed", "tests/test_batch.py", *sorted(ON_THEIR_OWN), "tests/test_detect.py", "tests/test_gui.py")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown to pytest without it
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two pytest-xdist workers. A test file goes whole to one worker (its
    module fixtures built once), except that the tests sharing the small patient's analysis go
    together (so no worker waits on the other's one-minute registration) and a few long tests
    that need neither go alone; the longest units go first (FIRST), which keeps the two workers
    about equally busy to the end."""
    from collections import OrderedDict

    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            test = nodeid.split("[", 1)[0]
            f = test.split("::", 1)[0]
            if test in ON_THEIR_OWN:
                return test
            return "small_analysed" if (f in SMALL_ANALYSED or test in SMALL_ANALYSED) else f

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_longest_first", False):  # once, before the first unit goes out
                self._longest_first = True
                rank = {scope: k for k, scope in enumerate(FIRST)}
                order = sorted(self.workqueue, key=lambda scope: rank.get(scope, len(FIRST)))  # stable
                self.workqueue = OrderedDict((scope, self.workqueue[scope]) for scope in order)
            super()._assign_work_unit(node)

    return ByFile(config, log)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SANDBOX, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_folder(tmp_path, monkeypatch):
    """Each test runs in a folder of its own: default outputs (./bodymap-out) land there."""
    monkeypatch.chdir(tmp_path)


# What a synthetic patient depends on: the generator, the mesh writer and the body model.
_SYNTH_SOURCES = ("bodymap/synth/*.py", "bodymap/io/*.py", "bodymap/scan.py", "bodymap/project.py",
                  "bodymap/colour.py", "bodymap/taxonomy.py", "bodymap/anatomy/template.py", "bodymap/anatomy/body.py",
                  "bodymap/anatomy/poses.py", "bodymap/data/*.npz")


def synthetic_patient(seed: int, opts, out: Path) -> list[Path]:
    """synthesize_patient(seed, opts, out), taken from .test-cache/synth/ when a patient was
    generated there with the same seed, options, generator source code (every file it depends
    on, hashed) and library versions; copied, so a test may change its copy. The generator is
    deterministic: a cached patient is the one it would make now (test_synth generates afresh)."""
    import hashlib
    import json
    from importlib.metadata import version

    from bodymap.synth.patient import synthesize_patient

    h = hashlib.sha256(json.dumps([seed, opts.to_dict(), [version(p) for p in ("numpy", "scipy", "anny", "torch",
                                                                             "pillow", "trimesh")]]).encode())
    for pattern in _SYNTH_SOURCES:
        for f in sorted(ROOT.glob(pattern)):
            h.update(f.read_bytes())
    cached = TEST_CACHE / "synth" / f"{seed}-{h.hexdigest()[:20]}"
    if not (cached / "complete").exists():
        tmp = cached.with_name(cached.name + f".{os.getpid()}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        synthesize_patient(seed, opts, tmp)
        (tmp / "complete").touch()
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    pid = next(p for p in cached.iterdir() if p.is_dir())
    shutil.copytree(pid, out / pid.name)
    return sorted((out / pid.name).glob("visit*"))


def _once(tmp_path_factory, name: str, build):
    """build(folder) -> Path or list[Path], run once per test run. Under pytest-xdist the workers
    share one result: the first to ask builds it in the run's common temporary folder while the
    others wait on a lock, so a 1-minute registration is not repeated on every worker."""
    import json

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    out = tmp_path_factory.getbasetemp().parent / name  # shared by the workers of this run
    done = out.with_name(name + ".json")
    with FileLock(str(out) + ".lock"):
        if not done.exists():
            out.mkdir(exist_ok=True)
            res = build(out)
            done.write_text(json.dumps([str(p) for p in res] if isinstance(res, list) else str(res)))
    res = json.loads(done.read_text())
    return [Path(p) for p in res] if isinstance(res, list) else Path(res)


@pytest.fixture(scope="session")
def small_patient(tmp_path_factory) -> list[Path]:
    """Two visits of a small patient (fast): 40 lesions, 512 texture, ~20k faces."""
    return _once(tmp_path_factory, "synth_small", _small_patient)


def _small_patient(out: Path) -> list[Path]:
    from bodymap.synth.patient import SynthOptions

    opts = SynthOptions(n_lesions=40, texture_size=512, target_faces=20_000, visits=2,
                        poses=("a-pose", "arms-raised"), new_fraction=0.1, removed_fraction=0.1,
                        grown_fraction=0.2, darker_fraction=0.2)
    return synthetic_patient(3, opts, out)


@pytest.fixture(scope="session")
def big_patient(tmp_path_factory) -> Path:
    """One visit of a patient with 300 lesions on a 4096 texture (about 1.5 min to generate;
    kept in .test-cache between runs while the generator does not change)."""
    return _once(tmp_path_factory, "synth_big", _big_patient)


def _big_patient(out: Path) -> Path:
    from bodymap.synth.patient import SynthOptions

    opts = SynthOptions(n_lesions=300, texture_size=4096, target_faces=60_000, visits=1)
    return synthetic_patient(5, opts, out)[0]


@pytest.fixture(scope="session")
def small_analysed(small_patient, tmp_path_factory) -> list[Path]:
    """Analysis folders of both visits of the small patient, made through the CLI with one
    registration per visit, shared by the anatomy, detection, tracking and review tests:
    visit 2 by `bodymap label` and then `bodymap analyze` into the same folder (which reuses the
    label run's registration), visit 1 by `bodymap analyze`. Returns [folder1, folder2]."""
    return _once(tmp_path_factory, "small_analysed", lambda out: _small_analysed(small_patient, out))


def _small_analysed(small_patient: list[Path], out: Path) -> list[Path]:
    from bodymap.cli import main

    v1, v2 = small_patient
    d1, d2 = out / "visit1", out / "visit2"
    assert main(["label", str(v2 / "scan.obj"), "--out", str(d2), "--quiet"]) == 0
    assert main(["analyze", str(v2 / "scan.obj"), "--out", str(d2), "--quiet"]) == 0
    assert main(["analyze", str(v1 / "scan.obj"), "--out", str(d1), "--quiet"]) == 0
    return [d1, d2]

