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
