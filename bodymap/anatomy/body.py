"""Human bodies from the anny model (MakeHuman CC0 mesh, Apache-2.0 code): phenotype and pose.

Every body shares the anny topology (13,718 vertices, 27,420 triangles, one UV atlas), so a
point given as (base face, barycentric) is the same anatomical point on every body, in every
pose. The *template* is the default phenotype in the rest (A-) pose; it is the reference frame
for texture noise fields, anatomy labels and correspondence truth.

Frame: millimetres, z up, the body faces -y, the subject's left is +x.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from pathlib import Path

import numpy as np

# Anny's age anchors (newborn, baby, child, young, old) sit at -1/3, 0, 1/3, 2/3, 1;
# MakeHuman's documented ages for the last four are 1, 11, 25 and 90 years.
_AGE_YEARS = np.array([0.0, 1.0, 11.0, 25.0, 90.0])
_AGE_PARAM = np.array([-1 / 3, 0.0, 1 / 3, 2 / 3, 1.0])

# Poses a clinic meets beyond the standing ones; each visit draws its own variation (joints
# jittered by up to JITTER_DEG) of the named pose (bodymap.anatomy.poses.START_POSES).
CLINIC_POSES = ("arms-crossed", "hands-on-hips", "hands-on-head", "hands-to-face", "arms-forward", "bent-forward",
                "seated", "kneeling")
POSES = ("a-pose", "arms-down", "arms-raised", "random") + CLINIC_POSES
JITTER_DEG = 15.0


@dataclasses.dataclass
class BodySpec:
    """A body's phenotype. Shape parameters are anny's, each in [0, 1] (0.5 = average)."""

    sex: str = "female"  # "female" or "male"
    age_years: float = 35.0
    height: float = 0.5
    weight: float = 0.5
    muscle: float = 0.5
    proportions: float = 0.5

    def anny_kwargs(self) -> dict[str, float]:
        """Phenotype dict for anny (its gender axis runs male 0 -> female 1)."""
        if self.sex not in ("female", "male"):
            raise ValueError(f"sex must be 'female' or 'male', got {self.sex!r}")
        age = float(np.interp(self.age_years, _AGE_YEARS, _AGE_PARAM))
        return {
            "gender": 1.0 if self.sex == "female" else 0.0,
            "age": age,
            "height": float(self.height),
            "weight": float(self.weight),
            "muscle": float(self.muscle),
            "proportions": float(self.proportions),
        }

    @classmethod
    def random(cls, rng: np.random.Generator, adult: bool = True) -> "BodySpec":
        """A plausible random phenotype (adults 18-85 years unless adult=False)."""
        age = rng.uniform(18, 85) if adult else rng.uniform(4, 85)
        return cls(
            sex=str(rng.choice(["female", "male"])),
            age_years=round(float(age), 1),
            height=round(float(np.clip(rng.normal(0.5, 0.18), 0.05, 0.95)), 3),
            weight=round(float(np.clip(rng.normal(0.5, 0.18), 0.05, 0.95)), 3),
            muscle=round(float(np.clip(rng.normal(0.5, 0.15), 0.05, 0.95)), 3),
            proportions=round(float(np.clip(rng.normal(0.5, 0.1), 0.1, 0.9)), 3),
        )


def _rot(axis: str, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pose_rotations(pose: str, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Bone rotations (3x3, world-aligned, anny 'local-ref' parameterization) for a named pose.

    pose : one of POSES. "random" perturbs the A-pose within plausible ranges (needs rng);
    a clinic pose (CLINIC_POSES) is jittered by up to JITTER_DEG per joint when rng is given.
    The rest pose of anny is an A-pose with the arms about 50 degrees below horizontal;
    a positive rotation about +y lowers the left arm (+x side) and raises the right.
    """
    if pose not in POSES:
        raise ValueError(f"unknown pose {pose!r}; choose from {', '.join(POSES)}")
    r: dict[str, np.ndarray] = {}
    if pose == "arms-down":
        r["upperarm01.L"], r["upperarm01.R"] = _rot("y", 36), _rot("y", -36)
    elif pose == "arms-raised":
        r["upperarm01.L"], r["upperarm01.R"] = _rot("y", -85), _rot("y", 85)
    elif pose in CLINIC_POSES:
        from bodymap.anatomy.poses import START_POSES

        r = {k: np.asarray(v, float) for k, v in START_POSES[pose].items()}
        if rng is not None:
            from scipy.spatial.transform import Rotation

            for bone in list(r) + ["spine03", "neck01"]:
                axis = rng.normal(size=3)
                jit = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0, JITTER_DEG)))
                r[bone] = jit.as_matrix() @ r.get(bone, np.eye(3))
    elif pose == "random":
        if rng is None:
            raise ValueError("pose 'random' needs a random generator")
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        r["upperarm01.L"] = _rot("y", u(-25, 25)) @ _rot("x", u(-15, 15))
        r["upperarm01.R"] = _rot("y", u(-25, 25)) @ _rot("x", u(-15, 15))
        r["lowerarm01.L"] = _rot("x", u(-10, 10)) @ _rot("z", u(-15, 15))
        r["lowerarm01.R"] = _rot("x", u(-10, 10)) @ _rot("z", u(-15, 15))
        r["upperleg01.L"] = _rot("y", u(-3, 8)) @ _rot("x", u(-6, 6))
        r["upperleg01.R"] = _rot("y", u(-8, 3)) @ _rot("x", u(-6, 6))
        r["spine03"] = _rot("z", u(-8, 8)) @ _rot("x", u(-5, 5))
        r["neck01"] = _rot("z", u(-20, 20)) @ _rot("x", u(-10, 10))
    return r


@dataclasses.dataclass
class BaseMesh:
    """The anny topology with its UV atlas. vertices (n, 3) mm; faces (m, 3); uv (m, 3, 2)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    cavity_faces: np.ndarray  # (k,) faces inside the mouth and eye sockets (no scanner sees them)


class BodyModel:
    """Lazy wrapper around anny: one instance per process (loading costs about 1 s warm).

    The first use on a machine builds anny's cache (half a minute; ANNY_CACHE_DIR moves it).
    """

    def __init__(self):
        import torch  # heavy: imported only when a body is needed

        _init_warp()
        import anny

        # at most 2 threads (the fit's tensors are small: more only wait at barriers), and never
        # more than the process was given: a batch worker limited to 1 thread (OMP_NUM_THREADS,
        # torch.set_num_threads) that got a second OpenMP thread here spun it on the other
        # worker's core, and two workers ran 1.1x faster than one instead of 2x
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        self._torch = torch
        _cache_skinning_kernel()
        _fast_blend_shapes()
        first = _prepare_anny_cache()
        if first:
            notice(f"building the body model cache (first run, about half a minute; kept in {first})")
        self._model = anny.Anny().to(dtype=torch.float32)
        if first:
            notice("body model cache built")
        self._root = Path(anny.__file__).resolve().parent / "data"
        self.bone_labels: list[str] = list(self._model.bone_labels)
        self.faces = self._model.faces.numpy().astype(np.int64)
        tc = self._model.texture_coordinates.numpy().astype(np.float32)
        self.uv = tc[self._model.face_texture_coordinate_indices.numpy()]
        self.cavity_faces = self._faces_labelled(("mouth_cavity", "tongue", "eye_cavity.L", "eye_cavity.R"))
        # anny vertex i is MakeHuman base-mesh vertex base_index[i]
        self.base_index = self._model.base_mesh_vertex_indices.numpy()

    def detail_model(self, labels: tuple[str, ...]):
        """anny with the given local shape changes (cached per label set): same topology and
        rig as the plain model, vertices equal to it when every change is 0."""
        import anny

        cache = self.__dict__.setdefault("_detail_models", {})
        if labels not in cache:
            cache[labels] = anny.Anny(local_changes=list(labels)).to(dtype=self._torch.float32)
        return cache[labels]

    def _faces_labelled(self, names: tuple[str, ...]) -> np.ndarray:
        """Faces whose UV centroid falls in the given parts of anny's UV segmentation image."""
        import yaml
        from PIL import Image

        seg_dir = self._root / "segmentation"
        colors = yaml.safe_load(open(seg_dir / "body_parts_segmentation.yaml"))["colors"]
        img = np.asarray(Image.open(seg_dir / "body_parts_segmentation.png").convert("RGB"))
        h, w = img.shape[:2]
        c = self.uv.mean(1)
        px = img[np.clip(((1 - c[:, 1]) * h).astype(int), 0, h - 1), np.clip((c[:, 0] * w).astype(int), 0, w - 1)]
        hit = np.zeros(len(c), bool)
        for n in names:
            hit |= (px == np.array(colors[n])).all(1)
        return np.flatnonzero(hit)

    def vertices(self, spec: BodySpec, rotations: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Posed body vertices. Returns (13718, 3) float64 in mm, z up, facing -y, feet at z=0."""
        torch = self._torch
        pose = None
        if rotations:
            pose = torch.eye(4, dtype=torch.float32)[None, None].repeat(1, len(self.bone_labels), 1, 1)
            for bone, rot in rotations.items():
                pose[0, self.bone_labels.index(bone), :3, :3] = torch.as_tensor(rot, dtype=torch.float32)
        with torch.no_grad():
            out = self._model(pose_parameters=pose, phenotype_kwargs=spec.anny_kwargs())
        v = out["vertices"][0].double().numpy() * 1000.0
        v[:, 2] -= v[:, 2].min()
        v[:, :2] -= v[:, :2].mean(0)  # centred on the vertical axis through the mean vertex
        return v

    def base_mesh(self, spec: BodySpec, rotations: dict[str, np.ndarray] | None = None) -> BaseMesh:
        """The body as a BaseMesh (vertices from ``vertices``; faces and UVs shared)."""
        return BaseMesh(self.vertices(spec, rotations), self.faces, self.uv, self.cavity_faces)

    def template(self) -> BaseMesh:
        """The template body: default phenotype (sex-neutral), rest A-pose."""
        v = self._template_vertices
        return BaseMesh(v, self.faces, self.uv, self.cavity_faces)

    @functools.cached_property
    def _template_out(self) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.no_grad():
            out = self._model(phenotype_kwargs={k: 0.5 for k in self._model.phenotype_labels})
        v = out["vertices"][0].double().numpy() * 1000.0
        heads = out["rest_bone_heads"][0].double().numpy() * 1000.0
        shift = np.array([*v[:, :2].mean(0), v[:, 2].min()])
        return v - shift, heads - shift

    @property
    def _template_vertices(self) -> np.ndarray:
        return self._template_out[0]

    @property
    def template_bone_heads(self) -> np.ndarray:
        """(bones, 3) mm, bone head positions of the template (same frame as its vertices)."""
        return self._template_out[1]

    def target_vertices(self, relpath: str, min_offset_mm: float = 0.0) -> np.ndarray:
        """anny vertex indices moved by a MakeHuman target (e.g. 'breast/nipple-size-incr').

        Targets list base-mesh vertex offsets in decimetres; ``min_offset_mm`` keeps only
        vertices that move at least that far. Returns (k,) int64.
        """
        path = self._root / "mpfb2" / "targets" / f"{relpath}.target.gz"
        rows = [ln.split() for ln in gzip.open(path, "rt") if ln.strip() and not ln.startswith("#")]
        idx = np.array([int(r[0]) for r in rows])
        off = np.linalg.norm(np.array([[float(x) for x in r[1:4]] for r in rows]), axis=1) * 100.0
        idx = idx[off >= min_offset_mm]
        inv = np.full(int(self.base_index.max()) + 1, -1, dtype=np.int64)
        inv[self.base_index] = np.arange(len(self.base_index))
        out = inv[idx[idx < len(inv)]]
        return out[out >= 0]


def notice(message: str) -> None:
    """Say what a long first-run step is doing (stderr, above any progress bar). The GUI may
    replace this function to show the message in its status bar."""
    import sys

    try:
        from tqdm import tqdm

        tqdm.write(f"bodymap: {message}", file=sys.stderr)
    except ImportError:
        print(f"bodymap: {message}", file=sys.stderr)


def _init_warp() -> None:
    """Import and initialise warp (anny's skinning kernels) quietly: its start-up prints "Warp
    CUDA warning: Could not find or load the NVIDIA CUDA driver" from C on every run of a machine
    without a GPU (inside the progress bar). That line is dropped; anything else warp prints at
    start-up is passed on. The first run also compiles the kernels: say so."""
    import sys
    import tempfile

    import warp

    warp.config.quiet = True  # its start-up and kernel-cache log lines would garble the progress bar
    warp.config.log_level = getattr(warp, "LOG_ERROR", 40)
    if getattr(warp, "_bodymap_initialised", False):
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture (a windowed app): nothing would show anyway
        warp.init()
        saved = None
    if saved is not None:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                warp.init()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.strip() and "Could not find or load the NVIDIA CUDA driver" not in line:
                    print(line, file=sys.stderr)
    warp._bodymap_initialised = True
    try:  # the kernels anny uses are compiled on first use (tens of seconds on a CPU)
        cache = Path(warp.config.kernel_cache_dir or "")
        if cache.is_dir() and not any(p.name.startswith("wp_anny") for p in cache.iterdir()):
            notice("compiling the body model's kernels (first run, about 10 s)")
    except Exception:  # noqa: BLE001 - a notice only
        pass


def _cache_skinning_kernel() -> None:
    """Build anny's skinning kernel once per dtype combination instead of on every forward pass.

    anny's ``get_kernel`` defines a new warp kernel on each call; warp then walks and hashes its
    code again (about 2 ms of a registration fit step's 35-50 ms, 1.2 s of a 300k-face
    registration). The kernel depends only on its (hashable) arguments, so the same function,
    memoised, gives the same kernel and the same vertices."""
    from anny.skinning import warp_skinning

    if not getattr(warp_skinning.get_kernel, "_bodymap_cached", False):
        cached = functools.lru_cache(maxsize=8)(warp_skinning.get_kernel)
        cached._bodymap_cached = True
        warp_skinning.get_kernel = cached


def _load_blend_shape(filename, vertices_count, world_transformation, dtype):
    """anny's ``full_model.load_blend_shape`` with numpy's C text parser: the same (vertices_count,
    3) tensor of ``dtype`` to the bit. anny's own parses each of the 6.9 million lines of the
    1,136 target files in Python and makes a tensor of each (128 of the 140 s the first run's
    cache build took on 2 cores); this reads a file in one call. A file unlike the expected
    "id dx dy dz" lines (or with an id twice, whose last line anny's loop keeps) goes to anny's
    own loader."""
    import gzip

    import torch

    with gzip.open(filename, "rb") as fh:
        text = fh.read()
    try:
        # (numpy's parser rounds each number as Python's float() does)
        rows = np.loadtxt(text.splitlines(), dtype=np.float64, ndmin=2, comments=None) if text.strip() \
            else np.zeros((0, 4))
    except ValueError:
        rows = None
    ids = None if rows is None or rows.shape[1] != 4 else rows[:, 0].astype(np.int64)
    if ids is None or (ids != rows[:, 0]).any() or (ids < 0).any() or (ids >= vertices_count).any() \
            or len(np.unique(ids)) != len(ids):
        return _ANNY_LOAD_BLEND_SHAPE(filename, vertices_count, world_transformation, dtype)
    blend_shape = torch.zeros((vertices_count, 3), dtype=dtype)
    # (float64 -> dtype rounds as anny's torch.as_tensor of the Python floats does)
    blend_shape[torch.as_tensor(ids)] = torch.as_tensor(rows[:, 1:]).to(dtype)
    return world_transformation.apply(blend_shape)


_ANNY_LOAD_BLEND_SHAPE = None


def _fast_blend_shapes() -> None:
    """Install ``_load_blend_shape`` in place of anny's (once): only a cache build reads targets."""
    global _ANNY_LOAD_BLEND_SHAPE
    from anny.models import full_model

    if full_model.load_blend_shape is not _load_blend_shape:
        _ANNY_LOAD_BLEND_SHAPE = full_model.load_blend_shape
        full_model.load_blend_shape = _load_blend_shape


def _safetensors_complete(path: Path) -> bool:
    """The file holds its whole safetensors header and data (a killed write leaves less)."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            if n > size:
                return False
            head = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in head.items() if k != "__metadata__"), default=0)
        return size >= 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def _prepare_anny_cache() -> str | None:
    """Make anny's model cache safe: its files are written atomically (a unique temporary then a
    rename: a kill mid-write used to leave a truncated file that broke every later run), and a
    truncated file left by an older version is removed (it is rebuilt). Returns the cache
    folder when it holds no model yet (the first run builds it, about half a minute), else None."""
    from anny.models import model_data
    from anny.paths import get_anny_cache_path

    cls = model_data.ModelData
    if not getattr(cls, "_bodymap_atomic", False):
        original = cls.save_safetensors

        def save_atomic(self, path):
            from bodymap.atomic import atomic_write

            with atomic_write(path) as tmp:
                original(self, str(tmp))

        cls.save_safetensors = save_atomic
        cls._bodymap_atomic = True
    root = get_anny_cache_path()
    if root is None:
        return None
    folder = Path(root) / f"v{model_data.CURRENT_DATA_VERSION}"
    # (".name.tmp.safetensors": another process's write in progress, not ours to judge)
    files = sorted(f for f in folder.glob("*.safetensors") if not f.name.startswith(".")) if folder.is_dir() else []
    for f in files:
        if not _safetensors_complete(f):
            notice(f"{f}: truncated body model cache file removed (it is rebuilt)")
            f.unlink(missing_ok=True)
    return None if any(f.exists() for f in files) else str(folder)


@functools.lru_cache(maxsize=1)
def body_model() -> BodyModel:
    """The process-wide BodyModel."""
    return BodyModel()


# Coarse body parts from the dominant skinning bone; used for site-dependent lesion
# frequencies, hair and tints (the anatomy stage builds the clinical taxonomy separately).
PARTS = ("trunk", "head", "neck", "arm", "hand", "leg", "foot")


def _part_of_bone(name: str) -> str:
    n = name.split(".")[0]
    if n.startswith(("neck",)):
        return "neck"
    if n.startswith(("head", "eye", "jaw")):
        return "head"
    if n.startswith(("wrist", "finger", "metacarpal")):
        return "hand"
    if n.startswith(("shoulder", "upperarm", "lowerarm")):
        return "arm"
    if n.startswith(("upperleg", "lowerleg")):
        return "leg"
    if n.startswith(("foot", "toe")):
        return "foot"
    return "trunk"  # root, pelvis, spine, clavicle, breast


def vertex_parts(model: BodyModel) -> np.ndarray:
    """(13718,) int8 index into PARTS of each anny vertex, from its dominant skinning bone."""
    m = model._model
    idx = m.vertex_bone_indices.numpy()
    w = m.vertex_bone_weights.numpy()
    dom = idx[np.arange(len(idx)), w.argmax(1)]
    lut = np.array([PARTS.index(_part_of_bone(b)) for b in model.bone_labels], dtype=np.int8)
    return lut[dom]


def landmark_weights(model: BodyModel) -> dict[str, np.ndarray]:
    """Per-vertex weights in [0, 1] of non-skin or special tissue on the template.

    Keys: 'lips', 'nipple', 'nail', 'palm_sole'. Each (13718,) float32. Lips and nipples come
    from the MakeHuman morph targets that move them; nails are the dorsal tips of the distal
    phalanges (the dorsal side is the one away from the thumb); palms and soles from normals.
    """
    n = len(model._template_vertices)
    v = model._template_vertices
    out: dict[str, np.ndarray] = {}

    def from_target(paths: list[str], thresh_mm: float) -> np.ndarray:
        w = np.zeros(n, np.float32)
        for p in paths:
            w[model.target_vertices(p, thresh_mm)] = 1.0
        return w

    out["lips"] = from_target(["mouth/mouth-upperlip-volume-incr", "mouth/mouth-lowerlip-volume-incr"], 0.8)
    out["nipple"] = from_target(["breast/nipple-size-incr"], 0.3)

    # vertex normals of the template
    f = model.faces
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)

    m = model._model
    idx = m.vertex_bone_indices.numpy()
    wts = m.vertex_bone_weights.numpy()
    dom = idx[np.arange(n), wts.argmax(1)]
    heads = model.template_bone_heads
    labels = model.bone_labels
    nail = np.zeros(n, np.float32)
    palm_sole = np.zeros(n, np.float32)
    for side in ("L", "R"):
        h = lambda b: heads[labels.index(f"{b}.{side}")]  # noqa: E731
        # plane of the hand through the bases of fingers 2 and 5 and the wrist
        normal = np.cross(h("finger5-1") - h("finger2-1"), h("finger3-1") - h("wrist"))
        normal /= np.linalg.norm(normal)
        if np.dot(h("finger1-3") - h("finger3-1"), normal) > 0:  # thumb lies on the palm side
            normal = -normal
        dorsal = normal
        hand = np.isin(dom, [labels.index(b) for b in labels if b.endswith(side) and _part_of_bone(b) == "hand"])
        palm_sole[hand & (vn @ dorsal < -0.45)] = 1.0
        for k in range(1, 6):
            bi = labels.index(f"finger{k}-3.{side}")
            mine = np.flatnonzero(dom == bi)
            if len(mine) == 0:
                continue
            base = heads[bi]
            axis = v[mine].mean(0) - base
            axis /= np.linalg.norm(axis)
            t = (v[mine] - base) @ axis
            tip_part = t > np.percentile(t, 35)
            nail[mine[tip_part & (vn[mine] @ dorsal > 0.55)]] = 1.0
        foot = np.isin(dom, [labels.index(b) for b in labels if b.endswith(side) and _part_of_bone(b) == "foot"])
        palm_sole[foot & (vn[:, 2] < -0.6)] = 1.0
    out["nail"] = nail
    out["palm_sole"] = palm_sole
    return out
