"""JSON files with a schema tag: one reader and one writer for every BodyMap JSON format
(lesion sets, tracking results, reviews, projects), so each gives the same clear errors and none
is ever left half-written (bodymap.atomic)."""
from __future__ import annotations

import json
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
