"""The paper's evaluation from one call: every (method, strength, trait, pole, question) answered in mixed batches,
every answer judged, and the method x trait table (high-pole and low-pole trait scores, fluency) with a plot of trait
score against NPTI strength.

Everything lands in one folder and every step resumes: answers.jsonl and judgments-<judge>.jsonl are appended row by
row, keyed, so an interrupted run picks up where it stopped and a rerun costs nothing (a torn last line, from a run
killed mid-write, is skipped: those two files are the only ones appended to); every other file (run.json, the
tables, the plot) is written to a temporary file and renamed into place, so a failed rerun never truncates it. The
table is computed only from those two files (`table_from_files`), so anyone can recompute it."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from ..fileio import append_jsonl, read_jsonl, write_bytes_atomic, write_text_atomic
from .fluency import distinct_n, repeated_ngram_share
from ..engine.generation import Decoding
from .judge import Judge, JudgeItem, Judgment
from ..methods.dispatch import METHODS, Request, answer_rows, unavailable
from ..engine.models import LoadedModel
from ..traits import POLES, check_trait

ANSWERS = "answers.jsonl"


@dataclass(frozen=True)
class Variant:
    """One way of answering, written `method[@source][:strength][/layers]`: `npti@corpus:1.5`, `vector:0.05/14,15,16`,
    `sft@persona`, `base`; for NPTI `/noclamp` leaves the opposite pole's neurons alone (`npti@corpus:1/noclamp`).
    What a spec leaves out is the shipped default, filled in by `resolve` before anything is generated, so `npti` and
    the `npti@corpus:1.5` it resolves to are the same answers (one key)."""

    method: str
    source: str | None = None
    strength: float | None = None
    layers: tuple[int, ...] | None = None
    clamp: bool | None = None

    def __post_init__(self) -> None:
        Request(self.method, "Openness", "high", self.strength, source=self.source, layers=self.layers,
                clamp=self.clamp)  # checks
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted(int(x) for x in self.layers)))

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        text = str(spec).strip()
        rest, _, tail = text.partition("/")
        rest, _, strength = rest.partition(":")
        method, _, source = rest.partition("@")
        try:
            clamp = False if tail == "noclamp" else None
            layers = tuple(int(x) for x in tail.replace("-", ",").split(",")) if tail and clamp is None else None
            return cls(method, source or None, float(strength) if strength else None, layers, clamp)
        except ValueError as exc:
            raise ValueError(f"method spec {spec!r}: {exc} (write method[@source][:strength][/layers], e.g. "
                             "npti@corpus:1.5, npti@corpus:1/noclamp or vector:0.05/14,15,16)") from exc

    def label(self) -> str:
        out = self.method + (f"@{self.source}" if self.source else "")
        out += f":{self.strength:g}" if self.strength is not None else ""
        out += "/noclamp" if self.clamp is False else ""
        return out + ("/" + ",".join(str(x) for x in self.layers) if self.layers else "")

    def request(self, trait: str, pole: str, seed: int) -> Request:
        return Request(self.method, trait, pole, self.strength, seed, source=self.source, layers=self.layers,
                       clamp=self.clamp)


def resolve(lm: LoadedModel, variant: Variant, trait: str, pole: str, profiles: Path | None = None) -> Variant:
    """The variant with every shipped default filled in for this trait pole (what would actually run)."""
    from ..methods.dispatch import DEFAULT_VECTOR_STRENGTH, load_pole, load_vector, npti_source

    if variant.method == "sft":
        return replace(variant, source=variant.source or "corpus")
    if variant.method == "npti":
        source = variant.source or npti_source(lm, trait, pole, profiles)
        strength, clamp = variant.strength, variant.clamp
        if strength is None or clamp is None:
            target, _ = load_pole(lm, trait, pole, profiles, source=source)
            strength = float(target.meta.get("default_strength", 1.0)) if strength is None else strength
            clamp = bool(target.meta.get("default_clamp", True)) if clamp is None else clamp
        return replace(variant, source=source, strength=strength, clamp=None if clamp else False)
    if variant.method == "vector":
        vec = load_vector(lm, trait, profiles)
        shipped = vec.meta.get("defaults", {}).get(pole, {})
        strength = variant.strength if variant.strength is not None else float(
            shipped.get("strength", DEFAULT_VECTOR_STRENGTH))
        return replace(variant, strength=strength, layers=variant.layers or tuple(shipped.get("layers") or vec.layers))
    return variant


@dataclass(frozen=True)
class Plan:
    """What to evaluate: method specs (see `Variant`), traits, and for plain `npti` specs the strengths to try
    (None = each pole's shipped default); other specs run once per pole. `sample` decodes as the studio does
    (temperature 0.7, top-p 0.9), each row seeded by its question."""

    methods: tuple[str, ...] = METHODS
    traits: tuple[str, ...] = ()
    strengths: tuple[float | None, ...] = (None,)
    seed: int = 0
    max_new_tokens: int = 128
    sample: bool = False

    def __post_init__(self) -> None:
        for spec in self.methods:
            if Variant.parse(spec).method not in METHODS:  # pragma: no cover - Request refuses it first
                raise ValueError(f"unknown method {spec!r}")
        object.__setattr__(self, "traits", tuple(check_trait(t) for t in self.traits))
        for s in self.strengths:
            if s is not None:
                Request("npti", "Openness", "high", s)  # range check with the engine's message

    def variants(self) -> list[Variant]:
        out = []
        for spec in self.methods:
            v = Variant.parse(spec)
            if v.method == "npti" and v.strength is None and spec == "npti":
                out.extend(replace(v, strength=s) for s in self.strengths)
            else:
                out.append(v)
        return list(dict.fromkeys(out))

    def decoding(self) -> Decoding:
        return Decoding(max_new_tokens=self.max_new_tokens, do_sample=self.sample)


def _key(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def strength_label(strength: float | None) -> str:
    return "default" if strength is None else f"{strength:g}"


def plan_rows(plan: Plan, questions: dict[str, list[str]], model: str = "",
              resolver: Callable | None = None) -> list[dict]:
    """One row per answer to produce, with a stable key (the resume and join key) from what actually runs (the
    resolved variant), the model, the token limit and the decoding, so a rerun with other settings into the same
    folder never reuses old answers, and two specs that resolve alike share their answers. `resolver(variant,
    trait, pole)` fills in shipped defaults (none: the variants as written)."""
    rows: dict[tuple, dict] = {}
    for trait in plan.traits:
        for pole in POLES:
            for variant in plan.variants():
                done = resolver(variant, trait, pole) if resolver else variant
                label = strength_label(variant.strength) if variant.method == "npti" else "-"
                for qi, question in enumerate(questions[trait]):
                    key = _key(model, plan.max_new_tokens, done.label(), trait, pole, plan.seed, question,
                               "sample" if plan.sample else "greedy")
                    rows.setdefault((variant.label(), trait, pole, question), {
                        "key": key, "method": variant.method, "variant": variant.label(), "resolved": done.label(),
                        "strength": label, "trait": trait, "pole": pole, "question": question, "seed": plan.seed + qi})
    return list(rows.values())


def generate_answers(lm: LoadedModel, plan: Plan, questions: dict[str, list[str]], out: Path,
                     batch_size: int = 16, progress: Callable | None = None, profiles: Path | None = None) -> list[dict]:
    """Answer every planned row that answers.jsonl does not hold yet, in mixed batches (rows of different methods
    and strengths share a generate call); return all the plan's answers."""
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
    bar = progress(total=len(todo), desc="answers") if progress and todo else None
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        requests = [(Variant.parse(r["resolved"]).request(r["trait"], r["pole"], r["seed"]), r["question"])
                    for r in chunk]
        written = []
        for row, (ans, params) in zip(chunk, answer_rows(lm, requests, decoding, profiles)):
            written.append({**row, "answer": ans.text, "n_tokens": ans.n_tokens, "finished": ans.finished,
                            "params": params, "model": lm.name, "max_new_tokens": plan.max_new_tokens})
            done[row["key"]] = written[-1]
        append_jsonl(path, written)
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return [{**done[r["key"]], **{k: r[k] for k in ("method", "variant", "resolved", "strength")}} for r in rows]


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
    done = {r["key"]: r for r in read_jsonl(path) if not _failed(r)}
    todo = [a for a in answers if a["key"] not in done]
    bar = progress(total=len(todo), desc=f"judging ({judge.name})") if progress and todo else None
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        items = [JudgeItem(a["question"], a["answer"], a["trait"], a["pole"]) for a in chunk]
        rows = [{"key": a["key"], "judge": judge.name, "trait_score": j.trait_score, "fluency_score": j.fluency_score,
                 "detail": j.detail} for a, j in zip(chunk, judge.judge(items))]
        append_jsonl(path, rows)
        done.update({r["key"]: r for r in rows})
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return [done[a["key"]] for a in answers]


JOINED = ["key", "method", "variant", "resolved", "strength", "trait", "pole", "question", "trait_score",
          "fluency_score", "repeat4", "distinct2", "perplexity"]


def joined(answers: list[dict], judgments: list[dict]) -> pd.DataFrame:
    """One row per judged answer: what answered (method, the variant as asked, the resolved variant, the npti
    strength label), trait, pole, question, the judge's two scores, and the answer's repeated-4-gram share,
    distinct-2 and perplexity (where the judge measured it)."""
    by_key = {j["key"]: j for j in judgments}
    rows = []
    for a in answers:
        if a["key"] not in by_key:
            continue
        j = by_key[a["key"]]
        detail = j.get("detail") or {}
        rows.append({"key": a["key"], "method": a["method"], "variant": a.get("variant", a["method"]),
                     "resolved": a.get("resolved", a.get("variant", a["method"])), "strength": a["strength"],
                     "trait": a["trait"], "pole": a["pole"], "question": a["question"],
                     "trait_score": j["trait_score"], "fluency_score": j["fluency_score"],
                     "repeat4": repeated_ngram_share(a["answer"]), "distinct2": distinct_n(a["answer"]),
                     "perplexity": detail.get("perplexity", math.nan) if isinstance(detail, dict) else math.nan})
    frame = pd.DataFrame(rows, columns=JOINED)
    for c in ("trait_score", "fluency_score", "perplexity"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _paired_win(g: pd.DataFrame, better: str = "high", against: pd.DataFrame | None = None) -> float:
    """Share of questions whose `better`-pole answer scores above the other's (ties count half); with `against`,
    the rows of `g` against those of `against` on the same question and pole instead."""
    if against is None:
        wide = g.pivot_table(index="question", columns="pole", values="trait_score", aggfunc="mean")
        if not set(POLES) <= set(wide.columns):
            return math.nan
        diff = (wide["high"] - wide["low"]).dropna()
    else:
        mine = g.groupby("question")["trait_score"].mean()
        theirs = against.groupby("question")["trait_score"].mean()
        diff = (mine - theirs).dropna()
        if better == "low":
            diff = -diff
    return float(((diff > 0) + 0.5 * (diff == 0)).mean()) if len(diff) else math.nan


def pairs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant and trait: the judge's mean trait score of the high-pole and the low-pole answers, their
    separation, the paired win rate (share of questions whose high-pole answer scores above its low-pole answer;
    ties half), and over both poles the mean repeated-4-gram share, distinct-2 and median perplexity."""
    out = []
    for (variant, trait), g in frame.groupby(["variant", "trait"], sort=False):
        high = g.loc[g["pole"] == "high", "trait_score"].mean()
        low = g.loc[g["pole"] == "low", "trait_score"].mean()
        out.append({"method": g["method"].iloc[0], "variant": variant, "trait": trait, "high": high, "low": low,
                    "separation": high - low, "win_rate": _paired_win(g), "repeat4": g["repeat4"].mean(),
                    "distinct2": g["distinct2"].mean(), "perplexity": g["perplexity"].median(), "n": len(g)})
    table = pd.DataFrame(out, columns=["method", "variant", "trait", "high", "low", "separation", "win_rate",
                                       "repeat4", "distinct2", "perplexity", "n"])
    order = {m: i for i, m in enumerate(METHODS)}
    traits = {t: i for i, t in enumerate(dict.fromkeys(frame["trait"]))}
    if len(table):
        table = table.assign(_t=table["trait"].map(traits), _o=table["method"].map(order)).sort_values(
            ["_t", "_o", "variant"], kind="stable").drop(columns=["_t", "_o"]).reset_index(drop=True)
    return table


def paper_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per method (npti: per strength), per trait the mean trait score of the high-pole
    answers, of the low-pole answers, and the mean fluency over both; missing judgments are left out of the means
    (and counted in `missing`)."""
    order = {m: i for i, m in enumerate(METHODS)}
    out = []
    for (method, variant, strength), g in frame.groupby(["method", "variant", "strength"], sort=False):
        row: dict = {"method": method, "variant": variant, "strength": strength}
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
        table = table.sort_values(["_o", "variant", "_s"]).drop(columns=["_o", "_s"]).reset_index(drop=True)
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
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    write_bytes_atomic(path, image.getvalue())


def write_outputs(frame: pd.DataFrame, out: Path, judge: str, scales: dict) -> pd.DataFrame:
    """table.csv/.md (the paper's layout), pairs.csv/.md (separation, paired win rate and fluency per variant and
    trait) and strength.png, from the joined frame."""
    table = paper_table(frame)
    write_text_atomic(out / "table.csv", table.to_csv(index=False))
    write_text_atomic(out / "table.md", _markdown(table, judge, scales))
    pairs = pairs_table(frame)
    write_text_atomic(out / "pairs.csv", pairs.to_csv(index=False))
    write_text_atomic(out / "pairs.md", _markdown(pairs, judge, scales))
    plot_strength(frame, out / "strength.png", judge, scales)
    return table


def frame_from_files(out: Path, judge_name: str) -> pd.DataFrame:
    """The joined frame of what a run wrote in `out`, restricted to the answer keys of its plan (run.json)."""
    keys = json.loads((out / "run.json").read_text())["keys"]
    answers = {r["key"]: r for r in read_jsonl(out / ANSWERS)}
    judgments = {r["key"]: r for r in read_jsonl(judgments_path(out, judge_name)) if not _failed(r)}
    return joined([answers[k] for k in keys if k in answers], list(judgments.values()))


def table_from_files(out: Path, judge_name: str) -> pd.DataFrame:
    """Recompute the table from what the run wrote in `out`: the answers and judgments files, restricted to the
    answer keys of the run's plan (run.json), the last row per key winning as when they were read."""
    keys = json.loads((out / "run.json").read_text())["keys"]
    answers = {r["key"]: r for r in read_jsonl(out / ANSWERS)}
    judgments = {r["key"]: r for r in read_jsonl(judgments_path(out, judge_name)) if not _failed(r)}
    return paper_table(joined([answers[k] for k in keys if k in answers], list(judgments.values())))


# -- the offline judge ------------------------------------------------------------------------------------------

def run_settings(plan: Plan, model: str, judge: Judge, questions: dict[str, list[str]],
                 answers: list[dict]) -> dict:
    """run.json: the plan, the judge and its scales, what each variant resolved to, and the answer keys the table is
    made of."""
    resolved = {f"{a['variant']} {a['trait']} {a['pole']}": a["resolved"] for a in answers}
    return {"plan": asdict(plan), "model": model, "judge": judge.name, "scales": judge.scales.describe(),
            "questions": {t: len(q) for t, q in questions.items()}, "resolved": resolved,
            "keys": [a["key"] for a in answers]}
