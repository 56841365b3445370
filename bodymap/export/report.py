"""Reports of a visit or of a comparison of two visits, and vector region maps.

    visit_map(scan, lesions) -> image: front and back views, every visible lesion circled and numbered
    write_region_svg(scan, labels, lesions, path): region map (rendered, embedded) with vector
        lesion circles, numbers and legend (SVG)
    write_report(path, visit=..., comparison=..., histories=...): PDF: body maps front and back with
        numbered lesions, the lesion table, for a comparison the change map and the flagged
        changes, and a page per lesion history (bodymap.history: close-ups over time, plot, table)

The CLI (`bodymap report`) and the GUI's File > Export call these."""
from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bodymap.atomic import atomic_write, write_text
from bodymap.overview import diagnosis_name
from bodymap.records import LESION_RGB
from bodymap.scan import Scan


def _numbered(lesions) -> dict:
    """{lesion id: (its number, LESION_RGB)}: marks of a visit shown without a tracking."""
    return {l.id: (str(l.id), LESION_RGB) for l in lesions.lesions}


def visit_map(scan: Scan, lesions, width: int = 360, height: int = 720, title: str = "",
              frame: np.ndarray | None = None) -> Image.Image:
    """Front and back views of scan (rendered, textured) side by side with every visible lesion
    circled (radius from its diameter) and numbered by its id; frame: the body's upright axes
    (3, 3) in the scan's coordinates (bodymap.anatomy.labels.view_frame; None: the scan's own).
    Returns an RGB image (2 * width, height + 22)."""
    from bodymap.export.changemap import _panel

    marks = _numbered(lesions)
    top = 22
    page = Image.new("RGB", (2 * width, height + top), "white")
    d = ImageDraw.Draw(page)
    for k, (az, side) in enumerate(((0.0, "front"), (180.0, "back"))):
        page.paste(_panel(scan, lesions, marks, az, width, height, frame), (k * width, top))
        d.text((k * width + 8, 5), f"{title} {side}".strip(), fill="black")
    return page


def region_map(scan: Scan, labels, lesions, width: int = 360, height: int = 720) -> Image.Image:
    """Region map with numbered lesions: front and back views coloured by region (RegionLabels),
    every visible lesion of lesions (LesionSet or None) circled and numbered, and the legend.
    Returns an RGB image."""
    from bodymap.anatomy.labels import view_frame
    from bodymap.export.changemap import _panel
    from bodymap.export.regionmap import legend, vertex_colours

    coloured = Scan(scan.vertices, scan.faces, vertex_colors=vertex_colours(labels), meta=scan.meta, validate=False)
    frame = view_frame(scan.vertices, labels)  # front and back as the body stands
    top = 22
    marks = _numbered(lesions) if lesions is not None else {}
    empty = type("NoLesions", (), {"__len__": lambda self: 0, "lesions": []})()
    leg = legend(labels)
    page = Image.new("RGB", (2 * width + leg.width, max(height + top, leg.height + top)), "white")
    d = ImageDraw.Draw(page)
    for k, (az, side) in enumerate(((0.0, "front"), (180.0, "back"))):
        page.paste(_panel(coloured, lesions if lesions is not None else empty, marks, az, width, height, frame),
                   (k * width, top))
        d.text((k * width + 8, 5), side, fill="black")
    page.paste(leg, (2 * width, top))
    return page


def write_region_png(scan: Scan, labels, lesions, path: str | Path) -> Path:
    """Write region_map(scan, labels, lesions) as a PNG (atomically); returns the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        region_map(scan, labels, lesions).save(tmp, format="PNG")
    return path


def _lesion_svg_marks(lesions, cam, depth: np.ndarray, dx: int, dy: int) -> list[str]:
    """SVG circles and numbers of the lesions visible in one view (camera, depth buffer (h, w)
    mm), offset by (dx, dy) pixels on the page."""
    from bodymap.export.changemap import visible_lesions

    out = []
    for l, x, y, r in visible_lesions(lesions, cam, depth):
        out.append(f'<circle cx="{x + dx:.1f}" cy="{y + dy:.1f}" r="{r:.1f}" fill="none" '
                   f'stroke="rgb{LESION_RGB}" stroke-width="1.5"/>')
        out.append(f'<text x="{x + dx + r + 1:.1f}" y="{y + dy - r:.1f}" font-size="10" '
                   f'fill="rgb{LESION_RGB}">{l.id}</text>')
    return out


def write_region_svg(scan: Scan, labels, lesions, path: str | Path, width: int = 360, height: int = 720) -> Path:
    """Region map as SVG: front and back views coloured by region (rendered raster, embedded as
    PNG), lesions as vector circles with their numbers, and a vector legend. labels:
    RegionLabels of scan; lesions: LesionSet or None. Returns path."""
    from bodymap import taxonomy as tx
    from bodymap.anatomy.labels import view_frame
    from bodymap.export.regionmap import UNRELIABLE, vertex_colours
    from renderers import RaycastRenderer
    from renderers.camera import framed_body_view

    coloured = Scan(scan.vertices, scan.faces, vertex_colors=vertex_colours(labels), meta=scan.meta, validate=False)
    rend = RaycastRenderer(coloured)
    top, legend_w = 22, 260
    parts, images = [], []
    frame = view_frame(scan.vertices, labels)  # front and back as the body stands
    for k, (az, side) in enumerate(((0.0, "front"), (180.0, "back"))):
        cam = framed_body_view(scan.vertices, az, 5.0, width, height, frame)
        r = rend.render(cam)
        buf = io.BytesIO()
        Image.fromarray(r.rgb).save(buf, format="PNG")
        images.append(f'<image x="{k * width}" y="{top}" width="{width}" height="{height}" '
                      f'href="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')
        parts.append(f'<text x="{k * width + 8}" y="15" font-size="13">{side}</text>')
        if lesions is not None:
            parts += _lesion_svg_marks(lesions, cam, r.depth, k * width, top)
    items = [(tx.SITES[i].name, tx.SITES[i].colour) for i in np.unique(labels.site)]
    items += [(f"ear: {tx.EAR_REGIONS[i]}", tx.EAR_COLOURS[i]) for i in np.unique(labels.ear) if i]
    if (~labels.reliable).any():
        items.append(("unreliable (far from the fitted body)", tuple(int(c) for c in UNRELIABLE)))
    x0 = 2 * width + 10
    for k, (name, col) in enumerate(items):
        y = top + 4 + 18 * k
        parts.append(f'<rect x="{x0}" y="{y}" width="14" height="12" fill="rgb{tuple(int(c) for c in col)}"/>')
        parts.append(f'<text x="{x0 + 20}" y="{y + 11}" font-size="12">{name}</text>')
    W, H = 2 * width + legend_w, max(height + top, top + 18 * len(items) + 10)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif">\n<rect width="{W}" height="{H}" fill="white"/>\n'
           + "\n".join(images + parts) + "\n</svg>\n")
    path = Path(path)
    write_text(path, svg)
    return path


# ------------------------------------------------------------------------------ PDF
def _table_pages(pdf, title: str, cols: list[str], rows: list[list], per_page: int = 38) -> None:
    """Add pages holding a table (A4 portrait), per_page rows each, header repeated."""
    from matplotlib.figure import Figure

    chunks = [rows[i:i + per_page] for i in range(0, len(rows), per_page)] or [[]]
    for n, chunk in enumerate(chunks, 1):
        fig = Figure(figsize=(8.27, 11.69))
        fig.text(0.06, 0.96, f"{title}" + (f" ({n}/{len(chunks)})" if len(chunks) > 1 else ""), fontsize=13,
                 weight="bold")
        if chunk:
            ax = fig.add_axes([0.04, 0.04, 0.92, 0.9])
            ax.axis("off")
            text = [[str(c) for c in r] for r in chunk]
            widths, size = column_widths(cols, rows)
            t = ax.table(cellText=text, colLabels=cols, loc="upper center", cellLoc="left", colWidths=widths)
            t.auto_set_font_size(False)
            t.set_fontsize(size)
            t.scale(1, 1.25)
            for (i, _), cell in t.get_celld().items():
                if i == 0:
                    cell.set_facecolor("#dddddd")
        else:
            fig.text(0.06, 0.9, "none", fontsize=11)
        pdf.savefig(fig)


def column_widths(cols: list[str], rows: list[list], width_chars: float = 118.0, size: float = 7.5,
                  min_size: float = 5.0) -> tuple[list[float], float]:
    """Column widths (fractions of the table's width) that hold each column's longest text
    (header included) and the font size (size, smaller down to min_size when the texts need more
    than width_chars characters at size): equal columns cut long region names."""
    need = [max([len(str(c))] + [len(str(r[j])) for r in rows if j < len(r)]) + 1.5 for j, c in enumerate(cols)]
    total = float(sum(need))
    return [n / total for n in need], max(min_size, min(size, size * width_chars / total))


def _image_page(pdf, title: str, lines: list[str], image: Image.Image) -> None:
    # Figure, not pyplot: no GUI backend, safe in a worker thread of the Qt application
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.69, 8.27))  # A4 landscape: body maps are wide
    fig.text(0.04, 0.95, title, fontsize=15, weight="bold")
    for k, line in enumerate(lines):
        fig.text(0.04, 0.91 - 0.025 * k, line, fontsize=9)
    h = 0.9 - 0.025 * len(lines) - 0.02
    ax = fig.add_axes([0.02, 0.02, 0.96, h])
    ax.imshow(np.asarray(image))
    ax.axis("off")
    pdf.savefig(fig)


def _history_page(pdf, h) -> None:
    """One page (A4 landscape) of a lesion's history (bodymap.history.LesionHistory): its
    close-ups over time side by side (one scale, the body's up), the plot of its measures over
    time and the table of measures, changes and growth rates."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.69, 8.27))
    rate = h.diameter_rate_mm_per_year
    last = h.sightings[-1]
    fig.text(0.04, 0.95, f"Lesion {h.pid}: history over {len(h.sightings)} visits", fontsize=15, weight="bold")
    fig.text(0.04, 0.915, f"now #{last.lesion_id} ({last.status}), {last.diameter_mm:.1f} mm; diameter "
             + (f"{rate:+.2f} mm/year since the first visit" if rate is not None else "rate unknown (dates missing)")
             + f"; close-ups {h.field_mm:.0f} mm wide, up = "
             + ("the body's up" if h.body_up else "the scan's up (a visit is not registered)"), fontsize=9)
    ax = fig.add_axes([0.02, 0.52, 0.96, 0.37])
    ax.imshow(np.asarray(h.strip()))
    ax.axis("off")
    ax = fig.add_axes([0.02, 0.02, 0.44, 0.48])
    ax.imshow(np.asarray(Image.open(io.BytesIO(h.plot_png()))))
    ax.axis("off")
    cols, rows = h.rows()
    ax = fig.add_axes([0.48, 0.04, 0.5, 0.44])
    ax.axis("off")
    t = ax.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.auto_set_column_width(list(range(len(cols))))
    pdf.savefig(fig)


def lesion_rows(lesions, diagnoses: dict | None = None) -> tuple[list[str], list[list]]:
    """The lesion table of a report: columns and one row per lesion (sizes in mm). A diagnosis
    whose melanoma check is over the model's threshold (``melanoma_flag``) says so in its cell."""
    cols = ["#", "region", "diam. mm", "area mm2", "confidence", "source", "diagnosis", "note"]
    rows = []
    for l in lesions.lesions:
        dg = (diagnoses or {}).get(l.id, {})
        dx = diagnosis_name(dg.get("label")) + (" (melanoma check: over)" if dg.get("melanoma_flag") else "")
        rows.append([l.id, (l.region or {}).get("description", ""), f"{l.diameter_mm:.1f}", f"{l.area_mm2:.1f}",
                     f"{l.confidence:.2f}", l.source, dx, (l.note or "")[:40]])
    return cols, rows


def _source(scan: Scan, max_chars: int = 70) -> str:
    """The scan's file for a report header: resolved (no "../"), its last folders only when long."""
    src = scan.meta.source
    if not src:
        return "-"
    p = Path(os.path.normpath(os.path.abspath(src)))
    text = str(p)
    return text if len(text) <= max_chars else str(Path("...", *p.parts[-4:]))


def write_report(path: str | Path, scan: Scan, lesions, title: str = "", patient: str = "",
                 comparison: tuple | None = None, diagnoses: dict | None = None,
                 progress=None, histories: list | None = None, frames: tuple = (None, None)) -> Path:
    """Write a PDF report. Visit report: body maps front and back with numbered lesions, counts,
    the lesion table. comparison: (scan1, lesions1, tracking) of the earlier visit (scan and
    lesions are then visit 2): adds the change map of both visits (matched, grown, new,
    missing) and the flagged changes table. histories: bodymap.history.LesionHistory list
    (e.g. of the flagged lesions, bodymap.history.flagged): a page each with its close-ups over
    time. progress(stage, fraction) optional. frames: the upright axes (3, 3) or None of scan and
    of the comparison's scan (visit_map). Returns path."""
    from matplotlib.backends.backend_pdf import PdfPages

    say = progress or (lambda s, f: None)
    path = Path(path)
    title = title or f"BodyMap report: {Path(scan.meta.source or '').parent.name or 'scan'}"
    head = [f"patient: {patient or scan.meta.patient_id or '-'}    scan: {_source(scan)}",
            f"made: {time.strftime('%Y-%m-%d %H:%M')}    lesions: {len(lesions)}"
            + (f"    >= 6 mm: {int((lesions.diameters >= 6).sum())}" if len(lesions) else "")]
    with atomic_write(path) as tmp, PdfPages(tmp) as pdf:
        say("body maps", 0.1)
        _image_page(pdf, title, head, visit_map(scan, lesions, title="visit" if comparison is None else "visit 2",
                                                    frame=frames[0]))
        if comparison is not None:
            from bodymap.export.changemap import change_map
            from bodymap.records import TrackedPair, summary

            scan1, lesions1, tracking = comparison
            say("change map", 0.4)
            lines = [f"visit 1: {_source(scan1)}", f"visit 2: {_source(scan)}", summary(tracking)]
            _image_page(pdf, "Changes since the previous visit", lines,
                        change_map(scan1, lesions1, scan, lesions, tracking, 300, 600, frames=(frames[1], frames[0])))
            cols = ["visit 2", "visit 1", "status", "region", "diam. 1", "diam. 2", "change mm", "flags"]
            rows = []
            for p in tracking.flagged:
                if isinstance(p, TrackedPair):
                    rows.append([p.id2, p.id1, p.status.value, p.region, p.diameter1_mm, p.diameter2_mm,
                                 f"{p.diameter_change_mm:+.1f}", ", ".join(p.flags)])
                else:
                    rows.append([p.id2, "", p.status.value, p.region, "", p.diameter_mm, "", ", ".join(p.flags)])
            _table_pages(pdf, "Flagged changes", cols, rows)
        say("lesion table", 0.8)
        cols, rows = lesion_rows(lesions, diagnoses)
        _table_pages(pdf, "Lesions" + (" (visit 2)" if comparison is not None else ""), cols, rows)
        for k, h in enumerate(histories or []):
            say("lesion histories", 0.85 + 0.15 * k / len(histories))
            _history_page(pdf, h)
        d = pdf.infodict()
        d["Title"], d["Creator"] = title, "BodyMap"
    say("done", 1.0)
    return path
