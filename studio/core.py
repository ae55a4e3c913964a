"""What the pages do, in one object the UI and the HTTP API share: a compare round, a blind round, a rating, the
results. It joins the engine (steering) and the store (db); the arithmetic lives there, not here."""

from __future__ import annotations

import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from db import OutputIn, Reveal, RoundIn, SlotView, Store, StoreBusy
from steering.bank import questions as bank_questions
from steering.bank import TraitBank
from steering.generation import Decoding, check_question
from steering.induce import check_strength
from steering.methods import METHODS, Request, answer_rows, default_strength, unavailable
from steering.models import LoadedModel
from steering.traits import check_pole, check_trait

LABELS = {"base": "Base model", "simple": "Simple prompt", "p2": "P² persona prompt", "sft": "LoRA fine-tune",
          "npti": "NPTI (neurons)", "vector": "Activation vector"}
SLOT_NAMES = "ABCDEF"


def target_text(trait: str, pole: str) -> str:
    """The blind round's question to the rater, e.g. "Which answers sound most like a reserved, introverted
    person?" (from the persona bank's adjective phrase, so it never names a method)."""
    return f"Which answers sound most like {TraitBank.load(trait).adjectives[check_pole(pole)]}?"


@dataclass(frozen=True)
class Column:
    method: str
    label: str
    text: str | None  # None: unavailable
    params: dict
    reason: str | None = None  # why the method is unavailable
    readout: tuple[tuple[str, float], ...] | None = None  # (token, trait read-out) where the trait has a vector


@dataclass(frozen=True)
class CompareResult:
    round_id: str | None
    question: str
    columns: list[Column]
    seconds: float


@dataclass(frozen=True)
class BlindRound:
    round_id: str
    question: str
    target: str
    custom: bool
    slots: list[SlotView]  # slot and text only: the page is never told which method wrote what


@dataclass
class Studio:
    """The loaded model, the store and the decoding settings; one generate call at a time (the model's hooks and
    adapters are per call, so two calls must not overlap)."""

    lm: LoadedModel
    store: Store
    decoding: Decoding = Decoding(max_new_tokens=96, do_sample=True)
    profiles: Path | None = None
    gpu: Callable[[Callable], Callable] = lambda fn: fn  # spaces.GPU on ZeroGPU, identity elsewhere
    step_progress: bool = True  # per-token progress (off on ZeroGPU, where generation runs in another process)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        # decorated once, at start-up: ZeroGPU registers the functions that will ask for a GPU when the app starts
        self._run = self.gpu(self._answer_rows)
        self._exports = Path(tempfile.mkdtemp(prefix="persona-studio-"))  # one folder, overwritten per download

    def _answer_rows(self, rows: list, on_step: Callable[[int], None] | None, decoding: Decoding,
                     readout: bool = False) -> list:
        return answer_rows(self.lm, rows, decoding, self.profiles, on_step=on_step, readout=readout)

    # -- what the pages ask before generating ---------------------------------------------------------------
    def availability(self, trait: str, pole: str) -> dict[str, str | None]:
        """Method -> None if it can answer for this pole, else the reason it cannot."""
        trait, pole = check_trait(trait), check_pole(pole)
        return {m: unavailable(self.lm, m, trait, pole, self.profiles) for m in METHODS}

    def default_strength(self, trait: str, pole: str, method: str = "npti") -> float | None:
        """The shipped strength of NPTI (or the vector) for a pole; None where the method has no artefacts here."""
        try:
            return default_strength(self.lm, check_trait(trait), check_pole(pole), self.profiles, method)
        except Exception:  # noqa: BLE001 - no profile: the method is shown as unavailable with its reason
            return None

    @staticmethod
    def draw_question(trait: str, rng: random.Random | None = None) -> str:
        """A development question of the bank for the trait (never one used to find the neurons)."""
        return (rng or random.Random(secrets.randbits(32))).choice(bank_questions(check_trait(trait), "dev"))

    # -- generation -----------------------------------------------------------------------------------------
    def _generate(self, requests: list[Request], question: str, on_step: Callable[[int], None] | None,
                  decoding: Decoding | None = None, readout: bool = False) -> tuple[list, float]:
        with self._lock:
            started = time.perf_counter()
            out = self._run([(r, question) for r in requests], on_step if self.step_progress else None,
                            decoding or self.decoding, readout)
            return out, time.perf_counter() - started

    def compare(self, question: str, trait: str, pole: str, methods: list[str], strength: float | None = None,
                seed: int = 0, custom: bool | None = None,
                on_step: Callable[[int], None] | None = None, vector_strength: float | None = None) -> CompareResult:
        """Every chosen method answers the question in one batch; unavailable ones come back with the reason.
        `strength` is NPTI's and `vector_strength` the vector's (None: the pole's shipped default). Each answer
        carries the trait read-out of its tokens where the trait has a vector. The round is recorded (kind
        "compare"); `custom` (None: whether the question is not one of the bank's development questions for the
        trait) marks typed questions."""
        question = check_question(question)
        trait, pole = check_trait(trait), check_pole(pole)
        if custom is None:
            custom = question not in bank_questions(trait, "dev")
        for s in (strength, vector_strength):
            if s is not None:
                check_strength(s)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"choose at least one method among {', '.join(METHODS)}" +
                             (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        status = self.availability(trait, pole)
        ready = [m for m in methods if status[m] is None]
        columns: dict[str, Column] = {m: Column(m, LABELS[m], None, {}, status[m]) for m in methods if status[m]}
        round_id, seconds = None, 0.0
        if ready:
            given = {"npti": strength, "vector": vector_strength}
            requests = [Request(m, trait, pole, given.get(m), seed) for m in ready]
            out, seconds = self._generate(requests, question, on_step, readout=True)
            for m, (ans, params) in zip(ready, out):
                columns[m] = Column(m, LABELS[m], ans.text, {**params, "n_tokens": ans.n_tokens}, None, ans.readout)
            try:
                round_id = self.store.record_round(RoundIn(
                    kind="compare", question=question, custom=custom, trait=trait, pole=pole, model=self.lm.name,
                    seconds=seconds, outputs=[OutputIn(i, m, columns[m].params, seed, columns[m].text,
                                                       columns[m].params["n_tokens"], seconds)
                                              for i, m in enumerate(ready)]))
            except StoreBusy:  # the answers are still shown; only the history entry is lost
                round_id = None
        return CompareResult(round_id, question, [columns[m] for m in methods], seconds)

    def blind_round(self, rater: str, trait: str, pole: str, question: str | None = None,
                    on_step: Callable[[int], None] | None = None) -> BlindRound:
        """Every available method answers one question (typed: custom, or drawn from the bank) in one batch, in a
        shuffled order; the slot-to-method mapping goes to the store and nowhere else."""
        trait, pole = check_trait(trait), check_pole(pole)
        custom = bool(question and question.strip())
        question = check_question(question) if custom else self.draw_question(trait)
        ready = [m for m, why in self.availability(trait, pole).items() if why is None]
        if len(ready) < 2:
            raise ValueError(f"a blind round needs at least two methods; for {trait} {pole} only "
                             f"{len(ready)} can answer on this model")
        rng = random.Random(secrets.randbits(64))
        rng.shuffle(ready)
        seed = rng.randrange(2**31)
        # always sampled: with greedy decoding a rater could replay the question on the compare page and match the
        # texts to methods
        decoding = replace(self.decoding, do_sample=True)
        out, seconds = self._generate([Request(m, trait, pole, None, seed) for m in ready], question, on_step,
                                      decoding)
        round_id = self.store.record_round(RoundIn(
            kind="blind", question=question, custom=custom, trait=trait, pole=pole, model=self.lm.name,
            seconds=seconds, rater_id=rater,
            outputs=[OutputIn(slot, m, params, seed, ans.text, ans.n_tokens, seconds)
                     for slot, (m, (ans, params)) in enumerate(zip(ready, out))]))
        return BlindRound(round_id, question, target_text(trait, pole), custom,
                          self.store.round_for_rater(round_id, rater))

    def rate(self, round_id: str, rater: str, scores: dict[int, tuple[int, int]], best: int) -> list[Reveal]:
        """Store a rater's scores and pick for a round issued to them; return the reveal (RatingRefused or
        StoreBusy otherwise, and nothing is written)."""
        return self.store.record_rating(round_id, rater, scores, best)

    # -- automatic judges beside the human ratings --------------------------------------------------------------
    def judges(self) -> list[str]:
        """The judges this studio can run: the offline judge always, the LLM judge where an endpoint is set
        (PERSONA_STUDIO_JUDGE_BASE_URL or OPENAI_BASE_URL, or an OPENAI_API_KEY)."""
        import os

        names = ["offline"]
        if any(os.environ.get(v) for v in ("PERSONA_STUDIO_JUDGE_BASE_URL", "OPENAI_BASE_URL",
                                           "PERSONA_STUDIO_JUDGE_API_KEY", "OPENAI_API_KEY")):
            names.append("llm")
        return names

    def _judge(self, kind: str):
        if kind == "offline":
            from steering.evaluate import OfflineJudge

            return OfflineJudge(self.lm)
        if kind == "llm":
            from steering.judge import JudgeSettings, OpenAIJudge

            return OpenAIJudge(JudgeSettings.from_env())
        raise ValueError(f"unknown judge {kind!r}: choose one of {', '.join(self.judges())}")

    def judge_rated(self, kind: str = "offline") -> int:
        """Judge every human-rated output this judge has not scored yet and store the scores; return how many."""
        from steering.judge import JudgeItem

        judge = self._judge(kind)
        ratings = self.store.ratings_frame().drop_duplicates("output_id")
        done = self.store.judgments_frame()
        done = set(done.loc[done["judge"] == judge.name, "output_id"])
        todo = ratings[~ratings["output_id"].isin(done)]
        if todo.empty:
            return 0
        items = [JudgeItem(q, t, tr, p) for q, t, tr, p in
                 zip(todo["question"], todo["text"], todo["trait"], todo["pole"])]
        if kind == "offline":
            with self._lock:  # the offline judge runs the model (perplexity)
                found = judge.judge(items)
        else:  # network calls: generation goes on meanwhile
            found = judge.judge(items)
        return self.store.record_judgments(judge.name, {int(o): (j.trait_score, j.fluency_score)
                                                        for o, j in zip(todo["output_id"], found)})

    # -- results --------------------------------------------------------------------------------------------
    def ratings_csv(self, folder: Path | None = None) -> Path:
        """All ratings as a CSV file, rater ids replaced by a hash (a rater id is what authorises rating, so it is
        never published). Written to the studio's one export folder unless `folder` is given."""
        import hashlib

        frame = self.store.ratings_frame()
        frame["rater_id"] = [hashlib.sha256(r.encode()).hexdigest()[:12] for r in frame["rater_id"]]
        path = Path(folder or self._exports) / "persona-studio-ratings.csv"
        tmp = path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
        return path
