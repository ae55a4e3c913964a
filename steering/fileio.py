"""Small file helpers shared by every writer and every command.

Writing: every result file is written to a unique temporary file beside it and renamed into place, so a failed or
interrupted run never truncates an earlier result (`atomic_writer`, `write_text_atomic`, `write_bytes_atomic`,
`write_jsonl_atomic`). The only exceptions are the files that are appended to on purpose so that a run can resume
(evaluate's answers and judgments, the LLM judge's cache): `append_jsonl` and `read_jsonl` survive a run killed
mid-line, and a torn last line costs only that line.

Checking: `check_input_file`, `check_input_folder`, `check_output_file` and `check_output_folder` refuse, with one
line naming the path, what could not be read or written, so that a command can check its paths before it loads a
model or generates anything."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator


def _missing_folders(folder: Path) -> list[Path]:
    """The folders above and including `folder` that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextmanager
def atomic_writer(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """A file to write `path`'s new content to: a unique temporary file in the same folder, renamed onto `path`
    only when the block ends without an error. On an error (or Ctrl-C) the temporary file is removed, so are the
    folders this call created for it, and an earlier file at `path` stays byte for byte as it was. The new file
    keeps the old one's permissions (0644 for a new file, not mkstemp's 0600)."""
    path = Path(path)
    created = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for folder in created:  # deepest first; a folder something else wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a unique temporary file beside `path`, then rename it into place."""
    with atomic_writer(path) as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a unique temporary file beside `path`, then rename it into place."""
    with atomic_writer(path, binary=True) as f:
        f.write(data)
    return Path(path)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file this project appended to; a torn line (a run killed mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows; after a run killed mid-line, start on a fresh line so the torn line stays the only loss."""
    path = Path(path)
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# -- checking paths before any work ---------------------------------------------------------------------------

def check_input_file(path: str | Path) -> Path:
    """A file that exists and can be read (a pipe or /dev/stdin too); a folder or a missing file is refused."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a file")
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not readable")
    return path


def check_input_folder(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"no such folder: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    return path


def _check_creatable(folder: Path) -> None:
    """`folder` exists, or can be made: the nearest existing folder above it is a folder we may create files in
    (tried with an unnamed temporary file, which leaves nothing behind; permission bits alone say nothing to root
    or on a read-only mount)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{existing} is a file, so {folder} cannot be a folder" if existing != folder
                         else f"{folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write in {existing} ({exc.strerror or exc})") from exc


def check_output_file(path: str | Path) -> Path:
    """A file path a command can write at its end: not a folder, in a folder that exists or can be made and that
    we may write in. Nothing is created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    _check_creatable(path.parent)
    return path


def check_output_folder(path: str | Path) -> Path:
    """A folder a command can write into: an existing folder we may write in, or one that can be made. Nothing
    is created."""
    path = Path(path).expanduser()
    _check_creatable(path)
    return path
