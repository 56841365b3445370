"""The bundled sample patients: complete, loadable, small enough for git."""
from __future__ import annotations

from bodymap.io import load_scan
from bodymap.synth.truth import read_visit_truth

from conftest import SAMPLES


def test_two_patients_two_visits_each():
    visits = sorted(SAMPLES.glob("SYN*/visit*"))
    assert [v.relative_to(SAMPLES).as_posix() for v in visits] == [
        "SYN00101/visit1", "SYN00101/visit2", "SYN00102/visit1", "SYN00102/visit2"]
    for v in visits:
        scan = load_scan(v / "scan.obj")
        truth, arrays = read_visit_truth(v)
        assert 50_000 <= scan.n_faces <= 70_000 and scan.texture.shape[:2] == (2048, 2048)
        assert truth["patient_id"] == v.parent.name and len(truth["lesions"]) >= 140
        assert arrays["vertex_template_face"].shape == (scan.n_vertices,)
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 30e6
    assert (SAMPLES / "README.md").exists()
