"""The paper's evaluation from one call: every (method, strength, trait, pole, question) answered in mixed batches,
every answer judged, and the method x trait table (high-pole and low-pole trait scores, fluency) with a plot of trait
score against NPTI strength.

Everything lands in one folder and every step resumes: answers.jsonl and judgments-<judge>.jsonl are appended row by
row, keyed, so an interrupted run picks up where it stopped and a rerun costs nothing (a torn last line, from a run
killed mid-write, is skipped: those two files are the only ones appended to); every other file (run.json, the
tables, the plot) is written to a temporary file and renamed into place, so a failed rerun never truncates it. The
table is computed only from those two files (`table_from_files`), so anyone can recompute it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ..engine.models import LoadedModel
from ..engine.world import World
from ..fileio import append_jsonl, read_jsonl
from ..methods.dispatch import answer_rows, unavailable
from ..traits import POLES
from .judge import Judge, JudgeItem
from .plan import Plan, Variant, plan_rows, resolve, strength_label
from .tables import JOINED, joined, pairs_table, paper_table, plot_strength, write_outputs

# The plan and the tables live in their own modules; they are re-exported so that `evaluate` stays the one import of
# the pipeline.
__all__ = ["ANSWERS", "JOINED", "Plan", "Variant", "frame_from_files", "generate_answers", "joined", "judge_answers",
           "judgments_path", "pairs_table", "paper_table", "plan_rows", "plot_strength", "resolve", "run_settings",
           "strength_label", "table_from_files", "write_outputs"]

ANSWERS = "answers.jsonl"


def _rounds(todo: list[dict], batch_size: int, world: World, progress: Callable | None,
            desc: str) -> Iterator[list[dict]]:
    """`todo` in chunks of `batch_size`, dealt out in rounds of one chunk per rank: this rank's chunk of each round
    ([] when none is left for it; in one process, every chunk in turn). A progress bar (when `progress` is given,
    there is work and this rank writes) steps by the round once the caller is done with it."""
    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = progress(total=len(todo), desc=desc) if progress and todo and world.writer else None
    try:
        for chunk, n in world.rounds(chunks):
            yield chunk
            if bar:
                bar.update(n)
    finally:
        if bar:
            bar.close()


def generate_answers(lm: LoadedModel, plan: Plan, questions: dict[str, list[str]], out: Path,
                     batch_size: int = 16, progress: Callable | None = None, profiles: Path | None = None,
                     world: World = World()) -> list[dict]:
    """Answer every planned row that answers.jsonl does not hold yet, in mixed batches (rows of different methods
    and strengths share a generate call); return all the plan's answers.

    Under a launcher (`world`), each rank answers its chunks of each round, the round's rows are gathered to every
    rank and rank 0 appends them: the file holds what one process would write, batch for batch."""
    missing = sorted({why for trait in plan.traits for pole in POLES for v in plan.variants()
                      if (why := unavailable(lm, v.method, trait, pole, profiles, v.source))})
    if missing:  # fail before generating (or creating) anything, with every missing artefact at once, on one line
        raise ValueError("cannot evaluate as planned: " + "; ".join(missing))
    out.mkdir(parents=True, exist_ok=True)
    path = out / ANSWERS
    done = {r["key"]: r for r in read_jsonl(path)}
    rows = plan_rows(plan, questions, lm.name, lambda v, t, p: resolve(lm, v, t, p, profiles))
    todo = list({r["key"]: r for r in rows if r["key"] not in done}.values())
    decoding = plan.decoding()
    for chunk in _rounds(todo, batch_size, world, progress, "answers"):
        requests = [(Variant.parse(r["resolved"]).request(r["trait"], r["pole"], r["seed"]), r["question"])
                    for r in chunk]
        written = [{**row, "answer": ans.text, "n_tokens": ans.n_tokens, "finished": ans.finished, "params": params,
                    "model": lm.name, "max_new_tokens": plan.max_new_tokens}
                   for row, (ans, params) in zip(chunk, answer_rows(lm, requests, decoding, profiles) if chunk else [])]
        written = world.gather(written)
        done.update((row["key"], row) for row in written)
        if world.writer:
            append_jsonl(path, written)
    return [{**done[r["key"]], **{k: r[k] for k in ("method", "variant", "resolved", "strength")}} for r in rows]


def judgments_path(out: Path, judge_name: str) -> Path:
    """judgments-<judge>.jsonl, the judge's name made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in judge_name)
    return out / f"judgments-{safe}.jsonl"


def _failed(row: dict) -> bool:
    detail = row.get("detail") or {}
    return any(isinstance(v, dict) and v.get("error") for v in detail.values())


def judge_answers(judge: Judge, answers: list[dict], out: Path, batch_size: int = 32,
                  progress: Callable | None = None, world: World = World()) -> list[dict]:
    """Judge every answer not judged yet by this judge; return the judgments of `answers`, in order. Under a
    launcher (`world`), the ranks share the chunks as `generate_answers` does and rank 0 appends."""
    path = judgments_path(out, judge.name)
    # a judgment that failed (endpoint down, retries spent) is not done: a rerun asks again
    done = {r["key"]: r for r in read_jsonl(path) if not _failed(r)}
    todo = [a for a in answers if a["key"] not in done]
    for chunk in _rounds(todo, batch_size, world, progress, f"judging ({judge.name})"):
        items = [JudgeItem(a["question"], a["answer"], a["trait"], a["pole"]) for a in chunk]
        rows = [{"key": a["key"], "judge": judge.name, "trait_score": j.trait_score, "fluency_score": j.fluency_score,
                 "detail": j.detail} for a, j in zip(chunk, judge.judge(items) if items else [])]
        rows = world.gather(rows)
        if world.writer:
            append_jsonl(path, rows)
        done.update({r["key"]: r for r in rows})
    return [done[a["key"]] for a in answers]


def frame_from_files(out: Path, judge_name: str) -> pd.DataFrame:
    """The joined frame of what a run wrote in `out`, restricted to the answer keys of its plan (run.json), the last
    row per key winning as when they were read."""
    keys = json.loads((out / "run.json").read_text())["keys"]
    answers = {r["key"]: r for r in read_jsonl(out / ANSWERS)}
    judgments = {r["key"]: r for r in read_jsonl(judgments_path(out, judge_name)) if not _failed(r)}
    return joined([answers[k] for k in keys if k in answers], list(judgments.values()))


def table_from_files(out: Path, judge_name: str) -> pd.DataFrame:
    """Recompute the table from what the run wrote in `out`: the answers and judgments files, restricted to the
    answer keys of the run's plan (run.json), the last row per key winning as when they were read."""
    return paper_table(frame_from_files(out, judge_name))


def run_settings(plan: Plan, model: str, judge: Judge, questions: dict[str, list[str]],
                 answers: list[dict]) -> dict:
    """run.json: the plan, the judge and its scales, what each variant resolved to, and the answer keys the table is
    made of."""
    resolved = {f"{a['variant']} {a['trait']} {a['pole']}": a["resolved"] for a in answers}
    return {"plan": asdict(plan), "model": model, "judge": judge.name, "scales": judge.scales.describe(),
            "questions": {t: len(q) for t, q in questions.items()}, "resolved": resolved,
            "keys": [a["key"] for a in answers]}
