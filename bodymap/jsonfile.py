"""JSON files with a schema tag: one reader and one writer for every BodyMap JSON format
(lesion sets, tracking results, reviews, projects), so each gives the same clear errors and none
is ever left half-written (bodymap.atomic)."""
from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from bodymap.atomic import write_text


def read_json(path: str | Path, schema: str, kind: str) -> dict:
    """The object in a JSON file whose "schema" is `schema`. Raises ValueError naming the file
    (and `kind`, e.g. "lesion file") when it cannot be read or is another kind of file."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable {kind} ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != schema:
        raise ValueError(f"{path}: not a BodyMap {kind} (schema {schema} expected)")
    return d


def write_json(path: str | Path, data: dict) -> None:
    """Write data as JSON atomically (a uniquely named temporary file in the same folder,
    renamed over the target), so a crash or a full disk mid-write never leaves a truncated
    file where the user's annotations were, and concurrent writers never share a temporary."""
    write_text(path, json.dumps(data, indent=1))


class BackgroundWriter:
    """Writes JSON files (write_json) in one background thread, in the order asked, so an
    application saving after every edit never waits for the encoding and the disk. A write
    still queued when a newer one for the same path arrives is skipped (the newer data
    supersedes it). The data handed over must not change afterwards: pass a snapshot (e.g.
    Project.to_dict(), which copies)."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bodymap-writer")
        self._latest: dict[str, object] = {}
        self._lock = threading.Lock()

    def submit(self, path: str | Path, data: dict) -> Future:
        """Queue a write; the Future's result is True when written, False when superseded, and
        its exception the OSError of a failed write."""
        key, token = str(Path(path).resolve()), object()
        with self._lock:
            self._latest[key] = token

        def run() -> bool:
            with self._lock:
                if self._latest.get(key) is not token:
                    return False
            write_json(path, data)
            return True

        return self._pool.submit(run)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every write queued so far is done (before quitting, or deleting a file
        a queued write would bring back)."""
        self._pool.submit(lambda: None).result(timeout)
