"""A whole session through bodymap.workspace.Workspace, without Qt: open two analysed visits,
track, review, track again, write the tracking (the CLI's and the GUI's application layer)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "data" / "gui" / "SYN00101_visit1"
V2 = ROOT / "tests" / "data" / "gui" / "SYN00101_visit2"


def test_the_application_layer_imports_no_qt():
    import subprocess

    code = "import sys, bodymap.workspace, bodymap.records; assert 'PySide6' not in sys.modules, 'Qt imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow
def test_a_session_through_the_workspace_without_qt(tmp_path, monkeypatch):
    monkeypatch.setenv("BODYMAP_HOME", str(tmp_path / "home"))  # its own review store
    from bodymap.records import Status
    from bodymap.track import Tracking
    from bodymap.workspace import Workspace, read_visit

    ws = Workspace()
    events = []
    ws.on(lambda e, d: events.append(e))
    ws.add(read_visit(V1))
    ws.add(read_visit(V2))
    assert events == ["visits", "visits"] and len(ws.project.visits) == 2
    v1, v2 = ws.visits
    assert v1.labels is not None and len(v1.labels.site) == v1.scan.n_vertices
    assert v1.state.lesions is not None and v1.state.analysis_dir == str(V1.resolve())
    corr = v1.correspondence()
    assert corr is not None and v1.correspondence() is corr  # read once, kept
    import bodymap.track as track_module

    maps = []  # the pair maps computed: once for these scans, whatever the reviews
    real_pair_map = track_module.pair_map
    monkeypatch.setattr(track_module, "pair_map", lambda *a, **k: maps.append(1) or real_pair_map(*a, **k))
    t = ws.compute_tracking()
    ws.set_tracking(t)
    assert events[-1] == "tracking" and ws.project.tracking == t.to_dict()
    assert len(t.pairs) > 80 and {p.status for p in t.pairs} <= set(Status)
    # review: reject one match, confirm another, mark a new lesion: undoable, applied next time
    a, b = t.pairs[0], t.pairs[1]
    ws.review("reject", a.id2, a.id1)
    ws.review("confirm", b.id2, b.id1)
    assert events[-1] == "edit" and (a.id2, a.id1) in ws.project.reviews.rejected
    ws.history.undo()
    assert (a.id2, a.id1) in ws.project.reviews.rejected and b.id2 not in ws.project.reviews.confirmed
    ws.history.redo()
    ws.set_tracking(ws.compute_tracking())
    t2 = ws.tracking
    assert len(maps) == 1 and t2.pair_points is not None  # the second tracking reused the first's
    assert t2.partner().get(a.id2) != a.id1
    pb = next(p for p in t2.pairs if p.id2 == b.id2)
    assert pb.reviewed and pb.confidence == 1.0 and pb.status is not Status.UNCERTAIN
    # output: the tracking files the CLI writes, and the reviews kept for every later tracking
    out = tmp_path / "tracking"
    paths = ws.write_tracking(out)
    assert {p.name for p in paths} >= {"tracking.json", "tracking.csv", "tracking_bodymap.png", "reviews.json"}
    back = Tracking.load_json(out / "tracking.json")
    assert back.pairs == t2.pairs and back.new == t2.new
    assert json.loads((out / "reviews.json").read_text())["confirmed"] == [[b.id2, b.id1]]
    # a fresh workspace of the same visits (another session, or the CLI) finds those reviews
    ws2 = Workspace()
    ws2.add(read_visit(V1))
    ws2.add(read_visit(V2))
    rv, used, _ = ws2.gather_reviews()
    assert rv.confirmed == {b.id2: b.id1} and (a.id2, a.id1) in rv.rejected and used
