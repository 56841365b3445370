"""The `bodymap` command: subcommands work, bad files give one clear line and exit code 2."""
from __future__ import annotations

import json

from PIL import Image

from bodymap.cli import main

from conftest import SAMPLES

SAMPLE = SAMPLES / "SYN00102" / "visit2" / "scan.obj"


def test_info_prints_a_summary(capsys):
    assert main(["info", str(SAMPLE), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["faces"] > 50_000 and s["texture"] == [2048, 2048] and 1000 < s["height_mm"] < 2300


def test_info_on_a_bad_file_names_it(tmp_path, capsys):
    bad = tmp_path / "broken.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nf 1 2 7\n")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "broken.obj" in err and "Traceback" not in err
    assert main(["info", str(tmp_path / "missing.ply")]) == 2
    assert "missing.ply" in capsys.readouterr().err


def test_render_writes_views(tmp_path):
    out = tmp_path / "views.png"
    assert main(["render", str(SAMPLE), str(out), "--views", "front", "left", "--size", "80x160"]) == 0
    assert Image.open(out).size == (160, 160)


def test_synth_writes_a_patient(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--seed", "21", "--lesions", "10", "--texture", "256",
                 "--faces", "5000", "--visits", "2", "--sex", "male", "--age", "60",
                 "--fitzpatrick", "5", "--quiet"]) == 0
    p = json.loads((tmp_path / "SYN00021" / "patient.json").read_text())
    assert p["body"]["sex"] == "male" and p["body"]["age_years"] == 60 and p["skin"]["fitzpatrick"] == 5
    for v in ("visit1", "visit2"):
        assert (tmp_path / "SYN00021" / v / "scan.png").exists()


def test_default_outputs_go_under_the_current_folder_never_beside_the_input(tmp_path, capsys):
    """`detect` (like `label`, `analyze`, `track`) writes to ./bodymap-out/<scan name>/ when no
    --out is given; the input's folder (package data, a share) is left alone, and a default
    folder holding another scan's outputs is not overwritten."""
    import os

    from test_hostile import textured_body

    a = textured_body(tmp_path / "in" / "P1" / "visit1")
    b = textured_body(tmp_path / "elsewhere" / "P1" / "visit1")  # the same name, another scan
    before = sorted(p.name for p in a.parent.iterdir())
    os.chdir(tmp_path)
    assert main(["detect", str(a), "--quiet"]) == 0
    assert sorted(p.name for p in a.parent.iterdir()) == before
    out = tmp_path / "bodymap-out" / "P1_visit1_scan" / "detections"
    assert (out / "lesions.json").exists() and "bodymap-out" in capsys.readouterr().err
    assert main(["detect", str(b), "--quiet"]) == 0
    assert (tmp_path / "bodymap-out" / "P1_visit1_scan-2" / "detections" / "lesions.json").exists()
    assert json.loads((out / "lesions.json").read_text())["info"]["scan_abs"] == str(a.resolve())


def test_commands_keep_freed_memory_for_reuse(monkeypatch):
    """The long jobs ask glibc to keep freed blocks (bodymap.memory); off Linux that is a no-op."""
    import sys

    import bodymap.memory as memory

    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.reuse_freed_memory() is False
    monkeypatch.undo()
    monkeypatch.setattr(memory, "_done", False)
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert main(["info", str(SAMPLE)]) == 0
        assert memory._done  # main() set it, and glibc took both settings
