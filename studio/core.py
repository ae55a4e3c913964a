"""What the pages do, in one object the UI and the HTTP API share: a compare round, a blind round, a rating, the
results. It joins the engine (steering) and the store (db); the arithmetic lives there, not here."""

from __future__ import annotations

import queue
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
from steering.methods.bank import TraitBank
from steering.engine.generation import Decoding, check_question, trim_to_sentence
from steering.npti.induce import check_strength
from steering.methods.dispatch import METHODS, Request, answer_rows, default_strength, explain, unavailable
from steering.engine.models import LoadedModel
from steering.traits import POLES, check_pole, check_trait

from .limits import Gate, Limits, TooMany

UNRATED_WINDOW_S = 600  # an unrated round counts against its rater's cap for this long

LABELS = {"base": "Base model", "simple": "Simple prompt", "p2": "P² persona prompt", "sft": "LoRA fine-tune",
          "npti": "NPTI (neurons)", "vector": "Activation vector"}
SLOT_NAMES = "ABCDEF"
NOTES = {  # one line per method, wherever results name methods
    "base": "the model as shipped, asked the question alone",
    "simple": "a system prompt naming the pole's adjectives (\"You are an outgoing, sociable person\")",
    "p2": "a system prompt with a rich description of a person at the pole (P², persona prompting)",
    "sft": "a LoRA adapter fine-tuned on our corpus's answers of the pole (supervised fine-tuning)",
    "npti": "NPTI: the MLP neurons whose firing differs between the poles, shifted while the model writes",
    "vector": "a direction added to the residual stream: the mean difference of the poles' activations",
}
MODES = ("full", "quick")
OUTCOMES = ("a", "b", "tie", "bad")


class UnknownRater(RatingRefused):
    """A rater id this studio's store never made (forged, mistyped, or from another database)."""


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
    prompt: str | None = None  # what the method was given (system prompt, adapter, neurons, vector), in words
    raw_text: str | None = None  # the answer before trimming to whole sentences


def shown_answer(answer) -> tuple[str, tuple | None]:
    """What the pages show of an answer: trimmed to its last whole sentence (generation.trim_to_sentence), and
    its read-out cut to the tokens that are still shown."""
    text = trim_to_sentence(answer.text, answer.finished)
    readout = answer.readout
    if readout and text != answer.text:
        def visible(t: str) -> int:  # decoders differ in the spaces they put between pieces
            return len("".join(t.split()))

        keep, target, seen = [], visible(text.rstrip("…")), 0
        for piece, value in readout:
            if seen >= target:
                break
            keep.append((piece, value))
            seen += visible(piece)
        readout = tuple(keep)
    return text, readout


def _output(slot: int, column: "Column", seed: int, seconds: float) -> OutputIn:
    return OutputIn(slot, column.method, column.params, seed, column.text, column.params["n_tokens"], seconds,
                    raw_text=column.raw_text)


@dataclass(frozen=True)
class CompareResult:
    round_id: str | None
    question: str
    columns: list[Column]
    seconds: float


@dataclass(frozen=True)
class Results:
    summary: str  # Markdown: rounds, votes, raters
    board: object  # pandas DataFrame (ratings.leaderboard_view)
    scores: object  # pandas DataFrame, readable
    figure: object | None  # matplotlib Figure, None without ratings


@dataclass(frozen=True)
class BlindRound:
    round_id: str
    question: str
    target: str
    custom: bool
    slots: list[SlotView]  # slot and text only: the page is never told which method wrote what
    mode: str = "full"  # "full": score every answer and pick the best; "quick": two answers, one vote


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
                  decoding: Decoding | None = None, readout: bool = False,
                  on_text: Callable[[list[str]], None] | None = None) -> tuple[list, float]:
        with self._gate.generation(), self._lock:
            started = time.perf_counter()
            live = self.step_progress  # on ZeroGPU generation runs in another process: no callbacks
            out = self._run([(r, question) for r in requests], on_step if live else None, decoding or self.decoding,
                            readout, on_text if live else None)
            return out, time.perf_counter() - started

    def _columns(self, ready: list[str], requests: list[Request], question: str, out: list,
                 labels: list[str] | None = None) -> list[Column]:
        columns = []
        for i, (m, request, (ans, params)) in enumerate(zip(ready, requests, out)):
            text, readout = shown_answer(ans)
            columns.append(Column(m, labels[i] if labels else LABELS[m], text, {**params, "n_tokens": ans.n_tokens},
                                  None, readout, explain(self.lm, request, question, self.profiles), ans.text))
        return columns

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
        methods = list(methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"choose at least one method among {', '.join(METHODS)}" +
                             (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
        if len(set(methods)) != len(methods):
            raise ValueError("each method at most once")
        self._count_compare(client)
        status = self.availability(trait, pole)
        ready = [m for m in methods if status[m] is None]
        columns: dict[str, Column] = {m: Column(m, LABELS[m], None, {}, status[m]) for m in methods if status[m]}
        round_id, seconds = None, 0.0
        if ready:
            given = {"npti": strength, "vector": vector_strength}
            requests = [Request(m, trait, pole, given.get(m), seed) for m in ready]
            stream = None if on_text is None else (lambda texts: on_text(dict(zip(ready, texts))))
            out, seconds = self._generate(requests, question, on_step, readout=True, on_text=stream)
            for column in self._columns(ready, requests, question, out):
                columns[column.method] = column
            try:
                round_id = self.store.record_round(RoundIn(
                    kind="compare", question=question, custom=custom, trait=trait, pole=pole, model=self.lm.name,
                    seconds=seconds, outputs=[_output(i, columns[m], seed, seconds) for i, m in enumerate(ready)]))
            except StoreBusy:  # the answers are still shown; only the history entry is lost
                round_id = None
        return CompareResult(round_id, question, [columns[m] for m in methods], seconds)

    def _count_compare(self, client: str) -> None:
        self._gate.hit("compare", client, f"more than {self.limits.compares_per_minute} compare runs a minute from "
                                          "your address; wait a little")

    def stream(self, work: Callable[..., object], *args, **kwargs) -> Iterator[object]:
        """Run `work(*args, on_text=..., **kwargs)` (compare or compare_poles) on a worker thread and yield what it
        streams ({key: answer so far}, at most one snapshot per 0.1 s) and, last, its result; its error, if any,
        is raised here."""
        updates: queue.Queue = queue.Queue()
        done, box = object(), {}

        def run() -> None:
            try:
                box["result"] = work(*args, on_text=updates.put, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                box["error"] = exc
            finally:
                updates.put(done)

        threading.Thread(target=run, daemon=True, name="persona-studio-generate").start()
        while True:
            item = updates.get()
            time.sleep(0.1)  # let snapshots pile up: only the newest one is shown
            while item is not done and not updates.empty():
                item = updates.get_nowait()
            if item is done:
                break
            yield item
        if "error" in box:
            raise box["error"]
        yield box["result"]

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
            stream = None if on_text is None else (lambda texts: on_text(dict(zip(ready, texts))))
            out, seconds = self._generate(requests, question, on_step, readout=True, on_text=stream)
            for p, column in zip(ready, self._columns([method] * len(ready), requests, question, out,
                                                      [labels[p] for p in ready])):
                columns[p] = column
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
        self._admit_round(rater)
        ready = [m for m, why in self.availability(trait, pole).items() if why is None]
        if len(ready) < 2:
            raise ValueError(f"a blind round needs at least two methods; for {trait} {pole} only "
                             f"{len(ready)} can answer on this model")
        rng = random.Random(secrets.randbits(64))
        rng.shuffle(ready)
        if mode == "quick":
            ready = ready[:2]
        seeds = rng.sample(range(2**31), len(ready))
        # always sampled: with greedy decoding a rater could replay the question on the compare page and match the
        # texts to methods
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

    def _admit_round(self, rater: str) -> None:
        """TooMany when the rater holds too many recent unrated rounds or starts rounds too fast (checked before
        anything is generated)."""
        from datetime import datetime, timedelta, timezone

        since = datetime.now(timezone.utc) - timedelta(seconds=UNRATED_WINDOW_S)
        waiting = self.store.unrated_rounds(rater, since=since)
        if waiting >= self.limits.unrated_rounds:
            raise TooMany(f"you have {waiting} rounds waiting for your rating; rate one first (an unrated round "
                          f"stops counting after {UNRATED_WINDOW_S // 60} minutes)", 60)
        self._gate.hit("round", rater, f"more than {self.limits.rounds_per_minute} rounds a minute; take a breath "
                                       "and try again shortly")

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
        from steering.evaluation.judge import JudgeItem

        from steering.evaluation.judges import check_kind, make_judge

        kind = check_kind(kind)
        judge = make_judge(kind, self.lm)
        ratings = self.store.ratings_frame().drop_duplicates("output_id")
        done = self.store.judgments_frame()
        done = set(done.loc[done["judge"] == judge.name, "output_id"])
        todo = ratings[~ratings["output_id"].isin(done)]
        if todo.empty:
            return 0
        items = [JudgeItem(q, t, tr, p) for q, t, tr, p in
                 zip(todo["question"], todo["text"], todo["trait"], todo["pole"])]
        if kind == "offline":
            with self._lock:  # the offline judge runs the model (perplexity): a GPU call on ZeroGPU
                found = self._run_judge(judge, items)
        else:  # network calls: generation goes on meanwhile
            found = judge.judge(items)
        return self.store.record_judgments(judge.name, {int(o): (j.trait_score, j.fluency_score)
                                                        for o, j in zip(todo["output_id"], found)})

    # -- results --------------------------------------------------------------------------------------------
    def results(self, min_votes: int = 10, include_custom: bool = True) -> Results:
        """What the Results tab shows: a summary line, the leaderboard (Bradley–Terry on best picks and quick
        votes), the mean ratings per method, trait and pole, and their plot. Compare runs are never counted."""
        from steering.evaluation.ratings import bradley_terry, leaderboard_view, plot_scores, score_table

        ratings, picks, votes = self.store.ratings_frame(), self.store.picks_frame(), self.store.votes_frame()
        if not include_custom:
            ratings, picks, votes = ratings[~ratings["custom"]], picks[~picks["custom"]], votes[~votes["custom"]]
        min_votes = max(int(min_votes or 1), 1)
        board = leaderboard_view(bradley_terry(picks, votes, min_votes=min_votes), LABELS, min_votes)
        full, quick = picks["round_id"].nunique(), len(votes)
        raters = len(set(picks["rater_id"]) | set(votes["rater_id"]))
        summary = (f"**{_n(full + quick, 'blind round')} rated** ({_n(full, 'full round')} with "
                   f"{_n(len(ratings), 'answer rating')}, {_n(quick, 'quick vote')}) by {_n(raters, 'rater')}. "
                   f"Compare runs are not counted. A method is ranked once it was shown in "
                   f"{_n(min_votes, 'rated round')}.")
        table = score_table(ratings)
        figure = plot_scores(table, None, labels=LABELS) if len(ratings) else None
        return Results(summary, board, _readable_scores(table), figure)

    def export_csv(self, what: str = "ratings") -> bytes:
        """All ratings ("ratings": one row per answer rated in a full round, with its shown and raw text) or all
        quick votes ("votes") as CSV, built in memory (concurrent downloads share nothing). Rater ids are
        replaced by a hash (a rater id is what authorises rating, so it is never published), and a text cell that
        a spreadsheet would run as a formula (= + - @ first) is prefixed with an apostrophe."""
        import hashlib

        import pandas as pd

        frames = {"ratings": self.store.ratings_frame, "votes": self.store.votes_frame}
        if what not in frames:
            raise ValueError(f"export 'ratings' or 'votes', not {what!r}")
        frame = frames[what]()
        frame["rater_id"] = [hashlib.sha256(r.encode()).hexdigest()[:12] for r in frame["rater_id"]]
        for column in frame.columns:
            if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
                frame[column] = [_inert(v) for v in frame[column]]
        return frame.to_csv(index=False).encode("utf-8")

    def ratings_csv(self, what: str = "ratings") -> Path:
        """`export_csv` written to a file of its own (a download button needs a path)."""
        for old in self._exports.glob("*.csv"):  # the page has fetched (copied) anything older than a minute
            try:
                if time.time() - old.stat().st_mtime > 60:
                    old.unlink()
            except FileNotFoundError:  # another download removed it first
                pass
        handle, name = tempfile.mkstemp(prefix=f"persona-studio-{what}-", suffix=".csv", dir=self._exports)
        with open(handle, "wb") as out:
            out.write(self.export_csv(what))
        return Path(name)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _inert(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: strings starting with = + - @ (or a tab or carriage return, which
    some spreadsheets skip before reading a formula) get a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _readable_scores(table):
    """The mean-ratings table as a person reads it: display names, "mean [95% interval]" per score."""
    import pandas as pd

    if table.empty:
        return pd.DataFrame(columns=["method", "trait", "pole", "ratings", "portrays the target (1–5)",
                                     "fluency (1–5)"])

    def cell(mean, lo, hi):
        return f"{mean:.2f}" if pd.isna(lo) else f"{mean:.2f} [{lo:.2f}–{hi:.2f}]"

    return pd.DataFrame({
        "method": [LABELS.get(m, m) for m in table["method"]], "trait": table["trait"], "pole": table["pole"],
        "ratings": table["n"],
        "portrays the target (1–5)": [cell(*r) for r in zip(table["trait_mean"], table["trait_lo"],
                                                               table["trait_hi"])],
        "fluency (1–5)": [cell(*r) for r in zip(table["fluency_mean"], table["fluency_lo"], table["fluency_hi"])],
    })
