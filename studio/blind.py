"""The blind rating page (/blind/), a page of its own whose configuration names no method at all, so nothing on it
can tell a rater which answer came from where before the vote: quick votes (two answers, one click, the next pair
follows) and the full form (every answer scored on two scales, the best one picked), each followed by the reveal."""

from __future__ import annotations

import json

import gradio as gr

from db import RatingRefused, StoreBusy
from steering.methods.dispatch import METHODS
from steering.traits import POLES, TRAITS

from .core import LABELS, SLOT_NAMES, BlindRound, Studio
from .widgets import REFUSALS, client_of, escape, notice_line, warning

MAX_SLOTS = len(METHODS)
QUICK_HELP = ("**Quick vote**: two answers side by side; one click says which portrays the target better, and "
              "the next pair appears. **Full form**: every method's answer, each scored for the target and for "
              "fluency, and the best one picked.")
SCROLL_TO_REVEAL = ("() => { const r = document.getElementById('blind-reveal'); "
                    "if (r) r.scrollIntoView({block: 'center'}); }")
VOTES = (("a", "A is better"), ("tie", "Tie"), ("bad", "Both bad"), ("b", "B is better"))


NONE_RATED = "You have not rated a round yet."


def _counted(studio: Studio, who) -> str:
    n = studio.rated_rounds(who)
    return f"You have rated {n} round{'s' if n != 1 else ''}. Thank you!" if n else NONE_RATED


def _reveal_table(revealed, mark: str | None) -> str:
    """Who wrote what, as a Markdown list; the rater's pick marked."""
    lines = []  # a list, not a table: on a phone a table squeezes the method names into a sliver beside the JSON
    for r in revealed:
        params = {k: v for k, v in r.params.items() if k not in ("method", "trait", "pole", "n_tokens")}
        pick = " (your pick)" if SLOT_NAMES[r.slot] == mark else ""
        lines.append(f"- **Answer {SLOT_NAMES[r.slot]}{pick}: {LABELS.get(r.method, r.method)}**  \n"
                     f"  `{json.dumps(params)}`")
    return "\n".join(lines)


def _shown_round(r: BlindRound) -> list:
    """The updates that show a new round: its id, its question, the quick pair or the full form, emptied scores."""
    n = len(r.slots)
    custom = " *(your question)*" if r.custom else ""
    is_quick = r.mode == "quick"
    out = [r.round_id, f"**Question:** {escape(r.question)}{custom}\n\n**{r.target}**", gr.update(visible=is_quick)]
    out += [gr.update(value=r.slots[i].text if is_quick else "") for i in range(2)]
    out += [gr.update(visible=not is_quick and i < n) for i in range(MAX_SLOTS)]
    out += [gr.update(value=r.slots[i].text if not is_quick and i < n else "") for i in range(MAX_SLOTS)]
    out += [gr.update(value=None) for _ in range(2 * MAX_SLOTS)]
    out += [gr.update(choices=list(SLOT_NAMES[:n]), value=None), gr.update(visible=not is_quick),
            gr.update(interactive=True), "", gr.update(visible=False)]
    return out


def _hello(studio: Studio):
    """The page's load: the browser's rater id if this studio made it, else a new one; the count of rated rounds.
    A database that does not answer now keeps the browser's id (it may be fine) and says so."""
    def hello(who, request: gr.Request):
        try:
            studio.check_rater(who)
            return who, _counted(studio, who)
        except StoreBusy as exc:
            return who, warning(exc)
        except RatingRefused:  # first visit, or an id this studio never made
            pass
        try:
            who = studio.new_rater(client_of(studio, request))
        except REFUSALS as exc:
            return None, warning(exc)
        return who, NONE_RATED

    return hello


def _round_starter(studio: Studio, n_outputs: int):
    """The "New round" and "Next round" buttons' event: a blind round written and shown (or the refusal)."""
    def new_round(who, m, t, p, q, progress=gr.Progress()):
        total = studio.decoding.max_new_tokens
        progress(0, desc="writing the answers")
        try:
            r = studio.blind_round(who, t, p, q, mode=m,
                                   on_step=lambda n: progress((min(n, total), total), desc="tokens"))
        except REFUSALS as exc:
            return [gr.update()] * (n_outputs - 2) + [warning(exc), gr.update()]
        return _shown_round(r)

    return new_round


def _rater(studio: Studio):
    """The full form's "Submit ratings": every shown answer scored on both scales and the best picked, else a
    line saying what is missing; then the reveal."""
    def refused(message) -> tuple:
        return gr.update(), warning(message), gr.update(), gr.update(), gr.update()

    def rate(who, rid, best_slot, *values):
        if not rid:
            return refused("start a round first")
        try:
            n = len(studio.slots(rid, who))
        except REFUSALS as exc:
            return refused(exc)
        ts, fs = values[:MAX_SLOTS], values[MAX_SLOTS:]
        missing = [SLOT_NAMES[i] for i in range(n) if ts[i] is None or fs[i] is None]
        if missing or not best_slot:
            what = f"score answer{'s' if len(missing) > 1 else ''} {', '.join(missing)} (both scales)" \
                if missing else "pick the best portrayal"
            return refused(f"Before submitting: {what}.")
        scores = {i: (int(ts[i]), int(fs[i])) for i in range(n)}
        try:
            revealed = studio.rate(rid, who, scores, SLOT_NAMES.index(best_slot))
        except REFUSALS as exc:
            return refused(exc)
        return (gr.update(interactive=False), "",
                "**Thank you — saved.** Here is who wrote what:\n\n" + _reveal_table(revealed, best_slot),
                gr.update(visible=True), _counted(studio, who))

    return rate


def _voter(studio: Studio):
    """A quick vote's button: the vote stored and the pair revealed; `voted` tells the next step to draw a pair."""
    def vote(who, rid, outcome):
        if not rid:
            return warning("start a round first"), gr.update(), gr.update(), gr.update(), None
        try:
            revealed = studio.vote(rid, who, outcome)
        except REFUSALS as exc:
            return warning(exc), gr.update(), gr.update(), gr.update(), None
        said = {"a": "A was better", "b": "B was better", "tie": "a tie", "bad": "both bad"}[outcome]
        mark = {"a": "A", "b": "B"}.get(outcome)
        return ("", f"**Saved ({said}).** The last pair was:\n\n" + _reveal_table(revealed, mark) +
                "\n\nThe next pair is on its way.", _counted(studio, who), gr.update(visible=False), True)

    return vote


def _pair_drawer(new_round, n_outputs: int):
    """After a quick vote: the next quick pair, or nothing where the vote was refused."""
    def next_pair(voted, who, m, t, p, q, progress=gr.Progress()):
        if not voted:  # the vote was refused: keep the pair and the message
            return [gr.update()] * n_outputs
        return new_round(who, "quick", t, p, q, progress)

    return next_pair


def _full_form() -> tuple[list, list, list, list]:
    """One hidden group per slot: its answer and its two scales (groups, texts, trait scores, fluency scores)."""
    groups, texts, trait_scores, fluency_scores = [], [], [], []
    for i in range(MAX_SLOTS):
        with gr.Group(visible=False) as g:
            texts.append(gr.Textbox(label=f"Answer {SLOT_NAMES[i]}", lines=5, interactive=False,
                                    elem_classes=["blind-answer", "full-answer"]))
            with gr.Row():
                trait_scores.append(gr.Radio([1, 2, 3, 4, 5], label="Portrays the target (1 = not at all)",
                                             elem_classes=[f"trait-{SLOT_NAMES[i]}"]))
                fluency_scores.append(gr.Radio([1, 2, 3, 4, 5], label="Fluency (1 = broken, 5 = natural)",
                                               elem_classes=[f"fluency-{SLOT_NAMES[i]}"]))
        groups.append(g)
    return groups, texts, trait_scores, fluency_scores


def blind_page(studio: Studio, secret: str = "persona-studio") -> gr.Blocks:
    """The blind rating page. The rater id lives in the browser (localStorage, checked by the server at every
    step, so a forged id is replaced by a new one); the round id in server-side session state; the
    slot-to-method mapping in the database only, and it comes back after the vote."""
    with gr.Blocks(title="Persona Studio: blind rating") as page:
        notice_line(studio)
        rater = gr.BrowserState(None, storage_key="persona-studio-rater", secret=secret)
        round_id = gr.State(None)
        gr.Markdown("### Blind rating\nThe same question is answered in several ways, in a random order; say "
                    "which answers portray the target best. Only after your vote do you see which answer came "
                    "from where. " + QUICK_HELP)
        count = gr.Markdown(elem_id="blind-count")
        with gr.Row():
            mode = gr.Radio([("Quick vote", "quick"), ("Full form", "full")], value="quick", label="Mode",
                            elem_id="blind-mode")
            trait = gr.Dropdown(list(TRAITS), value="Extraversion", label="Trait")
            pole = gr.Radio(list(POLES), value="low", label="Pole")
            own = gr.Textbox(label="Your own question (optional)", placeholder="empty: one from the bank")
        start = gr.Button("New round", variant="primary", elem_id="blind-start")
        prompt = gr.Markdown(elem_id="blind-question")
        # where a round's progress shows while its answers are written (on the question, Gradio's bar and counters
        # covered the question's own text, unreadable on a phone)
        loading = gr.Markdown(elem_id="blind-progress", min_height=48)
        with gr.Group(visible=False, elem_id="quick") as quick:
            with gr.Row(equal_height=True):
                pair = [gr.Textbox(label=f"Answer {x}", lines=8, interactive=False,
                                   elem_classes=["blind-answer", "quick-answer"]) for x in "AB"]
            with gr.Row():
                votes = [gr.Button(label, elem_id=f"quick-{key}", variant="primary" if key in "ab" else "secondary")
                         for key, label in VOTES]
        groups, texts, trait_scores, fluency_scores = _full_form()
        with gr.Row(visible=False) as full_tail:
            best = gr.Radio([], label="Best portrayal", elem_id="blind-best")
            submit = gr.Button("Submit ratings", elem_id="blind-submit", variant="primary")
        notice = gr.Markdown(elem_id="blind-error")
        reveal = gr.Markdown(elem_id="blind-reveal")
        again = gr.Button("Next round", visible=False, elem_id="blind-next", variant="primary")

        page.load(_hello(studio), rater, [rater, count], api_visibility="private")

        round_outputs = [round_id, prompt, quick, *pair, *groups, *texts, *trait_scores, *fluency_scores, best,
                         full_tail, submit, notice, again]
        new_round = _round_starter(studio, len(round_outputs))
        round_inputs = [rater, mode, trait, pole, own]
        start.click(new_round, round_inputs, round_outputs, api_visibility="private", show_progress_on=loading)
        again.click(new_round, round_inputs, round_outputs, api_visibility="private", show_progress_on=loading)

        submit.click(_rater(studio), [rater, round_id, best, *trait_scores, *fluency_scores],
                     [submit, notice, reveal, again, count], api_visibility="private").then(
            None, js=SCROLL_TO_REVEAL)

        vote, next_pair = _voter(studio), _pair_drawer(new_round, len(round_outputs))
        voted = gr.State(None)
        for button, (key, _) in zip(votes, VOTES):
            button.click(vote, [rater, round_id, gr.State(key)], [notice, reveal, count, quick, voted],
                         api_visibility="private").then(
                next_pair, [voted, *round_inputs], round_outputs, api_visibility="private", show_progress_on=loading)
    return page
