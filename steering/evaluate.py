"""The paper's evaluation from one call: every (method, strength, trait, pole, question) answered in mixed batches,
every answer judged, and the method x trait table (high-pole and low-pole trait scores, fluency) with a plot of trait
score against NPTI strength.

Everything lands in one folder and every step resumes: answers.jsonl and judgments-<judge>.jsonl are appended row by
row, keyed, so an interrupted run picks up where it stopped and a rerun costs nothing. The table is computed only
from those two files (`table_from_files`), so anyone can recompute it."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .fluency import perplexity, repeated_ngram_share
from .generation import Decoding
from .judge import Judge, JudgeItem, Judgment
from .methods import METHODS, Request, answer_rows, unavailable
from .models import LoadedModel
from .traits import POLES, check_trait

ANSWERS = "answers.jsonl"


@dataclass(frozen=True)
class Plan:
    """What to evaluate. `strengths` apply to npti only (None = each pole's shipped default); other methods run
    once per pole."""

    methods: tuple[str, ...] = METHODS
    traits: tuple[str, ...] = ()
    strengths: tuple[float | None, ...] = (None,)
    seed: int = 0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}: choose among {', '.join(METHODS)}")
        object.__setattr__(self, "traits", tuple(check_trait(t) for t in self.traits))
        for s in self.strengths:
            if s is not None:
                Request("npti", "Openness", "high", s)  # range check with the engine's message


def _key(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def strength_label(strength: float | None) -> str:
    return "default" if strength is None else f"{strength:g}"


def plan_rows(plan: Plan, questions: dict[str, list[str]], model: str = "") -> list[dict]:
    """One row per answer to produce, with a stable key (the resume and join key) that also names the model and
    the token limit, so a rerun with other settings into the same folder never reuses old answers."""
    rows: dict[str, dict] = {}
    for trait in plan.traits:
        for pole in POLES:
            for method in plan.methods:
                for strength in (plan.strengths if method == "npti" else (None,)):
                    label = strength_label(strength) if method == "npti" else "-"
                    for question in questions[trait]:
                        key = _key(model, plan.max_new_tokens, method, label, trait, pole, plan.seed, question)
                        rows.setdefault(key, {"key": key, "method": method, "strength": label, "trait": trait,
                                              "pole": pole, "question": question})
    return list(rows.values())


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file written by this module; a truncated last line (a run killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append(path: Path, rows: Sequence[dict]) -> None:
    """Append rows; after a run killed mid-line, start on a fresh line so the torn line stays the only loss."""
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_answers(lm: LoadedModel, plan: Plan, questions: dict[str, list[str]], out: Path,
                     batch_size: int = 16, progress: Callable | None = None, profiles: Path | None = None) -> list[dict]:
    """Answer every planned row that answers.jsonl does not hold yet, in mixed batches (rows of different methods
    and strengths share a generate call); return all the plan's answers."""
    out.mkdir(parents=True, exist_ok=True)
    missing = sorted({why for r in plan_rows(plan, questions, lm.name)
                      if (why := unavailable(lm, r["method"], r["trait"], r["pole"], profiles))})
    if missing:  # fail before generating anything, with every missing artefact at once
        raise ValueError("cannot evaluate as planned:\n- " + "\n- ".join(missing))
    path = out / ANSWERS
    done = {r["key"]: r for r in _read_jsonl(path)}
    todo = [r for r in plan_rows(plan, questions, lm.name) if r["key"] not in done]
    decoding = Decoding(max_new_tokens=plan.max_new_tokens)
    bar = progress(total=len(todo), desc="answers") if progress and todo else None
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        requests = [(Request(r["method"], r["trait"], r["pole"],
                             None if r["strength"] in ("-", "default") else float(r["strength"]), plan.seed),
                     r["question"]) for r in chunk]
        written = []
        for row, (ans, params) in zip(chunk, answer_rows(lm, requests, decoding, profiles)):
            written.append({**row, "answer": ans.text, "n_tokens": ans.n_tokens, "finished": ans.finished,
                            "params": params, "model": lm.name, "max_new_tokens": plan.max_new_tokens})
            done[row["key"]] = written[-1]
        _append(path, written)
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return [done[r["key"]] for r in plan_rows(plan, questions, lm.name)]


def judgments_path(out: Path, judge_name: str) -> Path:
    """judgments-<judge>.jsonl, the judge's name made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in judge_name)
    return out / f"judgments-{safe}.jsonl"


def _failed(row: dict) -> bool:
    detail = row.get("detail") or {}
    return any(isinstance(v, dict) and v.get("error") for v in detail.values())


def judge_answers(judge: Judge, answers: list[dict], out: Path, batch_size: int = 32,
                  progress: Callable | None = None) -> list[dict]:
    """Judge every answer not judged yet by this judge; return the judgments of `answers`, in order."""
    path = judgments_path(out, judge.name)
    # a judgment that failed (endpoint down, retries spent) is not done: a rerun asks again
    done = {r["key"]: r for r in _read_jsonl(path) if not _failed(r)}
    todo = [a for a in answers if a["key"] not in done]
    bar = progress(total=len(todo), desc=f"judging ({judge.name})") if progress and todo else None
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        items = [JudgeItem(a["question"], a["answer"], a["trait"], a["pole"]) for a in chunk]
        rows = [{"key": a["key"], "judge": judge.name, "trait_score": j.trait_score, "fluency_score": j.fluency_score,
                 "detail": j.detail} for a, j in zip(chunk, judge.judge(items))]
        _append(path, rows)
        done.update({r["key"]: r for r in rows})
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return [done[a["key"]] for a in answers]


def joined(answers: list[dict], judgments: list[dict]) -> pd.DataFrame:
    """One row per judged answer: method, strength, trait, pole, trait_score, fluency_score."""
    by_key = {j["key"]: j for j in judgments}
    rows = [{"key": a["key"], "method": a["method"], "strength": a["strength"], "trait": a["trait"], "pole": a["pole"],
             "trait_score": by_key[a["key"]]["trait_score"], "fluency_score": by_key[a["key"]]["fluency_score"]}
            for a in answers if a["key"] in by_key]
    frame = pd.DataFrame(rows, columns=["key", "method", "strength", "trait", "pole", "trait_score", "fluency_score"])
    for c in ("trait_score", "fluency_score"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def paper_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per method (npti: per strength), per trait the mean trait score of the high-pole
    answers, of the low-pole answers, and the mean fluency over both; missing judgments are left out of the means
    (and counted in `missing`)."""
    order = {m: i for i, m in enumerate(METHODS)}
    out = []
    for (method, strength), g in frame.groupby(["method", "strength"], sort=False):
        row: dict = {"method": method, "strength": strength}
        for trait, t in g.groupby("trait", sort=False):
            for pole in POLES:
                row[f"{trait} {pole}"] = t.loc[t["pole"] == pole, "trait_score"].mean()
            row[f"{trait} fluency"] = t["fluency_score"].mean()
        row["n"] = len(g)
        row["missing"] = int(g["trait_score"].isna().sum() + g["fluency_score"].isna().sum())
        out.append(row)
    table = pd.DataFrame(out)
    if len(table):
        table["_o"] = table["method"].map(order)
        table["_s"] = table["strength"].map(lambda s: -1.0 if s in ("-", "default") else float(s))
        table = table.sort_values(["_o", "_s"]).drop(columns=["_o", "_s"]).reset_index(drop=True)
    return table


def _markdown(table: pd.DataFrame, judge: str, scales: dict) -> str:
    cols = list(table.columns)
    lines = [f"Judge: {judge}. Trait score: {scales['trait']}. Fluency: {scales['fluency']}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append("" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_strength(frame: pd.DataFrame, path: Path, judge: str, scales: dict) -> None:
    """Trait score against NPTI strength, one line per trait pole; the other methods as dotted reference levels
    (base) where present. No pyplot: a bare Figure, so nothing global changes."""
    from matplotlib.figure import Figure

    traits = list(dict.fromkeys(frame["trait"]))
    fig = Figure(figsize=(4.2 * max(1, len(traits)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(traits)), squeeze=False)[0]
    npti = frame[(frame["method"] == "npti") & (frame["strength"] != "default")]
    for ax, trait in zip(axes, traits):
        for pole, colour in (("high", "tab:red"), ("low", "tab:blue")):
            sub = npti[(npti["trait"] == trait) & (npti["pole"] == pole)]
            if len(sub):
                means = sub.groupby(sub["strength"].astype(float))["trait_score"].mean().sort_index()
                ax.plot(means.index, means.values, marker="o", color=colour, label=f"NPTI {pole}")
            base = frame[(frame["method"] == "base") & (frame["trait"] == trait) & (frame["pole"] == pole)]
            if len(base) and pole == "high":
                ax.axhline(base["trait_score"].mean(), color="grey", linestyle=":", label="base")
        ax.set_title(trait)
        ax.set_xlabel("NPTI strength")
        ax.set_ylabel(f"trait score ({scales['trait']})", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"Trait score vs strength — judge: {judge}", fontsize=9)
    fig.savefig(path, dpi=110)


def write_outputs(frame: pd.DataFrame, out: Path, judge: str, scales: dict) -> pd.DataFrame:
    table = paper_table(frame)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(_markdown(table, judge, scales), encoding="utf-8")
    plot_strength(frame, out / "strength.png", judge, scales)
    return table


def table_from_files(out: Path, judge_name: str) -> pd.DataFrame:
    """Recompute the table from what the run wrote in `out`: the answers and judgments files, restricted to the
    answer keys of the run's plan (run.json), the last row per key winning as when they were read."""
    keys = json.loads((out / "run.json").read_text())["keys"]
    answers = {r["key"]: r for r in _read_jsonl(out / ANSWERS)}
    judgments = {r["key"]: r for r in _read_jsonl(judgments_path(out, judge_name)) if not _failed(r)}
    return paper_table(joined([answers[k] for k in keys if k in answers], list(judgments.values())))


# -- the offline judge ------------------------------------------------------------------------------------------

@dataclass
class OfflineJudge:
    """A judge that needs no API: a PROXY of both scores, labelled as such wherever it appears.

    Trait score: the persona-bank proxy (`steering.proxy`): cosine similarity of the answer's embedding to the bank's
    high-pole descriptions minus that to its low-pole descriptions (positive = towards the high pole; not on the
    1-5 scale). Fluency: perplexity of the answer given the plain question under the reference model with no
    steering or adapter, multiplied by (1 + repeated-4-gram share), lower is better."""

    lm: LoadedModel
    proxy: object | None = None
    name: str = "offline-proxy"

    scales = {"trait": "PROXY, cos(high descriptions) - cos(low descriptions), > 0 leans high",
              "fluency": "PROXY, perplexity x (1 + repeated 4-gram share), lower is better"}

    def judge(self, items: Sequence[JudgeItem], progress: Callable | None = None) -> list[Judgment]:
        from .proxy import TraitProxy

        if self.proxy is None:
            self.proxy = TraitProxy()
        items = list(items)
        trait_scores: list[float] = [math.nan] * len(items)
        for trait in dict.fromkeys(i.trait for i in items):
            idx = [k for k, i in enumerate(items) if i.trait == trait]
            for k, s in zip(idx, self.proxy.score(trait, [items[k].answer for k in idx])):
                trait_scores[k] = float(s)
        ppl = perplexity(self.lm, [i.question for i in items], [i.answer for i in items])
        out = []
        for item, t, p in zip(items, trait_scores, ppl):
            rep = repeated_ngram_share(item.answer)
            fluency = float(p) * (1 + rep) if math.isfinite(p) else None
            out.append(Judgment(t, fluency, self.name, {"perplexity": float(p), "repeat4": rep}))
        return out


def judge_scales(judge: Judge) -> dict:
    return getattr(judge, "scales", {"trait": "1-5, how much of the trait (LLM judge)",
                                     "fluency": "1-5 (LLM judge), higher is better"})


def run_settings(plan: Plan, model: str, judge: Judge, questions: dict[str, list[str]]) -> dict:
    """run.json: the plan, the judge and its scales, and the answer keys the table is made of."""
    return {"plan": asdict(plan), "model": model, "judge": judge.name, "scales": judge_scales(judge),
            "questions": {t: len(q) for t, q in questions.items()},
            "keys": [r["key"] for r in plan_rows(plan, questions, model)]}
