"""Registration of the template body to a scan of unknown topology, pose, shape and placement.

Route: (1) coarse alignment: the longer of the y/z axes is up (both signs tried); the feet,
which point forward, give the facing (the trunk's thinner axis too when they disagree); short
fits from each start rank them, and the best (with a close runner-up) is fitted on from its
start and from an arm start found in the scan; a body still far from every standing start is
tried from bent, seated, kneeling and crouched starts facing each horizontal way (_pose_search);
(2) the body model's pose (major joints), phenotype and proportions (SHAPE_DETAILS), plus a
rigid placement, are fitted to the scan by gradient descent on a robust two-way nearest-point
distance (differentiable anny, CPU); an arm the fit leaves off the scan is fitted again with its
hand, wrist and elbow pulled to keypoints found on the scan (_mend_arms); (3) each scan vertex takes
the closest point on the fitted body, whose face and barycentric coordinates are the same on
the template (anny keeps one topology), giving a dense correspondence and a residual.

Scans whose shape is far from a body fail loudly (RegistrationError says why); a partial scan
(upper body only, say) still gets labels where it fits: residuals say where to trust them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from concurrent.futures import Future
from typing import Callable, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from bodymap.anatomy.poses import ELBOW_L
from bodymap.project import clean_barycentric
from bodymap.scan import Scan, vertex_normals

Progress = Callable[[str, float], None]

# Bones whose rotation is fitted (the rest keep the rest pose): enough for standing scans.
FIT_BONES = ("root", "spine03", "spine01", "neck01", "head", "clavicle.L", "clavicle.R",
             "upperarm01.L", "upperarm01.R", "lowerarm01.L", "lowerarm01.R", "wrist.L", "wrist.R",
             "upperleg01.L", "upperleg01.R", "lowerleg01.L", "lowerleg01.R", "foot.L", "foot.R")


REG = 200.0  # weight of the pull towards the rest pose (upper arms are free: scans vary most there)
# Coarse alignment: every orientation gets COARSE_RANK_STEPS steps, enough to rank them; the
# best (and the runner-up when within COARSE_KEEP of it) is brought to COARSE_STEPS, then
# fitted COARSE_STEPS more from there and from the arm start. Wrong orientations end 2-4 times
# further from the scan than the right one, so they are dropped early (most of the time saved).
STEPS = 400  # fitting steps of a registration (register's default; track's is half: TrackOptions)
COARSE_RANK_STEPS = 12
COARSE_STEPS = 30
COARSE_KEEP = 1.5
# An arm the fit leaves off the scan (limbs_off_scan >= LIMB_OFF_FAIR) gets a second body fit
# with its hand pulled towards the scan's hand (bodymap.anatomy.keypoints; _mend_arms)
# ... kept when it is closer to the scan and the arms lie less off it, or, on a whole-body scan,
# when it is under MEND_CLEAR of the first fit's mean distance
MEND_CLEAR = 0.6
# An arm still off after them is taken from another try that lays it on, or posed as one of
# these arm configurations (bodymap.anatomy.poses.ARM_CONFIGS: hands resting on the body, where
# no hand is found to pull), then the body fit's last COMBINE_ROUNDS rounds run (_combine_arms)
ARM_POSES = ("hip", "crossed", "head", "face")
COMBINE_ROUNDS = 2
MEND_RANK_ROUNDS = 3  # rounds of the body fit after which two of its tries are ranked (_mend_arms)
KEYPOINT_WEIGHT = 0.1  # per mm of the hand's distance, against the fit's mean surface distances
# A body still this far (mean distance, mm) from the best standing start is fitted from
# SEARCH_POSES too (bodymap.anatomy.poses), and one of those kept when under POSE_KEEP of it:
# when it explains the scan better at all. (0.8 until stop 45: a seated body, clinic seed 8007,
# whose seated start ended 0.86 of the standing distance, was fitted standing, level 2 0.709,
# and from the seated start 0.962. Searched starts on the development scans ended under 0.8 or
# over 1.5 of it.) The distance is a cheap first gate only; the cue that tells is the body off the
# scan beyond its arms (POSE_SEARCH_OFF). 20 mm until stop 59: a bent body faced the right way
# came 16 mm from its standing start (clinic 8906, L2 0.850 standing, 0.984 from the bent start).
# On the 46 development scans of docs/benchmarks.md (stop 59), the standing starts that lay
# POSE_SEARCH_OFF or more off beyond the arms ended 13.6-52 mm from the scan: under this gate, the
# cue decides for all of them
POSE_SEARCH_MM = 10.0
SEARCH_POSES = ("bent-forward", "seated", "kneeling", "crouched")
POSE_KEEP = 1.0
# ... and only when at least POSE_SEARCH_OFF of the standing start's body outside the arms and
# hands lies off the scan (_off_beyond_arms). Development scans (docs/benchmarks.md, stop 45):
# bodies the search fitted better 0.28-0.60; those it did not (raised, forward and crossed
# arms: FAUST 003, clinic 7105, 7803, 7805) 0.06-0.14, where it cost 15 s (FAUST 003)
POSE_SEARCH_OFF = 0.20
# The body fit proper (after the coarse alignment) also fits these of anny's local shape changes
# (MakeHuman's measurement modifiers, each in [-1, 1]): the six phenotype sliders set a body's
# size and build, not its proportions, and a limb or trunk the model has too long or too short
# moves the joints, so the template slides along a real body. FAUST tr_reg_000 (one real
# person): model within 5 mm 0.66-0.69 -> 0.69-0.73 (docs/benchmarks.md, "Shape details").
SHAPE_DETAILS = (
    "measure-upperarm-length-incr", "measure-lowerarm-length-incr", "measure-upperleg-height-incr",
    "measure-lowerleg-height-incr", "measure-neck-height-incr", "measure-napetowaist-dist-incr",
    "measure-waisttohip-dist-incr", "measure-shoulder-dist-incr", "measure-hips-circ-incr", "measure-waist-circ-incr",
    "measure-bust-circ-incr", "measure-thigh-circ-incr", "measure-calf-circ-incr", "measure-upperarm-circ-incr",
    "measure-neck-circ-incr", "torso-scale-depth-incr", "torso-scale-horiz-incr", "hip-scale-depth-incr",
    "buttocks-volume-incr", "stomach-pregnant-incr", "measure-frontchest-dist-incr")
# (the head's scale changes are left out: they moved the ear, and the ear labels with it: ear
# agreement on the five synthetic scans 0.923 -> 0.911 with them, 0.920 without)
DETAIL_REG = 1.0  # loss per unit squared change (against mean distances in mm): a change must earn its keep
# Each hand is turned about its wrist onto the scan after the body fit (refine_hands): from these
# starts (roll about the forearm, flexion, deviation; degrees), each refined by ICP
HAND_STARTS = tuple((r, f, 0.0) for r in range(0, 360, 45) for f in (-40.0, 0.0, 40.0))
HAND_ICP_ITERS = 15
HAND_SHIFT_ITERS = 30  # then ICP with translation from the best turn: the wrist may be off too
HAND_SHIFT_MM = 50.0  # ... by at most this much
HAND_EXPLAINED_MM = 12.0  # scan points this close to the rest of the fitted body are not the hand
HAND_KEEP = 0.8  # a turn is kept when the hand's distance falls under this share of the fit's
HAND_FADE_MM = 60.0  # the forearm follows the turn, fading over this length from the wrist
PARTIAL_MISSING_MM = 150.0  # ... kept only when the body it fits reaches this far past the scan
PARTIAL_CUE_MM = 15.0  # mean scan -> body distance after the coarse fit above which a partial scan is tried
# ... unless the scan stands this tall (the standing start's central column, mm): a scan as tall as
# an adult is a whole body, or lacks too little for the partial fit to explain it better. On
# development cuts of FAUST 000, 003 and clinic 9763 (the top 45, 60 and 75 % and the bottom
# 60 %), the partial fit was kept on the upper bodies 0.80-1.09 m tall and on one of the three
# 1.32-1.34 m ones (FAUST 003 cut at the knees); on the whole bodies that gave the cue (FAUST 003,
# 9763's two visits: 1.78-1.82 m) never, after 4-7 s of search. Shorter whole bodies (children,
# short adults, seated, kneeling) are still searched
PARTIAL_MAX_HEIGHT_MM = 1450.0
REST_ARM_ELEVATION = np.deg2rad(-47.0)  # anny's rest A-pose: shoulder -> wrist, below horizontal
# Quality verdicts: the share of the scan within 10 mm of the body model (before the surface
# fit, which can lay the template on anything) that a good / fair fit reaches
GOOD_WITHIN_10 = 0.90
FAIR_WITHIN_10 = 0.75
# A limb fitted into the wrong place (a crossed forearm laid on the chest, a raised arm left
# hanging) leaves the scan near the body everywhere, so the scan -> body share above passes it.
# The check runs the other way: the share of each fitted limb (shoulder to wrist, hip to
# ankle) lying more than LIMB_OUT_MM outside the scan or LIMB_IN_MM inside it. Set on the
# development cases of docs/benchmarks.md ("A per-limb check"): well-fitted limbs <= 0.07, limbs
# with wrong labels >= 0.13.
LIMB_OUT_MM, LIMB_IN_MM = 15.0, 30.0  # inside: a heavy body's thigh holds the thinner model's
LIMB_OFF_FAIR, LIMB_OFF_POOR = 0.10, 0.25
# hands and feet are left out: fingers and toes are fitted loosely and would outnumber the
# rest of the limb's vertices (1,596 of an arm's 2,141)
LIMB_SITES = {"arm": ("shoulder", "upper arm", "elbow", "forearm", "wrist"),
              "leg": ("buttock", "thigh", "knee", "lower leg", "ankle")}


class RegistrationError(ValueError):
    """The template cannot be registered to this scan (the message says why)."""

    def __init__(self, source: str | None, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}" if source else problem)


@dataclasses.dataclass
class Correspondence:
    """Dense map from a scan's vertices to the template surface.

    template_face (n,) int64 and template_bary (n, 3) float32: the template surface point of
    each scan vertex; residual_mm (n,) float32: distance from the scan vertex to the fitted
    body; fitted_vertices (13718, 3) mm: the fitted body in the scan's frame; info: fit details.
    """

    template_face: np.ndarray
    template_bary: np.ndarray
    residual_mm: np.ndarray
    fitted_vertices: np.ndarray
    info: dict

    def template_points(self, template_vertices: np.ndarray, template_faces: np.ndarray) -> np.ndarray:
        """(n, 3) mm: the template surface point of each scan vertex."""
        tri = template_vertices[template_faces[self.template_face]]
        return np.einsum("nj,njd->nd", self.template_bary.astype(np.float64), tri)


def _arm_starts(p: np.ndarray) -> tuple[float, float]:
    """Upper-arm rotations (left, right; radians about y, + lowers) that point the template's arms
    where the scan's arms are. p (k, 3): points of a z-up body facing -y, feet at z = 0.

    Each arm is what lies beside the torso above the hips; its direction from the shoulder
    (proportions of the template) gives its elevation.
    """
    H = np.ptp(p[:, 2])
    c = np.array([*p[:, :2].mean(0)])
    out = []
    for sgn in (1.0, -1.0):
        x = sgn * (p[:, 0] - c[0])
        arm = p[(x > 0.14 * H) & (p[:, 2] > 0.45 * H)]
        if len(arm) < 20:
            out.append(0.0)
            continue
        d = arm.mean(0) - np.array([c[0] + sgn * 0.1 * H, 0.0, 0.82 * H])
        elevation = np.arctan2(d[2], sgn * d[0])
        out.append(float(np.clip(REST_ARM_ELEVATION - elevation, -1.8, 0.9)))
    return out[0], out[1]


def _up_rotations(scan: Scan) -> list[np.ndarray]:
    """The two rotations (3, 3) that make the longer of the scan's y and z axes point up (+z),
    one per sign."""
    ext = np.ptp(scan.vertices, axis=0)
    base = np.eye(3) if ext[2] >= ext[1] else np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # y-up -> z-up
    return [base, np.diag([1.0, -1.0, -1.0]) @ base]


def _rot_z(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _facing_turns(p: np.ndarray) -> list[float]:
    """Turns about z (radians) that make a z-up body in points p (k, 3) face -y, best first.

    Standing people's feet point forward: the feet (lowest 3.5% of the height) lie in front of
    the ankles (6-10%) above them. When that cue is weak (under 20 mm), the opposite turn is
    offered too.
    """
    z = p[:, 2] - p[:, 2].min()
    H = np.ptp(z)
    feet, ankles = p[z < 0.035 * H, :2], p[(z > 0.06 * H) & (z < 0.10 * H), :2]
    if len(feet) >= 10 and len(ankles) >= 10:
        # only the ankles above a foot on the floor: a foot lifted into the ankle band (a leg
        # kicked out to the side) pulled the ankles' mean sideways, and the feet then pointed
        # 80-110 degrees off (clinic 8802, 8804, 8705, 8707; 8802 was then fitted facing back)
        ankles = ankles[cKDTree(feet).query(ankles)[0] < ANKLE_NEAR * H]
    if len(feet) < 10 or len(ankles) < 10:
        return [0.0, np.pi / 2, np.pi, -np.pi / 2]
    fwd = feet.mean(0) - ankles.mean(0)
    turn = np.arctan2(-fwd[0], -fwd[1])  # rotation taking fwd onto -y
    turns = [turn] if np.linalg.norm(fwd) >= 20.0 else [turn, turn + np.pi]
    # a standing body's trunk is thinner front to back than across: when the feet point more
    # than 45 degrees off the thinner axis of the hips to the chest (a foot lifted into the
    # ankle band), that axis's two facings are offered too. (Above the chest, arms raised in
    # front make the body deeper than wide.)
    trunk = p[(z > 0.45 * H) & (z < 0.7 * H), :2]
    if len(trunk) >= 10:
        _, v = np.linalg.eigh(np.cov(trunk.T))
        thin = np.arctan2(-v[0, 0], -v[1, 0])
        off = np.abs((turn - thin + np.pi / 2) % np.pi - np.pi / 2)  # angle to the axis, either way
        if off > np.pi / 4:
            turns += [thin, thin + np.pi]
    return turns


ANKLE_NEAR = 0.05  # an ankle point lies this share of the height from a foot point, horizontally

_HEIGHTS: dict = {}  # start pose -> {(age, height) logits: standing height (mm) of the body model}


START_AGES = (-2.0, -1.0, 0.0, 1.0)  # the size start's grid, anny logits (age 0: 25 years)
START_HEIGHTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
# an adult's start (age logit >= 0) may need to be shorter than the grid's shortest: anny's
# 25-year-old at height logit -2 stands 1238 mm, at -3 1165 mm
ADULT_START_HEIGHTS = (-3.0, -2.5) + START_HEIGHTS


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch on n intra-op threads inside the block, the count before it given back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_heights(fitter: "_Fitter") -> dict:
    """{(age, height) logits: the body model's standing height, mm} over the start search's grid
    (START_AGES x ADULT_START_HEIGHTS, other phenotype logits 0) in the fitter's start pose. The
    same for every scan and orientation started with hanging arms, so computed once per process
    and start pose: a registration builds 10-20 fitters, and each used to pose the model 20 times
    for this."""
    key = fitter.rotvec.detach().numpy().tobytes()
    if key not in _HEIGHTS:
        torch = fitter.torch
        heights = {}
        # on one thread: these heights only rank the starts (the last bits cannot change which),
        # and on SETUP_THREADS in a process held to one (two batch workers side by side) the 24
        # bodies stalled at every OpenMP barrier: FAUST 000's coarse fits 6 -> 14 s
        with _torch_threads(1), torch.no_grad():
            for age in START_AGES:
                for height in ADULT_START_HEIGHTS if age >= 0 else START_HEIGHTS:
                    fitter.pheno["age"].fill_(age)
                    fitter.pheno["height"].fill_(height)
                    fitter._offset = None
                    heights[(age, height)] = float(np.ptp(fitter.vertices()[:, 2].numpy()))
        if len(_HEIGHTS) > 64:  # arm starts differ from scan to scan: keep the cache small
            _HEIGHTS.clear()
        _HEIGHTS[key] = heights
        return heights  # (not read back: a fit beside this one may clear the cache meanwhile)
    return _HEIGHTS[key]


# The upper arm's turn about its own axis (the humerus's rotation) is given to its twist bone
# (upperarm02, the elbow's half of the upper-arm skin), not to upperarm01 with the rest of its
# rotation: the forearm and hand end where they did, but the skin near the shoulder no longer
# turns with the humerus, as on a real arm it barely does. FAUST (development, stop 46): the
# fit's skin turned 24-65 degrees wrong near the shoulder and 3-21 near the elbow, between poses
# whose fits differ in the humerus's turn; with the split, label consistency 0.8627 -> 0.8664
# (mean of 3 sampling seeds) and the pair map's worst p95 90-93 -> 78-87 mm. The same split of
# the forearm's turn (pronation, to lowerarm02) did not help (seed 0: p95 77.9 -> 86.1 mm).
TWIST_BONES = {"upperarm01": ("upperarm02", "lowerarm01")}  # bone: (twist child, bone its axis runs to)


def _twist_axes(labels: list) -> tuple:
    """For each TWIST_BONES bone (L, then R): its rest direction (unit, in the world-aligned
    local-ref frame the rotations live in) (n, 3), its row in FIT_BONES (n,) and its twist
    child's bone index (n,)."""
    from bodymap.anatomy.body import body_model

    H = body_model().template_bone_heads
    ax, rows, kids = [], [], []
    for b, (child, end) in TWIST_BONES.items():
        for side in "LR":
            d = H[labels.index(f"{end}.{side}")] - H[labels.index(f"{b}.{side}")]
            ax.append(d / np.linalg.norm(d))
            rows.append(FIT_BONES.index(f"{b}.{side}"))
            kids.append(labels.index(f"{child}.{side}"))
    return np.array(ax, np.float32).reshape(-1, 3), rows, kids


def _start_rotvecs(name: str) -> np.ndarray:
    """Rotation vectors (len(FIT_BONES), 3) of the named pose (bodymap.anatomy.poses.START_POSES)
    on the fitted bones (the others stay at rest)."""
    from bodymap.anatomy.poses import START_POSES

    rv = np.zeros((len(FIT_BONES), 3))
    for row, r in _bone_rotvecs(START_POSES[name]).items():
        rv[row] = r
    return rv


def _bone_rotvecs(rotations: dict) -> dict[int, np.ndarray]:
    """{row of FIT_BONES: rotation vector (3,)} of {bone name: rotation (3, 3)} (local-ref)."""
    from scipy.spatial.transform import Rotation

    return {FIT_BONES.index(bone): Rotation.from_matrix(np.asarray(rot, float)).as_rotvec()
            for bone, rot in rotations.items()}


class _Nearest:
    """Nearest-vertex queries for the fit's steps: pykdtree (a k-d tree in C, two nearest-point
    queries of a step in 10 ms against scipy's 19 ms on FAUST; the same indices up to ties in
    float32) when installed, else scipy's cKDTree. vertices (n, 3) mm, float32."""

    def __init__(self, vertices: np.ndarray):
        self._tree = _kdtree(vertices, np.float32)

    def query(self, points: np.ndarray) -> np.ndarray:
        """(k,) int64: the nearest vertex of each of points (k, 3) mm."""
        return np.asarray(self._tree.query(np.ascontiguousarray(points, np.float32))[1], np.int64)


def _kdtree(points: np.ndarray, dtype=np.float64):
    """A k-d tree over points (n, 3) mm in dtype, .query(x (k, 3)) -> (distances (k,) mm,
    indices (k,)): pykdtree's when installed (float64, the hand search's: a hand's 1,600 points
    queried in 0.39 ms against scipy's 1.2, the same indices and distances), else scipy's
    cKDTree, unbalanced (built quicker, the same nearest points; an install without pykdtree
    fits the same, slower)."""
    p = np.ascontiguousarray(points, dtype)
    try:
        from pykdtree.kdtree import KDTree
    except ImportError:
        return cKDTree(p, balanced_tree=False)
    return KDTree(p)


def _one_openmp_thread() -> None:
    """The fit's worker thread runs its OpenMP loops (pykdtree's queries) on one thread: the
    other core is the gradient's. omp_set_num_threads holds for the calling thread only."""
    import ctypes
    import importlib

    try:  # (loaded first, so that its runtime is among those set)
        importlib.import_module("pykdtree.kdtree")
    except ImportError:
        pass
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "libgomp" in line or "libomp" in line}
    except OSError:  # (not Linux: the queries take what OpenMP gives them)
        return
    for path in libs:
        try:
            ctypes.CDLL(path).omp_set_num_threads(1)
        except (OSError, AttributeError):
            pass


_POOL: dict = {}  # process id -> the fit's worker thread


def _pool():
    """One worker thread for the fit's second nearest-point query, shared by every fit of this
    process. Keyed by process: a forked child inherits the executor but not its thread, and
    would wait for ever on work given to it."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    pid = os.getpid()
    if pid not in _POOL:
        _POOL.clear()
        _POOL[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bodymap-fit",
                                        initializer=_one_openmp_thread)
    return _POOL[pid]


# A registration's torch work outside the fitting steps (building the fitters, the bodies read
# between fits) runs on SETUP_THREADS threads whatever the process's share, and the steps (and
# the start's size search, _start_heights) on one: anny's body posed with one thread and with
# two differs in the last bits, and a fit carries such a difference on, so a process held to
# one thread (a batch worker) fitted FAUST 000 up to 18 mm away from where the CLI and the GUI
# fit it. Two: the count every benchmark of this project was measured with, whose fits it keeps
# to the bit
SETUP_THREADS = 2
_SHARE = threading.local()  # .n: the process's torch threads when register() began, in its thread


def _threads() -> int:
    """The threads the current registration's fits may use: the process's torch threads when
    register() began (a batch worker: one), read in register's thread; elsewhere torch's own
    count (a fit beside another, _side_by_side: one)."""
    import torch

    return getattr(_SHARE, "n", None) or torch.get_num_threads()


def _side_by_side(tasks: list) -> list:
    """Run independent fits side by side: tasks, callables that each fit their own _Fitter (the
    coarse starts, the partial scan's orientations, the pose search's starts); returns their
    results in order. Over the process's torch threads (two cores: two fits at once), each fit
    with torch and OpenMP on one thread, as a fit runs anyway (_Fitter.fit); one after another
    in a one-thread process (a batch worker). The same fits either way, to the bit (test): a
    fit shares nothing with another, and the fitters are built beforehand in the calling thread,
    as before (anny's body posed with two threads and with one differs in the last bits, which a
    fit carries on: built in the workers, FAUST 000's fit ended up to 18 mm elsewhere). Most of
    a step's time is in torch's operators and the tree queries, which let go of the GIL: the
    partial scan's eight orientations (clinic 9763) took 4.9 s one after another, 2.8 s two at
    a time."""
    from concurrent.futures import ThreadPoolExecutor

    n = _threads()
    if n < 2 or len(tasks) < 2:
        return [t() for t in tasks]
    with _torch_threads(1):
        ex = ThreadPoolExecutor(min(n, len(tasks)), thread_name_prefix="bodymap-fits", initializer=_one_openmp_thread)
        try:
            futures = [ex.submit(t) for t in tasks]
            return [f.result() for f in futures]
        finally:
            # a cancel raised in one fit (the progress callback) drops those not started; those
            # running stop at their next tick, which raises too
            ex.shutdown(wait=True, cancel_futures=True)


class Keypoint(NamedTuple):
    """A pull on the fitted body: the mean of model vertices idx (k,) belongs at target (3,) mm
    (torch tensors). arm_only: it moves the arm's bones alone (_Fitter.keypoint_grad); to_end: it
    pulls in the body fit's last rounds too, which otherwise leave the body to the surface."""

    idx: object
    target: object
    arm_only: bool = False
    to_end: bool = False


class _Fitter:
    """Fits anny's pose and phenotype to scan points already roughly in the template frame."""

    def __init__(self, points: np.ndarray, scan_vertices: np.ndarray, arms: tuple[float, float] = (0.0, 0.0),
                 partial: bool = False, tick: Callable[[], None] | None = None, start: str | None = None,
                 adult: bool = False):
        import torch

        from bodymap.anatomy.body import body_model

        self.torch = torch
        bm = body_model()
        self.model = bm._model
        self.labels = bm.bone_labels
        self.fit_idx = torch.tensor([self.labels.index(b) for b in FIT_BONES])
        # the twist bones (TWIST_BONES), once: their rest axes and rows, and every bone posed
        axes, rows, kids = _twist_axes(self.labels)
        self._twist_axes, self._twist_rows = torch.as_tensor(axes), torch.tensor(rows, dtype=torch.long)
        self._posed_idx = torch.cat([self.fit_idx, torch.tensor(kids, dtype=torch.long)])
        self.points = torch.as_tensor(points, dtype=torch.float32)
        self.scan_vertices = torch.as_tensor(scan_vertices, dtype=torch.float32)
        self.tree = _Nearest(scan_vertices)
        self.faces = torch.as_tensor(bm.faces)
        self._faces_flat = self.faces.reshape(-1)
        z = points[:, 2]
        # standing height: the top of the central column (raised hands lie off to the sides)
        central = np.hypot(*(points[:, :2] - np.median(points[:, :2], axis=0)).T) < 120.0
        self.height = float(z[central].max() - z.min()) if central.sum() > 50 else float(np.ptp(z))
        rv = torch.zeros(len(FIT_BONES), 3)
        # upper arms start at the given rotations about y (left lowers with +, right with -)
        rv[FIT_BONES.index("upperarm01.L"), 1], rv[FIT_BONES.index("upperarm01.R"), 1] = arms[0], -arms[1]
        if start is not None:  # a named pose (bodymap.anatomy.poses.START_POSES) instead
            rv = torch.as_tensor(_start_rotvecs(start), dtype=torch.float32)
        self.start = start
        # the pull towards the rest pose pulls towards the start pose instead: a seated start
        # must not be pulled back to standing
        self._rest = rv.clone()
        self.rotvec = rv.requires_grad_(True)
        self._reg_mask = torch.ones(len(FIT_BONES), 1)
        self._reg_mask[[0, FIT_BONES.index("upperarm01.L"), FIT_BONES.index("upperarm01.R")]] = 0.0
        # the elbows' flexion axes (rows of the forearms; the right mirrors the left): in the body
        # fit the pull towards the rest pose leaves an elbow's flexion free (body_fit_on)
        self._flexion = torch.zeros(len(FIT_BONES), 3)
        e = torch.as_tensor(ELBOW_L / np.linalg.norm(ELBOW_L), dtype=torch.float32)
        self._flexion[FIT_BONES.index("lowerarm01.L")] = e
        self._flexion[FIT_BONES.index("lowerarm01.R")] = e * torch.tensor([1.0, -1.0, -1.0])
        self._arm_rows = torch.tensor([[1.0] if b.startswith(("clavicle", "upperarm", "lowerarm", "wrist")) else [0.0]
                                       for b in FIT_BONES])
        self.trans = torch.tensor([*points[:, :2].mean(0), z.min()], dtype=torch.float32, requires_grad=True)
        self.pheno = {k: torch.zeros(1, requires_grad=True) for k in self.model.phenotype_labels}  # logits
        # local shape changes (SHAPE_DETAILS; tanh of these), fitted only once details_on is set
        self.detail = torch.zeros(1, len(SHAPE_DETAILS), requires_grad=True)
        self.details_on = False  # set by body_fit_on
        self.body_fit = False  # ... and this
        self._held = None  # the held shape's posing (shape_fixed; bodymap.anatomy.posing), once built
        self.shape_fixed = False  # phenotype and details held (_mend_arms' tries and combined fit, _fit_pose)
        self._offset = None
        self.p2p = 0.05  # weight of point-to-point against point-to-plane distance
        self.partial = partial
        self.keypoints: list[Keypoint] = []
        self.tick = tick  # called every few steps: a progress callback may raise there to cancel
        self.scan_to_body_mm = np.inf
        self.child_start = None  # whether the size search started a child (None: no size search)
        if partial:  # an upper-body scan: an average adult, its head top at the scan's top
            with torch.no_grad():
                top = float(self.vertices()[:, 2].max())
                self.trans[2] += float(z.max()) - top
        else:
            self._init_size(adult)
        self.adult = adult

    def _init_size(self, adult: bool = False) -> None:
        """Start from a body of the scan's height: a small search over anny's age and height
        (age sets a child's size, height an adult's). adult: among adult ages only (age logit
        >= 0), whatever the height (a short adult, not a child of that height)."""
        torch = self.torch
        best = None
        for (age, height), h in _start_heights(self).items():
            if (adult and age < 0) or (not adult and height not in START_HEIGHTS):
                continue
            cost = abs(h - self.height) + 20.0 * (abs(age) + abs(height))  # prefer the average body
            if best is None or cost < best[0]:
                best = (cost, age, height)
        with torch.no_grad():
            self.pheno["age"].fill_(best[1])
            self.pheno["height"].fill_(best[2])
        self._offset = None
        self.child_start = best[1] < 0  # (register then tries an adult's start beside it)

    @property
    def shape_fixed(self) -> bool:
        """Whether the phenotype and shape details are held (only the pose and place fitted)."""
        return self._shape_fixed

    @shape_fixed.setter
    def shape_fixed(self, held: bool) -> None:
        self._shape_fixed = bool(held)
        self._held = None  # (computed again from the shape as it is when next needed)

    def state(self) -> list:
        """A copy of everything the fit changes (restore() puts it back)."""
        return [self.rotvec.detach().clone(), self.trans.detach().clone(),
                {k: v.detach().clone() for k, v in self.pheno.items()}, self.detail.detach().clone()]

    def restore(self, state: list) -> None:
        with self.torch.no_grad():
            self.rotvec.copy_(state[0])
            self.trans.copy_(state[1])
            for k, v in state[2].items():
                self.pheno[k].copy_(v)
            self.detail.copy_(state[3])
        self._held = None

    def body_fit_on(self) -> None:
        """From here on (the body fit, after the coarse alignment): fit SHAPE_DETAILS too, and
        leave each elbow's flexion (about poses.ELBOW_L) out of the pull towards the rest pose.
        Pulled, a bent elbow cost more than the upper arm's rotations (free of the pull), and the
        fit held elbows short of their bend: FAUST 001's at 57-60 degrees, now 78-82, its labels
        then disagreeing with the other poses' on 0.036 of its vertices, not 0.059. Free from the
        start, the coarse fits laid crossed forearms less well (clinic 8201, arms crossed: level 2
        0.938 -> 0.917; from the body fit on, 0.939)."""
        self.body_fit = True
        self.details_on = bool(SHAPE_DETAILS)

    def vertices(self):
        """Current fitted body vertices (13718, 3) mm as a torch tensor."""
        from bodymap.anatomy.posing import HeldPosing, twist_to_child

        torch = self.torch
        R = twist_to_child(self.rotvec, self._twist_axes, self._twist_rows)  # (posed bones, 3, 3)
        ph = {k: torch.sigmoid(v) for k, v in self.pheno.items()}
        model, local = self.model, None
        if self.details_on:  # (set by register only when SHAPE_DETAILS is not empty)
            from bodymap.anatomy.body import body_model

            model, local = body_model().detail_model(SHAPE_DETAILS), torch.tanh(self.detail)
        if self.shape_fixed:
            # the shape is held: its rest body once, without gradient, and each step only the
            # posing of its posed bones (bodymap.anatomy.posing). anny's forward recomputes the
            # rest body from the blend shapes every call and back-propagates through it, and
            # poses all 104 bones of its rig: the body and its gradient 29.8 ms a step with the
            # shape free, 10-12.6 held in anny's rig, 4.3 ms held here (one thread). The same
            # vertices as the full forward to float32 rounding (test)
            if self._held is None:
                with torch.no_grad():
                    _, phen, changes, expressions = model.get_tensor_inputs(None, ph, local, None)
                    coeffs = model._get_phenotype_blendshape_coefficients(phen, changes, expressions)
                    self._held = HeldPosing(model, model.get_rest_model(coeffs), self._posed_idx)
            v = self._held.vertices(R)
        else:
            nb = len(self.labels)
            k = len(self._posed_idx)
            pose = torch.eye(4).repeat(1, nb, 1, 1)
            pose = pose.index_put((torch.zeros(k, dtype=torch.long), self._posed_idx),
                                  torch.cat([torch.cat([R, torch.zeros(k, 3, 1)], 2),
                                             torch.tensor([[[0.0, 0, 0, 1]]]).repeat(k, 1, 1)], 1))
            v = model(pose_parameters=pose, phenotype_kwargs=ph, local_changes_kwargs=local)["vertices"][0]
        v = v * 1000.0
        if self._offset is None:  # the initial body: feet on the floor, centred like the points
            self._offset = torch.cat([v[:, :2].mean(0), v[:, 2:].min(0).values]).detach()
        return v - self._offset + self.trans

    def keypoint_grad(self, v):
        """(len(FIT_BONES), 3) torch: the gradient of the arm-only keypoints' pull (each one's
        mean vertex towards its target, KEYPOINT_WEIGHT per mm) on the bone rotations of the arms
        (clavicle to wrist), zero on every other parameter. The arm's rings are such: pulled
        through the trunk too, their rough targets (a slanted ring's centre) shifted its skin
        along the scan (FAUST 003's median correspondence error 4.5 -> 16.7 mm with rings at the
        elbow). v: the current vertices (13718, 3) with their graph (kept)."""
        torch = self.torch
        kp = sum(KEYPOINT_WEIGHT * (v[k.idx].mean(0) - k.target).norm() for k in self.keypoints if k.arm_only)
        return torch.autograd.grad(kp, self.rotvec, retain_graph=True)[0] * self._arm_rows

    def _normals(self, v):
        """Unit vertex normals (n, 3) of the body v (torch), area-weighted, without gradient."""
        torch = self.torch
        v = v.detach()
        f = self.faces
        # the corners gathered once, in one flat index_select (a step's normals 1.5 -> 1.1 ms;
        # the same numbers to the bit as gathering each corner apart, twice the first)
        e = v.index_select(0, self._faces_flat).view(-1, 3, 3)
        a = e[:, 0]
        fn = torch.cross(e[:, 1] - a, e[:, 2] - a, dim=1)
        n = torch.zeros_like(v).index_add_(0, f[:, 0], fn).index_add_(0, f[:, 1], fn).index_add_(0, f[:, 2], fn)
        return n / n.norm(dim=1, keepdim=True).clamp_min(1e-9)

    def fit(self, steps: int, lr: float = 0.03, cap_mm: float = 60.0, lag: bool = False) -> float:
        """Gradient steps on the robust two-way distance; returns the final mean distance (mm).
        lag: pair body and scan by the body of the step before, so that the nearest-point
        queries run beside the gradient (the body fit's small steps); otherwise by the current
        body (the coarse fits: their large first steps, paired by a body a step old, ended FAUST
        003 in a closer but wrong fit on two sampling seeds of three)."""
        # torch on one thread: the fit's tensors are small, so a second OpenMP thread only spins
        # at the barriers (28.5 s wall either way, 46.7 s of CPU with two threads, 28.4 with one),
        # taking the core a second batch worker or the GUI needs. The nearest-point queries, a
        # third of the fit's time, run beside the gradient when the process has two threads (a
        # batch worker has one; see _fit)
        workers = _threads()  # (read before the block: inside it torch's own count reads one)
        with _torch_threads(1):
            return self._fit(steps, lr, cap_mm, workers=workers, lag=lag)

    def _fit(self, steps: int, lr: float, cap_mm: float, workers: int, lag: bool) -> float:
        torch = self.torch
        params = [self.rotvec, self.trans, *self.pheno.values()]
        opt = torch.optim.Adam([{"params": [self.rotvec], "lr": lr},
                                {"params": [self.trans], "lr": lr * 100},
                                {"params": list(self.pheno.values()), "lr": 0.0 if self.shape_fixed else lr * 3},
                                {"params": [self.detail], "lr": lr * 3 if self.details_on and not self.shape_fixed else 0.0}])
        loss_val = np.inf
        pairs = None
        for it in range(steps):
            opt.zero_grad()
            v = self.vertices()
            vn = v.detach().numpy().copy()
            # with lag (the body fit), each step pairs the body with the scan by the nearest
            # points of the body one step before (the first step, of its own): a step moves the
            # body by a few mm at most, and the queries (with scipy's trees, 16 ms of a 35 ms
            # step at 300k faces; _Nearest) then run on a second core beside this step's
            # gradient and the next one's body, instead of between them. Without a second core
            # (a batch worker) they run here, on the same bodies: the same fit
            if pairs is None or not lag:
                pairs = self._pairs(vn, False)
            i_ms, i_sm = pairs.result()
            if lag:
                pairs = self._pairs(vn, workers > 1)
            n = self._normals(v)
            if self.tick is not None and it % 10 == 9:
                self.tick()
            # point-to-plane with a little point-to-point: sliding along the surface is free,
            # so sparse samples do not pull the body towards themselves
            da = v - self.scan_vertices[i_ms]
            db = v[i_sm] - self.points
            a = ((da * n).sum(1) ** 2 + self.p2p * (da ** 2).sum(1) + 1e-6).sqrt()
            b = ((db * n[i_sm]).sum(1) ** 2 + self.p2p * (db ** 2).sum(1) + 1e-6).sqrt()
            # robust: far pairs (holes, missing parts, wrong limb) pull little
            rho = lambda d: cap_mm * torch.log1p(d / cap_mm)  # noqa: E731
            if self.partial:  # body parts the scan lacks are not pulled onto it
                w = (a.detach() < 40.0).float()
                loss_a = (rho(a) * w).sum() / w.sum().clamp_min(1.0)
            else:
                loss_a = rho(a).mean()
            pull = (self.rotvec - self._rest) * self._reg_mask
            if self.body_fit:  # the elbows bend freely (body_fit_on)
                pull = pull - (pull * self._flexion).sum(1, keepdim=True) * self._flexion
            loss = loss_a + rho(b).mean() + REG * (pull ** 2).mean()
            if self.details_on:
                loss = loss + DETAIL_REG * (torch.tanh(self.detail) ** 2).sum()
            for k in self.keypoints:
                if not k.arm_only:
                    loss = loss + KEYPOINT_WEIGHT * (v[k.idx].mean(0) - k.target).norm()
            kp_grad = self.keypoint_grad(v) if any(k.arm_only for k in self.keypoints) else None
            loss.backward()
            if kp_grad is not None:
                self.rotvec.grad += kp_grad
            opt.step()
            loss_val = 0.5 * (float(a.detach().mean()) + float(b.detach().mean()))
            self.scan_to_body_mm = float(b.detach().mean())
        if pairs is not None:
            pairs.result()  # (a fit never leaves work running behind it)
        del params
        return loss_val

    def _pairs(self, vn: np.ndarray, beside: bool) -> Future:
        """The nearest points between body vn (n, 3) mm and the scan: (model -> scan (n,),
        scan -> model (k,)) indices, from a Future; on the fit's second thread when beside."""

        def query():
            i_ms = self.tree.query(vn)
            i_sm = _Nearest(vn).query(self.points.numpy())  # (the body moved: a new tree each step)
            return i_ms, i_sm

        if beside:
            return _pool().submit(query)
        done = Future()
        done.set_result(query())
        return done


def _kabsch(a: np.ndarray, b: np.ndarray, translate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3, 3) and translation (3,) that best map points a (k, 3) onto b (k, 3);
    translate False: the best rotation about the origin (translation zero)."""
    ca, cb = (a.mean(0), b.mean(0)) if translate else (np.zeros(3), np.zeros(3))
    U, _, Vt = np.linalg.svd((a - ca).T @ (b - cb))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, cb - R @ ca


def refine_ears(fitted: np.ndarray, scan_vertices: np.ndarray, iters: int = 20) -> np.ndarray:
    """Fitted body vertices (13718, 3) with each ear moved rigidly (ICP) onto the scan's ear.

    The whole-body fit leaves the ears a few mm off, which is most of an ear sub-region; a local
    rigid alignment of the template ear to the scan points around it fixes that. Skin around
    the ear follows with a weight fading from 1 to 0 between 20 and 40 mm from the ear.
    """
    from bodymap.anatomy.template import load_template

    t = load_template()
    out = fitted.copy()
    tree = cKDTree(scan_vertices)
    for sgn in (1.0, -1.0):
        ear = np.flatnonzero((t.ear > 0) & (np.sign(t.vertices[:, 0]) == sgn))
        c = fitted[ear].mean(0)
        near = np.asarray(tree.query_ball_point(c, 70.0), dtype=np.int64)
        if len(near) < 50:  # no ear on this scan (partial scan, hole)
            continue
        local = cKDTree(scan_vertices[near])
        src = fitted[ear].copy()
        R_all, t_all = np.eye(3), np.zeros(3)
        for _ in range(iters):
            d, j = local.query(src)
            keep = d < np.percentile(d, 90) + 1e-9  # drop the worst pairs
            R, tr = _kabsch(src[keep], scan_vertices[near][j[keep]])
            src = src @ R.T + tr
            R_all, t_all = R @ R_all, R @ t_all + tr
        dist = np.linalg.norm(fitted - c, axis=1)
        w = np.clip((40.0 - dist) / 20.0, 0.0, 1.0)[:, None]
        out = out * (1 - w) + (fitted @ R_all.T + t_all) * w
        out[ear] = fitted[ear] @ R_all.T + t_all
    return out


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by angle (radians) about the unit axis (3,)."""
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def refine_hands(fitted: np.ndarray, scan_vertices: np.ndarray, log: dict | None = None) -> np.ndarray:
    """Fitted body vertices (13718, 3) mm with each hand turned about its wrist onto the scan's hand.

    The body fit descends from the rest pose's hand, and a hand lies in many ways at the end of
    a forearm (flat on the thigh, palm in, on edge): it stops at the nearest of them, and a hand
    turned the wrong way puts fingers where the palm is. So each hand is searched over
    HAND_STARTS rotations about the wrist (roll about the forearm, flexion, deviation), each
    refined by rotation-only ICP about the wrist, and scored by the trimmed two-way distance
    to the scan points around the hand that the rest of the fitted body does not explain; the
    best turn is then refined with translation too (the wrist itself may be off: up to
    HAND_SHIFT_MM). The result is kept when it brings that distance under HAND_KEEP of the hand
    as fitted; the forearm follows with a weight fading from the wrist. scan_vertices (n, 3)
    mm. log gets per side the distances before and after (mm), the move and whether kept.
    FAUST, 12 pose pairs: median correspondence error of hand vertices 7-85 -> 4-21 mm.
    """
    from bodymap import taxonomy as tx
    from bodymap.anatomy.template import load_template

    t = load_template()
    l2 = tx.level_lut(2)[t.site]
    names = [s.name for s in tx.SITES]
    out = fitted.copy()
    tree = cKDTree(scan_vertices)  # (its ball queries; the nearest-point queries use _kdtree's trees)
    nearest = _kdtree(scan_vertices)
    for k, side in ((1, "left"), (2, "right")):
        hand = np.flatnonzero((l2 == names.index("hand")) & (t.side == k))
        arm = (tx.level_lut(1)[t.site] == names.index("upper extremity")) & (t.side == k)
        pivot = fitted[(l2 == names.index("wrist")) & (t.side == k)].mean(0)
        elbow = fitted[(l2 == names.index("elbow")) & (t.side == k)].mean(0)
        axis = (pivot - elbow) / max(np.linalg.norm(pivot - elbow), 1e-9)
        reach = float(np.linalg.norm(fitted[hand] - pivot, axis=1).max()) + 20.0
        near = np.asarray(tree.query_ball_point(pivot, reach), dtype=np.int64)
        # the scan's hand: points near the wrist that the fitted body without this hand leaves
        # unexplained (a palm pressed on the thigh is lost; its back and fingers remain)
        others = np.ones(len(fitted), bool)
        others[hand] = False
        d_other = _kdtree(fitted[others]).query(scan_vertices[near])[0]
        target = scan_vertices[near[d_other > HAND_EXPLAINED_MM]]
        if len(target) < 50:
            continue
        local = _kdtree(target)
        src = fitted[hand] - pivot

        def score(h: np.ndarray) -> float:
            a = np.minimum(nearest.query(h + pivot)[0], 30.0)  # the hand on the scan (anywhere)
            b = np.minimum(_kdtree(h + pivot).query(target)[0], 30.0)  # the scan's hand covered
            return 0.5 * (np.mean(np.sort(a)[: int(0.9 * len(a))]) + np.mean(np.sort(b)[: int(0.9 * len(b))]))

        before = score(src)
        best = (before, np.eye(3), np.zeros(3))
        side_axis = np.cross(axis, np.eye(3)[np.argmin(np.abs(axis))])  # any axis across the forearm
        side_axis /= np.linalg.norm(side_axis)
        third = np.cross(axis, side_axis)
        def icp(R_all: np.ndarray, iters: int, translate: bool) -> tuple[np.ndarray, np.ndarray]:
            """src turned by R_all, then ICP (trimmed to the closer 80 % of pairs) about the
            wrist, or with translation: (the hand relative to the pivot (h, 3), R_all)."""
            h = src @ R_all.T
            for _ in range(iters):
                d, j = local.query(h + pivot)
                keep = d < np.percentile(d, 80) + 1e-9
                R, tr = _kabsch(h[keep], target[j[keep]] - pivot, translate)
                h, R_all = h @ R.T + tr, R @ R_all
            return h, R_all

        for roll, flex, dev in HAND_STARTS:
            Rs = _rotation(third, np.deg2rad(dev)) @ _rotation(side_axis, np.deg2rad(flex)) @ _rotation(axis, np.deg2rad(roll))
            h, R_all = icp(Rs, HAND_ICP_ITERS, translate=False)
            s = score(h)
            if s < best[0]:
                best = (s, R_all, np.zeros(3))
        if HAND_SHIFT_ITERS and best[0] < before:  # the best turn, then the wrist may move a little too
            h, R_all = icp(best[1], HAND_SHIFT_ITERS, translate=True)
            move = h.mean(0) - (src @ R_all.T).mean(0)
            s = score(h)
            if np.linalg.norm(move) <= HAND_SHIFT_MM and s < best[0]:
                best = (s, R_all, move)
        kept = best[0] < HAND_KEEP * before
        if log is not None:
            log[side] = {"before_mm": round(float(before), 1), "after_mm": round(float(best[0]), 1),
                         "moved_mm": round(float(np.linalg.norm(best[2])), 1), "kept": bool(kept)}
        if not kept:
            continue
        R_all, move = best[1], best[2]
        # along the forearm: 1 beyond the wrist, fading to 0 HAND_FADE_MM towards the elbow
        along = (fitted - pivot) @ axis
        w = np.clip(1.0 + along / HAND_FADE_MM, 0.0, 1.0)
        w[np.linalg.norm(fitted - pivot, axis=1) > reach] = 0.0
        w[~arm] = 0.0  # (a thigh the hand rests on stays)
        w[hand] = 1.0
        turned = (fitted - pivot) @ R_all.T + pivot + move
        out = out * (1 - w[:, None]) + turned * w[:, None]
    return out


def _lacks_part(fitter: _Fitter, points: np.ndarray) -> bool:
    """Whether the fitter's body (feet-to-head along z) reaches more than PARTIAL_MISSING_MM
    below or above the scan points (k, 3) mm, in the fitter's frame: the scan lacks a part."""
    with fitter.torch.no_grad():
        z = fitter.vertices().numpy()[:, 2]
    return bool(points[:, 2].min() - z.min() > PARTIAL_MISSING_MM or z.max() - points[:, 2].max() > PARTIAL_MISSING_MM)


def _partial_search(scan: Scan, pts: np.ndarray, sv: np.ndarray, tick: Callable[[], None] | None = None):
    """Best partial-body fit over both up signs and four facings: (fitter, R (3, 3), offset (3,)).
    pts (k, 3) surface samples and sv (s, 3) vertices of the scan, mm, in the scan's frame."""
    tries = []
    for U in _up_rotations(scan):
        for turn in (0.0, np.pi / 2, np.pi, -np.pi / 2):
            R = _rot_z(turn) @ U
            p = pts @ R.T
            offset = np.array([*p[:, :2].mean(0), p[:, 2].min()])
            tries.append((_Fitter(p - offset, sv @ R.T - offset, partial=True, tick=tick), R, offset))
    # a few steps rank the orientations; only the best goes on
    _side_by_side([lambda f=f: f.fit(12, lr=0.012) for f, _, _ in tries])
    best = None
    for f, R, offset in tries:
        if best is None or f.scan_to_body_mm < best[0].scan_to_body_mm:
            best = (f, R, offset)
    best[0].fit(48, lr=0.012)
    return best


# ----------------------------------------------------------------------------- surface fit

def _umbrella(n: int, f: np.ndarray):
    """(n, n) sparse uniform Laplacian I - D^-1 A of a triangle mesh."""
    import scipy.sparse as sp

    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    A.data[:] = 1.0
    deg = np.asarray(A.sum(1)).ravel()
    return sp.identity(n, format="csr") - sp.diags(1.0 / np.maximum(deg, 1)) @ A


SURFACE_HOLD = 1e-6  # surface_fit's pull to the fitted body: far under the Laplacian's over a body's length


def surface_fit(body: np.ndarray, faces: np.ndarray, scan_vertices: np.ndarray, scan_normals: np.ndarray,
                schedule=((30.0, 25.0), (10.0, 15.0), (3.0, 10.0), (1.0, 8.0))) -> np.ndarray:
    """The fitted body (n, 3) mm moved onto the scan by a smooth displacement field.

    Each round pairs every body vertex with its closest scan vertex (s, 3) when they lie within
    the round's distance and their normals (scan_normals (s, 3)) agree, targets the foot of the
    vertex on the scan's tangent plane there (so the surface may slide along itself: only the
    gap across it is closed), and solves  min sum w |x - q|^2 + lam |L (x - body)|^2  (L: the
    mesh's uniform Laplacian; lam and the distance shrink each round). Vertices without a
    partner (holes, a part the scan lacks) follow their neighbours smoothly; a separate part of
    the mesh with no partner at all (an eye behind a hand held to the face) stays where the body
    fit put it.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    n = len(body)
    L = _umbrella(n, faces)
    K = (L.T @ L).tocsc()
    tree = cKDTree(scan_vertices)
    x = body.copy()
    Kb = K @ body
    for lam, tau in schedule:
        nx = vertex_normals(x, faces)
        d, j = tree.query(x)
        ok = (d < tau) & ((nx * scan_normals[j]).sum(1) > 0.5)
        sn = scan_normals[j]
        q = x - ((x - scan_vertices[j]) * sn).sum(1, keepdims=True) * sn
        w = ok.astype(np.float64)
        # + SURFACE_HOLD |x - body|^2: the Laplacian cannot place a part of the mesh none of whose
        # vertices is paired (anny's eyes and teeth are separate parts): the system was singular
        # there, and an eye of clinic 9004 (hands to the face) was solved 6.7 m off the body
        solve = splu((sp.diags(w + SURFACE_HOLD) + lam * K).tocsc())
        x = solve.solve((w[:, None] * q + SURFACE_HOLD * body) + lam * Kb)
    return x


# ----------------------------------------------------------------------------- correspondence

def closest_compatible(points: np.ndarray, normals: np.ndarray, body: np.ndarray, faces: np.ndarray,
                       k: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest point of the body surface (body (n, 3), faces) to each point (p, 3) whose
    normal agrees with the point's own (normals (p, 3)): face (p,), bary (p, 3), distance (p,) mm.

    The plain closest point is kept where its face faces the same way as the point; elsewhere
    (a hand resting on the thigh: the thigh is closest, but faces the palm) the nearest of the k
    closest body vertices whose normal agrees is taken, as that vertex's corner of a face.
    """
    import gpytoolbox as gp

    sqd, I, Lb = gp.squared_distance(points, body, F=faces, use_cpp=True, use_aabb=True)
    I = np.asarray(I, np.int64).ravel()
    B = clean_barycentric(Lb)
    dist = np.sqrt(np.asarray(sqd).ravel())
    fn = np.cross(body[faces[:, 1]] - body[faces[:, 0]], body[faces[:, 2]] - body[faces[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    bad = np.flatnonzero((fn[I] * normals).sum(1) < 0.0)
    if len(bad):
        vn = vertex_normals(body, faces)
        dk, vk = cKDTree(body).query(points[bad], k=k)
        agree = (vn[vk] * normals[bad][:, None]).sum(2) > 0.2
        has = agree.any(1)
        first = np.argmax(agree, axis=1)
        rows = bad[has]
        v = vk[has, first[has]]
        # a face with that vertex as a corner, the point at that corner
        corner_face = np.full(len(body), -1, np.int64)
        corner_slot = np.zeros(len(body), np.int64)
        for c in range(3):
            corner_face[faces[:, c]] = np.arange(len(faces))
            corner_slot[faces[:, c]] = c
        I[rows] = corner_face[v]
        B[rows] = np.eye(3)[corner_slot[v]]
        dist[rows] = dk[has, first[has]]
    return I, B, dist


# ----------------------------------------------------------------------------- quality

def limbs_off_scan(body: np.ndarray, scan: Scan, partial: bool = False) -> dict[str, float]:
    """How far each fitted limb lies from the scan: {"left arm": share, ...} over left / right
    arm and leg (shoulder to wrist, hip to ankle), the share of the limb's template vertices of
    ``body`` (13718, 3) mm, the fitted body model, more than LIMB_OUT_MM outside the scan's
    surface or LIMB_IN_MM inside it (inside: behind the closest scan face's normal).

    partial: the scan shows part of the body, so only the limb's vertices within the scan's
    bounds count, and a limb with under a quarter of them there is left out (not scanned).
    """
    from bodymap import taxonomy as tx
    from bodymap.anatomy.template import load_template

    t = load_template()
    off = _off_scan(body, scan)
    lo, hi = scan.bounds
    seen = (np.all((body >= lo - LIMB_OUT_MM) & (body <= hi + LIMB_OUT_MM), axis=1) if partial
            else np.ones(len(body), bool))
    l2 = tx.level_lut(2)[t.site]
    names = [s.name for s in tx.SITES]
    out = {}
    for limb, sites in LIMB_SITES.items():
        on = np.isin(l2, [names.index(n) for n in sites])
        for k, side in ((1, "left"), (2, "right")):
            m = on & (t.side == k)
            if seen[m].mean() >= 0.25:
                out[f"{side} {limb}"] = round(float(off[m & seen].mean()), 4)
    return out


def _off_scan(body: np.ndarray, scan: Scan) -> np.ndarray:
    """(n,) bool: which vertices of ``body`` (n, 3) mm lie more than LIMB_OUT_MM outside the
    scan's surface or LIMB_IN_MM inside it (inside: behind the closest scan face's normal)."""
    d2, face, _ = scan.closest_points(body)
    d, face = np.sqrt(np.asarray(d2).ravel()), np.asarray(face).ravel()
    tri = scan.vertices[scan.faces[face]]
    # the side of the closest face's plane: at > 15 mm the plane and the surface agree
    inside = np.einsum("nd,nd->n", body - tri.mean(1), scan.face_normals[face]) < 0
    return np.where(inside, d > LIMB_IN_MM, d > LIMB_OUT_MM)


def _off_beyond_arms(body: np.ndarray, scan: Scan) -> float:
    """The share of the fitted body's (13718, 3) mm template vertices off the scan (_off_scan)
    outside the arms and hands: what a different trunk or leg pose could bring onto it."""
    from bodymap import taxonomy as tx
    from bodymap.anatomy.template import load_template

    t = load_template()
    rest = ~np.isin(tx.macro_lut()[t.site], [tx.MACRO.index(m) for m in ("arm", "hand", "other")])
    return float(_off_scan(body[rest], scan).mean())


def fit_quality(residual_mm: np.ndarray, model_residual_mm: np.ndarray, site_l1: np.ndarray,
                coverage: float, partial: bool, limbs_off: dict[str, float] | None = None) -> dict:
    """The fit-quality report of one registration (JSON-ready).

    residual_mm (n,): each scan vertex's distance to the final fitted surface;
    model_residual_mm (n,): to the body model before the surface fit (how well a human body
    explains the scan: the surface fit can lay the template on anything, so the verdict reads
    this one); site_l1 (n,) level-1 site index of each vertex; coverage: share of the body's
    surface with scan within 15 mm; limbs_off: limbs_off_scan. verdict "good" / "fair" /
    "poor", the worse of the scan's share and the worst limb, and a sentence saying why.
    """
    from bodymap import taxonomy as tx

    within = lambda r, t: round(float(np.mean(r <= t)), 4) if len(r) else None  # noqa: E731
    per = {}
    for s in np.unique(site_l1):
        m = site_l1 == s
        per[tx.SITES[int(s)].name] = {"vertices": int(m.sum()), "within_5mm": within(residual_mm[m], 5.0),
                                      "within_10mm": within(residual_mm[m], 10.0),
                                      "model_within_10mm": within(model_residual_mm[m], 10.0)}
    w10 = float(np.mean(model_residual_mm <= 10.0))
    worst = min(per.items(), key=lambda kv: kv[1]["model_within_10mm"])[0] if per else None
    if w10 >= GOOD_WITHIN_10:
        verdict, why = "good", f"{w10:.0%} of the scan lies within 10 mm of the fitted body"
    elif w10 >= FAIR_WITHIN_10:
        verdict, why = "fair", (f"only {w10:.0%} of the scan lies within 10 mm of the fitted body "
                                f"(worst: {worst}); check the regions there")
    else:
        verdict, why = "poor", (f"only {w10:.0%} of the scan lies within 10 mm of the fitted body "
                                f"(worst: {worst}): regions and tracking here are unreliable")
    limbs_off = limbs_off or {}
    if limbs_off:
        limb, share = max(limbs_off.items(), key=lambda kv: kv[1])
        rank = ("good", "fair", "poor")
        limb_verdict = "poor" if share >= LIMB_OFF_POOR else "fair" if share >= LIMB_OFF_FAIR else "good"
        if limb_verdict != "good":
            sentence = f"the fitted body's {limb} lies off the scan ({share:.0%} of it): its regions may be wrong"
            why = (f"{w10:.0%} of the scan lies within 10 mm of the fitted body, but {sentence}" if verdict == "good"
                   else f"{why}; {sentence}")
            verdict = max(verdict, limb_verdict, key=rank.index)
    if partial:
        why += f"; a partial scan (it shows {coverage:.0%} of the body)"
    return {"verdict": verdict, "reason": why, "within_5mm": within(residual_mm, 5.0),
            "within_10mm": within(residual_mm, 10.0), "model_within_5mm": within(model_residual_mm, 5.0),
            "model_within_10mm": round(w10, 4), "body_coverage": round(float(coverage), 4),
            "limbs_off_scan": limbs_off, "per_region": per}


def fit_summary(info: dict) -> str:
    """One line for the user about a registration's fit (Correspondence.info): its verdict and
    why, e.g. "body fit good: 97% of the scan lies within 10 mm of the fitted body"."""
    q = info.get("quality")
    if not q:
        return "body fit: not recorded"
    start = info.get("start_pose")  # a pose the standing starts could not reach (_pose_search)
    pose = f" ({start.replace('-', ' ')} pose)" if start else ""
    return f"body fit {q['verdict']}{pose}: {q['reason']}"


def _fit_body(fitter: _Fitter, rounds: int, say: Callable[[str, float], None], frac: tuple[float, float],
              first: int = 0, stop: int | None = None) -> float:
    """The body fit proper: ``rounds`` rounds of 50 steps, large steps and a wide capture first,
    then finer steps and a tight cap; keypoints pull until the last two rounds, which leave the
    hands to the surface (those marked to_end pull on). Returns the final mean distance (mm);
    progress from frac[0] to frac[1]. first, stop: only those rounds of the schedule (a fit
    stopped at stop goes on from there, with the same keypoints, from first=stop)."""
    n = rounds
    stop = n if stop is None else stop
    for k in range(first, stop):
        if k == n - 2:
            fitter.keypoints = [kp for kp in fitter.keypoints if kp.to_end]
        say("fitting the body", frac[0] + (frac[1] - frac[0]) * k / n)
        err = fitter.fit(50, lr=0.01 if k < n // 2 else 0.004, cap_mm=60.0 if k < 3 else 20.0 if k < n - 2 else 10.0,
                         lag=True)
    if stop == n:
        fitter.keypoints = []
    return err


def _fit_pose(fitter: _Fitter, *args, **kwargs) -> float:
    """_fit_body(fitter, ...) with the body's shape (phenotype and shape details) held as it is:
    the pose and place only (_Fitter.shape_fixed), let go after, also when the fit is cancelled
    (a held shape must not stay for whoever uses the fitter next). The arms' tries and their
    combined fit (_mend_arms, _combine_arms)."""
    fitter.shape_fixed = True
    try:
        return _fit_body(fitter, *args, **kwargs)
    finally:
        fitter.shape_fixed = False


def _in_scan(fitter: _Fitter, R: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The fitter's current body (13718, 3) mm in the scan's frame (the fitter works in
    scan @ R.T - offset)."""
    return (fitter.vertices().detach().numpy().astype(np.float64) + offset) @ R


def _mend_arms(fitter: _Fitter, scan: Scan, R: np.ndarray, offset: np.ndarray, partial: bool, err: float,
               start: list, rounds: int, say: Callable[[str, float], None],
               before: dict[str, float] | None = None) -> tuple[float, dict]:
    """Fit the body again when an arm was left off the scan (limbs_off_scan >= LIMB_OFF_FAIR):
    from ``start`` (fitter.state() before the body fit), with that arm's hand pulled towards the
    scan's hand, or with the wrist's ring pulled too (the two ranked after MEND_RANK_ROUNDS, the
    closer fitted to the end); and again with the rings either side
    of the elbow too, each pulling the arm's bones only (bodymap.anatomy.keypoints: the rings
    place a bent elbow, which the hand alone leaves free, but pulled through the trunk they slid
    its skin along the scan), the rings until the end of the fit. Every try holds the body's
    shape as the first fit read it (pose and place only). A second fit is kept only when
    it is closer to the scan (mean distance) and those arms lie less off it; of such, the
    closest. fitter in the
    frame scan @ R.T - offset; err: the first fit's mean distance (mm); before: limbs_off_scan of
    the fit as it is, when the caller has it. Returns the mean
    distance of the fit kept and a record of what was tried (empty when no arm was off or no
    hand found)."""
    torch = fitter.torch
    if before is None:
        before = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)
    bad = [s for s in ("left", "right") if before.get(f"{s} arm", 0.0) >= LIMB_OFF_FAIR]
    if not bad:
        return err, {}
    from bodymap.anatomy.keypoints import hand_keypoints

    hands_log = []
    v = fitter.vertices().detach().numpy().astype(np.float64)  # (the fitter's frame)
    found = hand_keypoints(scan.vertices @ R.T - offset, scan.faces, v, hands_log)
    pull = [s for s in bad if s in found]
    record = {"arms": bad, "hands_found": pull, "kept": False, "hands": hands_log}
    if not pull:  # no hand to pull: the arms' named poses only
        record["tried"] = {}
        new_err, _, after, name = _combine_arms(fitter, scan, R, offset, partial, (err, fitter.state(), before, None),
                                                {}, bad, {}, {}, rounds, say, record)
        if name is not None:
            record.update(kept=True, pulled=name, off_before={s: before[f"{s} arm"] for s in bad},
                          off_after={s: after[f"{s} arm"] for s in bad}, mean_mm=[round(err, 2), round(new_err, 2)])
        return new_err, record
    off_sum = lambda off: sum(off[f"{s} arm"] for s in bad)  # noqa: E731
    best = (err, fitter.state(), before, None)
    shape = best[1][2:]  # (phenotype, shape details) of the first fit, which every try holds
    # keypoints of each pulled arm (the hand's, with the wrist's ring, or all), pulling the whole
    # body (a body leaning to reach its hands leans) or, with the elbow's rings, the arm only
    # (their rough targets slid the trunk's skin)
    tries = {"hands": (1, False), "hands and wrists": (2, False), "hands and arms": (None, True)}
    if not any(len(found[s]) > 1 for s in pull):
        del tries["hands and wrists"], tries["hands and arms"]
    record["tried"] = {}

    def begin(name: str) -> None:  # the fitter at the body fit's start, with this try's keypoints
        k, arm_only = tries[name]
        # the body's shape as the first fit read it (held by _fit_pose: only the pose and place
        # change, a step's body and gradient 4.3 ms against 22 free). Refitted in every try, as
        # until stop 56, the shape gained nothing (clinic draw 8401-8408: level 2 0.975 refitted,
        # 0.976 held; FAUST consistency 0.8784 and 0.8790) and the tries cost 15-25 % of a clinic
        # scan's labelling
        fitter.restore([*start[:2], *shape])
        # the arm-only rings pull to the end: left to the surface in the last rounds, FAUST 003's
        # arms went back towards the first fit's (its upper arm's template points a median 57 mm
        # from pose 000's, against 29 mm). The hand is left to the surface (refine_hands turns it;
        # held too, FAUST 001's hands slid)
        fitter.keypoints = [Keypoint(torch.as_tensor(idx), torch.as_tensor(target, dtype=torch.float32),
                                     arm_only, to_end=arm_only and j > 0)
                            for s in pull for j, (idx, target) in enumerate(found[s][:k])]

    order = list(tries)
    early = {}
    if "hands and wrists" in tries and rounds > MEND_RANK_ROUNDS + 2:
        # the hand's and the hand-and-wrist's fits differ by the wrist's ring alone: ranked after
        # MEND_RANK_ROUNDS by their mean distance, only the closer goes on: on seven development
        # scans (FAUST 001, 003, clinic and short adults) the closer after three rounds was the
        # closer at the end every time (after two, FAUST 003's was not: 15.8 against 16.2 mm, at
        # the end 14.4 against 8.0); on the clinic draw 8401-8408, three of four (8401 finished
        # the hand's try, 4.52 mm, where the wrist's would have ended at 4.34). The arm-only fit
        # is not ranked against them: its rings pull to the end, so it reads further from the
        # scan until then (clinic 7105: ranked first, ended second)
        for name in ("hands", "hands and wrists"):
            begin(name)
            e = _fit_pose(fitter, rounds, say, (0.6, 0.84), stop=MEND_RANK_ROUNDS)
            early[name] = (e, fitter.state(), fitter.keypoints)
        lead = min(early, key=lambda n: early[n][0])
        record["ranked_mm"] = {n: round(early[n][0], 2) for n in early}
        order = [lead, "hands and arms"]
    fitted = {}  # each try's (mean distance, state, limbs_off_scan)
    for name in order:
        if tries[name][1] and best[3] is not None and all(best[2][f"{s} arm"] < LIMB_OFF_FAIR for s in bad):
            # a second fit kept already lays every arm on the scan: nothing left to mend with
            # the arm-only fit (on the development scans it was kept only where one stayed off)
            record["skipped"] = name
            continue
        if name in early:  # go on from where the ranking stopped it
            fitter.restore(early[name][1])
            fitter.keypoints = early[name][2]
        else:
            begin(name)
        new_err = _fit_pose(fitter, rounds, say, (0.6, 0.84), first=MEND_RANK_ROUNDS if name in early else 0)
        after = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)
        record["tried"][name] = {"mean_mm": round(new_err, 2), "off": {s: after[f"{s} arm"] for s in bad}}
        fitted[name] = (new_err, fitter.state(), after)
        # (or far closer: FAUST 003, 15.3 -> 9.1 mm, has an arm hanging where the check reads it
        # more off; not on a partial scan, whose fit distance leaves the parts it lacks out)
        clearly = not partial and new_err < MEND_CLEAR * err
        if new_err < best[0] and (off_sum(after) < off_sum(before) or clearly):
            best = (new_err, fitter.state(), after, name)
    best = _combine_arms(fitter, scan, R, offset, partial, best, fitted, bad, found, tries, rounds, say, record)
    new_err, state, after, name = best
    fitter.restore(state)
    record.update(kept=name is not None, pulled=name, off_before={s: before[f"{s} arm"] for s in bad},
                  off_after={s: after[f"{s} arm"] for s in bad}, mean_mm=[round(err, 2), round(new_err, 2)])
    return new_err, record


def _arm_rows(side: str) -> list[int]:
    """Rows of FIT_BONES of one arm's bones, clavicle to wrist (side "left" / "right")."""
    return [FIT_BONES.index(b + (".L" if side == "left" else ".R"))
            for b in ("clavicle", "upperarm01", "lowerarm01", "wrist")]


def _arm_pose_rows(side: str, pose: str) -> dict[int, np.ndarray]:
    """{row of FIT_BONES: rotation vector (3,)} of one arm in a named arm configuration
    (bodymap.anatomy.poses.ARM_CONFIGS: its upper arm and forearm)."""
    from bodymap.anatomy.poses import part_options

    return _bone_rotvecs(part_options(f"arm.{'L' if side == 'left' else 'R'}")[pose])


def _combine_arms(fitter: _Fitter, scan: Scan, R: np.ndarray, offset: np.ndarray, partial: bool, best: tuple,
                  fitted: dict, bad: list, found: dict, tries: dict, rounds: int,
                  say: Callable[[str, float], None], record: dict) -> tuple:
    """The fit _mend_arms keeps (or the first fit, when it kept none), with each arm it leaves
    off the scan taken from another of its tries that lays that arm on (the arm's bone rotations,
    clavicle to wrist), or else posed as the one of ARM_POSES that lies least off the scan (the
    upper arm and forearm; read with the rest of the body as it is, one forward pass each), then
    the body fit's last COMBINE_ROUNDS rounds from there (with the to_end keypoints of the try each arm came from).
    Kept when closer to the scan with those arms less off it. best: (mean distance mm, state,
    limbs_off_scan, try name or None); fitted: each try's (mean distance, state,
    limbs_off_scan); found, tries: _mend_arms' keypoints and tries. Returns best or the combined
    fit's tuple; record["tried"]["combined"] says what was tried."""
    torch = fitter.torch
    err, state, after, name = best
    still = [s for s in bad if after[f"{s} arm"] >= LIMB_OFF_FAIR]
    if not still:
        return best
    rot = state[0].clone()
    donor, poses_off = {}, {}
    for s in still:
        rows = _arm_rows(s)
        on = [t for t in fitted if t != name and fitted[t][2][f"{s} arm"] < LIMB_OFF_FAIR]
        if on:
            donor[s] = min(on, key=lambda t: fitted[t][2][f"{s} arm"])
            rot[rows] = fitted[donor[s]][1][0][rows]
            continue
        # no try lays it on (its hand rests on the body, so none was found to pull): the named
        # arm poses, each read off the scan with the rest of the body as fitted (a pose each)
        offs, posed = {}, {}
        for pose in ARM_POSES:
            posed[pose] = rot.clone()
            for row, rv in _arm_pose_rows(s, pose).items():
                posed[pose][row] = torch.as_tensor(rv, dtype=rot.dtype)
            fitter.restore([posed[pose], *state[1:]])
            with torch.no_grad():
                offs[pose] = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)[f"{s} arm"]
        # the least off is fitted from, however off it reads: a hand-on-the-hip start 0.18 off
        # ended 0.01 off (clinic 8502), two crossed arms 0.27 and 0.32 off ended 0.01 (8501:
        # gated by the arm's own share, 0.17, the right arm stayed off)
        poses_off[s] = offs
        pose = min(offs, key=offs.get)
        donor[s] = f"the {pose} pose"
        rot = posed[pose]
    if poses_off:
        record["arm_poses_off"] = poses_off
    fitter.restore([rot, *state[1:]])
    fitter.keypoints = []
    for s in found:
        source = donor.get(s, name)
        if s in bad and source in tries and tries[source][1]:  # (only the arm-only try's rings pull to the end)
            fitter.keypoints += [Keypoint(torch.as_tensor(idx), torch.as_tensor(target, dtype=torch.float32),
                                          True, to_end=True) for idx, target in found[s][1:tries[source][0]]]
    new_err = _fit_pose(fitter, rounds, say, (0.84, 0.85), first=max(0, rounds - COMBINE_ROUNDS))
    new_after = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)
    off = lambda o: sum(o[f"{s} arm"] for s in bad)  # noqa: E731
    record["tried"]["combined"] = {"arms_from": donor, "mean_mm": round(new_err, 2),
                                   "off": {s: new_after[f"{s} arm"] for s in bad}}
    if new_err < err and off(new_after) < off(after):
        return new_err, fitter.state(), new_after, (f"{name}, with " if name else "") + ", ".join(
            f"the {s} arm from {t}" for s, t in donor.items())
    fitter.restore(state)
    return best


def _pose_search(pts: np.ndarray, sv: np.ndarray, ups: list, tick: Callable[[], None] | None):
    """Coarse fits from the poses a standing start cannot reach (SEARCH_POSES), with each up
    rotation of ups ((3, 3) each; +z up after it), facing along either horizontal axis of the
    body, either way (the feet cue of a standing body fails here: a kneeling body's feet point
    backwards, and a bent body's standing fit is often upside down). pts (k, 3), sv (n, 3):
    scan points and vertices, mm. Every start is ranked after COARSE_RANK_STEPS; the best two go
    on to COARSE_STEPS. Returns the best (mean distance mm, rotation, offset, fitter)."""
    turns = []
    for up in ups:
        p = pts @ up.T
        xy = p[:, :2] - p[:, :2].mean(0)
        _, v = np.linalg.eigh(xy.T @ xy)
        axis = np.arctan2(v[1, 1], v[0, 1])  # the body's longer horizontal extent
        turns += [_rot_z(-axis + k * np.pi / 2) @ up for k in range(4)]
    starts = []
    for Rf in turns:
        p = pts @ Rf.T
        offset = np.array([*p[:, :2].mean(0), p[:, 2].min()])
        starts += [(Rf, offset, _Fitter(p - offset, sv @ Rf.T - offset, tick=tick, start=name))
                   for name in SEARCH_POSES]
    errs = _side_by_side([lambda f=f: f.fit(COARSE_RANK_STEPS, lr=0.012) for _, _, f in starts])
    trials = sorted([(e, *s) for e, s in zip(errs, starts)], key=lambda t: t[0])[:2]
    errs = _side_by_side([lambda f=t[3]: f.fit(COARSE_STEPS - COARSE_RANK_STEPS, lr=0.012) for t in trials])
    best = None
    for e, (_, Rf, offset, fitter) in zip(errs, trials):
        if best is None or e < best[0]:
            best = (e, Rf, offset, fitter)
    return best


def _coarse_kept(trials: list) -> list:
    """The coarse starts that go on, of trials [(mean distance mm, index, rotation (3, 3), ...)]
    sorted by distance: a clear winner alone; a close runner-up (within COARSE_KEEP: a weak
    facing cue) too; and the best start the other way up when close. After COARSE_RANK_STEPS an
    upside-down start may lead: clinic 8803 (hands on the head, an arm raised), whose two
    upside-down facings ranked first (53.9 and 54.8 mm, upright 55.4), was fitted upside down
    (level 2 0.066); with its upright start going on, 0.943."""
    close = [t for t in trials if t[0] <= COARSE_KEEP * trials[0][0]]
    keep = close[:2]
    # a rotation's last row is the scan's direction that it turns up
    other = next((t for t in close if t[2][2] @ trials[0][2][2] < 0), None)
    if other is not None and all(other is not t for t in keep):
        keep.append(other)
    return keep


def _search_record(standing_mm: float, found: tuple, **extra) -> dict:
    """What a pose search found (for the fit info): the standing start's and the best search
    start's mean distances (mm), its name, and whether it is kept (under POSE_KEEP of standing)."""
    return {"standing_mm": round(standing_mm, 2), **extra, "best": found[3].start, "best_mm": round(found[0], 2),
            "kept": bool(found[0] < POSE_KEEP * standing_mm)}


def _sample_points(scan: Scan, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points (n, 3) mm on the scan surface, area-weighted."""
    p = scan.face_areas / scan.face_areas.sum()
    f = rng.choice(scan.n_faces, n, p=p)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    return scan.points_from_barycentric(f, bary)


def register(scan: Scan, progress: Progress | None = None, n_points: int = 6000, steps: int = STEPS,
             seed: int = 0, refine: bool = True) -> Correspondence:
    """Register the template to ``scan`` (mm). Returns the dense Correspondence: the same, to the
    bit, whatever torch threads the process has (SETUP_THREADS).

    Raises RegistrationError when the scan is not a body the template can fit.
    """
    import torch

    _SHARE.n = torch.get_num_threads()
    try:
        with _torch_threads(SETUP_THREADS):
            return _register(scan, progress, n_points, steps, seed, refine)
    finally:
        _SHARE.n = None
        scan.drop_surface_tree()  # (the limb checks' tree: not kept with the scan after the fit)


def _register(scan: Scan, progress: Progress | None, n_points: int, steps: int, seed: int,
              refine: bool) -> Correspondence:
    import gpytoolbox as gp

    report = progress or (lambda stage, frac: None)
    last = ["registration", 0.0]

    def say(stage: str, frac: float) -> None:
        last[:] = [stage, frac]
        report(stage, frac)

    def tick() -> None:  # the fitters repeat the current stage every few steps (cancel points)
        report(*last)

    src = scan.meta.source or None
    rng = np.random.default_rng(seed)
    pts = _sample_points(scan, n_points, rng)
    sv = scan.vertices
    if len(sv) > 60_000:  # model -> scan distances need the surface, not every vertex
        sv = sv[rng.choice(len(sv), 60_000, replace=False)]
    # coarse: every orientation, briefly; then the two best with each arm start, a little longer
    cands = []
    for U in _up_rotations(scan):
        for turn in _facing_turns(pts @ U.T):
            cands.append(_rot_z(turn) @ U)

    say("coarse alignment", 0.0)
    starts = []
    for k, R in enumerate(cands):
        p = pts @ R.T
        offset = np.array([*p[:, :2].mean(0), p[:, 2].min()])
        fitter = _Fitter(p - offset, sv @ R.T - offset, tick=tick)
        starts.append((k, R, offset, fitter))
        # a scan of a child's height is started as a child, and may be a short adult: from a
        # child's start the fit kept a child's proportions (synthetic 9762, a 1.28 m adult with
        # raised arms: template points a median 9.6 mm off, the thighs 28 mm; from an adult's
        # start 1.8 mm). An adult's start of the same orientation is ranked beside it
        if fitter.child_start:
            starts.append((k, R, offset, _Fitter(p - offset, sv @ R.T - offset, tick=tick, adult=True)))
    errs = _side_by_side([lambda f=s[3]: f.fit(COARSE_RANK_STEPS, lr=0.012) for s in starts])
    trials = sorted([(e, *s) for e, s in zip(errs, starts)], key=lambda t: t[0])
    keep = _coarse_kept(trials)

    def on(first: _Fitter) -> float:  # a kept start, fitted on
        first.fit(COARSE_STEPS - COARSE_RANK_STEPS, lr=0.012)
        return first.fit(COARSE_STEPS, lr=0.012)

    say("coarse alignment (arms)", 0.3)
    goes_on = []  # each kept start, and a start of its orientation with the arms found in the scan
    for _, _, R, offset, first in keep:
        p, q = pts @ R.T - offset, sv @ R.T - offset
        arms = _arm_starts(p)  # the arms are where a rest-pose start goes wrong
        goes_on += [(R, offset, first, on), (R, offset, _Fitter(p, q, arms, tick=tick, adult=first.adult),
                                             lambda f: f.fit(COARSE_STEPS, lr=0.012))]
    errs = _side_by_side([lambda f=f, go=go: go(f) for _, _, f, go in goes_on])
    best = None
    for e, (R, offset, fitter, _) in zip(errs, goes_on):
        if best is None or e < best[0]:
            best = (e, R, offset, fitter)
    err0, R, offset, fitter = best
    searched, skipped = {}, {}
    # far from every standing start: a bent, seated or kneeling body? Not when the standing body
    # lies on the scan beyond its arms: the arms alone keep it far (raised, crossed), and the
    # searched poses differ in the trunk and legs
    beyond = _off_beyond_arms(_in_scan(fitter, R, offset), scan) if err0 > POSE_SEARCH_MM else 0.0
    if beyond >= POSE_SEARCH_OFF:
        say("coarse alignment (other poses)", 0.4)
        found = _pose_search(pts, sv, _up_rotations(scan), tick)
        searched = _search_record(err0, found, standing_off_beyond_arms=round(beyond, 3))
        if searched["kept"]:
            err0, R, offset, fitter = found
    elif err0 > POSE_SEARCH_MM:
        skipped = {"standing_mm": round(err0, 2), "standing_off_beyond_arms": round(beyond, 3)}
    # a partial scan (upper body only, say) is better explained by a body that is not stood on
    # the scan's lowest point: compare how well each explains the scan's points
    fitter.fit(10, lr=0.012)
    partial = False
    coarse_scan_to_body = fitter.scan_to_body_mm
    # the cue: much of the scan lies far from a whole body stood on its lowest point, and the
    # scan is shorter than an adult
    partial_skipped = {}
    if fitter.scan_to_body_mm > PARTIAL_CUE_MM and fitter.height >= PARTIAL_MAX_HEIGHT_MM:
        partial_skipped = {"scan_to_body_mm": round(fitter.scan_to_body_mm, 2), "height_mm": round(fitter.height)}
    elif fitter.scan_to_body_mm > PARTIAL_CUE_MM:
        # a partial scan (upper body only, say) is better explained by a body that is not stood
        # on the scan's lowest point; its up and facing cannot come from the feet, so every
        # orientation is tried
        say("coarse alignment (partial scan?)", 0.4)
        part, R_part, off_part = _partial_search(scan, pts, sv, tick)
        # ... and that body reaches past the scan's top or bottom: a whole body whose arms a
        # standing start missed (FAUST 003, hands raised before the face) is explained better
        # by the partial fit too, which leaves what it does not reach out of its distance
        if part.scan_to_body_mm < 0.7 * fitter.scan_to_body_mm and _lacks_part(part, pts @ R_part.T - off_part):
            partial, fitter, R, offset = True, part, R_part, off_part
            if searched:  # whatever start the search kept, the partial fit replaced it
                searched["kept"] = False
    n = max(1, steps // 50)
    fitter.body_fit_on()
    start = fitter.state()
    err = _fit_body(fitter, n, say, (0.4, 0.6))
    off = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)
    legs_off = max(off.get("left leg", 0.0), off.get("right leg", 0.0))
    if not searched and not partial and legs_off >= LIMB_OFF_POOR:
        # a body the standing start fitted closely enough to skip the pose search (a seated
        # body's trunk and arms) but whose legs the fit left off the scan: search now, and fit
        # again from the pose found when it explains the scan better than the standing start
        say("coarse alignment (other poses)", 0.55)
        found = _pose_search(pts, sv, _up_rotations(scan), tick)
        searched = _search_record(err0, found, standing_legs_off=round(legs_off, 3))
        if searched["kept"]:
            err0, R, offset, fitter = found
            fitter.fit(10, lr=0.012)
            fitter.body_fit_on()
            start = fitter.state()
            err = _fit_body(fitter, n, say, (0.55, 0.6))
            off = limbs_off_scan(_in_scan(fitter, R, offset), scan, partial)
    say("checking the arms", 0.6)
    err, mended = _mend_arms(fitter, scan, R, offset, partial, err, start, n, say, off)
    fitted_scan = _in_scan(fitter, R, offset)
    fitted_scan = refine_ears(fitted_scan, scan.vertices)
    hands = {}
    fitted_scan = refine_hands(fitted_scan, scan.vertices, hands)
    from bodymap import taxonomy as tx
    from bodymap.anatomy.template import load_template
    from bodymap.anatomy.body import body_model

    faces = body_model().faces
    # how well a human body explains the scan: the distance to the body model itself (the
    # surface fit below can lay the template on anything, so the verdict reads this one)
    model_d = np.sqrt(np.asarray(gp.squared_distance(scan.vertices, fitted_scan, F=faces, use_cpp=True,
                                                     use_aabb=True)[0]).ravel())
    if np.median(model_d) > 40.0:
        raise RegistrationError(src, f"the body model does not fit this scan (median distance "
                                     f"{np.median(model_d):.0f} mm after fitting): it may not be a whole "
                                     f"human body, or a pose the fit cannot reach")
    say("fitting the surface", 0.85)
    sn = scan.vertex_normals
    sv_all, sn_all = scan.vertices, sn
    if len(sv_all) > 60_000:
        keep = rng.choice(len(sv_all), 60_000, replace=False)
        sv_all, sn_all = sv_all[keep], sn_all[keep]
    # refine: the template surface laid onto the scan (a smooth displacement), so gaps the body
    # model leaves (clothing-free anatomy it lacks, hair, soft tissue) do not shift correspondence
    surface = surface_fit(fitted_scan, faces, sv_all, sn_all) if refine else fitted_scan
    say("correspondence", 0.9)
    I, B, resid = closest_compatible(scan.vertices, sn, surface, faces)
    t = load_template()
    site = tx.level_lut(1)[t.site[faces[I, np.argmax(B, axis=1)]]]
    cover = float(np.mean(cKDTree(scan.vertices).query(surface, distance_upper_bound=15.0)[0] < 15.0))
    quality = fit_quality(resid, model_d, site, cover, partial, limbs_off_scan(fitted_scan, scan, partial))
    info = {"mean_fit_mm": round(err, 2), "partial_scan": bool(partial), "coarse_mean_mm": round(err0, 2),
            "coarse_scan_to_body_mm": round(coarse_scan_to_body, 2),
            "coarse_trials_mm": [round(float(t[0]), 2) for t in trials],
            "rotation": np.round(R, 6).tolist(), "median_residual_mm": round(float(np.median(resid)), 2),
            "model_median_residual_mm": round(float(np.median(model_d)), 2),
            "phenotype": {k: round(float(fitter.torch.sigmoid(v.detach())), 3) for k, v in fitter.pheno.items()},
            "quality": quality, "arms_mended": mended, "start_pose": fitter.start,
            "start_size": None if fitter.child_start is None else "child" if fitter.child_start else "adult",
            "shape_details": {k: round(float(x), 3) for k, x in zip(SHAPE_DETAILS, fitter.torch.tanh(fitter.detail.detach())[0])},
            "pose_search": searched, "pose_search_skipped": skipped, "partial_search_skipped": partial_skipped,
            "hands_turned": hands}
    say("done", 1.0)
    return Correspondence(I, B.astype(np.float32), resid.astype(np.float32), surface, info)
