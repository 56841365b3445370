"""Exports: region maps (coloured meshes, 2D body maps, UV atlases), reports, annotated meshes,
and the standards (SLICE-3D lesion table, DICOM, FHIR: ``standard_export``)."""
from __future__ import annotations

from pathlib import Path

FORMATS = ("slice3d", "dicom", "fhir")


def standard_export(fmt: str, analysis: str | Path, out: str | Path, patient=None, previous=None, tracking=None,
                    tiles=None, units: str | None = None, progress=None, visit=None) -> list[Path]:
    """Export an analysis folder in a standard format; the CLI's `bodymap export` and the GUI's
    File > Export call this. fmt: 'slice3d' (out: CSV; tiles: a folder for the 15 mm tiles),
    'dicom' (out: a folder) or 'fhir' (out: a JSON Bundle); patient: a patient.json; previous:
    an earlier analysis folder, or tracking: a folder with tracking.json, for the change since
    then; visit: an ExportVisit already gathered (then analysis ... units are not read).
    Returns the files written."""
    from bodymap.export.record import load_export_visit

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    report = progress

    def part(lo: float, hi: float):
        """The callback for a stage that takes lo..hi of the whole export."""
        return (lambda stage, f: report(stage, lo + (hi - lo) * f)) if report else None

    if visit is None:
        visit = load_export_visit(analysis, patient=patient, previous=previous, tracking=tracking, units=units,
                                  progress=part(0.0, 0.5))
    progress = part(0.5, 1.0)
    if fmt == "slice3d":
        from bodymap.export.slice3d import write_slice3d

        return write_slice3d(visit, out, tiles=tiles, progress=progress)
    if fmt == "dicom":
        from bodymap.export.dicom import write_dicom

        return write_dicom(visit, out, progress=progress)
    from bodymap.export.fhir import write_fhir

    return [write_fhir(visit, out)]
