"""FHIR (R5) export of a visit: one Bundle, validated by fhir.resources when written and read.

    write_fhir(visit, "visit.json")          # visit: bodymap.export.record.ExportVisit
    read_fhir("visit.json") -> FhirVisit      # patient id, visit, and the lesion list back

The Bundle (type "collection") holds:

- Patient (identifier = the BodyMap patient id; sex; birth year);
- ImagingStudy of the visit, with the same Study / Series / Instance UIDs as the DICOM export
  (bodymap.export.dicom), so a server holding both links them;
- one BodyStructure per lesion: morphology "Lesion", the site's SNOMED CT code (CID 4029, see
  bodymap.taxonomy.SITE_CODES) with laterality and modifier, its tracking identifier, and its
  3D position on the body (body frame and scan, BodyMap extensions) also spelled out in the
  description;
- per lesion, Observations (subject: the Patient, bodyStructure: the lesion, UCUM units):
  diameter (SNOMED 81827009, mm), area (42798000, mm2), the TBP measures (one Observation, a
  component per bodymap.measures measure), and with an earlier visit the diameter change
  (129806009 "Difference in size", mm), growth rate (mm/a), colour change (Delta E) and status.
"""
from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

from bodymap import taxonomy as tx
from bodymap.atomic import write_text
from bodymap.export.record import ExportVisit, lesion_region, lesion_status, stable_uid

UCUM = "http://unitsofmeasure.org"
SCT = tx.CODE_SYSTEMS["SCT"]
BMAP = "urn:bodymap:codes"  # BodyMap's own concepts (measures, status)
EXT = "urn:bodymap:fhir:extension:"  # BodyMap's extensions
LESION_ID = "urn:bodymap:lesion"
PATIENT_ID = "urn:bodymap:patient"
DICOM_UID = "urn:dicom:uid"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
DIAMETER = ("81827009", "Diameter")
AREA = ("42798000", "Area")
SIZE_CHANGE = ("129806009", "Difference in size")


def _uuid(*parts) -> str:
    """A stable UUID (the same parts, the same id: a re-export updates rather than duplicates)."""
    return str(uuid.UUID(int=int(stable_uid(*parts).split(".")[-1]) % (1 << 128)))


def _concept(c: tx.Coded) -> dict:
    return {"coding": [{"system": c.system, "code": c.value, "display": c.meaning}], "text": c.meaning}


def _quantity(value: float, unit: str, code: str | None = None) -> dict:
    return {"value": float(value), "unit": unit, "system": UCUM, "code": code or unit}


def _decimal_ext(name: str, values, keys) -> dict:
    return {"url": EXT + name, "extension": [{"url": k, "valueDecimal": float(v)} for k, v in zip(keys, values)]}


def _patient(visit: ExportVisit) -> dict:
    p = visit.patient
    d = {"resourceType": "Patient", "id": _uuid("patient", p.id), "identifier": [{"system": PATIENT_ID, "value": p.id}],
         "gender": {"F": "female", "M": "male", "O": "other"}.get(p.sex, "unknown")}
    if p.name:
        d["name"] = [{"text": p.name}]
    year = p.birth_year
    if year is None and p.age_years is not None and visit.visit_date:
        year = int(visit.visit_date[:4]) - int(round(p.age_years))  # the birth year the age gives
    if year:
        d["birthDate"] = f"{year:04d}"
    return d


def _imaging_study(visit: ExportVisit, patient_ref: str) -> dict:
    """The visit's study as the DICOM export writes it (same UIDs)."""
    pid, vid = visit.patient.id, visit.visit_id
    instances = [{"uid": stable_uid("closeup", pid, vid, l.id), "sopClass": {"system": DICOM_UID, "code": f"urn:oid:{VL_PHOTO}"},
                  "number": k, "title": f"lesion {l.id}"} for k, l in enumerate(visit.lesions.lesions, 1)]
    xc = {"coding": [{"system": tx.CODE_SYSTEMS["DCM"], "code": "XC", "display": "External-camera Photography"}]}
    d = {"resourceType": "ImagingStudy", "id": _uuid("study", pid, vid), "status": "available",
         "identifier": [{"system": DICOM_UID, "value": "urn:oid:" + stable_uid("study", pid, vid)}],
         "subject": {"reference": patient_ref}, "modality": [xc], "numberOfSeries": 1,
         "numberOfInstances": len(instances), "description": f"BodyMap total-body scan, {vid}",
         "series": [{"uid": stable_uid("series", pid, vid, "closeups"), "number": 1, "modality": xc,
                     "description": "Lesion close-ups", "numberOfInstances": len(instances),
                     "instance": instances}] if instances else []}
    if visit.visit_date:
        d["started"] = visit.visit_date
    return d


def _body_structure(visit: ExportVisit, l, patient_ref: str) -> dict:
    site, side, ear = lesion_region(l)
    code, modifier = tx.site_coding(site, ear)
    inc = {"structure": _concept(code), "laterality": _concept(tx.LATERALITY_CODES[side])}
    if modifier is not None:
        inc["qualifier"] = [_concept(modifier)]
    m = l.measures or {}
    body = [m.get(k) for k in ("x_mm", "y_mm", "z_mm")]
    where = tx.describe(tx.SITE_INDEX.get(site, 0), tx.LATERALITY.index(side))
    desc = f"lesion {l.id} ({visit.tracking_label(l.id)}), {where}" + (f", ear: {ear}" if ear != "non_ear" else "")
    ext = [_decimal_ext("scan-position", [*l.point_mm, *l.normal, *l.bary, l.face],
                        ["x", "y", "z", "nx", "ny", "nz", "b0", "b1", "b2", "face"])]
    if all(v is not None for v in body):
        desc += f"; body frame (template, mm, z up, subject's left +x) x {body[0]:.0f}, y {body[1]:.0f}, z {body[2]:.0f}"
        ext.append(_decimal_ext("body-position", body, ["x", "y", "z"]))
    ext.append({"url": EXT + "ear-region", "valueCode": ear})
    ext.append({"url": EXT + "site", "valueCode": site})
    v_id, l_id = visit.tracking_key(l.id)
    return {"resourceType": "BodyStructure", "id": _uuid("lesion", visit.patient.id, visit.visit_id, l.id),
            "identifier": [{"system": LESION_ID, "value": f"{visit.visit_id}/{l.id}"},
                           {"system": DICOM_UID, "value": "urn:oid:" + stable_uid("lesion", visit.patient.id, v_id, l_id),
                            "type": {"text": "tracking identifier"}}],
            "active": True, "morphology": _concept(tx.Coded("SCT", "52988006", "Lesion")),
            "includedStructure": [inc], "description": desc, "patient": {"reference": patient_ref}, "extension": ext}


def _observation(visit: ExportVisit, l, key: str, code: dict, patient_ref: str, bs_ref: str, study_ref: str,
                 **value) -> dict:
    d = {"resourceType": "Observation", "id": _uuid("obs", visit.patient.id, visit.visit_id, l.id, key),
         "status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                      "code": "imaging", "display": "Imaging"}]}],
         "code": code, "subject": {"reference": patient_ref}, "bodyStructure": {"reference": bs_ref},
         "derivedFrom": [{"reference": study_ref}], **value}
    if visit.visit_date:
        d["effectiveDateTime"] = visit.visit_date
    return d


def _sct(code: tuple[str, str]) -> dict:
    return {"coding": [{"system": SCT, "code": code[0], "display": code[1]}], "text": code[1]}


def _bmap(code: str, text: str) -> dict:
    return {"coding": [{"system": BMAP, "code": code, "display": text}], "text": text}


def bundle(visit: ExportVisit) -> dict:
    """The visit's Bundle as a JSON-ready dict, validated by fhir.resources (pydantic raises a
    ValidationError naming the element on any invalid resource)."""
    from fhir.resources.bundle import Bundle

    from bodymap.measures import MEASURES

    units = {"mm": "mm", "mm2": "mm2", "deg": "deg", "1": "1", "0-10": "1"}
    entries = []

    def add(res: dict) -> str:
        ref = f"urn:uuid:{res['id']}"
        entries.append({"fullUrl": ref, "resource": res})
        return ref

    pref = add(_patient(visit))
    sref = add(_imaging_study(visit, pref))
    for l in visit.lesions.lesions:
        bref = add(_body_structure(visit, l, pref))
        add(_observation(visit, l, "diameter", _sct(DIAMETER), pref, bref, sref,
                         valueQuantity=_quantity(l.diameter_mm, "mm")))
        add(_observation(visit, l, "area", _sct(AREA), pref, bref, sref, valueQuantity=_quantity(l.area_mm2, "mm2")))
        comps = [{"code": _bmap(m.key, m.column or m.key), "valueQuantity": _quantity(l.measures[m.key], units[m.unit])}
                 for m in MEASURES if l.measures and l.measures.get(m.key) is not None]
        if comps:
            add(_observation(visit, l, "tbp", _bmap("tbp-measures", "Lesion measures of total-body photography"),
                             pref, bref, sref, component=comps))
        c = visit.change.get(l.id)
        if c is None:
            continue
        if c.get("diameter_change_mm") is not None:
            add(_observation(visit, l, "size-change", _sct(SIZE_CHANGE), pref, bref, sref,
                             valueQuantity=_quantity(c["diameter_change_mm"], "mm")))
        if c.get("growth_mm_per_year") is not None:
            add(_observation(visit, l, "growth", _bmap("growth-rate", "Diameter growth rate since the previous visit"),
                             pref, bref, sref, valueQuantity=_quantity(c["growth_mm_per_year"], "mm/a")))
        if c.get("colour_delta_e") is not None:
            add(_observation(visit, l, "colour", _bmap("colour-change", "Colour change (CIE76 Delta E) since the "
                                                       "previous visit"), pref, bref, sref,
                             valueQuantity=_quantity(c["colour_delta_e"], "Delta E", "1")))
        st = lesion_status(c)
        add(_observation(visit, l, "status", _bmap("status", "Change since the previous visit"), pref, bref, sref,
                         valueCodeableConcept=_bmap(st, st)))
    d = {"resourceType": "Bundle", "id": _uuid("bundle", visit.patient.id, visit.visit_id), "type": "collection",
         "entry": entries}
    Bundle.model_validate(d)
    return d


def write_fhir(visit: ExportVisit, path: str | Path) -> Path:
    """Write the visit's Bundle as JSON (validated first; written atomically). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = bundle(visit)
    write_text(path, json.dumps(d, indent=1))
    return path


@dataclasses.dataclass
class FhirVisit:
    """A Bundle read back: patient id, visit id, lesions (bodymap.lesions.Lesion list: id,
    position, region, diameter, area, measures) and changes {lesion id: {key: value}}."""

    patient_id: str
    visit_id: str
    lesions: list
    changes: dict


def read_fhir(path: str | Path) -> FhirVisit:
    """Read a Bundle written by write_fhir (validated by fhir.resources; ValueError naming the
    file when it is not one) back into BodyMap's lesion list."""
    from fhir.resources.bundle import Bundle

    from bodymap.lesions import Lesion

    path = Path(path)
    try:
        b = Bundle.model_validate_json(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a valid FHIR Bundle ({str(e).splitlines()[0]})") from None
    res = {e.fullUrl: e.resource for e in b.entry or []}
    patient = next((r for r in res.values() if r.get_resource_type() == "Patient"), None)
    if patient is None:
        raise ValueError(f"{path}: the Bundle has no Patient")
    pid = next((i.value for i in patient.identifier or [] if i.system == PATIENT_ID), "")
    lesions, by_ref, visit_id = [], {}, ""
    for ref, r in res.items():
        if r.get_resource_type() != "BodyStructure":
            continue
        ident = next(i.value for i in r.identifier if i.system == LESION_ID)
        visit_id, lid = ident.rsplit("/", 1)
        ext = {e.url[len(EXT):]: e for e in r.extension or []}
        sp = {e.url: float(e.valueDecimal) for e in ext["scan-position"].extension}
        inc = r.includedStructure[0]
        side = tx.laterality_from_code(inc.laterality.coding[0].code)
        q = inc.qualifier[0].coding[0].code if inc.qualifier else None
        c = inc.structure.coding[0]
        site, ear = tx.site_from_coding({SCT: "SCT"}.get(c.system, "DCM"), c.code, q)
        measures = {}
        if "body-position" in ext:
            measures.update({f"{e.url}_mm": float(e.valueDecimal) for e in ext["body-position"].extension})
        s = tx.site(site)
        l = Lesion(id=int(lid), point_mm=[sp["x"], sp["y"], sp["z"]], face=int(sp["face"]),
                   bary=[sp["b0"], sp["b1"], sp["b2"]], normal=[sp["nx"], sp["ny"], sp["nz"]], diameter_mm=0.0,
                   area_mm2=0.0, colour_lab=[], skin_lab=[], contrast_de=0.0, confidence=0.0, source="fhir",
                   region={"code": site, "name": s.name, "side": side, "ear": ear,
                           "description": tx.describe(s.index, tx.LATERALITY.index(side))},
                   measures=measures)
        lesions.append(l)
        by_ref[ref] = l
    changes: dict[int, dict] = {}
    for r in res.values():
        if r.get_resource_type() != "Observation" or r.bodyStructure is None:
            continue
        l = by_ref[r.bodyStructure.reference]
        code = r.code.coding[0].code
        if code == DIAMETER[0]:
            l.diameter_mm = float(r.valueQuantity.value)
        elif code == AREA[0]:
            l.area_mm2 = float(r.valueQuantity.value)
        elif code == "tbp-measures":
            l.measures.update({c.code.coding[0].code: float(c.valueQuantity.value) for c in r.component})
        elif code == SIZE_CHANGE[0]:
            changes.setdefault(l.id, {})["diameter_change_mm"] = float(r.valueQuantity.value)
        elif code == "growth-rate":
            changes.setdefault(l.id, {})["growth_mm_per_year"] = float(r.valueQuantity.value)
        elif code == "colour-change":
            changes.setdefault(l.id, {})["colour_delta_e"] = float(r.valueQuantity.value)
        elif code == "status":
            changes.setdefault(l.id, {})["status"] = r.valueCodeableConcept.coding[0].code
    return FhirVisit(pid, visit_id, sorted(lesions, key=lambda l: l.id), changes)
