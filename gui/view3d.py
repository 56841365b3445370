"""The 3D view: a pyvistaqt QtInteractor showing one scan, textured or coloured by region, with
numbered lesion markers, picking, standard views and a light display mesh while the camera moves.

pyvista / VTK are imported when the view is first made ready (after the window is shown), so
the window opens fast. The display mesh has one point per (scan vertex, UV) pair, so seams keep
their texture; its cells are the scan's faces in order, so a picked cell is a scan face.
"""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtWidgets

from bodymap import taxonomy as tx
from bodymap.records import LESION_RGB

# standard views: (direction from the body centre to the camera, view up), body frame z up, facing -y
VIEWS = {
    "front": ((0, -1, 0), (0, 0, 1)),
    "back": ((0, 1, 0), (0, 0, 1)),
    "left": ((1, 0, 0), (0, 0, 1)),  # the subject's left side (+x)
    "right": ((-1, 0, 0), (0, 0, 1)),
    "top": ((0, 0, 1), (0, 1, 0)),  # the face (-y) at the bottom of the screen
}
MACRO_COLOURS = {"other": (150, 150, 150), "arm": (0, 158, 115), "leg": (204, 121, 167), "foot": (120, 40, 100),
                 "hand": (110, 200, 60), "head": (230, 159, 0), "trunk": (0, 114, 178)}
OVERLAYS = ("texture", "macro regions", "level-2 sites", "ear micro-regions")
# Faces of the light mesh shown while the camera moves (software OpenGL keeps >= 10 fps with it)
LIGHT_FACES = 30_000
CACHED_SCANS = 4  # VTK objects kept per view (a visit's scan is about 0.3 s to rebuild)


def display_arrays(scan) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The scan unshared at UV seams for display: points (p, 3) mm, faces (m, 3) into points,
    tcoords (p, 2) or None, vid (p,) the scan vertex of each point."""
    if scan.uv is None:
        return scan.vertices, scan.faces, None, np.arange(scan.n_vertices)
    keys = np.column_stack([scan.faces.reshape(-1), scan.uv.reshape(-1, 2).view(np.int32)])
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    vid = uniq[:, 0]
    tc = np.ascontiguousarray(uniq[:, 1:].astype(np.int32)).view(np.float32)
    return scan.vertices[vid], inv.reshape(-1, 3), tc, vid


def overlay_colours(labels, mode: str) -> np.ndarray:
    """(n, 3) uint8 per scan vertex for an overlay mode (see OVERLAYS, not "texture")."""
    if mode == "macro regions":
        lut = np.array([MACRO_COLOURS[m] for m in tx.MACRO], np.uint8)
        return lut[tx.macro_lut()[labels.site]]
    if mode == "level-2 sites":
        sites = tx.level_lut(2)[labels.site]
        return np.array([s.colour for s in tx.SITES], np.uint8)[sites]
    if mode == "ear micro-regions":
        c = np.full((len(labels.site), 3), 205, np.uint8)
        on = labels.ear > 0
        c[on] = np.array(tx.EAR_COLOURS, np.uint8)[labels.ear[on]]
        return c
    raise ValueError(f"unknown overlay {mode!r}")


def legend_items(labels, mode: str) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of what an overlay shows on this scan."""
    if labels is None or mode == "texture":
        return []
    if mode == "macro regions":
        return [(tx.MACRO[i], MACRO_COLOURS[tx.MACRO[i]]) for i in np.unique(tx.macro_lut()[labels.site])]
    if mode == "level-2 sites":
        return [(tx.SITES[i].name, tx.SITES[i].colour) for i in np.unique(tx.level_lut(2)[labels.site])]
    return [(tx.EAR_REGIONS[i], tx.EAR_COLOURS[i]) for i in np.unique(labels.ear) if i] or [("no ear on this scan", (205,) * 3)]


def prepare_display(scan, light_faces: int = LIGHT_FACES) -> dict:
    """The display meshes of a scan, computed once and kept on the scan (safe in a worker
    thread: no rendering). points (p, 3), faces (m, 3), tcoords (p, 2) | None, vid (p,) (see
    display_arrays); light_points (q, 3), light_faces (k, 3), light_near (q,) (each light point's
    nearest scan vertex, for its colour): a simplified copy with about light_faces faces for
    camera moves, None when the scan is not much heavier than that."""
    cached = getattr(scan, "_bodymap_display", None)
    if cached is not None and cached["light_target"] == light_faces:
        return cached
    pts, faces, tc, vid = display_arrays(scan)
    d = {"points": pts, "faces": faces, "tcoords": tc, "vid": vid, "light_points": None, "light_faces": None,
         "light_near": None, "light_target": light_faces, "texture_pixels": None}
    if scan.texture is not None:
        # the texture's pixels in VTK's image order (x fastest, rows bottom-up): the copy
        # pyvista.Texture makes from an (h, w, c) array, done here so the UI thread only wraps it
        # (80 ms for a 2048 texture, 0.3 s for 4096, each time a view showed a new scan)
        t = np.asarray(scan.texture)
        t = t[..., None] if t.ndim == 2 else t
        d["texture_pixels"] = np.ascontiguousarray(np.flip(t.swapaxes(0, 1), axis=1).reshape((-1, t.shape[2]),
                                                                                           order="F"))
        d["texture_size"] = (t.shape[1], t.shape[0])
    if scan.n_faces > light_faces * 1.2:
        from scipy.spatial import cKDTree

        # vertex clustering on a grid, in numpy: no VTK object may be made or freed in a worker
        # thread (vtkQuadricClustering here deadlocked with a render on the GUI thread in
        # vtkGarbageCollector). 160 cells along the longest side give ~30k faces on a standing
        # body; the face count grows with the square of the cells. Coarse, but only seen while
        # the camera moves.
        v = np.asarray(scan.vertices, np.float64)
        lo, ext = v.min(0), np.ptp(v, axis=0)
        cells = np.maximum(4, np.round(160 * np.sqrt(light_faces / 30_000) * ext / ext.max())).astype(np.int64)
        ijk = np.minimum((((v - lo) / np.maximum(ext, 1e-9)) * cells).astype(np.int64), cells - 1)
        key = (ijk[:, 0] * cells[1] + ijk[:, 1]) * cells[2] + ijk[:, 2]
        _, cell = np.unique(key, return_inverse=True)
        n = cell.max() + 1
        count = np.bincount(cell, minlength=n).astype(np.float64)
        pts = np.stack([np.bincount(cell, v[:, a], minlength=n) for a in range(3)], 1) / count[:, None]
        f = cell[np.asarray(scan.faces)]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
        _, first = np.unique(np.sort(f, 1), axis=0, return_index=True)
        d["light_points"] = pts
        d["light_faces"] = f[np.sort(first)]
        d["light_near"] = cKDTree(scan.vertices).query(pts)[1]
    scan._bodymap_display = d
    return d


class View3D(QtWidgets.QWidget):
    """One scan in 3D. Signals: picked(face, bary, point) on a click on the surface (not a drag);
    lesion_clicked(id) when the click is on (or within a lesion's size of) a marker."""

    picked = QtCore.Signal(int, object, object)
    lesion_clicked = QtCore.Signal(int)
    camera_moved = QtCore.Signal()
    interacting = QtCore.Signal(bool)  # the user started (True) or ended (False) a drag
    ready = QtCore.Signal()

    def __init__(self, parent=None, light_faces: int = LIGHT_FACES):
        super().__init__(parent)
        self.plotter = None
        self.scan = None
        self.labels = None
        self.lesions = None
        self.marker_colours: dict = {}
        self.marker_labels: dict = {}
        self.visible: set | None = None  # ids whose markers are drawn (the table's filter); None: all
        self.selected: int | None = None
        self.overlay = "texture"
        self.show_markers = True
        self.light_faces = light_faces
        self._mesh = self._light = self._actor = self._light_actor = None
        self._vid = None
        self._marker_actors: list = []
        self._sel_actor = None
        self._press = None
        self._moving = False
        self._cache: list = []  # [(scan, VTK objects)], most recent first
        self._lay = QtWidgets.QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._placeholder = QtWidgets.QLabel("Open a scan (File > Open, or drop a file here)")
        self._placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setStyleSheet("color: #666; font-size: 14pt; background: #f4f4f4")
        self._lay.addWidget(self._placeholder)

    # ------------------------------------------------------------------ set-up
    def _request_render(self) -> None:
        # a repaint, not a render: the widget's paint renders (once however often it is asked),
        # where a direct render also schedules a paint that renders again
        self.plotter.drawn = False  # the scene changed: the next paint must render it
        self.plotter.update()

    def flush_render(self) -> None:
        """Draw now what earlier calls asked for (a screenshot needs it drawn before its paint)."""
        if self.plotter is not None and not getattr(self.plotter, "_closed", False):
            self.plotter._render()

    def init_vtk(self) -> None:
        """Create the VTK widget (imports pyvista: about a second or two). Idempotent."""
        if self.plotter is not None:
            return
        import pyvista as pv

        pv.global_theme.allow_empty_mesh = True
        # no multisampling: under software OpenGL (Xvfb, llvmpipe) 4x MSAA costs 30x the frame time
        self.plotter = _interactor_class()(self, auto_update=False, multi_samples=0)
        self.plotter.setAcceptDrops(False)  # drops go to the main window (open a file)
        self.plotter.set_background("#f4f4f4", top="#d8dde6")
        self.plotter.enable_trackball_style()
        self._lay.addWidget(self.plotter)
        self._placeholder.hide()
        iren = self.plotter.iren.interactor
        style = iren.GetInteractorStyle()
        style.AddObserver("StartInteractionEvent", lambda *a: (self.set_moving(True), self.interacting.emit(True)))
        # pyvista's interactor styles consume LeftButtonReleaseEvent (observers never see it), but
        # every press/release pair ends an interaction: a release where the press was is a click
        style.AddObserver("EndInteractionEvent", lambda *a: (self._on_release(iren, None), self.interacting.emit(False)))
        iren.AddObserver("LeftButtonPressEvent", self._on_press, 10.0)
        self.plotter.camera.AddObserver("ModifiedEvent", lambda *a: self.camera_moved.emit())
        # one render per turn of the event loop: pyvista renders after every add_mesh, remove and
        # camera change (15-19 full renders of 40 ms each for one click on a 54k-face scan in
        # software GL); requests become one repaint, drawn once the handler returns
        self.plotter.render_signal.disconnect(self.plotter._render)
        self.plotter.render_signal.connect(self._request_render)
        from vtkmodules.vtkRenderingCore import vtkCellPicker

        self._picker = vtkCellPicker()
        self._picker.SetTolerance(0.0005)
        self.ready.emit()

    def set_scan(self, scan, labels=None) -> None:
        """Show scan (bodymap Scan, mm) and, when given, its RegionLabels for the overlays.
        The display meshes come from prepare_display (call it in a worker first for big scans)."""
        self.init_vtk()
        if scan is self.scan and self._actor is not None:
            # the same body (another visit of one scan file, or the visit shown again): keep its
            # meshes and texture (rebuilding them costs about a second in software OpenGL)
            relabel, self.labels = labels is not self.labels, labels
            if relabel and self.overlay != "texture":
                self._draw_body()
            self._draw_markers()
            self.view("front")
            return
        self.scan, self.labels = scan, labels
        self._mesh, self._texture, self._light, self._light_near, self._vid = self._display_objects(scan)
        self.plotter.clear_actors() if hasattr(self.plotter, "clear_actors") else self.plotter.clear()
        self._actor = self._light_actor = None
        self._marker_actors, self._sel_actor = [], None
        self._draw_body()
        self._draw_markers()
        self.view("front")

    def _display_objects(self, scan) -> tuple:
        """(mesh, texture, light mesh, light_near, vid): the VTK objects of a scan, made on the
        UI thread (VTK objects never live in workers) once per scan and kept for the last
        CACHED_SCANS scans shown, so going back to a visit costs no rebuild."""
        import pyvista as pv

        hit = next((o for s, o in self._cache if s is scan), None)
        if hit is not None:
            return hit
        d = prepare_display(scan, self.light_faces)
        mesh = pv.PolyData.from_regular_faces(d["points"], d["faces"])
        if d["tcoords"] is not None:
            mesh.active_texture_coordinates = d["tcoords"]
        texture = None
        if d["texture_pixels"] is not None:
            grid = pv.ImageData(dimensions=(*d["texture_size"], 1))
            grid.point_data["Image"] = d["texture_pixels"]
            grid.set_active_scalars("Image")
            texture = pv.Texture(grid)
            texture.interpolate = True
        light = near = None
        if d["light_points"] is not None:
            light, near = pv.PolyData.from_regular_faces(d["light_points"], d["light_faces"]), d["light_near"]
        objs = (mesh, texture, light, near, d["vid"])
        self._cache = [(scan, objs)] + self._cache[:CACHED_SCANS - 1]
        return objs

    def prepare(self, scan) -> None:
        """Build a scan's VTK objects now (e.g. right after opening, while nothing else is asked)
        so that showing it later is quick."""
        if self.plotter is not None:
            self._display_objects(scan)

    def _vertex_rgb(self) -> np.ndarray:
        """(n, 3) uint8 per scan vertex: the overlay colours, or the texture sampled at each vertex."""
        s = self.scan
        if self.overlay != "texture" and self.labels is not None:
            return overlay_colours(self.labels, self.overlay)
        return s.vertex_rgb()

    def _draw_body(self) -> None:
        p = self.plotter
        for a in (self._actor, self._light_actor):
            if a is not None:
                p.remove_actor(a, render=False)
        kw = dict(smooth_shading=True, ambient=0.3, diffuse=0.75, specular=0.0, pickable=True, reset_camera=False,
                  name="body")
        if self.overlay == "texture" and self._texture is not None:
            self._actor = p.add_mesh(self._mesh, texture=self._texture, **kw)
        else:
            self._mesh.point_data["rgb"] = self._vertex_rgb()[self._vid]
            self._actor = p.add_mesh(self._mesh, scalars="rgb", rgb=True, **kw)
        self._light_actor = None
        if self._light is not None:
            self._light.point_data["rgb"] = self._vertex_rgb()[self._light_near]
            self._light_actor = p.add_mesh(self._light, scalars="rgb", rgb=True, smooth_shading=True, ambient=0.3,
                                           diffuse=0.75, pickable=False, reset_camera=False, name="body_light")
            self._light_actor.SetVisibility(False)
        p.render()

    # ------------------------------------------------------------------ overlays and markers
    def set_overlay(self, mode: str) -> None:
        """Colour the body by an overlay (OVERLAYS); region overlays need labels."""
        if mode not in OVERLAYS:
            raise ValueError(f"unknown overlay {mode!r}")
        if mode != "texture" and self.labels is None:
            mode = "texture"
        if mode == self.overlay and self._actor is not None:
            return  # drawn so already (set_scan draws the body with the current overlay)
        self.overlay = mode
        if self.scan is not None:
            self._draw_body()

    def set_lesions(self, lesions, colours: dict | None = None, labels: dict | None = None,
                    visible: set | None = None) -> None:
        """Markers for a LesionSet (None: none): colours {id: (r, g, b)} (default red),
        labels {id: text} (default the id), visible: the ids to mark (None: all)."""
        self.lesions, self.marker_colours, self.marker_labels = lesions, colours or {}, labels or {}
        self.visible = None if visible is None else set(visible)
        if self.selected is not None and (lesions is None or self.selected not in [l.id for l in lesions.lesions]):
            self.selected = None
        if self.plotter is not None and self.scan is not None:
            self._draw_markers()

    def set_visible(self, ids: set | None) -> None:
        """Mark only these lesion ids (the lesion table's filter; None: all)."""
        ids = None if ids is None else set(ids)
        if ids == self.visible:
            return
        self.visible = ids
        if self.plotter is not None and self.scan is not None:
            self._draw_markers()

    def shown_lesions(self) -> list:
        """The lesions whose markers are drawn (the visible ones)."""
        if self.lesions is None:
            return []
        return [l for l in self.lesions.lesions if self.visible is None or l.id in self.visible]

    def set_markers_visible(self, on: bool) -> None:
        self.show_markers = on
        if self.plotter is not None and self.scan is not None:
            self._draw_markers()

    def _draw_markers(self) -> None:
        import pyvista as pv

        p = self.plotter
        for a in self._marker_actors:
            p.remove_actor(a, render=False)
        self._marker_actors = []
        L = self.shown_lesions()
        if self.show_markers and L:
            from bodymap.overview import marker_offsets

            # the dot and its number sit beside the lesion (towards the body's up on the skin), so
            # the lesion's centre stays visible under its marker
            normals = np.array([l.normal for l in L], float)
            pts = marker_offsets(np.array([l.point_mm for l in L]), normals, np.array([l.diameter_mm for l in L]))
            cloud = pv.PolyData(pts)
            # small dots beside the numbers: the lesion itself stays visible around its marker
            cloud.point_data["radius"] = np.array([float(np.clip(0.2 * l.diameter_mm, 1.2, 2.5)) for l in L])
            cloud.point_data["rgb"] = np.array([self.marker_colours.get(l.id, LESION_RGB) for l in L], np.uint8)
            glyphs = cloud.glyph(scale="radius", geom=pv.Sphere(radius=1.0, theta_resolution=10, phi_resolution=10),
                                 orient=False)
            self._marker_actors.append(p.add_mesh(glyphs, scalars="rgb", rgb=True, pickable=False,
                                                  reset_camera=False, name="markers", lighting=False))
            # numbers in their marker's colour (one label actor per colour: new ones red, grown
            # orange), lifted off the skin along the normal so the body hides those behind it
            text = np.array([self.marker_labels.get(l.id, str(l.id)) for l in L], dtype=object)
            cols = [tuple(self.marker_colours.get(l.id, LESION_RGB)) for l in L]
            lab_pts = pts + 5.0 * normals
            for k, col in enumerate(sorted(set(cols))):
                sel = np.array([c == col for c in cols])
                self._marker_actors.append(p.add_point_labels(
                    lab_pts[sel], list(text[sel]), font_size=12, bold=True, text_color=tuple(c / 255 for c in col),
                    shape_color="white", shape_opacity=0.75, show_points=False, always_visible=False,
                    pickable=False, reset_camera=False, name=f"marker_labels_{k}", render=False))
        self._draw_selection()

    def _draw_selection(self) -> None:
        import pyvista as pv

        p = self.plotter
        if self._sel_actor is not None:
            p.remove_actor(self._sel_actor, render=False)
            self._sel_actor = None
        if self.selected is not None and self.lesions is not None:
            try:
                l = next(l for l in self.lesions.lesions if l.id == self.selected)
            except StopIteration:
                l = None
            if l is not None:
                from bodymap.overview import surface_ring

                # a ring laid on the skin around the lesion (a flat disc sinks into curved skin)
                r = max(4.0, 0.5 * l.diameter_mm + 3.0)
                pts = surface_ring(self.scan.vertices, self._vertex_tree(), l.point_mm, l.normal, r)
                ring = pv.lines_from_points(pts)
                self._sel_actor = p.add_mesh(ring, color="yellow", line_width=4, pickable=False, reset_camera=False,
                                             name="selection", lighting=False)
        p.render()

    def _vertex_tree(self):
        """A cKDTree of the scan's vertices (the selection ring's surface fit), built once per scan."""
        if getattr(self, "_tree_scan", None) is not self.scan:
            from scipy.spatial import cKDTree

            self._tree, self._tree_scan = cKDTree(self.scan.vertices), self.scan
        return self._tree

    def select(self, lid: int | None, fly: bool = True) -> None:
        """Highlight lesion lid; fly: move the camera to face it from 250 mm along its normal."""
        self.selected = lid
        if self.plotter is None or self.scan is None:
            return
        self._draw_selection()
        if fly and lid is not None and self.lesions is not None:
            l = next((l for l in self.lesions.lesions if l.id == lid), None)
            if l is not None:
                self.fly_to(np.asarray(l.point_mm), np.asarray(l.normal))

    def fly_to(self, point: np.ndarray, normal: np.ndarray, distance: float = 250.0) -> None:
        """Camera facing point (3,) mm from distance mm along normal (3,)."""
        cam = self.plotter.camera
        n = normal / max(np.linalg.norm(normal), 1e-9)
        cam.focal_point = tuple(point)
        cam.position = tuple(point + distance * n)
        F = self.upright()
        cam.up = tuple(F[2]) if abs(n @ F[2]) < 0.9 else tuple(F[1])
        self.plotter.renderer.ResetCameraClippingRange()
        self.plotter.render()

    # ------------------------------------------------------------------ camera
    def upright(self) -> np.ndarray:
        """(3, 3) the body's upright axes in the scan's coordinates (bodymap.anatomy.labels.view_frame:
        from its labels once the scan is labelled; before, from its extent)."""
        if self.scan is None:
            return np.eye(3)
        from bodymap.anatomy.labels import view_frame

        return view_frame(self.scan.vertices, self.labels)

    def view(self, name: str) -> None:
        """A standard view of the whole body: front, back, left, right, top; 'reset' = front."""
        if self.plotter is None or self.scan is None:
            return
        name = "front" if name == "reset" else name
        F = self.upright()  # VIEWS are in the body's frame; the scan's up may be y
        d, up = (F.T @ np.asarray(x, float) for x in VIEWS[name])
        b = self.scan.bounds
        c = b.mean(0)
        size = float(np.ptp(b, axis=0).max())
        cam = self.plotter.camera
        cam.focal_point = tuple(c)
        cam.position = tuple(c + 2.2 * size * np.asarray(d, float))
        cam.up = tuple(up)
        cam.view_angle = 30.0
        self.plotter.reset_camera()
        self.plotter.render()

    def camera_state(self) -> dict:
        """Camera relative to the scan's centre (for linking two views of different scans)."""
        cam, c = self.plotter.camera, self.scan.bounds.mean(0)
        return {"position": np.array(cam.position) - c, "focal": np.array(cam.focal_point) - c, "up": cam.up,
                "angle": cam.view_angle}

    def set_camera_state(self, s: dict) -> None:
        cam, c = self.plotter.camera, self.scan.bounds.mean(0)
        cam.position, cam.focal_point, cam.up = tuple(s["position"] + c), tuple(s["focal"] + c), s["up"]
        cam.view_angle = s["angle"]
        self.plotter.renderer.ResetCameraClippingRange()
        self.plotter.render()

    # ------------------------------------------------------------------ interaction
    def set_moving(self, on: bool) -> None:
        """Light mesh and no labels while the camera moves (here, or in a linked view); full
        detail when it stops."""
        self._moving = on
        if self._light_actor is None:
            return
        self._actor.SetVisibility(not on)
        self._light_actor.SetVisibility(on)
        for a in self._marker_actors[1:]:
            a.SetVisibility(not on)
        if not on:
            self.plotter.render()

    def _on_press(self, obj, event) -> None:
        self._press = obj.GetEventPosition()

    def _on_release(self, obj, event) -> None:
        """End of an interaction: full detail again, and a pick when it was a click."""
        self.set_moving(False)  # picking needs the full mesh, whose cells are the scan's faces
        pos, press, self._press = obj.GetEventPosition(), self._press, None
        if press is None or abs(pos[0] - press[0]) + abs(pos[1] - press[1]) > 4:
            return  # a drag (rotation) or the wheel, not a click
        self.pick_display(*pos)

    def pick_display(self, x: int, y: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Pick the surface at display pixel (x, y) (VTK: origin bottom-left). Emits picked and,
        when a lesion marker is within its size, lesion_clicked. Returns (face, bary, point)."""
        if self.plotter is None or self.scan is None:
            return None
        if self._moving:
            self.set_moving(False)
        if not self._picker.Pick(x, y, 0, self.plotter.renderer) or self._picker.GetActor() is not self._actor:
            return None
        face = int(self._picker.GetCellId())
        if not 0 <= face < self.scan.n_faces:
            return None
        point = np.array(self._picker.GetPickPosition())
        bary = barycentric(self.scan.vertices[self.scan.faces[face]], point)
        self.picked.emit(face, bary, point)
        lid = self.lesion_near(point)
        if lid is not None:
            self.lesion_clicked.emit(lid)
        return face, bary, point

    def lesion_near(self, point: np.ndarray) -> int | None:
        """The lesion whose marker covers point (within max(5 mm, its diameter)), else None."""
        L = self.shown_lesions()
        if not L:
            return None
        d = np.linalg.norm(np.array([l.point_mm for l in L]) - point, axis=1)
        tol = np.maximum(5.0, np.array([l.diameter_mm for l in L]))
        k = int(np.argmin(d - tol))
        return L[k].id if d[k] <= tol[k] else None

    def display_position(self, point: np.ndarray) -> tuple[float, float]:
        """Display pixel (VTK, origin bottom-left) of a world point (3,) mm."""
        r = self.plotter.renderer
        r.SetWorldPoint(*point, 1.0)
        r.WorldToDisplay()
        x, y, _ = r.GetDisplayPoint()
        return x, y

    def screenshot(self) -> np.ndarray:
        """(H, W, 3) uint8 of the view as shown."""
        self.flush_render()
        return self.plotter.screenshot(return_img=True)

    def close_vtk(self) -> None:
        if self.plotter is not None:
            self.plotter.close()


_INTERACTOR = None


def _interactor_class():
    """pyvistaqt's QtInteractor whose paint only shows a frame VTK has just rendered (a camera
    drag renders directly, then asks for a paint), instead of rendering it a second time: half
    the cost of every frame of a rotation. Any other change (through View3D._request_render)
    clears `drawn`, so its paint renders."""
    global _INTERACTOR
    if _INTERACTOR is None:
        from pyvistaqt import QtInteractor

        class Interactor(QtInteractor):
            drawn = False

            def _cb_frame(self, obj, evt):
                if not self._in_paint:
                    self.drawn = True
                super()._cb_frame(obj, evt)

            def resizeGL(self, w, h):
                self.drawn = False  # a frame of the old size: render again
                super().resizeGL(w, h)

            def paintGL(self):
                if not self.drawn:
                    return super().paintGL()
                self.drawn = False
                self._in_paint = True  # pyvistaqt's paint then blits without rendering
                try:
                    super().paintGL()
                finally:
                    self._in_paint = False

        _INTERACTOR = Interactor
    return _INTERACTOR


def barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(3,) barycentric coordinates of point p (3,) projected on triangle tri (3, 3), clipped."""
    v0, v1, v2 = tri[1] - tri[0], tri[2] - tri[0], p - tri[0]
    d00, d01, d11, d20, d21 = v0 @ v0, v0 @ v1, v1 @ v1, v2 @ v0, v2 @ v1
    den = max(d00 * d11 - d01 ** 2, 1e-18)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    b = np.clip([1 - b1 - b2, b1, b2], 0, 1)
    return b / b.sum()
