"""Files that appear complete or not at all: a temporary file in the same folder, then `os.replace`."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Open a text file that appears at `path` only once it is completely written.

    Writes go to a temporary file in the same folder, which replaces `path` (os.replace) when the
    block ends without an error; on an error or a kill, `path` keeps its old content (or stays
    absent) and the temporary file is removed (or, after a kill, left as a hidden `.NAME.*.tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write `text` to `path` through `atomic_writer`."""
    with atomic_writer(path) as handle:
        handle.write(text)


def write_jsonl(rows: list[dict[str, Any]], stream: IO[str]) -> None:
    """Write `rows` as JSON lines and flush, so a reader at the other end of a pipe gets them now."""
    for row in rows:
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    stream.flush()
