"""PersonalityBench-format question files: one JSON object with a "question" per line."""

from __future__ import annotations

import json
from pathlib import Path

from .generation import check_question


def read_questions(path: str | Path) -> list[dict]:
    """Every line's object, in order; a clear error names the first bad line."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or "question" not in row:
                raise ValueError(f'{path}, line {n}: expected an object with a "question" field')
            try:
                row["question"] = check_question(row["question"])
            except ValueError as exc:
                raise ValueError(f"{path}, line {n}: {exc}") from exc
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no questions")
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
