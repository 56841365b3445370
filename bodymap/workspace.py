"""The application layer under the CLI and the GUI: a Workspace of loaded visits and what is
done with them (no Qt in here).

    ws = Workspace()                          # or Workspace(project) for a bodymap.session.Project
    ws.on(lambda event, data: ...)            # "visits", "analysed", "tracking", "review" events
    ws.add(read_visit("analysis/visit1"))     # read_visit is the slow part (a GUI worker runs it)
    ws.add(read_visit("analysis/visit2"))
    ws.set_tracking(ws.compute_tracking())    # compute_tracking: slow, respects every review
    ws.review("reject", id2, id1)             # through the project's History: undoable
    ws.write_tracking(out)                    # tracking.json, .csv, change map, merged reviews

A visit is read once (`read_visit`: an analysis folder, a scan file, or a project's
VisitState, with the same checks everywhere); its scan, region labels, template correspondence
and renderer are kept with it (`LoadedVisit`) and built on first use only. The GUI calls the
slow functions (read_visit, analyse_visit, compute_tracking) in workers and applies their
results here on its thread; the CLI calls the same functions in turn.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from pathlib import Path
from typing import Callable

from bodymap.session import History, Project, Review, VisitState

Progress = Callable[[str, float], None]
Listener = Callable[[str, object], None]


@dataclasses.dataclass(eq=False)
class LoadedVisit:
    """One visit in memory: state (bodymap.session.VisitState: paths, the lesion list with the
    clinician's edits, diagnoses), scan (bodymap.scan.Scan, mm), labels (RegionLabels or None
    before analysis). The correspondence (from the analysis folder's labels.npz) and a
    renderer are made on first use and kept."""

    state: VisitState
    scan: object
    labels: object = None
    _correspondence: object = None
    _renderer: object = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    @property
    def labels_file(self) -> Path | None:
        d = self.state.analysis_dir
        return Path(d) / "labels.npz" if d and (Path(d) / "labels.npz").exists() else None

    def correspondence(self):
        """The template correspondence of the scan (bodymap.anatomy.register.Correspondence),
        read from labels.npz once; None when the visit has no analysis (tracking registers)."""
        with self._lock:
            if self._correspondence is None and self.labels_file is not None:
                from bodymap.anatomy.labels import load_correspondence

                self._correspondence = load_correspondence(self.labels_file, self.scan.n_vertices)
            return self._correspondence

    def renderer(self):
        """A RaycastRenderer of the scan (close-ups, maps), built once."""
        with self._lock:
            if self._renderer is None:
                from renderers import RaycastRenderer

                self._renderer = RaycastRenderer(self.scan)
            return self._renderer

    def for_tracking(self, lesions=None):
        """A bodymap.track.Visit of this visit (lesions: a copy to track, default its own)."""
        from bodymap.track import Visit

        return Visit(self.scan, self.state.lesions if lesions is None else lesions, self.correspondence())


def _title(path: Path) -> str:
    return path.name if path.is_dir() else f"{path.parent.name}/{path.name}"


def read_visit(path: str | Path | None = None, state: VisitState | None = None, units: str | None = None,
               scan=None) -> LoadedVisit:
    """Read one visit: an analysis folder (written by `bodymap analyze` or the GUI: its scan,
    lesions and labels), a scan file (not analysed yet), or a project's VisitState. The same
    checks as the CLI's (bodymap.pipeline.load_visit): a lesion list that does not fit the scan
    is a ValueError naming the file. Slow (reads the mesh); safe in a worker thread. scan: the
    state's scan already read (another visit of the project names the same file)."""
    from bodymap.anatomy.labels import RegionLabels
    from bodymap.pipeline import load_visit

    if state is None:
        p = Path(path)
        if p.is_dir():
            v = load_visit(p, units=units)
            state = VisitState(v.scan.meta.source, v.lesions, str(p.resolve()), title=_title(p))
            out = LoadedVisit(state, v.scan, _correspondence=v.correspondence)
        else:
            out = LoadedVisit(VisitState(str(p.resolve()), title=_title(p)), load_visit(p, units=units).scan)
    else:
        from bodymap.io import load_scan

        scan = scan if scan is not None else load_scan(state.scan_path, units=units)
        if state.lesions is not None:
            bad = [l.id for l in state.lesions.lesions if not 0 <= l.face < scan.n_faces]
            if bad:
                raise ValueError(f"{state.scan_path}: the saved lesions {bad[:5]} lie on faces this scan does not "
                                 "have: the scan file changed since the project was saved")
        out = LoadedVisit(state, scan)
    if out.labels_file is not None:
        labels = RegionLabels.load(out.labels_file)
        out.labels = labels if len(labels.site) == out.scan.n_vertices else None
    return out


def analyse_visit(visit: LoadedVisit, out: str | Path, progress: Progress | None = None, anatomy: bool = True):
    """Analyse a visit's scan (bodymap.pipeline.analyze: regions and lesions) and write the
    analysis folder out. Returns the pipeline Result. Slow; apply it with Workspace.set_analysis."""
    from bodymap.pipeline import analyze, write_result

    say = progress or (lambda s, f: None)
    visit.scan.require_texture()
    r = analyze(visit.scan, progress=say, anatomy=anatomy)
    say("writing results", 0.99)
    write_result(r, out)
    return r


class Workspace:
    """The visits open in one session (any number, in the project's date order; visits[0] and
    visits[1] are the pair the comparison shows and `tracking` tracks), their tracking and the
    clinician's edits (a bodymap.session.Project changed through its
    History). Listeners get (event, data) after every change: "visits" (the list changed),
    "analysed" (visit index), "tracking" (the Tracking or None), "edit" (the command)."""

    def __init__(self, project: Project | None = None):
        self.project = project or Project()
        self.history = History(self.project)
        self.history.listeners.append(lambda cmd: self.emit("edit", cmd))
        self.visits: list[LoadedVisit] = []
        self.tracking = None  # bodymap.track.Tracking of visits[1] against visits[0]
        # the last tracking's pair map: ((visit 1, visit 2, options), their correspondences,
        # Tracking.pair_points); a tracking of the same scans and registrations (after a review,
        # say) reuses it: 5-9 s of a 300k-face pair
        self._pair_map: tuple | None = None
        self.listeners: list[Listener] = []

    @classmethod
    def of(cls, *visits) -> "Workspace":
        """A Workspace of visits already in memory (bodymap.track.Visit: scan, lesions,
        correspondence; e.g. from bodymap.pipeline.load_visit): the CLI's way in."""
        ws = cls()
        for v in visits:
            ws.add(LoadedVisit(VisitState(v.scan.meta.source or "", v.lesions), v.scan,
                               _correspondence=v.correspondence))
        return ws

    # ---------------------------------------------------------------- events
    def on(self, listener: Listener) -> None:
        """Call listener(event, data) after every change."""
        self.listeners.append(listener)

    def emit(self, event: str, data=None) -> None:
        for f in list(self.listeners):
            f(event, data)

    # ---------------------------------------------------------------- visits
    @property
    def scans(self) -> list:
        return [v.scan for v in self.visits]

    @property
    def labels(self) -> list:
        return [v.labels for v in self.visits]

    def add(self, visit: LoadedVisit) -> int:
        """Add a read visit after the others (its state joins the project unless it is one of
        the project's visits already: a project being opened). Returns its index."""
        self.visits.append(visit)
        if visit.state not in self.project.visits:
            self.project.visits.append(visit.state)
        self.emit("visits", len(self.visits) - 1)
        return len(self.visits) - 1

    def open(self, path: str | Path, units: str | None = None) -> int:
        """read_visit + add (the CLI's way; the GUI reads in a worker, then adds)."""
        return self.add(read_visit(path, units=units))

    def truncate(self, n: int) -> None:
        """Keep the first n visits; the tracking goes with the second."""
        del self.visits[n:]
        del self.project.visits[n:]
        self.project.links = {k: r for k, r in self.project.links.items() if k < n}
        if n < 2:
            self.set_tracking(None)

    def set_analysis(self, k: int, result, out: str | Path) -> None:
        """Apply an analysis of visit k (analyse_visit's Result written to out): new lesion
        list (earlier edits referred to the old one: the undo history starts again), labels and
        correspondence; the tracking is out of date."""
        v = self.visits[k]
        v.state.lesions, v.state.diagnoses = result.lesions, {}
        if result.labels is not None:
            v.state.analysis_dir = str(out)
            v.labels, v._correspondence = result.labels, result.correspondence
        self.history.done.clear()
        self.history.undone.clear()
        self.history.clean_index = 0
        self.set_tracking(None)
        self.emit("analysed", k)

    # ---------------------------------------------------------------- tracking
    @property
    def can_track(self) -> bool:
        """The first two visits are there and analysed (what `tracking` tracks)."""
        return len(self.visits) >= 2 and all(v.state.lesions is not None for v in self.visits[:2])

    def link_tracking(self, k: int):
        """The Tracking of visit k against visit k - 1 (k >= 1; link 1 is `tracking`) as the
        project recorded it, or None (not tracked, unreadable or no such link)."""
        if k == 1:
            return self.tracking
        if not 1 <= k < len(self.project.visits):
            return None
        d = self.project.link_tracking(k)
        if not d:
            return None
        from bodymap.track import Tracking

        try:
            return Tracking.from_dict(d, self.project.path or "project")
        except ValueError:
            return None

    def gather_reviews(self, folders=(), own=None, explicit: str | Path | None = None, visits=None):
        """Every review of the two visits (bodymap.reviewfiles.gather: explicit (a file the
        user named), the given folders' (the first: the output folder), the analysis folders',
        the per-user store's), merged with the project's own (own: a copy of them; they win:
        they are the newest). visits: the two bodymap.track.Visit whose lesion lists the reviews
        are checked against (default: the workspace's; a tracking passes its copies, which hold
        the lesions its second look found). Returns (Reviews, files read, notes)."""
        from bodymap import reviewfiles

        v1, v2 = visits if visits is not None else (v.for_tracking() for v in self.visits[:2])
        dirs = list(dict.fromkeys(str(d) for d in [*folders, *(v.state.analysis_dir for v in self.visits[:2])] if d))
        rv, used, notes = reviewfiles.gather(v1, v2, dirs, explicit)
        own = own if own is not None else self.project.ensure_reviews()
        for j, i in own.confirmed.items():
            rv.confirm(j, i)
        for j, i in own.rejected:
            rv.reject(j, i)
        for j in own.new:
            rv.mark_new(j)
        return rv, used, notes

    def tracking_job(self, folders=(), reviews=None, explicit: str | Path | None = None,
                     **options) -> Callable[[Progress | None], object]:
        """Copy now what tracking reads (the lesion lists, the project's reviews: the clinician
        may edit while it runs) and return the slow part, run(progress) -> Tracking, to call in
        a worker: bodymap.pipeline.track_visits with every review of the pair (gather_reviews
        over folders and explicit, gathered again once the second look has added lesions, so
        reviews of lesions an earlier second look found apply; or reviews, a
        bodymap.track.Reviews already gathered) and the visits' correspondences (read once,
        kept). The tracking's info records the reviews applied ("reviews"), the files they came
        from ("review_files") and what was left out ("review_notes")."""
        if not self.can_track:
            raise ValueError("two analysed visits are needed to track")
        visits = list(self.visits[:2])
        lesions = [copy.deepcopy(v.state.lesions) for v in visits]
        own = copy.deepcopy(self.project.ensure_reviews())
        pair = Workspace(Project(reviews=own))
        pair.visits = visits

        def run(progress: Progress | None = None):
            from bodymap.pipeline import track_visits

            got = {"files": [], "notes": []}

            def gather(v1, v2):  # called before tracking and again after the second look
                rv, used, notes = pair.gather_reviews(folders, own, explicit, visits=(v1, v2))
                got.update(files=[str(p) for p in used], notes=notes)
                return rv

            tv = [v.for_tracking(ls) for v, ls in zip(visits, lesions)]
            key = (*visits, repr(sorted(options.items())))  # (options: pair_iterations changes the map)
            known = self._pair_map
            same = known is not None and known[0] == key and all(c is x.correspondence is not None
                                                                 for c, x in zip(known[1], tv))
            t = track_visits(*tv, reviews=reviews if reviews is not None else gather, progress=progress,
                             pair_points=known[2] if same else None, **options)
            t.info["review_files"], t.info["review_notes"] = got["files"], got["notes"]
            # lesions the second look added to the copies travel with the tracking (set_tracking
            # adds them to the visits, so every id of the tracking is a lesion of its visit)
            sl = t.info.get("second_look")
            if sl:
                for k, x in enumerate(tv, 1):
                    ids = {r["id"] for r in sl.get(f"visit{k}", [])}
                    sl[f"visit{k}_lesions"] = [l.to_dict() for l in x.lesions.lesions if l.id in ids]
            for v, x in zip(visits, tv):  # a registration track() had to make is kept for next time
                with v._lock:
                    v._correspondence = v._correspondence or x.correspondence
            if t.pair_points is not None:
                self._pair_map = (key, tuple(v.correspondence() for v in visits), t.pair_points)
            return t

        return run

    def compute_tracking(self, progress: Progress | None = None, folders=(), reviews=None,
                         explicit: str | Path | None = None, **options):
        """tracking_job(...)(progress): the Tracking of the two visits (apply with set_tracking)."""
        return self.tracking_job(folders, reviews, explicit, **options)(progress)

    def set_tracking(self, tracking) -> None:
        """The tracking shown and saved with the project (None: none, or out of date). Lesions
        its second look found (bodymap.secondlook) join their visits' lesion lists."""
        if tracking is not None:
            from bodymap.lesions import Lesion

            sl = tracking.info.get("second_look") or {}
            for k, v in enumerate(self.visits[:2], 1):
                ls = v.state.lesions
                if ls is None:
                    continue
                have = {l.id for l in ls.all}
                for d in sl.get(f"visit{k}_lesions", []):
                    if d["id"] not in have:
                        ls.lesions.append(Lesion.from_dict(d))
                        ls.info["max_id"] = max(int(ls.info.get("max_id", 0)), int(d["id"]))
        self.tracking = tracking
        self.project.tracking = tracking.to_dict() if tracking is not None else None
        self.emit("tracking", tracking)

    def load_tracking(self) -> None:
        """The project's saved tracking (Tracking.from_dict); dropped when unreadable: it can
        always be computed again."""
        from bodymap.track import Tracking

        try:
            self.tracking = Tracking.from_dict(self.project.tracking, self.project.path or "project") \
                if self.project.tracking else None
        except ValueError:
            self.tracking = self.project.tracking = None

    def review(self, action: str, id2: int, id1: int | None = None) -> None:
        """A clinician's decision on a match (confirm, reject, new), undoable; applied by the
        next compute_tracking."""
        self.history.push(Review(action, id2, id1))

    # ---------------------------------------------------------------- output
    def write_tracking(self, out: str | Path) -> list[Path]:
        """tracking.json, tracking.csv, the change map (bodymap.pipeline.write_tracking) and the
        reviews used, merged (bodymap.reviewfiles.keep: out and the per-user store)."""
        from bodymap import reviewfiles
        from bodymap.pipeline import write_tracking

        if self.tracking is None:
            raise ValueError("no tracking to write: track the two visits first")
        v1, v2 = (v.for_tracking() for v in self.visits[:2])
        paths = write_tracking(self.tracking, out, v1, v2)
        rv, _, _ = self.gather_reviews([out])
        return paths + reviewfiles.keep(rv, v1, v2, [out])
