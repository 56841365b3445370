"""Named body poses for synthetic patients: the poses clinics and scanners meet (arms crossed,
hands on hips, on the head or at the face, arms forward, bent forward, seated, kneeling,
crouched), composed from per-limb configurations.

Rotations are anny's "local-ref" rotations (world-aligned at the reference orientation, 3 x 3):
a rotation about +x bends in the sagittal plane, about +y in the frontal plane. The frame is
the template's: z up, the body faces -y, its left is +x.
"""
from __future__ import annotations

import numpy as np


def _rx(d: float) -> np.ndarray:
    a = np.deg2rad(d)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ry(d: float) -> np.ndarray:
    a = np.deg2rad(d)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _rz(d: float) -> np.ndarray:
    a = np.deg2rad(d)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _about(axis, d: float) -> np.ndarray:
    """Rotation (3, 3) by d degrees about a unit axis (3,)."""
    from scipy.spatial.transform import Rotation

    a = np.asarray(axis, float)
    return Rotation.from_rotvec(a / np.linalg.norm(a) * np.deg2rad(d)).as_matrix()


# The left arm in anny's rest A-pose (from the template's bone heads): the upper arm points
# down-out along ARM_L; the forearm is already bent REST_ELBOW_DEG forward; the elbow bends it
# about ELBOW_L (both in the rest frame, where local-ref rotations live).
ARM_L = np.array([0.665, -0.016, -0.747])
ELBOW_L = np.array([-0.704, 0.0, -0.71])
REST_ELBOW_DEG = 43.0


def _flex(d: float) -> np.ndarray:
    """Left elbow flexion by d degrees (the forearm swings forward)."""
    return _about(ELBOW_L, d)


def _twist(d: float) -> np.ndarray:
    """Left upper arm rotated d degrees about its own axis (+: a bent forearm swings inwards)."""
    return _about(ARM_L, d)


# Configurations of each limb and of the trunk (left side given; the right side mirrors it).
ARM_CONFIGS: dict[str, dict[str, np.ndarray]] = {
    "rest": {},
    "down": {"upperarm01": _ry(38)},
    "out": {"upperarm01": _ry(-45)},
    "raised": {"upperarm01": _ry(-85)},
    "up": {"upperarm01": _ry(-130)},
    "forward": {"upperarm01": _rx(-70) @ _ry(30)},
    "forward-up": {"upperarm01": _rx(-130) @ _ry(30)},
    "back": {"upperarm01": _rx(40) @ _ry(35)},
    "elbow-bent": {"upperarm01": _ry(30), "lowerarm01": _flex(90)},
    "hip": {"upperarm01": _twist(60), "lowerarm01": _flex(100)},
    "head": {"upperarm01": _ry(-95), "lowerarm01": _ry(-120)},
    "face": {"upperarm01": _rx(-100) @ _ry(30), "lowerarm01": _flex(125)},
    "crossed": {"upperarm01": _rz(-70) @ _ry(35), "lowerarm01": _flex(105)},
}
LEG_CONFIGS: dict[str, dict[str, np.ndarray]] = {
    "straight": {},
    "apart": {"upperleg01": _ry(-15)},
    "hip-bent": {"upperleg01": _rx(-45)},
    "knee-up": {"upperleg01": _rx(-60), "lowerleg01": _rx(60)},
    "seated": {"upperleg01": _rx(-85), "lowerleg01": _rx(85)},
    "kneeling": {"lowerleg01": _rx(90)},
    "crouched": {"upperleg01": _rx(-100), "lowerleg01": _rx(125)},
}
TRUNK_BEND_DEG = (0.0, 25.0, 50.0, 75.0, 95.0, -15.0)  # forward bend at the hips (root tilt, thighs kept)
PARTS = ("trunk", "arm.L", "arm.R", "leg.L", "leg.R")


def part_options(part: str) -> dict[str, dict[str, np.ndarray]]:
    """The options of one part ("trunk", "arm.L", "arm.R", "leg.L", "leg.R"): {option name: {bone: rotation (3, 3)}} (bones of that part only; a
    trunk bend tilts the root and turns the thighs back so the legs stay where they were)."""
    M = np.diag([-1.0, 1.0, 1.0])
    if part == "trunk":
        return {f"bend {d:g}": {"root": _rx(d), "upperleg01.L": _rx(-d), "upperleg01.R": _rx(-d)}
                for d in TRUNK_BEND_DEG}
    kind, side = part.split(".")
    table = ARM_CONFIGS if kind == "arm" else LEG_CONFIGS
    bones = ("upperarm01", "lowerarm01") if kind == "arm" else ("upperleg01", "lowerleg01")
    out = {}
    for name, conf in table.items():
        out[name] = {f"{b}.{side}": (conf.get(b, np.eye(3)) if side == "L" else M @ conf.get(b, np.eye(3)) @ M)
                     for b in bones}
    return out


def compose(choices: dict[str, str]) -> dict[str, np.ndarray]:
    """{bone: rotation (3, 3)} of a pose given as {part: option name} (parts left out: rest;
    both arms or both legs: give "arm" / "leg"). Leg options are taken relative to the trunk's
    tilt, so a bent body can also sit or kneel."""
    ch = dict(choices)
    for kind in ("arm", "leg"):
        if kind in ch:
            both = ch.pop(kind)
            ch.setdefault(f"{kind}.L", both)
            ch.setdefault(f"{kind}.R", both)
    trunk = part_options("trunk")[ch.get("trunk", "bend 0")]
    out = dict(trunk)
    for part in PARTS[1:]:
        if part not in ch:
            continue
        for bone, R in part_options(part)[ch[part]].items():
            out[bone] = trunk[bone] @ R if bone in trunk else R
    return out


# Named poses (bodymap.anatomy.body.CLINIC_POSES draws from them): the rest A-pose and the poses
# clinics and scanners meet.
START_CHOICES: dict[str, dict[str, str]] = {
    "a-pose": {},
    "arms-down": {"arm": "down"},
    "arms-raised": {"arm": "raised"},
    "arms-forward": {"arm": "forward"},
    "hands-on-hips": {"arm": "hip"},
    "hands-on-head": {"arm": "head"},
    "hands-to-face": {"arm": "face"},
    "arms-crossed": {"arm": "crossed"},
    "bent-forward": {"trunk": "bend 75", "arm": "down"},
    "seated": {"leg": "seated", "arm": "elbow-bent"},
    "kneeling": {"leg": "kneeling", "arm": "down"},
    "crouched": {"leg": "crouched", "arm": "down"},
}
START_POSES: dict[str, dict[str, np.ndarray]] = {k: compose(v) for k, v in START_CHOICES.items()}
