"""The evaluation pipeline: plan -> answers (mixed batches, resumable) -> judgments (resumable) -> the paper's table,
recomputable from the files it wrote. Tiny model here; the default model end to end in a slow test."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import tiny_shipped
from steering.fileio import read_jsonl

import steering.evaluation.evaluate as evaluate
from steering.evaluation.evaluate import (Plan, generate_answers, joined, judge_answers, paper_table,
                                          table_from_files, write_outputs)
from steering.evaluation.judge import Judgment
from steering.evaluation.judges import OfflineJudge, make_judge
from steering.evaluation.scales import LLM_SCALES

QUESTIONS = {"Extraversion": ["how was your weekend?", "what do you do at a party?"]}


class LengthJudge:
    """A deterministic judge for exact checks: trait = answer length mod 5 + 1, fluency = 3; every third answer's
    trait score is missing (as an unparsable LLM reply would be)."""

    name = "length"
    scales = LLM_SCALES

    def __init__(self):
        self.calls = 0

    def judge(self, items, progress=None):
        self.calls += len(items)
        return [Judgment(None if len(i.answer) % 3 == 0 else float(len(i.answer) % 5 + 1), 3.0, self.name, {})
                for i in items]


@pytest.fixture
def setup(tmp_path):
    lm, folder = tiny_shipped(tmp_path)
    plan = Plan(("base", "simple", "npti"), ("Extraversion",), (0.5, 1.0), seed=1, max_new_tokens=5)
    return lm, folder, plan, tmp_path / "eval"


def test_answers_resume_and_the_table_is_recomputable_from_the_files(setup, monkeypatch):
    lm, folder, plan, out = setup
    answers = generate_answers(lm, plan, QUESTIONS, out, batch_size=5, profiles=folder)
    # 2 poles x (base + simple + npti at 2 strengths) x 2 questions
    assert len(answers) == 16 and len({a["key"] for a in answers}) == 16
    assert {a["strength"] for a in answers if a["method"] == "npti"} == {"0.5", "1"}
    assert {a["params"]["strength"] for a in answers if a["method"] == "npti"} == {0.5, 1.0}
    # a rerun generates nothing; a run killed mid-write resumes only what is missing
    calls = []
    real = evaluate.answer_rows
    monkeypatch.setattr(evaluate, "answer_rows", lambda lm, rows, *a, **k: calls.append(len(rows)) or real(lm, rows, *a, **k))
    assert generate_answers(lm, plan, QUESTIONS, out, batch_size=5, profiles=folder) == answers
    assert calls == []
    lines = (out / "answers.jsonl").read_text().splitlines()
    (out / "answers.jsonl").write_text("\n".join(lines[:13]) + "\n" + lines[13][:20])
    again = generate_answers(lm, plan, QUESTIONS, out, batch_size=5, profiles=folder)
    assert calls == [3] and [a["key"] for a in again] == [a["key"] for a in answers]

    judge = LengthJudge()
    judgments = judge_answers(judge, again, out)
    assert judge.calls == 16 and len(judge_answers(judge, again, out)) == 16 and judge.calls == 16
    table = write_outputs(joined(again, judgments), out, judge.name, judge.scales.describe())
    (out / "run.json").write_text(json.dumps(evaluate.run_settings(plan, lm.name, judge, QUESTIONS, again)))
    assert list(table["method"]) == ["base", "simple", "npti", "npti"]
    assert list(table.columns) == ["method", "variant", "strength", "Extraversion high", "Extraversion low",
                                   "Extraversion fluency", "n", "missing"]
    # every number by hand from the files
    rows = read_jsonl(out / "answers.jsonl")
    assert len(rows) == 16  # the torn line is skipped, the rest intact
    scores = {j["key"]: j["trait_score"] for j in map(json.loads, (out / "judgments-length.jsonl").read_text().splitlines())}
    want = [s for r in rows if r["method"] == "simple" and r["pole"] == "low" and (s := scores[r["key"]]) is not None]
    got = table.loc[table["method"] == "simple", "Extraversion low"].item()
    assert (pd.isna(got) and not want) or got == pytest.approx(sum(want) / len(want))
    assert table["missing"].sum() == sum(s is None for s in scores.values())
    pd.testing.assert_frame_equal(table_from_files(out, "length"), table)
    assert pd.read_csv(out / "table.csv")["n"].tolist() == table["n"].tolist()
    assert (out / "strength.png").stat().st_size > 1000 and "Judge: length" in (out / "table.md").read_text()


class FlakyJudge:
    """Fails every item the first time (as an LLM judge whose endpoint is down), succeeds afterwards."""

    name = "flaky"

    def __init__(self):
        self.seen = 0

    def judge(self, items, progress=None):
        self.seen += 1
        if self.seen == 1:
            return [Judgment(None, None, self.name, {"trait": {"error": "HTTP 503"}}) for _ in items]
        return [Judgment(3.0, 4.0, self.name, {"trait": {"reply": "Rating: [[3]]"}}) for _ in items]


def test_failed_judgments_are_asked_again_and_missing_artefacts_stop_the_run_early(setup):
    lm, folder, plan, out = setup
    answers = generate_answers(lm, Plan(("base",), ("Extraversion",), max_new_tokens=4), QUESTIONS, out)
    judge = FlakyJudge()
    assert all(j["trait_score"] is None for j in judge_answers(judge, answers, out))
    assert all(j["trait_score"] == 3.0 for j in judge_answers(judge, answers, out))
    assert judge.seen == 2 and len(judge_answers(judge, answers, out)) == 4 and judge.seen == 2
    with pytest.raises(ValueError, match="no LoRA adapter Extraversion_high in "):
        generate_answers(lm, Plan(("base", "sft"), ("Extraversion",)), QUESTIONS, tmp := out / "x", profiles=folder)
    assert not (tmp / "answers.jsonl").exists()


def test_offline_judge_is_labelled_and_scores_every_answer_on_0_1(setup):
    lm, folder, plan, out = setup
    answers = generate_answers(lm, Plan(("base",), ("Extraversion",), max_new_tokens=5), QUESTIONS, out)
    judge = make_judge("offline", lm)
    assert isinstance(judge, OfflineJudge) and judge.scales.trait.high == 1
    judgments = judge_answers(judge, answers, out)
    assert all(isinstance(j["trait_score"], float) and 0 <= j["trait_score"] <= 1 for j in judgments)
    for j in judgments:  # fluency = 1 / (perplexity x (1 + repeated 4-gram share)), in (0, 1]
        d = j["detail"]
        assert j["fluency_score"] == pytest.approx(1 / (d["perplexity"] * (1 + d["repeat4"])))
        assert 0 < j["fluency_score"] <= 1
    scales = judge.scales.describe()
    assert "trained on our corpus" in scales["trait"] and "higher is better" in scales["fluency"]


def test_plan_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        Plan(("magic",), ("Openness",))
    with pytest.raises(ValueError, match="unknown trait"):
        Plan(("base",), ("Charm",))
    with pytest.raises(ValueError, match="strength must be between 0 and 4"):
        Plan(("npti",), ("Openness",), (9.0,))


def test_paper_table_means_per_pole_on_hand_made_judgments():
    frame = pd.DataFrame([
        {"key": "a", "method": "base", "variant": "base", "strength": "-", "trait": "Openness", "pole": "high", "trait_score": 3.0, "fluency_score": 5.0},
        {"key": "b", "method": "base", "variant": "base", "strength": "-", "trait": "Openness", "pole": "high", "trait_score": 4.0, "fluency_score": 4.0},
        {"key": "c", "method": "base", "variant": "base", "strength": "-", "trait": "Openness", "pole": "low", "trait_score": 2.0, "fluency_score": None},
        {"key": "d", "method": "npti", "variant": "npti:1", "strength": "1", "trait": "Openness", "pole": "low", "trait_score": 1.0, "fluency_score": 2.0},
    ])
    table = paper_table(frame)
    base = table[table["method"] == "base"].iloc[0]
    assert base["Openness high"] == 3.5 and base["Openness low"] == 2.0 and base["Openness fluency"] == 4.5
    assert base["missing"] == 1 and base["n"] == 3
    assert table["method"].tolist() == ["base", "npti"]


def test_pairs_table_separation_and_paired_win_rate_by_hand():
    rows = []
    # three questions: high beats low on q1, ties on q2, loses on q3 -> win rate (1 + 0.5 + 0) / 3
    for q, (h, lo) in {"q1": (0.9, 0.2), "q2": (0.5, 0.5), "q3": (0.3, 0.6)}.items():
        for pole, score in (("high", h), ("low", lo)):
            rows.append({"key": f"{q}{pole}", "method": "vector", "variant": "vector", "resolved": "vector:0.1/1",
                         "strength": "-", "trait": "Openness", "pole": pole, "question": q, "trait_score": score,
                         "fluency_score": 0.3, "repeat4": 0.1 if pole == "high" else 0.0, "distinct2": 0.9,
                         "perplexity": {"q1": 3.0, "q2": 4.0, "q3": 5.0}[q]})
    table = evaluate.pairs_table(pd.DataFrame(rows, columns=evaluate.JOINED))
    row = table.iloc[0]
    assert row["high"] == pytest.approx(1.7 / 3) and row["low"] == pytest.approx(1.3 / 3)
    assert row["separation"] == pytest.approx(0.4 / 3) and row["win_rate"] == pytest.approx(0.5)
    assert row["repeat4"] == pytest.approx(0.05) and row["perplexity"] == 4.0 and row["n"] == 6


def test_method_specs_parse_resolve_and_share_their_answers(setup):
    from steering.evaluation.evaluate import Variant, resolve

    lm, folder, plan, out = setup
    v = Variant.parse("npti@generated:0.5")
    assert (v.method, v.source, v.strength) == ("npti", "generated", 0.5) and v.label() == "npti@generated:0.5"
    assert Variant.parse("vector:0.05/14-16").layers == (14, 16) and Variant.parse("sft@persona").source == "persona"
    free = Variant.parse("npti@corpus:1/noclamp")
    assert free.clamp is False and free.label() == "npti@corpus:1/noclamp" and Variant.parse(free.label()) == free
    with pytest.raises(ValueError, match="clamp is an NPTI option"):
        Variant.parse("vector:0.1/noclamp")
    with pytest.raises(ValueError, match="source 'corpus' is not one of base"):
        Variant.parse("base@corpus")
    with pytest.raises(ValueError, match="method spec 'npti:x'"):
        Variant.parse("npti:x")
    assert resolve(lm, Variant("npti"), "Extraversion", "high", folder).label() == "npti@generated:1"
    # a spec and the explicit spec it resolves to are one set of answers
    both = Plan(("npti", "npti@generated:1"), ("Extraversion",), max_new_tokens=3)
    answers = generate_answers(lm, both, QUESTIONS, out, profiles=folder)
    assert len(answers) == 8 and len({a["key"] for a in answers}) == 4
    # without the clamp, the row's intervention has no opposite pole
    from steering.methods.dispatch import Request, answer_rows

    [(_, params)] = answer_rows(lm, [(Request("npti", "Extraversion", "high", clamp=False), "hi?")],
                                profiles=folder)
    assert params["clamp"] is False


@pytest.mark.slow
def test_evaluate_runs_end_to_end_on_the_default_model(default_home, tmp_path, monkeypatch):
    """Two development questions per trait, every method (and the LoRA of the other source), the offline judge,
    the studio's sampling: the tables and the plot are written and recomputable."""
    from steering.cli import main
    from steering.methods.dispatch import METHODS
    from steering.traits import TRAITS

    monkeypatch.setenv("PERSONA_STUDIO_HOME", str(default_home))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "default", "--quantization", "bf16", "--questions-per-trait", "2",
                 "--judge", "offline", "--sample", "--max-new-tokens", "24", "--out", str(out),
                 "--methods", *METHODS, "sft@persona"]) == 0
    table = pd.read_csv(out / "table.csv")
    assert table["method"].tolist() == ["base", "simple", "p2", "sft", "sft", "npti", "vector"]
    for trait in TRAITS:
        assert table[f"{trait} high"].between(0, 1).all() and table[f"{trait} low"].between(0, 1).all()
    assert (out / "strength.png").is_file() and "trained on our corpus" in (out / "table.md").read_text()
    pd.testing.assert_frame_equal(table_from_files(out, "offline-judge"), table, check_dtype=False)
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 7 * 5 and pairs["win_rate"].between(0, 1).all()
    assert len((out / "answers.jsonl").read_text().splitlines()) == 7 * 2 * 5 * 2
