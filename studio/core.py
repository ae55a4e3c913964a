"""What the pages do, in one object the UI and the HTTP API share: a compare round, a blind round, a rating, the
results. It joins the engine (steering) and the store (db); the arithmetic lives there, not here. What a round hands
back is in answers.py, the results and exports in tally.py."""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from db import OutputIn, RatingRefused, Reveal, RoundIn, SlotView, Store, StoreBusy
from steering.methods.bank import questions as bank_questions
from steering.engine.generation import Decoding, check_question
from steering.npti.induce import check_strength
from steering.methods.dispatch import METHODS, Request, answer_rows, default_strength, explain, unavailable
from steering.engine.models import LoadedModel
from steering.traits import POLES, check_pole, check_trait

from . import tally
from .answers import (LABELS, NOTES, SLOT_NAMES, BlindRound, Column, CompareResult, output_in, shown_answer,
                      target_text)
from .limits import Gate, Limits
from .streaming import stream
from .tally import Results

__all__ = ["LABELS", "NOTES", "SLOT_NAMES", "MODES", "OUTCOMES", "UNRATED_WINDOW_S", "BlindRound", "Column",
           "CompareResult", "Results", "Studio", "UnknownRater", "shown_answer", "target_text"]

UNRATED_WINDOW_S = 600  # an unrated round counts against its rater's cap for this long
MODES = ("full", "quick")
OUTCOMES = ("a", "b", "tie", "bad")


class UnknownRater(RatingRefused):
    """A rater id this studio's store never made (forged, mistyped, or from another database)."""


def _check_methods(methods) -> list[str]:
    """The compare page's chosen methods: at least one, each known, each at most once."""
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"choose at least one method among {', '.join(METHODS)}" +
                         (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
    if len(set(methods)) != len(methods):
        raise ValueError("each method at most once")
    return methods


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
    limits: Limits = Limits()
    admin_token: str | None = None  # when set, exports and judge runs need it
    notice: str | None = None  # a line every page shows (e.g. ratings on a Space's temporary disk)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        # decorated once, at start-up: ZeroGPU registers the functions that will ask for a GPU when the app starts
        self._run = self.gpu(self._answer_rows)
        self._run_judge = self.gpu(self._judge_items)
        self._gate = Gate(self.limits)
        # download files, one per request; removed with the studio or at exit (weakref.finalize runs then too)
        self._exports = Path(tempfile.mkdtemp(prefix="persona-studio-"))
        weakref.finalize(self, shutil.rmtree, self._exports, True)

    def _answer_rows(self, rows: list, on_step: Callable[[int], None] | None, decoding: Decoding,
                     readout: bool = False, on_text: Callable[[list[str]], None] | None = None) -> list:
        # every row samples with its own request's seed: a method's answer does not depend on its neighbours
        return answer_rows(self.lm, rows, decoding, self.profiles, on_step=on_step, readout=readout,
                           row_seeds=True, on_text=on_text)

    @staticmethod
    def _judge_items(judge, items: list) -> list:
        return judge.judge(items)

    # -- raters ---------------------------------------------------------------------------------------------
    def new_rater(self, client: str = "local") -> str:
        """A new anonymous rater id (the page keeps it in the browser); TooMany past the raters per address."""
        self._gate.hit("rater", client, "too many new raters from your address in the last hour; reuse the one "
                                        "you have (the page keeps it) or try again later")
        return self.store.new_rater()

    def is_admin(self, token: str | None) -> bool:
        """Whether `token` opens the exports and judge runs: always where no admin token is set."""
        import hmac

        return self.admin_token is None or (isinstance(token, str) and
                                            hmac.compare_digest(token.encode(), self.admin_token.encode()))

    def check_rater(self, rater: object) -> str:
        """The rater id if this studio's store made it, else RatingRefused (a forged or stale id): checked before
        any generation, so an unknown id costs nothing."""
        if not isinstance(rater, str) or not self.store.rater_exists(rater):
            raise UnknownRater("unknown rater id: ask the studio for one (POST /api/raters, or reload the page)")
        return rater

    def rated_rounds(self, rater: str) -> int:
        """How many blind rounds this rater has rated (full rounds and quick votes)."""
        return self.store.rated_rounds(rater)

    # -- what the pages ask before generating ---------------------------------------------------------------
    def availability(self, trait: str, pole: str) -> dict[str, str | None]:
        """Method -> None if it can answer for this pole, else the reason it cannot."""
        trait, pole = check_trait(trait), check_pole(pole)
        with self._lock:  # finding an adapter may load it into the model: never beside a running generation
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

    def database_kind(self) -> str:
        """The kind of database the ratings are stored in ("sqlite", "postgresql", ...), for the page's footer."""
        return self.store.url.split(':')[0].split('+')[0]

    # -- generation -----------------------------------------------------------------------------------------
    def _generate(self, requests: list[Request], question: str, on_step: Callable[[int], None] | None,
                  decoding: Decoding | None = None, readout: bool = False,
                  on_text: Callable[[list[str]], None] | None = None) -> tuple[list, float]:
        with self._gate.generation(), self._lock:
            started = time.perf_counter()
            live = self.step_progress  # on ZeroGPU generation runs in another process: no callbacks
            out = self._run([(r, question) for r in requests], on_step if live else None, decoding or self.decoding,
                            readout, on_text if live else None)
            return out, time.perf_counter() - started

    def _columns(self, keys: list[str], requests: list[Request], question: str,
                 on_step: Callable[[int], None] | None, on_text: Callable[[dict[str, str]], None] | None,
                 labels: list[str] | None = None) -> tuple[list[Column], float]:
        """Every request answers the question in one batch, with the read-out, as the pages' columns (trimmed to
        whole sentences, with what the method was given); `on_text` streams {key: answer so far}."""
        stream_to = None if on_text is None else (lambda texts: on_text(dict(zip(keys, texts))))
        out, seconds = self._generate(requests, question, on_step, readout=True, on_text=stream_to)
        columns = []
        for i, (request, (ans, params)) in enumerate(zip(requests, out)):
            text, readout = shown_answer(ans)
            columns.append(Column(request.method, labels[i] if labels else LABELS[request.method], text,
                                  {**params, "n_tokens": ans.n_tokens}, None, readout,
                                  explain(self.lm, request, question, self.profiles), ans.text))
        return columns, seconds

    def compare(self, question: str, trait: str, pole: str, methods: list[str], strength: float | None = None,
                seed: int = 0, custom: bool | None = None,
                on_step: Callable[[int], None] | None = None, vector_strength: float | None = None,
                on_text: Callable[[dict[str, str]], None] | None = None, client: str = "local") -> CompareResult:
        """Every chosen method answers the question in one batch; unavailable ones come back with the reason.
        `strength` is NPTI's and `vector_strength` the vector's (None: the pole's shipped default). Every method
        samples with `seed` on a generator of its own, so a column does not change with the others ticked. Each
        answer is trimmed to its last whole sentence and carries the trait read-out of its tokens where the trait
        has a vector, and what the method was given (`Column.prompt`). `on_text` streams {method: answer so far}.
        The round is recorded (kind "compare"; never counted as a rated round); `custom` (None: whether the
        question is not one of the bank's development questions for the trait) marks typed questions."""
        question = check_question(question)
        trait, pole = check_trait(trait), check_pole(pole)
        if custom is None:
            custom = question not in bank_questions(trait, "dev")
        for s in (strength, vector_strength):
            if s is not None:
                check_strength(s)
        methods = _check_methods(methods)
        self._count_compare(client)
        status = self.availability(trait, pole)
        ready = [m for m in methods if status[m] is None]
        columns: dict[str, Column] = {m: Column(m, LABELS[m], None, {}, status[m]) for m in methods if status[m]}
        round_id, seconds = None, 0.0
        if ready:
            given = {"npti": strength, "vector": vector_strength}
            requests = [Request(m, trait, pole, given.get(m), seed) for m in ready]
            answered, seconds = self._columns(ready, requests, question, on_step, on_text)
            columns.update((c.method, c) for c in answered)
            try:
                round_id = self.store.record_round(RoundIn(
                    kind="compare", question=question, custom=custom, trait=trait, pole=pole, model=self.lm.name,
                    seconds=seconds, outputs=[output_in(i, columns[m], seed, seconds) for i, m in enumerate(ready)]))
            except StoreBusy:  # the answers are still shown; only the history entry is lost
                round_id = None
        return CompareResult(round_id, question, [columns[m] for m in methods], seconds)

    def _count_compare(self, client: str) -> None:
        self._gate.hit("compare", client, f"more than {self.limits.compares_per_minute} compare runs a minute from "
                                          "your address; wait a little")

    @staticmethod
    def stream(work: Callable[..., object], *args, **kwargs) -> Iterator[object]:
        """Run `work(*args, on_text=..., **kwargs)` (compare or compare_poles) on a worker thread and yield what it
        streams and, last, its result (streaming.stream)."""
        return stream(work, *args, **kwargs)

    def compare_poles(self, question: str, trait: str, method: str, strength: float | None = None, seed: int = 0,
                      on_step: Callable[[int], None] | None = None,
                      on_text: Callable[[dict[str, str]], None] | None = None, client: str = "local") -> CompareResult:
        """One method, both poles of the trait, same question and seed, in one batch (the "high vs low" view;
        not recorded). `strength` applies to both poles (None: each pole's shipped default)."""
        question = check_question(question)
        trait = check_trait(trait)
        if method not in METHODS:
            raise ValueError(f"choose one method among {', '.join(METHODS)}")
        if strength is not None:
            check_strength(strength)
        self._count_compare(client)
        status = {p: unavailable(self.lm, method, trait, p, self.profiles) for p in POLES}
        ready = [p for p in POLES if status[p] is None]
        labels = {p: f"{LABELS[method]}: {p} {trait}" for p in POLES}
        columns = {p: Column(method, labels[p], None, {}, status[p]) for p in POLES if status[p]}
        seconds = 0.0
        if ready:
            requests = [Request(method, trait, p, strength if method in ("npti", "vector") else None, seed)
                        for p in ready]
            answered, seconds = self._columns(ready, requests, question, on_step, on_text, [labels[p] for p in ready])
            columns.update(zip(ready, answered))
        return CompareResult(None, question, [columns[p] for p in POLES], seconds)

    def blind_round(self, rater: str, trait: str, pole: str, question: str | None = None,
                    on_step: Callable[[int], None] | None = None, mode: str = "full") -> BlindRound:
        """A blind round for a known rater (checked first): in "full" mode every available method answers, in
        "quick" mode two methods drawn at random; one question (typed: custom, or drawn from the bank) in one batch,
        in a shuffled order, each method sampling with a seed of its own. The slot-to-method mapping goes to the
        store and nowhere else."""
        self.check_rater(rater)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        trait, pole = check_trait(trait), check_pole(pole)
        custom = bool(question and question.strip())
        question = check_question(question) if custom else self.draw_question(trait)
        with self._admit_round(rater):
            ready = [m for m, why in self.availability(trait, pole).items() if why is None]
            if len(ready) < 2:
                raise ValueError(f"a blind round needs at least two methods; for {trait} {pole} only "
                                 f"{len(ready)} can answer on this model")
            rng = random.Random(secrets.randbits(64))
            rng.shuffle(ready)
            if mode == "quick":
                ready = ready[:2]
            seeds = rng.sample(range(2**31), len(ready))
            # always sampled: with greedy decoding a rater could replay the question on the compare page and match
            # the texts to methods
            decoding = replace(self.decoding, do_sample=True)
            requests = [Request(m, trait, pole, None, sd) for m, sd in zip(ready, seeds)]
            out, seconds = self._generate(requests, question, on_step, decoding)
            outputs = []
            for slot, (m, sd, (ans, params)) in enumerate(zip(ready, seeds, out)):
                text, _ = shown_answer(ans)
                outputs.append(OutputIn(slot, m, params, sd, text, ans.n_tokens, seconds, raw_text=ans.text))
            round_id = self.store.record_round(RoundIn(
                kind="blind", question=question, custom=custom, trait=trait, pole=pole, model=self.lm.name,
                seconds=seconds, rater_id=rater, outputs=outputs, mode=mode))
            return BlindRound(round_id, question, target_text(trait, pole), custom,
                              self.store.round_for_rater(round_id, rater), mode)

    def slots(self, round_id: str, rater: str) -> list[SlotView]:
        """A blind round's answers as its rater may see them before the vote (RatingRefused for anyone else)."""
        return self.store.round_for_rater(round_id, rater)

    def _admit_round(self, rater: str):
        """A context in which the rater's round is written, or TooMany when the rater holds too many recent unrated
        rounds (counting those being written) or starts rounds too fast: checked before anything is generated."""
        from datetime import datetime, timedelta, timezone

        self._gate.hit("round", rater, f"more than {self.limits.rounds_per_minute} rounds a minute; take a breath "
                                       "and try again shortly")
        since = datetime.now(timezone.utc) - timedelta(seconds=UNRATED_WINDOW_S)
        return self._gate.issuing(
            rater, lambda: self.store.unrated_rounds(rater, since=since), self.limits.unrated_rounds,
            lambda n: f"you have {n} rounds waiting for your rating; rate one first (an unrated round stops "
                      f"counting after {UNRATED_WINDOW_S // 60} minutes)")

    def vote(self, round_id: str, rater: str, outcome: str) -> list[Reveal]:
        """Store a rater's quick vote ("a", "b", "tie" or "bad") for a quick round issued to them; return the
        reveal (RatingRefused or StoreBusy otherwise, and nothing is written)."""
        return self.store.record_vote(round_id, rater, outcome)

    def rate(self, round_id: str, rater: str, scores: dict[int, tuple[int, int]], best: int) -> list[Reveal]:
        """Store a rater's scores and pick for a round issued to them; return the reveal (RatingRefused or
        StoreBusy otherwise, and nothing is written)."""
        return self.store.record_rating(round_id, rater, scores, best)

    # -- automatic judges beside the human ratings --------------------------------------------------------------
    def judges(self) -> list[str]:
        """The judges this studio can run: the offline judge always, the LLM judge where the environment names an
        endpoint or key (`judges.available`)."""
        from steering.evaluation.judges import available

        return available()

    def judge_rated(self, kind: str = "offline") -> int:
        """Judge every human-rated output this judge has not scored yet and store the scores; return how many."""
        from steering.evaluation.judges import check_kind, make_judge

        kind = check_kind(kind)
        judge = make_judge(kind, self.lm)
        output_ids, items = tally.unjudged(self.store, judge.name)
        if not items:
            return 0
        if kind == "offline":
            with self._lock:  # the offline judge runs the model (perplexity): a GPU call on ZeroGPU
                found = self._run_judge(judge, items)
        else:  # network calls: generation goes on meanwhile
            found = judge.judge(items)
        return self.store.record_judgments(judge.name, {o: (j.trait_score, j.fluency_score)
                                                        for o, j in zip(output_ids, found)})

    def judge_agreement(self) -> tuple[object, object]:
        """Human and judge means per method, and each judge's agreement with the raters (tally.judge_agreement)."""
        return tally.judge_agreement(self.store)

    # -- results (tally.py) ---------------------------------------------------------------------------------
    def results(self, min_votes: int = 10, include_custom: bool = True) -> Results:
        """What the Results tab shows: a summary line, the leaderboard (Bradley–Terry on best picks and quick
        votes), the mean ratings per method, trait and pole, and their plot. Compare runs are never counted."""
        return tally.results(self.store, min_votes, include_custom)

    def export_csv(self, what: str = "ratings") -> bytes:
        """All ratings ("ratings") or all quick votes ("votes") as CSV, rater ids hashed and formula cells defused
        (tally.export_csv)."""
        return tally.export_csv(self.store, what)

    def ratings_csv(self, what: str = "ratings") -> Path:
        """`export_csv` written to a file of its own (a download button needs a path)."""
        return tally.csv_file(self._exports, what, self.export_csv(what))
