"""A classical lesion detector that needs no weights: blobs of colour contrast to the skin around.

Route: CIELAB; tone zones (on darker skin, palms and soles are far paler than the back of the
hand or foot: each zone is its own skin, so the boundary between them is no contrast); the local
skin colour by normalised convolution over each zone's skin (at a quarter resolution: skin
colour varies slowly), twice, the second time without the candidates of the first so large
lesions do not tint their own background; contrast = how much darker, redder or browner each
pixel is (``bodymap.colour.lesion_contrast``); hysteresis thresholds scaled to the skin's own
texture noise; connected components, each split at its saddles into blobs that stand apart (a
lesion beside an areola or another lesion), dropping hair-like (long and thin) blobs and
one-sided ones (the dark side of an edge). Each box comes with its blob's mask.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from bodymap.colour import delta_e, lesion_contrast, srgb_to_lab
from bodymap.detect import Boxes


def local_skin_colour(lab: np.ndarray, mask: np.ndarray, sigma_px: float, factor: int = 4) -> np.ndarray:
    """Slowly varying skin colour: Gaussian normalised convolution of lab (h, w, 3) over mask
    (h, w) bool with width sigma_px (pixels), computed at 1/factor resolution. Returns (h, w, 3)."""
    h, w = mask.shape
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    m = np.zeros((H, W), np.float32)
    m[:h, :w] = mask
    v = np.zeros((H, W, 3), np.float32)
    np.multiply(lab, mask[..., None], out=v[:h, :w])  # (no temporary: a 2048^2 tile's is 50 MB)
    # block sums at low resolution, then a Gaussian there
    ms = m.reshape(H // factor, factor, W // factor, factor).sum((1, 3))
    vs = v.reshape(H // factor, factor, W // factor, factor, 3).sum((1, 3))
    s = sigma_px / factor
    den = ndimage.gaussian_filter(ms, s, mode="constant")
    num = np.stack([ndimage.gaussian_filter(vs[..., k], s, mode="constant") for k in range(3)], -1)
    low = (num / np.maximum(den, 1e-6)[..., None]).astype(np.float32, copy=False)
    # where no skin lies within reach, take the tile's overall skin colour (its mean read only
    # then: 50 ms of a tile's 270)
    far = den < 1e-3
    if far.any():
        low[far] = lab[mask].mean(0) if mask.any() else np.zeros(3, np.float32)
    # each low-resolution cell spread over its factor x factor pixels, in one copy
    up = np.broadcast_to(low[:, None, :, None], (H // factor, factor, W // factor, factor, 3))
    return np.ascontiguousarray(up.reshape(H, W, 3)[:h, :w])


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of values (k,): the split that maximises the between-class variance."""
    hist, edges = np.histogram(values, bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * mids)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    return float(mids[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def tone_zones(lab: np.ndarray, mask: np.ndarray, factor: int = 4, min_step: float = 10.0,
               max_share: float = 0.5, max_hole_px: int = 2500, min_zone_px: int = 64,
               edge_px: int = 3, same_de: float = 6.0) -> np.ndarray | None:
    """Skin of a clearly paler tone than the rest (palms and soles on darker skin), or None when
    the skin in view has one tone. lab (h, w, 3) CIELAB; mask (h, w) bool. Returns (h, w) bool.

    Lightness at 1/factor resolution splits into two classes (Otsu); they are two tones when
    their means differ by min_step (L*) or more and the paler one is the smaller share of the
    skin (at most max_share). The pale zone is then every pixel clearly paler than the main tone
    (so the ramp between the tones is not left with the darker skin), in pieces of at least
    min_zone_px; compact darker patches it encloses (lesions on a palm: at most max_hole_px)
    belong to it, while darker skin that reaches in from outside (the back of a finger between
    two palm-side strips), pockets within edge_px of the darker skin (a jagged edge) and
    pockets within same_de (Delta E) of the darker skin's colour (cut off by the UV layout) do
    not.
    """
    h, w = mask.shape
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    m = np.zeros((H, W), np.float32)
    m[:h, :w] = mask
    L = np.zeros((H, W), np.float32)
    L[:h, :w] = lab[..., 0] * mask
    ms = m.reshape(H // factor, factor, W // factor, factor).sum((1, 3))
    Ls = L.reshape(H // factor, factor, W // factor, factor).sum((1, 3)) / np.maximum(ms, 1)
    vals = Ls[ms >= factor * factor / 2]
    if len(vals) < 64:
        return None
    t = otsu(vals)
    pale, dark = vals > t, vals <= t
    if not pale.any() or not dark.any() or vals[pale].mean() - vals[dark].mean() < min_step \
            or pale.mean() > max_share:
        return None
    # clearly paler than the main tone, its block-to-block variation allowing
    md = np.median(vals[dark])
    t = max(md + 0.1 * (vals[pale].mean() - md), md + 3.0 * 1.4826 * np.median(np.abs(vals[dark] - md)))
    zone = mask & (lab[..., 0] > t)  # pixel by pixel: the edge stays where it is
    lab_z, n = ndimage.label(zone)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones(zone.shape, np.float32), lab_z, np.arange(1, n + 1))
    zone = np.isin(lab_z, 1 + np.flatnonzero(sizes >= min_zone_px))
    if not zone.any():
        return None
    rest, n = ndimage.label(mask & ~zone)
    if n:
        sizes = ndimage.sum_labels(np.ones(zone.shape, np.float32), rest, np.arange(1, n + 1))
        slices = ndimage.find_objects(rest)
        # a pocket the jagged edge of the zone leaves in the darker skin is no lesion on the palm
        big = np.isin(rest, 1 + np.flatnonzero(sizes > max_hole_px))
        edge = ndimage.binary_dilation(big, iterations=edge_px) if big.any() else np.zeros_like(big)
        # and a pocket of exactly the darker skin's colour is that skin, cut off by the UV layout
        dark_skin = np.median(lab[big], axis=0) if big.any() else None
        for k in np.flatnonzero(sizes <= max_hole_px):
            inside = rest[slices[k]] == k + 1
            if edge[slices[k]][inside].any():
                continue
            if dark_skin is not None and delta_e(np.median(lab[slices[k]][inside], axis=0), dark_skin) < same_de:
                continue
            sl = tuple(slice(max(0, q.start - 2), q.stop + 2) for q in slices[k])
            comp = rest[sl] == k + 1
            border = ndimage.binary_dilation(comp, iterations=2) & ~comp
            # enclosed (the image's edge aside) by the pale zone, and lesion-shaped (compact)
            if (zone[sl] & border).sum() >= 0.75 * max((mask[sl] & border).sum(), 1) and _elongation(comp) <= 2.0:
                zone[sl] |= comp
    return zone


def zone_ramp(L: np.ndarray, zone: np.ndarray, max_px: int = 16) -> np.ndarray:
    """(h, w) bool: the ramp along the edge of a pale zone (h, w) bool where its lightness L
    (h, w) climbs from the darker skin to its own level: from the zone's edge inwards, to pixels
    no darker than a neighbour already on the ramp (a noise's worth allowed) and below the
    zone's level. A lesion near the edge is a dip: the ramp may take its rim, not its darker
    core; at most max_px pixels."""
    if not zone.any():
        return zone
    lz = L[zone]
    # the zone's own tone from its paler part (where a sole is a scanner's hole, most of what is
    # left of the zone can be ramp)
    top = lz[lz >= np.percentile(lz, 75)]
    level = np.median(top)
    noise = max(1.0, 1.4826 * np.median(np.abs(top - level)))
    low = zone & (L < level - 2 * noise)
    ramp = low & ndimage.binary_dilation(~zone, iterations=1)
    if not ramp.any():
        return ramp
    # the ramp grows within `low` only: work on its bounding box and a pixel round it (every
    # neighbour of a pixel of `low` lies inside), not on the whole tile (the same ramp, a
    # fraction of the erosions' time)
    ys, xs = np.nonzero(low)
    win = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
    Lw, loww, rampw = L[win], low[win], ramp[win]
    for _ in range(max_px):
        nb = ndimage.grey_erosion(np.where(rampw, Lw, np.inf), size=(3, 3))  # the darkest ramp neighbour
        grow = loww & ~rampw & np.isfinite(nb) & (Lw >= nb - noise)
        if not grow.any():
            break
        rampw |= grow
    return ramp


@dataclasses.dataclass
class ContrastDetector:
    """Multi-threshold contrast-blob detector (see module docstring).

    low, high : hysteresis thresholds on contrast (Delta E), each at least k_low / k_high times
    the skin's robust contrast noise; min_area_px : smallest blob; bg_sigma_px : width of the
    skin-colour estimate (wider than the largest lesion expected, in pixels); split_core: a
    blob's core ends at this share of its peak contrast (see _split_into_blobs); zone_ramp_px:
    the widest ramp (pixels) from a pale tone zone's edge into it (no contrast counted there,
    see zone_ramp).
    """

    low: float = 5.0
    high: float = 8.0
    k_low: float = 3.0
    k_high: float = 5.0
    min_area_px: int = 4
    bg_sigma_px: float = 24.0
    max_elongation: float = 5.0
    split_core: float = 0.7
    zone_ramp_px: int = 16
    tile: int = 2048
    overlap: int = 128
    parallel = True  # detect() keeps no state: tiles may run side by side (texture.detect_image_tiled)
    name: str = "classical"

    def contrast(self, lab: np.ndarray, mask: np.ndarray, zones: np.ndarray | None = None) -> np.ndarray:
        """(h, w) float32 lesion contrast of an image (h, w, 3) CIELAB against its local skin;
        zones (h, w) bool (tone_zones): pale skin, measured against pale skin only."""
        parts = [mask] if zones is None else [mask & ~zones, mask & zones]
        bg = np.zeros_like(lab)
        for part in parts:
            if not part.any():
                continue
            b = local_skin_colour(lab, part, self.bg_sigma_px)
            cand = ndimage.binary_dilation((lesion_contrast(lab, b) > self.low) & part, iterations=3)
            b = local_skin_colour(lab, part & ~cand, self.bg_sigma_px) if (part & ~cand).any() else b
            bg[part] = b[part]
        c = lesion_contrast(lab, bg)
        c[~mask] = 0.0
        if zones is not None:
            # the ramp from pale to dark skin (at the zone's edge, or at a UV chart's edge where
            # the back of the hand continues across the seam) is a one-sided edge, no lesion
            c[zone_ramp(lab[..., 0], zones, self.zone_ramp_px)] = 0.0
        c = ndimage.gaussian_filter(c, 0.7)  # texture grain and pores are finer than any lesion
        c[~mask] = 0.0
        return c

    def detect(self, image: np.ndarray, mask: np.ndarray) -> Boxes:
        """Boxes (with masks) of lesion-like blobs in image (h, w, 3) uint8 within mask (h, w) bool."""
        mask = np.asarray(mask, bool)
        if mask.sum() < 16:
            return Boxes.empty()
        lab = srgb_to_lab(image)
        zones = tone_zones(lab, mask)
        c = self.contrast(lab, mask, zones)
        vals = c[mask]
        noise = 1.4826 * np.median(np.abs(vals - np.median(vals)))
        lo, hi = max(self.low, self.k_low * noise), max(self.high, self.k_high * noise)
        lab_img, n = ndimage.label(c > lo, structure=np.ones((3, 3)))
        if n == 0:
            return Boxes.empty()
        # each component's peak contrast and area from its own pixels (a few per cent of the
        # tile), not by ndimage's per-label passes over the whole tile
        on = lab_img > 0
        labs = lab_img[on]
        peak = np.full(n + 1, -np.inf, c.dtype)
        np.maximum.at(peak, labs, c[on])
        peak, area = peak[1:], np.bincount(labs, minlength=n + 1)[1:]
        slices = ndimage.find_objects(lab_img)
        boxes, scores, masks = [], [], []
        for k in np.flatnonzero((peak > hi) & (area >= self.min_area_px)):
            sl = slices[k]
            comp = lab_img[sl] == k + 1
            for blob in _split_into_blobs(c[sl], comp, hi, self.split_core, self.max_elongation):
                if blob.sum() < self.min_area_px or _elongation(blob) > self.max_elongation:
                    continue  # a speck; a hair, a crease, a vein
                bp = c[sl][blob].max()
                if bp <= hi:
                    continue
                ys, xs = np.nonzero(blob)
                y0, y1 = sl[0].start + ys.min(), sl[0].start + ys.max() + 1
                x0, x1 = sl[1].start + xs.min(), sl[1].start + xs.max() + 1
                bm = blob[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                if not _surrounded(lab, mask, bm, (y0, y1, x0, x1), lo, zones):
                    continue  # the dark side of an edge between skins of two tones (palm, sole)
                boxes.append((x0, y0, x1, y1))
                masks.append(bm)
                # confidence: how far the blob's peak clears the high threshold
                scores.append(1.0 - np.exp(-(bp - 0.5 * hi) / hi))
        if not boxes:
            return Boxes.empty()
        return Boxes(np.array(boxes, np.float32), np.clip(np.array(scores, np.float32), 0.0, 1.0), masks)


def _split_into_blobs(c: np.ndarray, comp: np.ndarray, hi: float, core: float = 0.7,
                      max_elongation: float = 5.0, embedded: float = 0.35) -> list[np.ndarray]:
    """The blobs of one component comp (h, w) bool of contrast c (h, w). Cores, strongest first:
    what is connected to the strongest free pixel above core x its contrast (its own
    half-contrast border); a core's surroundings (3 pixels) seed no other core, so a blob's
    skirt stays its own, while a patch that peaks elsewhere above hi is another blob (a lesion
    beside an areola or another lesion, joined by a faint skirt, a hair, noise); a core as thin
    as a hair (elongation over max_elongation) or under 4 pixels seeds no blob. Every pixel
    of the component then goes to a core by watershed on the contrast (_flood), and a blob
    whose surroundings are at least `embedded` other blobs (a darker part of one patterned
    lesion) joins them. Returns bool masks."""
    if comp.sum() < 24:
        return [comp]
    cc = np.where(comp, c, 0.0)
    free = comp.copy()
    cores: list[np.ndarray] = []
    while True:
        cand = free & (cc > hi)
        if not cand.any():
            break
        y, x = divmod(int(np.argmax(np.where(cand, cc, -1.0))), cc.shape[1])
        lab, _ = ndimage.label(free & (cc >= core * cc[y, x]), structure=np.ones((3, 3)))
        blob = lab == lab[y, x]
        if blob.sum() >= 4 and _elongation(blob) <= max_elongation:  # not a piece of a hair
            cores.append(blob)
        free &= ~ndimage.binary_dilation(blob, iterations=3)
    if len(cores) <= 1:
        return [comp]
    blobs = _flood(cc, comp, cores)
    # a blob mostly surrounded by the others is a part of one patterned lesion, not a lesion
    # beside a patch: it joins the neighbour it shares most border with
    while len(blobs) > 1:
        for i, b in enumerate(blobs):
            ring = ndimage.binary_dilation(b, iterations=2) & ~b
            shared = [(ring & o).sum() if j != i else -1 for j, o in enumerate(blobs)]
            if sum(max(x, 0) for x in shared) >= embedded * max(ring.sum(), 1):
                j = int(np.argmax(shared))
                blobs[j] = blobs[j] | b
                del blobs[i]
                break
        else:
            break
    return blobs if len(blobs) > 1 else [comp]


def _flood(c: np.ndarray, comp: np.ndarray, cores: list[np.ndarray], levels: int = 16) -> list[np.ndarray]:
    """Watershed by immersion from cores over comp (h, w) bool of contrast c (h, w): from the
    highest contrast down, each core takes the pixels it reaches first. Returns the regions."""
    lab = np.zeros(c.shape, np.int32)
    for j, b in enumerate(cores, 1):
        lab[b] = j
    for t in list(np.linspace(c[comp].max(), c[comp].min(), levels)[1:]) + [-np.inf]:
        allowed = comp & (c >= t)
        while True:
            grown = ndimage.grey_dilation(lab, footprint=np.ones((3, 3), bool))
            new = allowed & (lab == 0) & (grown > 0)
            if not new.any():
                break
            lab[new] = grown[new]
    return [lab == j for j in range(1, len(cores) + 1)]


def _elongation(comp: np.ndarray) -> float:
    """Ratio of the principal axes (>= 1) of a binary blob (h, w) bool."""
    ys, xs = np.nonzero(comp)
    if len(xs) < 5:
        return 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # + a pixel's own extent
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(ev[1] / max(ev[0], 1e-9)))


def _surrounded(lab: np.ndarray, mask: np.ndarray, blob: np.ndarray, box: tuple[int, int, int, int],
                level: float, zones: np.ndarray | None = None, sectors: int = 8) -> bool:
    """Whether a blob stands out from the skin on (nearly) every side: the blob's core colour
    against the median skin colour in each of `sectors` directions of a ring around it (skin of
    the blob's own tone zone only). lab (h, w, 3); mask (h, w) bool; blob (y1 - y0, x1 - x0)
    bool at box (y0, y1, x0, x1); zones (h, w) bool or None; level: contrast needed."""
    y0, y1, x0, x1 = box
    m = max(3, (max(y1 - y0, x1 - x0) + 1) // 2)
    Y0, Y1, X0, X1 = max(0, y0 - m), min(mask.shape[0], y1 + m), max(0, x0 - m), min(mask.shape[1], x1 + m)
    comp = np.zeros((Y1 - Y0, X1 - X0), bool)
    comp[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = blob
    skin = mask[Y0:Y1, X0:X1]
    if zones is not None:
        z = zones[Y0:Y1, X0:X1]
        skin = skin & (z == (z[comp].mean() >= 0.5))
    ring = skin & ~ndimage.binary_dilation(comp, iterations=2)
    if ring.sum() < sectors:
        return True  # too little skin around to judge (a blob at a chart's edge): keep it
    w = lab[Y0:Y1, X0:X1]
    core = np.median(w[comp], axis=0)
    yy, xx = np.nonzero(comp)
    cy, cx = yy.mean(), xx.mean()
    ry, rx = np.nonzero(ring)
    sec = ((np.arctan2(ry - cy, rx - cx) + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    ring_lab = w[ring]
    ok = total = 0
    for j in range(sectors):
        sel = sec == j
        if sel.sum() < 2:
            continue
        total += 1
        ok += lesion_contrast(core, np.median(ring_lab[sel], axis=0)) >= 0.5 * level
    return total == 0 or ok >= 0.75 * total
