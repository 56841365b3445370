"""`bodymap-gui [PATH]`: the desktop application. PATH: a scan, an analysis folder or a project."""
from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Start the application; opens PATH when given. Returns the exit code."""
    t0 = time.perf_counter()
    argv = sys.argv if argv is None else argv
    from PySide6 import QtWidgets
    from PySide6.QtCore import QEventLoop

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

        # the first paint: under load the window system may take more than one event round to
        # expose the window, so wait for it (up to 10 s) rather than report a single round
        deadline = time.perf_counter() + 10.0
        app.processEvents()
        while not w.windowHandle().isExposed() and time.perf_counter() < deadline:
            app.processEvents(QEventLoop.AllEvents, 20)
            time.sleep(0.005)
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
