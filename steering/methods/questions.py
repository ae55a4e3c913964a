"""PersonalityBench-format question files: one JSON object with a "question" per line.

A bad line is refused with `FILE:LINE: what is wrong`, so a command can stop before it loads a model."""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import write_jsonl_atomic
from ..engine.generation import check_question


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages about what a file holds."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line; a line that is not UTF-8 is refused by number."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    out = []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:{n}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})") \
                from exc
        if text.strip():
            out.append((n, text))
    return out


def _row(path: Path, n: int, line: str) -> dict:
    where = f"{path}:{n}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise ValueError(f'{where}: expected an object with a "question" field, got {json_type(row)}')
    if "question" not in row:
        raise ValueError(f'{where}: expected an object with a "question" field')
    if not isinstance(row["question"], str):
        raise ValueError(f'{where}: "question" must be a string, got {json_type(row["question"])}')
    if "trait" in row and not isinstance(row["trait"], str):
        raise ValueError(f'{where}: "trait" must be a string, got {json_type(row["trait"])}')
    try:
        row["question"] = check_question(row["question"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return row


def read_question_lines(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every line, in order: "question" a non-empty string within the prompt limit,
    "trait" (where present) a string. The first bad line is refused as `FILE:LINE: ...`; a file with no question
    as `FILE: no questions`."""
    path = Path(path)
    rows = [(n, _row(path, n, line)) for n, line in _lines(path)]
    if not rows:
        raise ValueError(f"{path}: no questions")
    return rows


def read_questions(path: str | Path) -> list[dict]:
    """Every line's object, in order; a clear error names the first bad line."""
    return [row for _, row in read_question_lines(path)]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write every row at once, atomically: a failed run leaves an earlier file untouched."""
    write_jsonl_atomic(path, rows)
