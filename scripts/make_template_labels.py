"""Builds the labelled template body: bodymap/data/template_labels.npz. Reproducible:

    .venv/bin/python scripts/make_template_labels.py

Every vertex of the anny template (default phenotype, rest pose, mm, z up, facing -y, subject's
left = +x) gets an anatomic site (index into bodymap.taxonomy.SITES), a laterality and an ear
sub-region, from the body model's own data:

- skinning weights summed over bone groups (head, neck, trunk, shoulder, upper arm, forearm,
  hand, thigh, lower leg, foot) give the body part;
- joint centres (bone heads) split limbs along their axes: shoulder, elbow, wrist, knee, ankle
  are bands around the joints, sized relative to the segment lengths;
- the horizontal direction from the trunk's axis splits the torso into anterior, lateral and
  posterior; height and direction give the buttocks and the anogenital region;
- normals split palm from back of hand and sole from top of foot;
- MakeHuman's ear morph targets give the ears (and lobules); the other ear sub-regions come
  from the ear's own shape: its outline seen from the side, the depth of each point relative
  to the ear's rim, and its position in the ear.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np

from bodymap.scan import vertex_normals
from bodymap.anatomy.body import body_model, landmark_weights
from bodymap.taxonomy import EAR_REGIONS, LATERALITY, SITE_INDEX

OUT = Path(__file__).resolve().parents[1] / "bodymap" / "data" / "template_labels.npz"

GROUPS = ("head", "neck", "trunk", "shoulder", "upper_arm", "forearm", "hand", "thigh", "lower_leg", "foot")


def _group_of_bone(name: str) -> str:
    n = name.split(".")[0]
    if n.startswith(("head", "eye", "jaw")):
        return "head"
    if n.startswith("neck"):
        return "neck"
    if n.startswith("shoulder"):
        return "shoulder"
    if n.startswith("upperarm"):
        return "upper_arm"
    if n.startswith("lowerarm"):
        return "forearm"
    if n.startswith(("wrist", "finger", "metacarpal")):
        return "hand"
    if n.startswith("upperleg"):
        return "thigh"
    if n.startswith("lowerleg"):
        return "lower_leg"
    if n.startswith(("foot", "toe")):
        return "foot"
    return "trunk"  # root, pelvis, spine, clavicle


def _along(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Position of points p (k, 3) along segment a -> b, as a fraction of its length."""
    d = b - a
    return (p - a) @ d / (d @ d)


def label_ear(v: np.ndarray, vn: np.ndarray, ear: np.ndarray, lobe: np.ndarray, side: str,
              head_centre: np.ndarray) -> np.ndarray:
    """Ear sub-region (index into EAR_REGIONS) of each vertex in ear (k,) indices.

    Works in the ear's side view: u runs from the front (0, next to the face) to the back (1),
    w from the bottom (0) to the top (1); 'rim' is each point's lateral height above the ear's
    base plane, normalised; r its normalised distance from the concha's centre.
    """
    P = v[ear]
    sgn = 1.0 if side == "L" else -1.0
    lateral = sgn * (P[:, 0] - head_centre[0])  # mm away from the head's mid-plane
    # side-view coordinates: y (front -y -> back +y) and z
    y, z = P[:, 1], P[:, 2]
    u = (y - y.min()) / np.ptp(y)
    w = (z - z.min()) / np.ptp(z)
    # lateral height above the plane through the ear's attachment (fit on its most medial points)
    base = lateral <= np.percentile(lateral, 15)
    A = np.c_[y[base], z[base], np.ones(base.sum())]
    coef, *_ = np.linalg.lstsq(A, lateral[base], rcond=None)
    h = lateral - np.c_[y, z, np.ones(len(y))] @ coef
    h = (h - h.min()) / np.ptp(h)
    # the concha: the deep bowl in the front-middle of the ear
    deep = (h < 0.35) & (u > 0.12) & (u < 0.6) & (w > 0.28) & (w < 0.7)
    cy, cz = (np.median(u[deep]), np.median(w[deep])) if deep.sum() > 5 else (0.35, 0.45)
    r = np.hypot((u - cy) / 0.65, (w - cz) / 0.6)
    ang = np.degrees(np.arctan2(w - cz, u - cy))  # 0 = back, 90 = up, 180 = front
    R = EAR_REGIONS.index
    # rings from the rim inwards: helix, scaphoid fossa, anti-helix; in front of the concha
    # the rim is the ascending helix
    out = np.where(u < cy, R("helix"), R("anti_helix")).astype(np.int8)
    outer = r > np.percentile(r, 72)
    out[outer & (w > 0.3)] = R("helix")
    out[(r > np.percentile(r, 55)) & ~outer & (w > 0.35) & (ang < 120)] = R("scaphoid_fossa")
    out[(r > np.percentile(r, 30)) & (r <= np.percentile(r, 55)) & (ang < 150) & (u >= cy - 0.05)] = R("anti_helix")
    out[(w > 0.62) & (u > 0.22) & (u < 0.55) & (h < 0.55) & ~outer] = R("triangular_fossa")
    cymba = deep & (w >= cz + 0.04)
    cavum = deep & (w < cz + 0.04)
    out[cymba] = R("concha_cymba")
    out[cavum] = R("concha_cavum")
    out[deep & (w >= cz - 0.02) & (w <= cz + 0.06) & (u < cy)] = R("helical_root")
    out[deep & (h < np.percentile(h[deep], 20)) & (u < cy + 0.02) & (w < cz + 0.02)] = R("external_auditory_canal")
    out[(u < 0.16) & (w > 0.2) & (w < 0.5)] = R("tragus")
    out[(u >= 0.12) & (u < 0.4) & (w > 0.18) & (w <= 0.3)] = R("notch")
    out[(u >= 0.4) & (u < 0.75) & (w > 0.2) & (w <= 0.36) & ~outer] = R("anti_tragus")
    out[np.isin(ear, lobe) | (w <= 0.2)] = R("lobule")
    return out


def build() -> dict[str, np.ndarray]:
    """Labels of the anny template. Returns site (n,) uint8, side (n,) uint8, ear (n,) uint8."""
    bm = body_model()
    tm = bm.template()
    v, f = tm.vertices, tm.faces
    n = len(v)
    vn = vertex_normals(v, f)
    labels, heads = bm.bone_labels, bm.template_bone_heads
    h = lambda b: heads[labels.index(b)]  # noqa: E731
    m = bm._model
    bidx, bw = m.vertex_bone_indices.numpy(), m.vertex_bone_weights.numpy()
    gw = np.zeros((n, len(GROUPS)))
    side_w = np.zeros((n, 2))  # weight on left / right bones
    for j, name in enumerate(labels):
        g = GROUPS.index(_group_of_bone(name))
        wj = (bw * (bidx == j)).sum(1)
        gw[:, g] += wj
        if name.endswith(".L"):
            side_w[:, 0] += wj
        elif name.endswith(".R"):
            side_w[:, 1] += wj
    group = np.array(GROUPS)[gw.argmax(1)]
    S = SITE_INDEX
    site = np.zeros(n, np.uint8)
    marks = landmark_weights(bm)
    palm_sole = marks["palm_sole"] > 0.5

    # laterality: limbs by their bones' side, the rest by x with a narrow midline band
    limb = np.isin(group, ["shoulder", "upper_arm", "forearm", "hand", "thigh", "lower_leg", "foot"])
    side = np.where(v[:, 0] > 0, LATERALITY.index("left"), LATERALITY.index("right")).astype(np.uint8)
    side[limb] = np.where(side_w[limb, 0] >= side_w[limb, 1], 1, 2)
    side[~limb & (np.abs(v[:, 0]) < 6.0)] = LATERALITY.index("midline")

    # head and neck
    # the auricle: what the "wing" target swings away from the head (the scale target also drags
    # the surrounding skin)
    ear_idx = {s: bm.target_vertices(f"ears/{s.lower()}-ear-wing-incr", 1.0) for s in ("L", "R")}
    lobe_idx = {s: bm.target_vertices(f"ears/{s.lower()}-ear-lobe-incr", 0.3) for s in ("L", "R")}
    head = group == "head"
    eye_z = (h("eye.L")[2] + h("eye.R")[2]) / 2
    ear_y = np.mean([v[ear_idx[s]][:, 1].mean() for s in ear_idx])
    top = v[head, 2].max()
    face = head & (v[:, 1] < ear_y - 20) & (v[:, 2] < eye_z + 0.42 * (top - eye_z))
    site[head] = S["head_neck/head/scalp"]
    site[face] = S["head_neck/head/face"]
    site[group == "neck"] = S["head_neck/neck"]
    # under the chin belongs to the neck: head vertices below the jaw line facing down
    site[head & (vn[:, 2] < -0.5) & (v[:, 2] < eye_z - 60)] = S["head_neck/neck"]
    ear = np.zeros(n, np.uint8)
    centre = np.array([0.0, ear_y, eye_z])
    for s in ("L", "R"):
        idx = ear_idx[s]
        site[idx] = S["head_neck/head/ear"]
        ear[idx] = label_ear(v, vn, idx, lobe_idx[s], s, centre)

    # trunk: direction from the trunk's axis (the spine's x, a y between spine and front)
    trunk = group == "trunk"
    # direction around the torso's elliptic cross-section at each height (it is wider than deep)
    zb = np.clip(((v[:, 2] - v[trunk, 2].min()) // 40).astype(int), 0, None)
    half_w, mid_y, half_d = (np.zeros(zb.max() + 1) for _ in range(3))
    for b in range(zb.max() + 1):
        sl = trunk & (zb == b)
        if sl.sum() < 10:
            sl = trunk
        half_w[b] = np.percentile(np.abs(v[sl, 0]), 98)
        lo, hi = np.percentile(v[sl, 1], [2, 98])
        mid_y[b], half_d[b] = (lo + hi) / 2, (hi - lo) / 2
    az = np.degrees(np.arctan2(v[:, 0] / half_w[zb], -(v[:, 1] - mid_y[zb]) / half_d[zb]))  # 0 front, 180 back
    front, back = np.abs(az) <= 55, np.abs(az) >= 125
    site[trunk] = S["trunk/lateral"]
    site[trunk & front] = S["trunk/anterior"]
    site[trunk & back] = S["trunk/posterior"]
    hip_z = (h("upperleg01.L")[2] + h("upperleg01.R")[2]) / 2
    knee = {s: h(f"lowerleg01.{s}") for s in "LR"}
    thigh_len = np.mean([np.linalg.norm(knee[s] - h(f"upperleg01.{s}")) for s in "LR"])
    # buttocks: the back of the pelvis and upper thighs, from the iliac crests to the gluteal fold
    lowtrunk = np.isin(group, ["trunk", "thigh"]) & (v[:, 2] < hip_z + 0.22 * thigh_len) \
        & (v[:, 2] > hip_z - 0.28 * thigh_len)
    site[lowtrunk & (np.abs(az) >= 115) & (vn[:, 1] > 0.05)] = S["lower_extremity/buttock"]
    # anogenital: the crotch between the thighs
    crotch = (np.abs(v[:, 0]) < 45) & (v[:, 2] < hip_z - 0.12 * thigh_len) & (v[:, 2] > hip_z - 0.32 * thigh_len) \
        & np.isin(group, ["trunk", "thigh"]) & (np.abs(az) < 150) & (np.abs(vn[:, 0]) < 0.85)
    site[crotch] = S["anogenital/genital"]
    side[crotch & (np.abs(v[:, 0]) < 6.0)] = LATERALITY.index("midline")

    for s in "LR":
        mine = side == (1 if s == "L" else 2)
        # arm: shoulder / upper arm / elbow / forearm / wrist along the bones
        sh, el, wr = h(f"upperarm01.{s}"), h(f"lowerarm01.{s}"), h(f"wrist.{s}")
        upper_len = np.linalg.norm(el - sh)
        t_up = _along(v, sh, el)
        t_fo = _along(v, el, wr)
        arm = mine & np.isin(group, ["shoulder", "upper_arm", "forearm"])
        site[arm & (group == "shoulder")] = S["upper_extremity/shoulder"]
        # the shoulder bone also carries the trapezius and upper chest: medial of the joint is trunk
        medial = arm & (group == "shoulder") & (np.abs(v[:, 0]) < abs(sh[0]) - 35.0)
        site[medial] = np.where(front[medial], S["trunk/anterior"],
                                np.where(back[medial], S["trunk/posterior"], S["trunk/lateral"]))
        site[arm & (group == "upper_arm")] = S["upper_extremity/upper_arm"]
        site[arm & (group == "upper_arm") & (t_up < 0.18)] = S["upper_extremity/shoulder"]
        site[arm & (group == "forearm")] = S["upper_extremity/forearm"]
        d_el = np.linalg.norm(v - el, axis=1)
        site[arm & (np.abs(t_up - 1.0) * upper_len < 0.13 * upper_len) & (t_fo < 0.15) & (d_el < 0.3 * upper_len)] = \
            S["upper_extremity/elbow"]
        site[arm & (group == "forearm") & (t_fo > 0.88)] = S["upper_extremity/wrist"]
        hand = mine & (group == "hand")
        site[hand] = S["upper_extremity/hand/dorsal"]
        site[hand & palm_sole] = S["upper_extremity/hand/palm"]
        # leg: thigh / knee / lower leg / ankle / foot
        hp, kn, an = h(f"upperleg01.{s}"), h(f"lowerleg01.{s}"), h(f"foot.{s}")
        t_th = _along(v, hp, kn)
        t_sh = _along(v, kn, an)
        leg = mine & np.isin(group, ["thigh", "lower_leg"]) & (site != S["lower_extremity/buttock"]) \
            & (site != S["anogenital/genital"])
        site[leg & (group == "thigh")] = S["lower_extremity/thigh"]
        site[leg & (group == "lower_leg")] = S["lower_extremity/lower_leg"]
        site[leg & (t_th > 0.86) & (t_sh < 0.14)] = S["lower_extremity/knee"]
        site[leg & (group == "lower_leg") & (t_sh > 0.9)] = S["lower_extremity/ankle"]
        foot = mine & (group == "foot")
        site[foot] = S["lower_extremity/foot/dorsal"]
        site[foot & palm_sole] = S["lower_extremity/foot/sole"]
        site[foot & (t_sh <= 1.02) & ~palm_sole] = S["lower_extremity/ankle"]
    assert (site > 0).all(), "every template vertex gets a site"
    return {"site": site, "side": side, "ear": ear}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    import anny

    labels = build()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, **labels, made_by=np.array("scripts/make_template_labels.py"),
                        body_model=np.array(f"anny {getattr(anny, '__version__', '0.6.2')}, default phenotype, rest pose"),
                        made_on=np.array(datetime.date.today().isoformat()))
    counts = np.bincount(labels["site"])
    from bodymap.taxonomy import SITES

    for i, c in enumerate(counts):
        if c:
            print(f"{SITES[i].code:34s} {c:6d}")
    print("ear regions:", {EAR_REGIONS[i]: int(c) for i, c in enumerate(np.bincount(labels["ear"])) if i})


if __name__ == "__main__":
    main()
