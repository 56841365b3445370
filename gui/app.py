"""`bodymap-gui [PATH]`: the desktop application. PATH: a scan, an analysis folder or a project."""
from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Start the application; opens PATH when given. Returns the exit code."""
    t0 = time.perf_counter()
    argv = sys.argv if argv is None else argv
    from PySide6 import QtWidgets

    from bodymap.memory import reuse_freed_memory

    reuse_freed_memory()  # an analysis in the app is the same job as `bodymap analyze`

    from gui.mainwindow import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(argv)
    app.setApplicationName("BodyMap")
    app.setOrganizationName("BodyMap")
    args = [a for a in argv[1:] if not a.startswith("-")]
    # autosaves left by a crash are offered back even when a scan is opened at start
    w = MainWindow(recover="--startup-check" not in argv, path=args[0] if args else None)
    w.show()
    if "--startup-check" in argv:
        # for benchmarks/gui.py and the tests: time until the window is on screen and painted
        def report():
            print(f"window shown in {time.perf_counter() - t0:.2f} s; exposed: {w.windowHandle().isExposed()}; "
                  f"torch imported: {'torch' in sys.modules}", flush=True)

        app.processEvents()  # the first paint of the window
        report()
        if "--wait-3d" not in argv:
            return 0
        # ... and until the 3D view (VTK, imported in a thread meanwhile) is ready
        w.view.ready.connect(lambda: (print(f"3D view ready in {time.perf_counter() - t0:.2f} s", flush=True),
                                      app.quit()))
        return app.exec()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
