"""Red-team results files: rows (`RunRow`, trainlock.attacks.stages.row) appended as runs finish, read back
checked and migrated.

Reading (`read_rows`) re-keys each row from its config (`migrate`), so a directory written by an older version
resumes: rows of version 1 (flat configs, keys without a version) and rows whose config lacks a field added
since are recognized; see `trainlock.red_team.spec` for the key scheme.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..attacks.stages.row import ALWAYS, RowError, RunRow

__all__ = ["ALWAYS", "RowError", "RunRow", "append_row", "migrate", "read_rows"]
logger = logging.getLogger(__name__)


def migrate(data: dict) -> dict:
    """A row dict with its config in today's (nested) form and its key re-derived from that config, when the key
    is the one its config gave when it was written (version 1: flat config; version 2: this scheme). A row whose
    config names a stage that is not registered (a plugin not loaded) is left as it is."""
    from .spec import AttackSpec, config_key

    config = data.get("config")
    if not isinstance(config, dict):
        return data
    try:
        spec = AttackSpec.from_dict(config)
    except ValueError:
        return data
    key = data.get("key")
    own = key == (spec.legacy_key() if spec.is_flat(config) else config_key(config))
    return {**data, "config": spec.to_dict(), "key": spec.key() if own else key}


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file, checked and migrated (see `migrate`), in the `RunRow.to_dict()` form.

    A line that is not JSON is a row torn by a killed run when it is the last line or starts like a row
    (runs resumed after the kill append after it): skipped with a warning. Any other bad line raises RowError
    naming the file and line."""
    rows: list[dict] = []
    if not Path(path).is_file():
        return rows
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) or line.lstrip().startswith("{"):
                logger.warning("%s:%d: a torn row (a killed run) is skipped", path, i)
                continue
            raise RowError(f"{path}:{i}: not a JSON row: {line[:80]!r}") from None
        rows.append(RunRow.from_dict(migrate(data) if isinstance(data, dict) else data, f"{path}:{i}").to_dict())
    return rows


def append_row(path: Path, row: RunRow | dict) -> dict:
    """Check `row` and append it to `path` as one JSON line, synced (a torn last line from a killed run is closed
    first, so it cannot swallow this row). Returns the row as written."""
    data = (row if isinstance(row, RunRow) else RunRow.from_dict(row)).to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(data, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    return data
