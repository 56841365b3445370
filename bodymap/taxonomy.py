"""Anatomic sites: a hierarchy with stable codes, names and colours.

Follows the ISIC hierarchical anatomic-site list:

- level 1: head and neck, trunk, upper extremity, lower extremity, anogenital;
- level 2: head, neck, anterior / lateral / posterior trunk, shoulder, upper arm, elbow, forearm,
  wrist, hand, buttock, thigh, knee, lower leg, ankle, foot, genital;
- level 3 where it helps: face, scalp, ear; palm vs back of hand; sole vs top of foot.

Laterality (left / right / midline) is a field of its own, never part of a site's code. The
six macro regions of Amruthalingam et al. (arm, leg, foot, hand, head, trunk) are a coarse view
of the same labels, and the 12 ear sub-regions of that paper (plus "non-ear") are the micro
level.

Codes are stable strings ("upper_extremity/forearm"); arrays of labels hold small integers
that index ``SITES`` (the order of this file, never to be reordered: append only).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Site:
    """One anatomic site. code: stable path-like id; level 1-3; parent: code or None."""

    code: str
    name: str
    level: int
    parent: str | None
    colour: tuple[int, int, int]  # sRGB, for region maps

    @property
    def index(self) -> int:
        """Position in SITES: the integer stored in label arrays."""
        return SITE_INDEX[self.code]


def _s(code: str, name: str, colour: tuple[int, int, int]) -> Site:
    parts = code.split("/")
    return Site(code, name, len(parts), "/".join(parts[:-1]) or None, colour)


# Append only: label arrays on disk store indices into this tuple.
SITES: tuple[Site, ...] = (
    _s("unknown", "unknown", (128, 128, 128)),
    _s("head_neck", "head and neck", (230, 159, 0)),
    _s("trunk", "trunk", (0, 114, 178)),
    _s("upper_extremity", "upper extremity", (0, 158, 115)),
    _s("lower_extremity", "lower extremity", (204, 121, 167)),
    _s("anogenital", "anogenital", (213, 94, 0)),
    _s("head_neck/head", "head", (240, 180, 40)),
    _s("head_neck/head/face", "face", (255, 210, 90)),
    _s("head_neck/head/scalp", "scalp", (170, 110, 20)),
    _s("head_neck/head/ear", "ear", (255, 140, 60)),
    _s("head_neck/neck", "neck", (250, 230, 150)),
    _s("trunk/anterior", "anterior torso", (40, 120, 220)),
    _s("trunk/lateral", "lateral torso", (120, 180, 240)),
    _s("trunk/posterior", "posterior torso", (20, 60, 140)),
    _s("upper_extremity/shoulder", "shoulder", (20, 110, 80)),
    _s("upper_extremity/upper_arm", "upper arm", (60, 180, 120)),
    _s("upper_extremity/elbow", "elbow", (150, 220, 170)),
    _s("upper_extremity/forearm", "forearm", (30, 140, 60)),
    _s("upper_extremity/wrist", "wrist", (200, 240, 150)),
    _s("upper_extremity/hand", "hand", (110, 200, 60)),
    _s("upper_extremity/hand/palm", "palm", (180, 230, 120)),
    _s("upper_extremity/hand/dorsal", "back of hand", (80, 150, 30)),
    _s("lower_extremity/buttock", "buttock", (150, 60, 120)),
    _s("lower_extremity/thigh", "thigh", (220, 140, 190)),
    _s("lower_extremity/knee", "knee", (250, 200, 230)),
    _s("lower_extremity/lower_leg", "lower leg", (180, 90, 150)),
    _s("lower_extremity/ankle", "ankle", (240, 170, 210)),
    _s("lower_extremity/foot", "foot", (120, 40, 100)),
    _s("lower_extremity/foot/sole", "sole", (200, 120, 180)),
    _s("lower_extremity/foot/dorsal", "top of foot", (100, 20, 80)),
    _s("anogenital/genital", "genital", (240, 120, 40)),
)
SITE_INDEX: dict[str, int] = {s.code: i for i, s in enumerate(SITES)}
UNKNOWN = 0

LATERALITY: tuple[str, ...] = ("midline", "left", "right")  # 0, 1, 2 in label arrays

# Amruthalingam et al.'s six macro regions (+ "other") as a coarse view of the sites.
MACRO: tuple[str, ...] = ("other", "arm", "leg", "foot", "hand", "head", "trunk")
_MACRO_OF_PREFIX = (
    ("head_neck", "head"),
    ("trunk", "trunk"),
    ("anogenital", "trunk"),
    ("upper_extremity/hand", "hand"),
    ("upper_extremity", "arm"),
    ("lower_extremity/buttock", "trunk"),
    ("lower_extremity/foot", "foot"),
    ("lower_extremity", "leg"),
)

# The 12 ear sub-regions of Amruthalingam et al., with colours; 0 is "non-ear".
EAR_REGIONS: tuple[str, ...] = (
    "non_ear", "anti_helix", "anti_tragus", "concha_cavum", "concha_cymba",
    "external_auditory_canal", "helical_root", "helix", "lobule", "notch", "scaphoid_fossa",
    "tragus", "triangular_fossa",
)
EAR_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (20, 20, 20), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
    (210, 245, 60), (250, 190, 212), (0, 128, 128),
)


def site(code: str) -> Site:
    """The Site with this code. Raises KeyError naming the code if there is none."""
    try:
        return SITES[SITE_INDEX[code]]
    except KeyError:
        raise KeyError(f"unknown anatomic site code {code!r}") from None


def ancestor(index: int, level: int) -> int:
    """The site index at ``level`` (1-3) above (or equal to) site ``index``; itself when it is
    already at or above that level."""
    s = SITES[index]
    if s.level <= level or s.code == "unknown":
        return index
    return SITE_INDEX["/".join(s.code.split("/")[:level])]


def macro(index: int) -> str:
    """The Amruthalingam macro region (arm, leg, foot, hand, head, trunk or other) of a site."""
    code = SITES[index].code
    for prefix, m in _MACRO_OF_PREFIX:
        if code == prefix or code.startswith(prefix + "/"):
            return m
    return "other"


def level_lut(level: int):
    """(len(SITES),) int array mapping a site index to its ancestor index at ``level``."""
    import numpy as np

    return np.array([ancestor(i, level) for i in range(len(SITES))], dtype=np.int16)


def macro_lut():
    """(len(SITES),) int array mapping a site index to an index into MACRO."""
    import numpy as np

    return np.array([MACRO.index(macro(i)) for i in range(len(SITES))], dtype=np.int8)


def describe(index: int, laterality: int = 0) -> str:
    """Human-readable site, e.g. "left forearm" or "anterior torso" (midline not spelled)."""
    side = LATERALITY[laterality]
    name = SITES[index].name
    return name if side == "midline" else f"{side} {name}"


# ----------------------------------------------------------------------------- standard codes
@dataclasses.dataclass(frozen=True)
class Coded:
    """A coded concept as DICOM and FHIR carry it: scheme ('SCT' SNOMED CT, 'DCM' DICOM),
    value (the code), meaning (its display text)."""

    scheme: str
    value: str
    meaning: str

    @property
    def system(self) -> str:
        """The FHIR code-system URI of the scheme."""
        return CODE_SYSTEMS[self.scheme]


CODE_SYSTEMS = {"SCT": "http://snomed.info/sct", "DCM": "http://dicom.nema.org/resources/ontology/DCM"}


@dataclasses.dataclass(frozen=True)
class SiteCoding:
    """How a BodyMap site is coded. code: the concept; modifier: an Anatomic Modifier (DICOM CID
    2) that narrows it (or None); source: where the code is taken from: "CID 4029" (Dermatology
    Anatomic Site) where it has a concept for the whole site, else "CID 4" (Anatomic Region) or
    "Annex L" (the concept DICOM PS3.16 Annex L gives the body part)."""

    code: Coded
    modifier: Coded | None = None
    source: str = "CID 4029"


def _c(value: str, meaning: str, scheme: str = "SCT") -> Coded:
    return Coded(scheme, value, meaning)


# Every site in SITES has an entry (tests/test_standards.py fails when one is added without).
# CID 4029 (the edition shipped with pydicom) has skin concepts for most sites; for the limb
# segments it has only surface concepts (anterior / posterior surface of the thigh ...), so the
# whole segment takes its CID 4 region concept (the trunk: Annex L's); sole and top of foot are
# the skin of the foot narrowed by "inferior" / "superior" (the plantar and dorsal surfaces in
# anatomical position), CID 4029 having no concept for either as a whole.
SITE_CODES: dict[str, SiteCoding] = {
    "unknown": SiteCoding(_c("39937001", "Skin")),
    "head_neck": SiteCoding(_c("774007", "Head and Neck"), source="CID 4"),
    "trunk": SiteCoding(_c("22943007", "Trunk"), source="Annex L"),
    "upper_extremity": SiteCoding(_c("371311000", "Skin of upper extremity")),
    "lower_extremity": SiteCoding(_c("371304004", "Skin of lower extremity")),
    "anogenital": SiteCoding(_c("48014002", "Skin of perineum")),
    "head_neck/head": SiteCoding(_c("70762009", "Skin of head")),
    "head_neck/head/face": SiteCoding(_c("73897004", "Skin of face")),
    "head_neck/head/scalp": SiteCoding(_c("43067004", "Skin of scalp")),
    "head_neck/head/ear": SiteCoding(_c("1902009", "Skin of ear")),
    "head_neck/neck": SiteCoding(_c("43081002", "Skin of neck")),
    "trunk/anterior": SiteCoding(_c("181491009", "Skin of anterior trunk")),
    "trunk/lateral": SiteCoding(_c("58602004", "Flank"), source="CID 4"),
    "trunk/posterior": SiteCoding(_c("66643007", "Skin of back")),
    "upper_extremity/shoulder": SiteCoding(_c("16982005", "Shoulder"), source="CID 4"),
    "upper_extremity/upper_arm": SiteCoding(_c("40983000", "Upper arm"), source="CID 4"),
    "upper_extremity/elbow": SiteCoding(_c("16953009", "Elbow joint"), source="CID 4"),
    "upper_extremity/forearm": SiteCoding(_c("14975008", "Forearm"), source="CID 4"),
    "upper_extremity/wrist": SiteCoding(_c("74670003", "Wrist joint"), source="CID 4"),
    "upper_extremity/hand": SiteCoding(_c("33712006", "Skin of hand")),
    "upper_extremity/hand/palm": SiteCoding(_c("70887009", "Skin of palm of hand")),
    "upper_extremity/hand/dorsal": SiteCoding(_c("281642007", "Skin of part of dorsal surface of hand")),
    "lower_extremity/buttock": SiteCoding(_c("22180002", "Skin of buttock")),
    "lower_extremity/thigh": SiteCoding(_c("68367000", "Thigh"), source="CID 4"),
    "lower_extremity/knee": SiteCoding(_c("72696002", "Knee"), source="CID 4"),
    "lower_extremity/lower_leg": SiteCoding(_c("30021000", "Lower leg"), source="CID 4"),
    "lower_extremity/ankle": SiteCoding(_c("70258002", "Ankle joint"), source="CID 4"),
    "lower_extremity/foot": SiteCoding(_c("60496002", "Skin of foot")),
    "lower_extremity/foot/sole": SiteCoding(_c("60496002", "Skin of foot"), _c("261089000", "Inferior")),
    "lower_extremity/foot/dorsal": SiteCoding(_c("60496002", "Skin of foot"), _c("264217000", "Superior")),
    "anogenital/genital": SiteCoding(_c("60944009", "Skin of external genitalia")),
}

# The ear sub-regions CID 4029 has a concept for; the others are coded as the skin of the ear.
EAR_CODES: dict[str, Coded | None] = {
    "non_ear": None,
    "anti_helix": None,  # CID 4029 has its upper, lower and superior parts only
    "anti_tragus": _c("38407007", "Skin of antitragus"),
    "concha_cavum": _c("51098001", "Skin of cavity of concha"),
    "concha_cymba": None,
    "external_auditory_canal": _c("86409001", "Skin of external auditory canal"),
    "helical_root": _c("57726007", "Skin of crus of helix"),
    "helix": _c("79313003", "Skin of helix of ear"),
    "lobule": _c("2059009", "Skin of ear lobule"),
    "notch": _c("45591000", "Skin of intertragal incisure"),
    "scaphoid_fossa": None,
    "tragus": _c("79502000", "Skin of tragus"),
    "triangular_fossa": None,
}

# Laterality (DICOM CID 245 "Laterality with Median").
LATERALITY_CODES: dict[str, Coded] = {
    "left": _c("7771000", "Left"), "right": _c("24028007", "Right"), "midline": _c("130290", "Median", "DCM"),
}

# Amruthalingam et al.'s macro regions (photo mode knows only these).
MACRO_CODES: dict[str, Coded] = {
    "other": _c("39937001", "Skin"),
    "arm": _c("371311000", "Skin of upper extremity"),
    "leg": _c("371304004", "Skin of lower extremity"),
    "foot": _c("60496002", "Skin of foot"),
    "hand": _c("33712006", "Skin of hand"),
    "head": _c("774007", "Head and Neck"),
    "trunk": _c("22943007", "Trunk"),
}


def site_coding(code: str, ear: str = "non_ear") -> tuple[Coded, Coded | None]:
    """The concept and modifier (or None) of a site (taxonomy code), narrowed to the ear
    sub-region where CID 4029 has a concept for it. KeyError for an unknown site or region."""
    sc = SITE_CODES[site(code).code]
    if code == "head_neck/head/ear" and EAR_CODES[ear] is not None:
        return EAR_CODES[ear], None
    return sc.code, sc.modifier


def site_from_coding(scheme: str, value: str, modifier: str | None = None) -> tuple[str, str]:
    """The BodyMap site code and ear sub-region ('non_ear' when none) of a coded site (scheme,
    code value, modifier value or None): the inverse of site_coding. KeyError when the code is
    not one BodyMap writes."""
    for region, c in EAR_CODES.items():
        if c is not None and (c.scheme, c.value) == (scheme, value):
            return "head_neck/head/ear", region
    for s, sc in SITE_CODES.items():
        if (sc.code.scheme, sc.code.value) == (scheme, value) and (sc.modifier.value if sc.modifier else None) == modifier:
            return s, "non_ear"
    raise KeyError(f"{scheme} {value} (modifier {modifier}) is not a site code BodyMap writes")


def laterality_from_code(value: str) -> str:
    """'left', 'right' or 'midline' for a laterality code value; KeyError otherwise."""
    for side, c in LATERALITY_CODES.items():
        if c.value == value:
            return side
    raise KeyError(f"{value} is not a laterality code BodyMap writes")


# ----------------------------------------------------------------------------- everyday words
# What a clinician or patient types for a region -> the site codes it means (the lesion table's
# region search). A word here means these sites only ("back" is the back of the trunk, not the
# back of the hand); any other text is searched in the site names (the site, its ancestors).
REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "back": ("trunk/posterior",), "upper back": ("trunk/posterior",), "lower back": ("trunk/posterior",),
    "chest": ("trunk/anterior",), "breast": ("trunk/anterior",), "belly": ("trunk/anterior",),
    "abdomen": ("trunk/anterior",), "stomach": ("trunk/anterior",), "tummy": ("trunk/anterior",),
    "front": ("trunk/anterior",), "flank": ("trunk/lateral",), "side": ("trunk/lateral",),
    "torso": ("trunk",), "body": ("trunk",),
    "arm": ("upper_extremity",), "arms": ("upper_extremity",), "fingers": ("upper_extremity/hand",),
    "finger": ("upper_extremity/hand",), "leg": ("lower_extremity",), "legs": ("lower_extremity",),
    "shin": ("lower_extremity/lower_leg",), "calf": ("lower_extremity/lower_leg",),
    "bottom": ("lower_extremity/buttock",), "buttocks": ("lower_extremity/buttock",),
    "bum": ("lower_extremity/buttock",), "glutes": ("lower_extremity/buttock",), "toes": ("lower_extremity/foot",),
    "toe": ("lower_extremity/foot",), "groin": ("anogenital",),
    "cheek": ("head_neck/head/face",), "nose": ("head_neck/head/face",), "forehead": ("head_neck/head/face",),
    "chin": ("head_neck/head/face",), "scalp": ("head_neck/head/scalp",),
}


def region_matches(query: str, region: dict | None) -> bool:
    """Whether a lesion's region record ({code, side, description}) answers a region search:
    an optional 'left' / 'right' first word, then an everyday word of REGION_SYNONYMS (the
    region or any site under it), else text found in the description or in the name of the
    site or of any site above it ('hand' finds a palm). Case-insensitive; '' matches all."""
    q = " ".join(str(query).lower().split())
    if not q:
        return True
    r = region or {}
    side = None
    for s in ("left", "right"):
        if q.startswith(s + " ") or q == s:
            side, q = s, q[len(s):].strip()
    if side is not None and r.get("side") != side:
        return False
    if not q:
        return True
    code = r.get("code") if r.get("code") in SITE_INDEX else "unknown"
    parts = code.split("/")
    lineage = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    if q in REGION_SYNONYMS:
        return any(c in lineage for c in REGION_SYNONYMS[q])
    texts = [str(r.get("description", "")).lower(), *(site(c).name for c in lineage if c in SITE_INDEX)]
    return any(q in t for t in texts)
