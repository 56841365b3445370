"""DICOM export of a visit: lesion close-ups, body maps and a measurement report.

    write_dicom(visit, OUT_DIR)     # visit: bodymap.export.record.ExportVisit
    read_dicom(OUT_DIR)             # what a PACS would see, back as BodyMap sites and sizes
    iod_problems(dataset)           # highdicom's check of the IOD's mandatory modules

One Study per visit, one Series per kind:

1. VL Photographic Image per lesion (modality XC): the lesion seen straight down its surface
   normal (bodymap.export.closeup, 2.5 diameters across, at least 10 mm) with Pixel Spacing in mm
   on its tangent plane; Anatomic Region Sequence = the CID 4029 "Dermatology Anatomic Site"
   code of its site (SNOMED CT, down to the ear's sub-regions CID 4029 has; see
   bodymap.taxonomy.SITE_CODES), its modifier and laterality in the Anatomic Region Modifier
   Sequence, laterality also in Image Laterality;
2. Secondary Capture: the body map (front and back, numbered lesions) and, with region labels,
   the region map;
3. Comprehensive SR holding a TID 1500 Measurement Report: per lesion a measurement group with
   its tracking identifier (the same UID at every visit once tracked), finding site, and
   diameter, area, perimeter and minor axis in UCUM units; with an earlier visit, the change in
   diameter, the growth rate and the colour change (BodyMap codes "99BMAP") and a time point.

Every UID is derived from the patient, visit and lesion (bodymap.export.record.stable_uid): a
re-export gives the same UIDs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodymap import taxonomy as tx
from bodymap.atomic import atomic_write
from bodymap.export.record import ExportVisit, lesion_region, lesion_status, stable_uid

MANUFACTURER = "BodyMap"
CLOSEUP_PX = 128
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
SERIES = {"closeups": (1, "Lesion close-ups"), "maps": (2, "Body maps"), "report": (3, "Lesion measurement report")}
IMAGE_LATERALITY = {"left": "L", "right": "R", "midline": "U"}
# BodyMap's own concepts, for what DICOM has no code for (a private coding scheme, "99...")
BMAP = "99BMAP"
GROWTH = ("growth_rate", "Diameter growth rate since previous visit")
COLOUR_CHANGE = ("colour_delta_e", "Colour change (CIE76 Delta E) since previous visit")
STATUS = ("status", "Change status since previous visit")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bodymap")
    except Exception:  # not installed (run from a checkout)
        return "0"


def _da(date: str) -> str | None:
    return date.replace("-", "") if date else None


def _cc(c: tx.Coded):
    """highdicom CodedConcept of a taxonomy Coded."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=c.value, scheme_designator=c.scheme, meaning=c.meaning)


def _item(c: tx.Coded):
    """A code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    from pydicom.dataset import Dataset

    d = Dataset()
    d.CodeValue, d.CodingSchemeDesignator, d.CodeMeaning = c.value, c.scheme, c.meaning
    return d


def _common(visit: ExportVisit, kind: str, uid: str, number: int, sop_class: str, modality: str) -> dict:
    """Arguments every BodyMap instance shares: patient, study (the visit), series (the kind)."""
    from pydicom.uid import ExplicitVRLittleEndian

    p = visit.patient
    series_number, series_description = SERIES[kind]
    return dict(
        study_instance_uid=stable_uid("study", p.id, visit.visit_id),
        series_instance_uid=stable_uid("series", p.id, visit.visit_id, kind), series_number=series_number,
        sop_instance_uid=uid, instance_number=number, manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian, patient_id=p.id, patient_name=p.name or None,
        patient_sex=p.sex or None, study_id=visit.visit_id[:16], study_date=_da(visit.visit_date),
        series_description=series_description, **({"sop_class_uid": sop_class, "modality": modality} if sop_class else {}))


def _finish(ds, visit: ExportVisit) -> None:
    """Patient Study and SOP Common details, and a creation date that does not change on re-export."""
    age = visit.patient.age_at(visit.visit_date)
    if age is not None:
        ds.PatientAge = f"{int(age):03d}Y"
    if visit.visit_date:
        ds.InstanceCreationDate = _da(visit.visit_date)
        ds.InstanceCreationTime = "000000"


def closeup_dataset(visit: ExportVisit, lesion, image: np.ndarray, spacing_mm: float, number: int):
    """The VL Photographic Image of one lesion: image (h, w, 3) uint8 seen along its normal,
    spacing_mm per pixel on its tangent plane. Returns a pydicom Dataset (highdicom SOPClass)."""
    from highdicom.base import SOPClass

    uid = stable_uid("closeup", visit.patient.id, visit.visit_id, lesion.id)
    ds = SOPClass(**_common(visit, "closeups", uid, number, VL_PHOTO, "XC"),
                  content_date=_da(visit.visit_date), content_time="000000" if visit.visit_date else None,
                  manufacturer_model_name="BodyMap", software_versions=_version())
    _finish(ds, visit)
    site, side, ear = lesion_region(lesion)
    code, modifier = tx.site_coding(site, ear)
    region = _item(code)
    mods = [_item(m) for m in (modifier, tx.LATERALITY_CODES[side]) if m is not None]
    region.AnatomicRegionModifierSequence = mods
    ds.AnatomicRegionSequence = [region]
    ds.ImageLaterality = IMAGE_LATERALITY[side]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientOrientation = ""
    ds.AcquisitionContextSequence = []
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    h, w = image.shape[:2]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, np.uint8).tobytes()
    ds.PixelSpacing = [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "orthographic view along the surface normal"
    ds.ImageComments = (f"lesion {lesion.id} ({visit.tracking_label(lesion.id)}): "
                        f"{tx.describe(tx.SITE_INDEX.get(site, 0), tx.LATERALITY.index(side))}, "
                        f"diameter {lesion.diameter_mm:.1f} mm")[:10240]
    ds.AcquisitionContextDescription = "rendered from a textured 3D total-body scan"
    return ds


def body_map_dataset(visit: ExportVisit, image: np.ndarray, name: str, number: int):
    """A body map (h, w, 3) uint8 as a Secondary Capture Image (highdicom SCImage)."""
    from highdicom.sc import SCImage

    uid = stable_uid("map", visit.patient.id, visit.visit_id, name)
    args = _common(visit, "maps", uid, number, "", "")
    ds = SCImage(pixel_array=np.ascontiguousarray(image, np.uint8), photometric_interpretation="RGB",
                 bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "F"), **args)
    _finish(ds, visit)
    ds.ImageComments = name
    ds.BurnedInAnnotation = "YES"  # lesion numbers drawn in
    return ds


def _measurement(name, value: float, unit):
    from highdicom.sr import Measurement

    return Measurement(name=name, value=float(value), unit=unit)


def report_dataset(visit: ExportVisit, evidence: list, closeups: dict):
    """The Comprehensive SR (TID 1500 Measurement Report) of the visit's lesions. evidence: the
    instances it refers to; closeups: {lesion id: its close-up dataset}."""
    import highdicom as hd
    from highdicom.sr import (CodedConcept, DeviceObserverIdentifyingAttributes, FindingSite,
                              LongitudinalTemporalOffsetFromEvent, MeasurementReport,
                              MeasurementsAndQualitativeEvaluations, ObservationContext, ObserverContext,
                              SourceImageForMeasurementGroup, TimePointContext, TrackingIdentifier)
    from pydicom.sr.codedict import codes

    mm, mm2 = codes.UCUM.Millimeter, codes.UCUM.SquareMillimeter
    per_year = CodedConcept("mm/a", "UCUM", "millimeter per year")
    delta_e = CodedConcept("{DeltaE}", "UCUM", "CIE76 Delta E")
    days = CodedConcept("d", "UCUM", "day")
    offset = None
    if visit.previous_date and visit.visit_date:
        import datetime

        dd = (datetime.date.fromisoformat(visit.visit_date) - datetime.date.fromisoformat(visit.previous_date)).days
        offset = LongitudinalTemporalOffsetFromEvent(dd, days, CodedConcept("126052", "DCM", "Prior"))
    time_point = TimePointContext(visit.visit_id, subject_time_point_identifier=visit.visit_date or visit.visit_id,
                                  temporal_offset_from_event=offset)
    groups = []
    for l in visit.lesions.lesions:
        m = l.measures or {}
        site, side, ear = lesion_region(l)
        code, modifier = tx.site_coding(site, ear)
        fs = FindingSite(_cc(code), laterality=_cc(tx.LATERALITY_CODES[side]),
                         topographical_modifier=_cc(modifier) if modifier is not None else None)
        v_id, l_id = visit.tracking_key(l.id)
        tid = TrackingIdentifier(uid=stable_uid("lesion", visit.patient.id, v_id, l_id),
                                 identifier=visit.tracking_label(l.id))
        meas = [_measurement(codes.SCT.Diameter, l.diameter_mm, mm), _measurement(codes.SCT.Area, l.area_mm2, mm2)]
        if m.get("perimeter_mm") is not None:
            meas.append(_measurement(codes.SCT.Perimeter, m["perimeter_mm"], mm))
        if m.get("minor_axis_mm") is not None:
            meas.append(_measurement(codes.SCT.MinorAxis, m["minor_axis_mm"], mm))
        c = visit.change.get(l.id)
        quals = []
        if c:
            if c.get("diameter_change_mm") is not None:
                meas.append(_measurement(codes.SCT.DifferenceInSize, c["diameter_change_mm"], mm))
            if c.get("growth_mm_per_year") is not None:
                meas.append(_measurement(CodedConcept(GROWTH[0], BMAP, GROWTH[1]), c["growth_mm_per_year"], per_year))
            if c.get("colour_delta_e") is not None:
                meas.append(_measurement(CodedConcept(COLOUR_CHANGE[0], BMAP, COLOUR_CHANGE[1]), c["colour_delta_e"],
                                         delta_e))
            st = lesion_status(c)
            quals.append(hd.sr.QualitativeEvaluation(CodedConcept(STATUS[0], BMAP, STATUS[1]),
                                                     CodedConcept(st, BMAP, st)))
        src = [SourceImageForMeasurementGroup.from_source_image(closeups[l.id])] if l.id in closeups else None
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tid, time_point_context=time_point, finding_type=codes.SCT.SkinLesion,
            finding_sites=[fs], measurements=meas, qualitative_evaluations=quals or None, source_images=src))
    device = ObserverContext(codes.DCM.Device, DeviceObserverIdentifyingAttributes(
        uid=stable_uid("device", MANUFACTURER), name=MANUFACTURER, manufacturer_name=MANUFACTURER))
    report = MeasurementReport(ObservationContext(observer_device_context=device),
                               procedure_reported=[codes.SCT.ImagingProcedure, codes.SCT.PhotographyOfPatient],
                               imaging_measurements=groups)
    uid = stable_uid("report", visit.patient.id, visit.visit_id)
    args = _common(visit, "report", uid, 1, "", "")
    for k in ("study_instance_uid", "patient_id", "patient_name", "patient_sex", "study_id", "study_date"):
        args.pop(k)  # taken from the evidence
    ds = hd.sr.ComprehensiveSR(evidence=evidence, content=report[0], is_complete=True, **args)
    _finish(ds, visit)
    return ds


def write_dicom(visit: ExportVisit, out: str | Path, body_maps: bool = True, progress=None) -> list[Path]:
    """Write the visit as DICOM files under out/ (created): closeups/lesion_NNNN.dcm,
    maps/*.dcm, report.dcm (those of an earlier export there are replaced). Every dataset is
    checked against its IOD's mandatory modules first (ValueError naming the file and what is
    missing). Returns the files written."""
    from bodymap.export.closeup import CloseUps, closeup_field_mm

    out = Path(out)
    say = progress or (lambda s, f: None)
    cu = CloseUps(visit.scan)
    files: list[tuple[Path, object]] = []
    closeups = {}
    n = len(visit.lesions)
    for k, l in enumerate(visit.lesions.lesions, 1):
        if k % 10 == 1:
            say("lesion close-ups", 0.7 * k / max(n, 1))
        img, _, g = cu(l.point_mm, l.normal, closeup_field_mm(l.diameter_mm), CLOSEUP_PX)
        ds = closeup_dataset(visit, l, img, g, k)
        closeups[l.id] = ds
        files.append((out / "closeups" / f"lesion_{l.id:04d}.dcm", ds))
    if body_maps:
        say("body maps", 0.75)
        from bodymap.export.report import region_map, visit_map

        maps = [("body map, front and back", "bodymap", np.asarray(visit_map(visit.scan, visit.lesions)))]
        if visit.labels is not None:
            maps.append(("region map", "regions", np.asarray(region_map(visit.scan, visit.labels, visit.lesions))))
        for k, (name, stem, img) in enumerate(maps, 1):
            files.append((out / "maps" / f"{stem}.dcm", body_map_dataset(visit, img[..., :3], name, k)))
    say("measurement report", 0.9)
    evidence = [ds for _, ds in files]
    files.append((out / "report.dcm", report_dataset(visit, evidence, closeups)))
    for path, ds in files:
        problems = iod_problems(ds)
        if problems:
            raise ValueError(f"{path}: not a valid DICOM object ({'; '.join(problems)})")
    for path, ds in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    # a re-export into the same folder replaces the last one: its close-ups of lesions that are
    # gone now (deleted, merged) would otherwise read back as part of this visit
    written = {p for p, _ in files}
    for old in [*(out / "closeups").glob("lesion_*.dcm"), *(out / "maps").glob("*.dcm")]:
        if old not in written:
            old.unlink()
    say("done", 1.0)
    return [p for p, _ in files]


def iod_problems(ds) -> list[str]:
    """What a dataset lacks for its IOD: for each of the IOD's mandatory modules (and each
    conditional or optional one it uses), the type 1 and 2 attributes highdicom's module tables
    require (highdicom's check_required_attributes). Empty when it validates.

    An SR document's content tree is checked by parsing it as highdicom's TID 1500
    MeasurementReport (highdicom's module table for SR Document Content merges the attributes
    of every value type, so it cannot be checked attribute by attribute) plus the root
    container's own attributes."""
    from highdicom._standard_utils import check_required_attributes, get_iod_module_map, get_sop_class_iod_map

    iod = get_sop_class_iod_map().get(str(ds.SOPClassUID))
    if iod is None:
        return [f"unknown SOP class {ds.SOPClassUID}"]
    out = []
    for mod in get_iod_module_map()[iod]:
        if mod["usage"] != "M" and not _uses(ds, mod["key"]):
            continue
        if mod["key"] == "sr-document-content":
            out += _sr_content_problems(ds)
            continue
        try:
            check_required_attributes(ds, mod["key"], check_optional_sequences=True)
        except AttributeError as e:
            out.append(f"{mod['key']}: {e}")
    return out


def _sr_content_problems(ds) -> list[str]:
    """Problems of an SR document's content: the root container's attributes and the tree as a
    TID 1500 Measurement Report."""
    import highdicom as hd

    missing = [k for k in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentSequence")
               if k not in ds]
    if missing or ds.ValueType != "CONTAINER":
        return [f"sr-document-content: root container lacks {missing or 'ValueType CONTAINER'}"]
    try:
        hd.sr.MeasurementReport.from_sequence([ds], copy=True)
    except Exception as e:  # highdicom raises ValueError / TypeError / AttributeError on a malformed tree
        return [f"sr-document-content: not a TID 1500 measurement report ({e})"]
    return []


def _uses(ds, module: str) -> bool:
    """Whether ds holds any attribute that belongs only to this module (so it claims it)."""
    from highdicom._standard_utils import get_module_attribute_map
    from pydicom.datadict import tag_for_keyword

    own = {a["keyword"] for a in get_module_attribute_map()[module] if not a["path"]}
    generic = {"SOPClassUID", "SOPInstanceUID", "PixelData", "Rows", "Columns", "SamplesPerPixel",
               "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "PlanarConfiguration", "ImageType", "ContentDate", "ContentTime", "PrimaryAnatomicStructureSequence",
               "PrimaryAnatomicStructureModifierSequence", "SpecimenDescriptionSequence"}
    return any(tag_for_keyword(k) is not None and tag_for_keyword(k) in ds for k in own - generic)


def read_dicom(folder: str | Path) -> dict:
    """Read a BodyMap DICOM export back (pydicom + highdicom): {'closeups': [{lesion id, site,
    side, ear, pixel_spacing_mm, image (h, w, 3) uint8, study, series, sop}], 'maps': [...],
    'report': {tracking uid: {id, site, side, ear, diameter_mm, area_mm2, ...}}}. Sites come
    back from the codes alone (bodymap.taxonomy.site_from_coding)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    folder = Path(folder)
    out = {"closeups": [], "maps": [], "report": {}}
    for f in sorted((folder / "closeups").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        reg = ds.AnatomicRegionSequence[0]
        mods = list(getattr(reg, "AnatomicRegionModifierSequence", []))
        side = "midline"
        modifier = None
        for m in mods:
            try:
                side = tx.laterality_from_code(m.CodeValue)
            except KeyError:
                modifier = m.CodeValue
        site, ear = tx.site_from_coding(reg.CodingSchemeDesignator, reg.CodeValue, modifier)
        out["closeups"].append({
            "file": f, "lesion_id": int(str(ds.ImageComments).split()[1]), "site": site, "side": side, "ear": ear,
            "image_laterality": ds.ImageLaterality, "pixel_spacing_mm": float(ds.PixelSpacing[0]),
            "image": ds.pixel_array, "study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
            "sop": ds.SOPInstanceUID, "patient_id": ds.PatientID})
    for f in sorted((folder / "maps").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        out["maps"].append({"file": f, "name": ds.ImageComments, "shape": ds.pixel_array.shape,
                            "study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID})
    if (folder / "report.dcm").exists():
        sr = hd.sr.srread(folder / "report.dcm")
        report = hd.sr.MeasurementReport.from_sequence([sr])
        for g in report.get_image_measurement_groups():
            fs = g.finding_sites[0]
            mod = fs.topographical_modifier
            site, ear = tx.site_from_coding(fs.value.scheme_designator, fs.value.value, mod.value if mod else None)
            rec = {"tracking_label": g.tracking_identifier, "site": site, "ear": ear,
                   "side": tx.laterality_from_code(fs.laterality.value) if fs.laterality else "midline",
                   "study": sr.StudyInstanceUID, "series": sr.SeriesInstanceUID}
            for key, name, unit in (("diameter_mm", codes.SCT.Diameter, "mm"), ("area_mm2", codes.SCT.Area, "mm2"),
                                    ("perimeter_mm", codes.SCT.Perimeter, "mm"),
                                    ("minor_axis_mm", codes.SCT.MinorAxis, "mm"),
                                    ("diameter_change_mm", codes.SCT.DifferenceInSize, "mm")):
                ms = g.get_measurements(name=name)
                if ms:
                    rec[key] = float(ms[0].value)
                    rec[key + "_unit"] = ms[0].unit.value
            for m in g.get_measurements():
                if m.name.scheme_designator == BMAP:
                    rec[m.name.value] = float(m.value)
            for q in g.get_qualitative_evaluations():
                if q.name.value == STATUS[0]:
                    rec["status"] = q.value.value
            out["report"][str(g.tracking_uid)] = rec
    return out
