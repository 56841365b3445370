"""Heavy work off the GUI thread: a QRunnable fed by the library's progress(stage, fraction)
callback, with cancel.

Cancel works by raising Cancelled from inside the progress callback: every long library stage
calls it often, so the job stops at its next report without the library knowing about Qt."""
from __future__ import annotations

import time
import traceback
from typing import Callable

from PySide6 import QtCore, QtWidgets


class Cancelled(Exception):
    """Raised inside a job's progress callback when the user cancelled it."""


class _Signals(QtCore.QObject):
    progress = QtCore.Signal(str, float)
    done = QtCore.Signal(object)
    failed = QtCore.Signal(str)
    cancelled = QtCore.Signal()
    finished = QtCore.Signal()  # after done / failed / cancelled


class Job(QtCore.QRunnable):
    """Runs fn(progress) in the global thread pool. fn gets the progress callback as its only
    argument and returns the result (signals.done); an exception becomes signals.failed with a
    one-line message (the traceback goes to stderr); cancel() makes the next progress call
    raise Cancelled (signals.cancelled)."""

    def __init__(self, fn: Callable[[Callable[[str, float], None]], object], name: str = "job"):
        super().__init__()
        self.fn, self.name = fn, name
        self.signals = _Signals()
        self._cancel = False
        self.setAutoDelete(False)  # the window keeps a reference while it runs

    def cancel(self) -> None:
        self._cancel = True

    @property
    def is_cancelled(self) -> bool:
        return self._cancel

    def _progress(self, stage: str, fraction: float) -> None:
        if self._cancel:
            raise Cancelled(self.name)
        try:
            self.signals.progress.emit(str(stage), float(fraction))
        except RuntimeError:  # the window that started the job is gone: nobody wants the result
            self._cancel = True
            raise Cancelled(self.name) from None

    def _emit(self, name: str, *args) -> None:
        try:
            getattr(self.signals, name).emit(*args)
        except RuntimeError:  # receiver deleted (window closed): drop the message
            pass

    def run(self) -> None:
        try:
            result = self.fn(self._progress)
            if self._cancel:
                self._emit("cancelled")
            else:
                self._emit("done", result)
        except Cancelled:
            self._emit("cancelled")
        except Exception as e:  # shown to the user as one line; the traceback is for bug reports
            if not isinstance(e, (ValueError, OSError)) and type(e).__name__ != "ModelUnavailable":
                traceback.print_exc()
            self._emit("failed", str(e) or type(e).__name__)
        finally:
            self._emit("finished")


class ProgressPanel(QtWidgets.QWidget):
    """A job's progress in the status bar: what it does, a bar, the time left (estimated from
    the time so far once a tenth is done), and Cancel."""

    def __init__(self, title: str, job: "Job"):
        super().__init__()
        self.title, self.t0 = title, time.monotonic()
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        self.label = QtWidgets.QLabel(title)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFixedWidth(160)
        self.bar.setTextVisible(False)
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.setSizePolicy(QtWidgets.QSizePolicy.Policy.Fixed, QtWidgets.QSizePolicy.Policy.Fixed)
        self.cancel_btn.clicked.connect(job.cancel)
        self.cancel_btn.clicked.connect(lambda: self.label.setText(f"{self.title}: cancelling…"))
        for w in (self.label, self.bar, self.cancel_btn):
            lay.addWidget(w)

    def set_progress(self, stage: str, fraction: float) -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        self.bar.setValue(int(1000 * f))
        self.label.setText(f"{self.title}: {stage}{eta_text(time.monotonic() - self.t0, f)}")


def eta_text(elapsed_s: float, fraction: float) -> str:
    """', about 40 s left' from the time so far and the fraction done ('' before a tenth is
    done, when the estimate means little)."""
    if fraction < 0.1 or fraction >= 1.0:
        return ""
    left = elapsed_s * (1.0 - fraction) / fraction
    return f", about {left:.0f} s left" if left < 90 else f", about {left / 60:.0f} min left"


class JobRunner(QtCore.QObject):
    """Starts Jobs with a progress panel (status bar) that can cancel them, and keeps them
    alive until they finish. running: the jobs in flight."""

    def __init__(self, parent: QtWidgets.QWidget):
        super().__init__(parent)
        self.parent_widget = parent
        self.running: list[Job] = []

    def _tell_failure(self, title: str, message: str) -> None:
        """A failed job's message in a window that does not block the event loop (a modal box
        would freeze the window, and any script or test driving it, until dismissed)."""
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, title, message,
                                    QtWidgets.QMessageBox.StandardButton.Ok, self.parent_widget)
        box.setWindowModality(QtCore.Qt.WindowModality.NonModal)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()
        self.last_failure = message

    def start(self, job: Job, title: str, on_done: Callable[[object], None],
              on_failed: Callable[[str], None] | None = None, dialog: bool = True,
              on_cancelled: Callable[[], None] | None = None) -> Job:
        """Run job; on_done(result) runs on the GUI thread. A progress panel with a Cancel
        button shows in the status bar while it runs (dialog=False: a status message only)."""
        dlg = None
        if dialog:
            # a panel in the status bar, not a modal dialog: the window stays usable meanwhile
            dlg = ProgressPanel(title, job)
            job.signals.progress.connect(dlg.set_progress)
            status_bar = getattr(self.parent_widget, "statusBar", None)
            if status_bar is not None:
                status_bar().addPermanentWidget(dlg)
            job.dialog = dlg
        status = getattr(self.parent_widget, "statusBar", None)
        if status is not None and dlg is None:  # the panel says it otherwise
            job.signals.progress.connect(lambda st, f: status().showMessage(f"{title}: {st} ({100 * f:.0f} %)"))
        # a result that arrives after the user pressed Cancel is dropped: cancel means "not this"
        job.signals.done.connect(lambda r: job.signals.cancelled.emit() if job.is_cancelled else on_done(r))
        job.signals.failed.connect(on_failed or (lambda m: self._tell_failure(title, m)))
        if on_cancelled:
            job.signals.cancelled.connect(on_cancelled)
        if status is not None:
            job.signals.cancelled.connect(lambda: status().showMessage(f"{title}: cancelled", 5000))
            job.signals.failed.connect(lambda m: status().showMessage(f"{title}: {m}", 15000))

        def finish():
            # the job's last "title: stage (50 %)" must not outlive it (a message set since stays)
            if status is not None and status().currentMessage().startswith(f"{title}: ") \
                    and status().currentMessage().endswith("%)"):
                status().clearMessage()
            if dlg is not None:
                dlg.hide()
                dlg.deleteLater()
            if job in self.running:
                self.running.remove(job)

        job.signals.finished.connect(finish)
        self.running.append(job)
        QtCore.QThreadPool.globalInstance().start(job)
        if dlg is not None:
            dlg.show()
        return job

    def cancel_all(self) -> None:
        """Ask every running job to stop at its next progress report."""
        for j in list(self.running):
            j.cancel()

    def wait(self, ms: int = 60000) -> bool:
        """Block until all jobs are done (tests, quitting). True when none is left."""
        return QtCore.QThreadPool.globalInstance().waitForDone(ms)


def wait_events(ms: int) -> None:
    """Process Qt events for ``ms`` milliseconds from a script or test, sleeping between rounds.

    QTest.qWait can keep Python's GIL while it waits, and a worker thread importing torch then
    stalls for good (seen under Xvfb with PySide6 6.12); time.sleep lets the workers run."""
    import time

    end = time.monotonic() + ms / 1000.0
    app = QtCore.QCoreApplication.instance()
    while True:
        if app is not None:
            app.processEvents()
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(0.02, left))
