"""A virtual X display for tests, screenshots and benchmarks on machines without a screen.

The 3D view needs a real OpenGL context (Qt's "offscreen" platform has none for VTK), so on a
headless machine the GUI runs on Xvfb with Mesa's software OpenGL."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess


def ensure_display(size: str = "1920x1200x24") -> subprocess.Popen | None:
    """Make sure Qt can open windows with OpenGL: when there is no DISPLAY (or Qt was told to
    use the offscreen platform), start Xvfb on a free display number, point DISPLAY at it and
    select Qt's xcb platform. Returns the Xvfb process (stopped at exit) or None when a display
    was already there. Raises RuntimeError when Xvfb is not installed (`make setup` installs it)."""
    if os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM", "xcb") != "offscreen":
        return None
    exe = shutil.which("Xvfb")
    if exe is None:
        raise RuntimeError("no display and no Xvfb: install it (make setup) or run under xvfb-run")
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp", "-noreset"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    num = b""
    with os.fdopen(r, "rb") as fh:  # Xvfb writes the display number once it is ready
        while not num.endswith(b"\n"):
            c = fh.read(1)
            if not c:
                raise RuntimeError("Xvfb did not start")
            num += c
    os.environ["DISPLAY"] = f":{int(num)}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    atexit.register(lambda: (proc.terminate(), proc.wait(5)))
    return proc
