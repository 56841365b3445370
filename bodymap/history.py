"""One lesion's history over a patient's visits: close-ups at one scale and orientation, its
measures at every visit, their change and growth rate per year, and a plot over time.

    visits = [HistoryVisit(scan, lesions, date="2025-03-01", correspondence=corr), ...]  # date order
    series = bodymap.followup.chain_ids(...)  (or track_series)
    h = lesion_history(visits, series, pid)       # LesionHistory
    h.sightings[k].closeup, h.steps[k].diameter_rate_mm_per_year, h.plot_png(), h.strip()

Close-ups are taken straight down the surface normal (bodymap.export.closeup.CloseUps) with one
field in millimetres for every visit (2.5 times the lesion's largest diameter over the visits,
at least 10 mm), so a pixel is the same size on the skin at every visit. Their "up" is the
body's up at the lesion: the direction in which the registered template's height (z) grows
along the skin there, which the registration carries to every visit whatever the pose (an arm
raised at one visit and lowered at the next shows the lesion the same way up). Where the skin
is nearly level in the template (top of the head, soles, tops of the shoulders) up is the
template's front (-y) instead; without a registration it is the scan's +z.

Qt-free: the GUI's history panel (gui/history.py) and the PDF report show what this computes.
"""
from __future__ import annotations

import dataclasses
import datetime
import io

import numpy as np

from bodymap.colour import delta_e

# Neighbourhood of the lesion used to find the body's up on the skin (mm).
UP_RADIUS_MM = 20.0
# Below this slope (template height per mm of skin) the skin is level in the body: use the front.
LEVEL_SLOPE = 0.35


def parse_date(text: str | None) -> datetime.date | None:
    """An ISO date (YYYY-MM-DD, a time after it ignored) or None when missing or unreadable."""
    if not text:
        return None
    try:
        return datetime.date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def years_between(date1: str | None, date2: str | None) -> float | None:
    """Years (365.25 days) from date1 to date2 (ISO strings); None when either is unknown."""
    a, b = parse_date(date1), parse_date(date2)
    if a is None or b is None:
        return None
    return (b - a).days / 365.25


def rate_per_year(value1: float, value2: float, years: float | None) -> float | None:
    """(value2 - value1) / years; None when the time between is unknown or under a day."""
    if years is None or abs(years) < 1.0 / 365.25:
        return None
    return (float(value2) - float(value1)) / years


@dataclasses.dataclass
class HistoryVisit:
    """One visit as the history needs it: scan (textured, mm), lesions (LesionSet), date (ISO
    string or None), correspondence (bodymap.anatomy.register.Correspondence of scan, or None:
    close-ups then take the scan's +z as up), title (what the panel and report print)."""

    scan: object
    lesions: object
    date: str | None = None
    correspondence: object = None
    title: str = ""
    _closeups: object = dataclasses.field(default=None, repr=False)
    _tree: object = dataclasses.field(default=None, repr=False)
    _template_points: object = dataclasses.field(default=None, repr=False)

    def closeups(self):
        """The scan's CloseUps (built on first use: one ray-casting structure per scan)."""
        if self._closeups is None:
            from bodymap.export.closeup import CloseUps

            self._closeups = CloseUps(self.scan)
        return self._closeups

    def lesion(self, lid: int):
        for l in self.lesions.lesions:
            if l.id == lid:
                return l
        raise KeyError(f"no lesion {lid} at visit {self.title or self.date}")

    def body_up(self, point, normal) -> np.ndarray | None:
        """The body's up (3,) unit on the tangent plane at point (3,) mm with normal (3,), from
        the registration (see the module's docstring); None without one."""
        if self.correspondence is None:
            return None
        from scipy.spatial import cKDTree

        if self._tree is None:
            from bodymap.anatomy.template import load_template

            t = load_template()
            self._tree = cKDTree(self.scan.vertices)
            self._template_points = self.correspondence.template_points(t.vertices, t.faces)
        return body_up(self.scan.vertices, self._template_points, point, normal, self._tree)


def body_up(vertices: np.ndarray, template_points: np.ndarray, point, normal, tree=None,
            radius_mm: float = UP_RADIUS_MM) -> np.ndarray:
    """The body's up on the skin at point (3,) mm, normal (3,): the gradient, on the tangent
    plane, of the template height (template_points[:, 2], mm) over the scan's vertices (n, 3)
    within radius_mm (least squares); the gradient of -template y (the front) where the skin is
    level in the template (slope < LEVEL_SLOPE). Returns a unit vector (3,) perpendicular to
    normal. tree: a scipy cKDTree of vertices (built here when None)."""
    from bodymap.measures import tangent_frame

    n = np.asarray(normal, np.float64)
    n = n / max(np.linalg.norm(n), 1e-12)
    e1, e2 = tangent_frame(n)
    if tree is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(vertices)
    idx = np.asarray(tree.query_ball_point(np.asarray(point, np.float64), radius_mm), np.int64)
    d = vertices[idx] - np.asarray(point, np.float64)
    # the skin facing the same way only (not the arm beside the torso within the radius)
    idx = idx[np.abs(d @ n) < 0.5 * radius_mm]
    if len(idx) < 6:
        return e1
    d = vertices[idx] - np.asarray(point, np.float64)
    X = np.c_[d @ e1, d @ e2, np.ones(len(idx))]
    for values, min_slope in ((template_points[idx, 2], LEVEL_SLOPE), (-template_points[idx, 1], 0.0)):
        g = np.linalg.lstsq(X, values, rcond=None)[0][:2]
        if np.linalg.norm(g) >= max(min_slope, 1e-6):
            up = g[0] * e1 + g[1] * e2
            return up / np.linalg.norm(up)
    return e1


@dataclasses.dataclass
class Sighting:
    """The lesion at one visit: visit index (in the list given), date, lesion id there, status
    in the series ('new', 'grown', 'changed', 'stable', 'untracked'), diameter_mm (longest),
    area_mm2, lab (3,) mean CIELAB inside, closeup (size, size, 3) uint8 or None, mm_per_px."""

    visit: int
    date: str | None
    title: str
    lesion_id: int
    status: str
    diameter_mm: float
    area_mm2: float
    lab: list[float]
    closeup: np.ndarray | None = None
    mm_per_px: float = 0.0


@dataclasses.dataclass
class Step:
    """The change from one sighting to the next (consecutive visits where the lesion was seen):
    years between (None when a date is missing), changes in diameter (mm), area (mm2), colour
    (CIE76 Delta E of the mean Lab), and the growth rates per year (None without dates)."""

    visit1: int
    visit2: int
    years: float | None
    diameter_change_mm: float
    area_change_mm2: float
    colour_change_de: float
    diameter_rate_mm_per_year: float | None
    area_rate_mm2_per_year: float | None


@dataclasses.dataclass
class LesionHistory:
    """Persistent lesion pid over the visits: sightings in visit order, steps between
    consecutive sightings, field_mm of every close-up; body_up: every close-up has the body's
    up at the top (all visits registered), else some have the scan's +z."""

    pid: int
    sightings: list[Sighting]
    steps: list[Step]
    field_mm: float
    body_up: bool = False

    @property
    def diameter_rate_mm_per_year(self) -> float | None:
        """Growth of the longest diameter from the first sighting to the last, mm per year."""
        if len(self.sightings) < 2:
            return None
        a, b = self.sightings[0], self.sightings[-1]
        return rate_per_year(a.diameter_mm, b.diameter_mm, years_between(a.date, b.date))

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """A table: columns and one row per sighting (change and rate since the previous one)."""
        cols = ["visit", "date", "id", "status", "diam. mm", "area mm2", "L a b", "d diam.", "mm/year",
                "d area", "dE"]
        rows = []
        for k, s in enumerate(self.sightings):
            st = self.steps[k - 1] if k else None
            rows.append([s.title or f"visit {s.visit + 1}", s.date or "-", str(s.lesion_id), s.status,
                         f"{s.diameter_mm:.1f}", f"{s.area_mm2:.1f}", " ".join(f"{c:.0f}" for c in s.lab),
                         f"{st.diameter_change_mm:+.1f}" if st else "",
                         f"{st.diameter_rate_mm_per_year:+.2f}" if st and st.diameter_rate_mm_per_year is not None
                         else "", f"{st.area_change_mm2:+.1f}" if st else "",
                         f"{st.colour_change_de:.1f}" if st else ""])
        return cols, rows

    def plot_png(self, width_in: float = 6.0, height_in: float = 4.5, dpi: int = 100) -> bytes:
        """Diameter, area and colour (L*, and Delta E from the first sighting) over time (dates
        on x; visit numbers when dates are missing) as PNG bytes. matplotlib's Figure, no GUI
        backend: safe in a worker thread."""
        from matplotlib.figure import Figure

        dates = [parse_date(s.date) for s in self.sightings]
        x = dates if all(d is not None for d in dates) else [s.visit + 1 for s in self.sightings]
        fig = Figure(figsize=(width_in, height_in), dpi=dpi)
        axes = fig.subplots(3, 1, sharex=True)
        lab0 = np.asarray(self.sightings[0].lab, np.float64) if self.sightings else np.zeros(3)
        series = [("diameter (mm)", [s.diameter_mm for s in self.sightings]),
                  ("area (mm²)", [s.area_mm2 for s in self.sightings]),
                  ("ΔE from first", [float(delta_e(s.lab, lab0)) for s in self.sightings])]
        for ax, (name, ys) in zip(axes, series):
            ax.plot(x, ys, "o-", color="#b22222")
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"lesion {self.pid}", fontsize=9)
        if x and not isinstance(x[0], int):
            fig.autofmt_xdate()
        else:
            axes[-1].set_xlabel("visit", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def strip(self, scale_bar_mm: float = 5.0):
        """The close-ups side by side (a PIL RGB image), each captioned with its visit, date and
        diameter, with a scale bar of scale_bar_mm on the first. Sightings without a close-up
        are grey."""
        from PIL import Image, ImageDraw

        shots = [s.closeup for s in self.sightings]
        size = next((c.shape[0] for c in shots if c is not None), 192)
        cap, gap = 34, 6
        page = Image.new("RGB", (len(shots) * (size + gap) + gap, size + cap + gap), "white")
        d = ImageDraw.Draw(page)
        for k, s in enumerate(self.sightings):
            x0 = gap + k * (size + gap)
            img = Image.fromarray(s.closeup) if s.closeup is not None else Image.new("RGB", (size, size), "#999999")
            page.paste(img, (x0, gap))
            d.text((x0, size + gap + 2), f"{s.title or f'visit {s.visit + 1}'}  {s.date or ''}", fill="black")
            d.text((x0, size + gap + 16), f"#{s.lesion_id}  {s.diameter_mm:.1f} mm  {s.status}", fill="black")
            if k == 0 and s.mm_per_px > 0:
                bar = scale_bar_mm / s.mm_per_px
                y = gap + size - 8
                d.line([(x0 + 6, y), (x0 + 6 + bar, y)], fill="black", width=3)
                d.text((x0 + 6, y - 13), f"{scale_bar_mm:g} mm", fill="black")
        return page


def lesion_history(visits: list[HistoryVisit], series, pid: int, closeups: bool = True,
                   size_px: int = 192, field_mm: float | None = None) -> LesionHistory:
    """The history of persistent lesion pid (bodymap.followup.Series over visits, same order).
    closeups: take a close-up at every sighting (size_px square, field_mm wide on the skin;
    default 2.5 x the largest diameter over the visits, at least 10 mm). Raises KeyError when
    no visit holds pid."""
    from bodymap.export.closeup import closeup_field_mm

    seen = series.history(pid)
    if not seen:
        raise KeyError(f"no lesion with persistent id {pid}")
    lesions = [(k, visits[k].lesion(lid)) for k, lid in seen]
    if field_mm is None:
        field_mm = closeup_field_mm(max(l.diameter_mm for _, l in lesions))
    out = []
    for k, l in lesions:
        v = visits[k]
        lab = [float(l.measures[c]) for c in ("L", "A", "B")] if all(
            (l.measures or {}).get(c) is not None for c in ("L", "A", "B")) else [float(c) for c in l.colour_lab or [0, 0, 0]]
        img, g = None, 0.0
        if closeups and v.scan.texture is not None:
            img, _, g = v.closeups()(l.point_mm, l.normal, field_mm, size_px, up_dir=v.body_up(l.point_mm, l.normal))
        out.append(Sighting(k, v.date, v.title, l.id, series.status[k].get(l.id, ""), float(l.diameter_mm),
                            float(l.area_mm2), lab, img, g))
    steps = []
    for a, b in zip(out, out[1:]):
        yrs = years_between(a.date, b.date)
        steps.append(Step(a.visit, b.visit, yrs, b.diameter_mm - a.diameter_mm, b.area_mm2 - a.area_mm2,
                          float(delta_e(a.lab, b.lab)), rate_per_year(a.diameter_mm, b.diameter_mm, yrs),
                          rate_per_year(a.area_mm2, b.area_mm2, yrs)))
    return LesionHistory(int(pid), out, steps, float(field_mm),
                         all(visits[k].correspondence is not None for k, _ in lesions))


def flagged(series, last_only: bool = True) -> list[int]:
    """Persistent ids of lesions a clinician should look at: new (after the first visit), grown
    or changed at the last visit (last_only) or at any visit; in id order."""
    visits = [series.status[-1]] if last_only and series.status else series.status
    ids = series.ids[-1:] if last_only and series.ids else series.ids
    out = {ids[k][lid] for k, st in enumerate(visits) for lid, s in st.items() if s in ("new", "grown", "changed")}
    return sorted(out)


def flagged_histories(visits: list[HistoryVisit], series, pids: list[int] | None = None,
                      progress=None, size_px: int = 192) -> list[LesionHistory]:
    """The histories (with close-ups) of pids, default the lesions flagged at the last visit
    (``flagged``): what the PDF report gets a page for. progress(stage, fraction) optional."""
    pids = flagged(series) if pids is None else pids
    out = []
    for k, pid in enumerate(pids):
        if progress:
            progress(f"lesion history {k + 1}/{len(pids)}", k / max(len(pids), 1))
        out.append(lesion_history(visits, series, pid, size_px=size_px))
    return out


def write_project_report(project, path, progress=None) -> "Path":  # noqa: F821
    """The PDF report of a project's last analysed visit (bodymap.session.Project): body maps and
    lesion table, the change since the visit before when that link was tracked, and a page per
    flagged lesion with its close-ups over every visit (scans read from the project's paths,
    registrations from the analysis folders). Returns path."""
    from pathlib import Path

    from bodymap.export.report import write_report
    from bodymap.io import load_scan

    say = progress or (lambda s, f: None)
    vs = project.visits
    done = [k for k, v in enumerate(vs) if v.lesions is not None]
    if not done:
        raise ValueError(f"{project.path or 'project'}: no analysed visit to report")
    visits = []
    for k, v in enumerate(vs):
        say(f"reading visit {k + 1}", 0.3 * k / len(vs))
        if v.lesions is None:
            visits.append(None)
            continue
        scan = load_scan(v.scan_path)
        corr = None
        if v.analysis_dir and (Path(v.analysis_dir) / "labels.npz").is_file():
            from bodymap.anatomy.labels import load_correspondence

            corr = load_correspondence(Path(v.analysis_dir) / "labels.npz", scan.n_vertices)
        from bodymap.export.record import visit_date_of

        visits.append(HistoryVisit(scan, v.lesions, v.date or visit_date_of(scan) or None, corr,
                                   v.title or f"visit {k + 1}"))
    series = project.series()
    for k, v in enumerate(visits):
        if v is None:
            series.ids[k] = {}
    last = done[-1]
    series.ids, series.status = series.ids[:last + 1], series.status[:last + 1]
    hs = flagged_histories(visits[:last + 1], series, progress=lambda s, f: say(s, 0.3 + 0.4 * f))
    comparison = None
    tr = project.link_tracking(last) if last >= 1 and visits[last - 1] is not None else None
    if tr:
        from bodymap.track import Tracking

        t = Tracking.from_dict(tr, project.path or "project")
        comparison = (visits[last - 1].scan, visits[last - 1].lesions, t)
    pt = project.patient
    who = f"{pt.id} {pt.name}".strip() if pt is not None else ""
    title = f"BodyMap report: {visits[last].title}" + (f" ({visits[last].date})" if visits[last].date else "")
    from bodymap.anatomy.labels import registered_view_frame as upright

    before = visits[last - 1] if comparison is not None else None
    frames = (upright(visits[last].scan.vertices, visits[last].correspondence),
              upright(before.scan.vertices, before.correspondence) if before is not None else None)
    return write_report(path, visits[last].scan, visits[last].lesions, title=title, patient=who,
                        comparison=comparison, diagnoses=vs[last].diagnoses, histories=hs,
                        progress=lambda s, f: say(s, 0.7 + 0.3 * f), frames=frames)
