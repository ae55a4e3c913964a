"""The Gradio pages. The main page has the Compare, Blind and Results tabs; the blind rating itself is a page of
its own (/blind/) whose configuration names no method at all, so nothing on it can tell a rater which answer came
from where before the vote (the Blind tab shows that page in a frame that grows with it). Model output is always
put in text boxes or escaped, never rendered as HTML or Markdown."""

from __future__ import annotations

import html
import json

import gradio as gr
import pandas as pd

from db import RatingRefused, StoreBusy
from steering.npti.induce import MAX_STRENGTH
from steering.methods.dispatch import METHODS, MethodUnavailable
from steering.traits import POLES, TRAITS

from .core import LABELS, NOTES, SLOT_NAMES, CompareResult, Studio
from .limits import Busy, TooMany, client_address

REFUSALS = (ValueError, StoreBusy, MethodUnavailable, TooMany, Busy)  # shown as one line; RatingRefused included


def _client(studio: Studio, request: gr.Request | None) -> str:
    """The address the limits count for a page event."""
    if request is None:
        return "local"
    return client_address(getattr(request.client, "host", None), dict(request.headers), studio.limits.trust_proxy)

MAX_SLOTS = len(METHODS)
INTRO = ("**Persona Studio** gives a small language model a Big Five personality trait in several ways and shows "
         "them side by side: the base model, a simple adjective prompt, a richer persona-description prompt (P²), "
         "a LoRA adapter fine-tuned per trait pole, NPTI, which finds the MLP neurons whose firing differs "
         "between a trait's two poles and shifts them while the model writes (no training, no weight change), and "
         "an activation vector added to the residual stream (the difference of the mean activations of our "
         "corpus's high and low answers).")
READOUT_LEGEND = ("Trait read-out per token: the projection of the model's residual stream on the trait's vector "
                  "(<span style='background:rgba(33,102,172,.45)'>blue: reads like our low-pole answers</span>, "
                  "<span style='background:rgba(230,120,20,.45)'>orange: like our high-pole answers</span>; "
                  "+1 / -1 = the mean of our high / low answers). It reads; it does not steer.")


def readout_html(readout) -> str:
    """An answer's tokens coloured by the trait read-out, every piece HTML-escaped (model text is never markup)."""
    if not readout:
        return ""
    spans = []
    for piece, value in readout:
        alpha = min(abs(value), 2.0) / 2.0 * 0.6
        rgb = "230,120,20" if value > 0 else "33,102,172"
        spans.append(f"<span title='{value:+.2f}' style='background:rgba({rgb},{alpha:.2f})'>"
                     f"{html.escape(piece)}</span>")
    mean = sum(v for _, v in readout) / len(readout)
    return (f"<div class='readout'><b>mean read-out {mean:+.2f}</b><div style='white-space:pre-wrap'>"
            + "".join(spans) + "</div></div>")


def _params_md(column) -> str:
    if column.text is None:
        return f"⚠️ **Unavailable:** {_escape(column.reason or '')}"
    shown = {k: v for k, v in column.params.items() if k not in ("method", "trait", "pole")}
    return "`" + json.dumps(shown, ensure_ascii=False) + "`"


def _warning(exc: Exception | str) -> str:
    """One line of Markdown for a refusal, shown where the user is looking (never a toast or an error badge)."""
    return f"⚠️ {_escape(str(exc))}"


def _escape(text: str) -> str:
    """Text shown in Markdown: escape what Markdown or HTML would interpret."""
    return html.escape(text).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`").replace("[", "\\[")


def _method_notes() -> str:
    return "\n".join(f"- **{LABELS[m]}**: {NOTES[m]}" for m in METHODS)


def _strength_info(studio: Studio, trait: str, pole: str, method: str) -> str:
    shipped = studio.default_strength(trait, pole, method)
    default = f"shipped default for {trait} {pole}: {shipped:g}" if shipped is not None else "no shipped default"
    if method == "npti":
        return (f"How far NPTI raises the pole's neurons (× their 95th-percentile activation). {default}; the "
                f"selection sweep tried 0.5–2; the maximum is {MAX_STRENGTH:g}, where answers fall apart.")
    return (f"A fraction of each steered layer's typical residual norm. {default}; the selection sweep tried "
            "0.05 and 0.08; above about 0.2 answers lose fluency.")


def compare_tab(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            question = gr.Textbox(label="Question", lines=3, max_lines=8,
                                  placeholder="Ask anything, or draw one of the bank's development questions")
            draw = gr.Button("Draw a question", size="sm")
        with gr.Column(scale=2):
            trait = gr.Dropdown(list(TRAITS), value="Extraversion", label="Trait")
            pole = gr.Radio(list(POLES), value="high", label="Pole")
            strength = gr.Slider(0, MAX_STRENGTH, value=studio.default_strength("Extraversion", "high") or 1.0,
                                 step=0.05, label="NPTI strength",
                                 info=_strength_info(studio, "Extraversion", "high", "npti"))
            vstrength = gr.Slider(0, 0.5, value=studio.default_strength("Extraversion", "high", "vector") or 0.1,
                                  step=0.01, label="Vector strength",
                                  info=_strength_info(studio, "Extraversion", "high", "vector"))
    methods = gr.CheckboxGroup([(LABELS[m], m) for m in METHODS], value=list(METHODS), label="Methods")
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1)
        go = gr.Button("Generate", variant="primary")
        reseed = gr.Button("New seed")
    status = gr.Markdown(elem_id="compare-status")
    boxes, notes, cols, reads, prompts = [], [], [], [], []
    with gr.Row(equal_height=True):
        for m in METHODS:
            with gr.Column(min_width=150) as col:  # six columns fit 1400 px; they stack on a phone
                gr.Markdown(f"### {LABELS[m]}")
                boxes.append(gr.Textbox(label=LABELS[m], show_label=False, lines=10, interactive=False,
                                        elem_classes=["answer", f"answer-{m}"]))
                reads.append(gr.HTML(elem_classes=["readout", f"readout-{m}"]))
                notes.append(gr.Markdown(elem_classes=["params"]))
                with gr.Accordion("Show prompt", open=False, elem_classes=[f"prompt-{m}"]):
                    prompts.append(gr.Textbox(show_label=False, lines=4, interactive=False,
                                              elem_classes=[f"prompt-text-{m}"]))
            cols.append(col)
    gr.Markdown(READOUT_LEGEND)
    with gr.Accordion("High vs low: one method, both poles", open=False, elem_id="poles"):
        gr.Markdown("The same question and seed, the chosen method pushed toward each pole of the trait above.")
        with gr.Row():
            one = gr.Dropdown([(LABELS[m], m) for m in METHODS if m != "base"], value="npti", label="Method")
            go_poles = gr.Button("Generate both poles", variant="secondary")
        poles_status = gr.Markdown(elem_id="poles-status")
        pole_boxes, pole_prompts = [], []
        with gr.Row(equal_height=True):
            for p in POLES:
                with gr.Column(min_width=200):
                    pole_boxes.append(gr.Textbox(label=f"{p} pole", lines=8, interactive=False,
                                                 elem_classes=[f"pole-{p}"]))
                    with gr.Accordion("Show prompt", open=False):
                        pole_prompts.append(gr.Textbox(show_label=False, lines=4, interactive=False))
    draw.click(lambda t: studio.draw_question(t), trait, question)

    def on_pole(t, p):
        value, vector = studio.default_strength(t, p), studio.default_strength(t, p, "vector")
        return (gr.update(value=value if value is not None else 1.0, info=_strength_info(studio, t, p, "npti")),
                gr.update(value=vector if vector is not None else 0.1, info=_strength_info(studio, t, p, "vector")))

    trait.change(on_pole, [trait, pole], [strength, vstrength])
    pole.change(on_pole, [trait, pole], [strength, vstrength])
    methods.change(lambda ms: (gr.update(visible="npti" in (ms or [])), gr.update(visible="vector" in (ms or []))),
                   methods, [strength, vstrength])

    def run(q, t, p, s, ms, sd, vs, request: gr.Request, progress=gr.Progress()):
        total = studio.decoding.max_new_tokens
        keep = [gr.update()] * (5 * len(METHODS))
        progress(0, desc="generating every method in one batch")
        try:
            chosen = list(ms or [])
            for update in studio.stream(studio.compare, q or "", t, p, chosen, float(s), int(sd or 0),
                                        on_step=lambda n: progress((min(n, total), total), desc="tokens"),
                                        vector_strength=float(vs) if vs is not None else None,
                                        client=_client(studio, request)):
                if not isinstance(update, CompareResult):  # the answers so far, column by column
                    yield ([gr.update(visible=m in chosen) for m in METHODS]
                           + [gr.update(value=update[m]) if m in update else gr.update() for m in METHODS]
                           + [gr.update()] * (3 * len(METHODS)) + ["writing…"])
                    continue
                result = update
        except REFUSALS as exc:
            yield keep + [_warning(exc)]
            return
        by = {c.method: c for c in result.columns}
        outs = [gr.update(visible=m in by) for m in METHODS]
        outs += [gr.update(value=by[m].text or "") if m in by else gr.update() for m in METHODS]
        outs += [gr.update(value=_params_md(by[m])) if m in by else gr.update() for m in METHODS]
        outs += [gr.update(value=readout_html(by[m].readout)) if m in by else gr.update() for m in METHODS]
        outs += [gr.update(value=by[m].prompt or "") if m in by else gr.update() for m in METHODS]
        saved = "" if result.round_id else " (not saved: the database was busy)"
        outs.append(f"{len([c for c in result.columns if c.text is not None])} answers in one batch, "
                    f"{result.seconds:.1f} s{saved}")
        yield outs

    outputs = [*cols, *boxes, *notes, *reads, *prompts, status]
    inputs = [question, trait, pole, strength, methods, seed, vstrength]
    go.click(run, inputs, outputs, api_name="compare")

    def new_seed(sd):
        return int(sd or 0) + 1

    reseed.click(new_seed, seed, seed, api_visibility="private").then(run, inputs, outputs,
                                                                        api_visibility="private")

    def run_poles(q, t, m, s, vs, sd, request: gr.Request):
        given = float(s) if m == "npti" else float(vs) if m == "vector" else None
        try:
            for update in studio.stream(studio.compare_poles, q or "", t, m, given, int(sd or 0),
                                        client=_client(studio, request)):
                if not isinstance(update, CompareResult):
                    yield [gr.update(value=update.get(p, "")) for p in POLES] + [gr.update()] * 2 + ["writing…"]
                    continue
                result = update
        except REFUSALS as exc:
            yield [gr.update()] * 4 + [_warning(exc)]
            return
        yield ([c.text if c.text is not None else f"unavailable: {c.reason}" for c in result.columns]
               + [c.prompt or "" for c in result.columns] + [f"{result.seconds:.1f} s"])

    go_poles.click(run_poles, [question, trait, one, strength, vstrength, seed],
                   [*pole_boxes, *pole_prompts, poles_status], api_visibility="private")


QUICK_HELP = ("**Quick vote**: two answers side by side; one click says which portrays the target better, and "
              "the next pair appears. **Full form**: every method's answer, each scored for the target and for "
              "fluency, and the best one picked.")
SCROLL_TO_REVEAL = "() => { const r = document.getElementById('blind-reveal'); if (r) r.scrollIntoView({block: 'center'}); }"


def blind_page(studio: Studio, secret: str = "persona-studio") -> gr.Blocks:
    """The blind rating page. The rater id lives in the browser (localStorage, checked by the server at every
    step, so a forged id is replaced by a new one); the round id in server-side session state; the
    slot-to-method mapping in the database only, and it comes back after the vote."""
    with gr.Blocks(title="Persona Studio: blind rating") as page:
        if studio.notice:
            gr.Markdown(f"⚠️ {studio.notice}", elem_classes=["studio-notice"])
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
        with gr.Group(visible=False, elem_id="quick") as quick:
            with gr.Row(equal_height=True):
                pair = [gr.Textbox(label=f"Answer {x}", lines=8, interactive=False,
                                   elem_classes=["blind-answer", "quick-answer"]) for x in "AB"]
            with gr.Row():
                votes = [gr.Button(label, elem_id=f"quick-{key}", variant="primary" if key in "ab" else "secondary")
                         for key, label in (("a", "A is better"), ("tie", "Tie"), ("bad", "Both bad"),
                                            ("b", "B is better"))]
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
        with gr.Row(visible=False) as full_tail:
            best = gr.Radio([], label="Best portrayal", elem_id="blind-best")
            submit = gr.Button("Submit ratings", elem_id="blind-submit", variant="primary")
        notice = gr.Markdown(elem_id="blind-error")
        reveal = gr.Markdown(elem_id="blind-reveal")
        again = gr.Button("Next round", visible=False, elem_id="blind-next", variant="primary")

        def counted(who) -> str:
            n = studio.rated_rounds(who)
            return f"You have rated {n} round{'s' if n != 1 else ''}. Thank you!" if n else \
                "You have not rated a round yet."

        def hello(who, request: gr.Request):
            try:
                studio.check_rater(who)
            except (RatingRefused, StoreBusy):
                try:  # first visit, or an id this studio never made
                    who = studio.new_rater(_client(studio, request))
                except REFUSALS as exc:
                    return None, _warning(exc)
            return who, counted(who)

        page.load(hello, rater, [rater, count], api_visibility="private")

        round_outputs = [round_id, prompt, quick, *pair, *groups, *texts, *trait_scores, *fluency_scores, best,
                         full_tail, submit, notice, again]

        def new_round(who, m, t, p, q, progress=gr.Progress()):
            total = studio.decoding.max_new_tokens
            progress(0, desc="writing the answers")
            try:
                r = studio.blind_round(who, t, p, q, mode=m,
                                       on_step=lambda n: progress((min(n, total), total), desc="tokens"))
            except REFUSALS as exc:
                return [gr.update()] * (len(round_outputs) - 2) + [_warning(exc), gr.update()]
            n = len(r.slots)
            custom = " *(your question)*" if r.custom else ""
            is_quick = r.mode == "quick"
            out = [r.round_id, f"**Question:** {_escape(r.question)}{custom}\n\n**{r.target}**",
                   gr.update(visible=is_quick)]
            out += [gr.update(value=r.slots[i].text if is_quick else "") for i in range(2)]
            out += [gr.update(visible=not is_quick and i < n) for i in range(MAX_SLOTS)]
            out += [gr.update(value=r.slots[i].text if not is_quick and i < n else "") for i in range(MAX_SLOTS)]
            out += [gr.update(value=None) for _ in range(2 * MAX_SLOTS)]
            out += [gr.update(choices=list(SLOT_NAMES[:n]), value=None), gr.update(visible=not is_quick),
                    gr.update(interactive=True), "", gr.update(visible=False)]
            return out

        round_inputs = [rater, mode, trait, pole, own]
        start.click(new_round, round_inputs, round_outputs, api_visibility="private")
        again.click(new_round, round_inputs, round_outputs, api_visibility="private")

        def table(revealed, mark: str | None) -> str:
            lines = ["| answer | method | parameters |", "|---|---|---|"]
            for r in revealed:
                params = {k: v for k, v in r.params.items() if k not in ("method", "trait", "pole", "n_tokens")}
                star = " ⭐" if SLOT_NAMES[r.slot] == mark else ""
                lines.append(f"| {SLOT_NAMES[r.slot]}{star} | {LABELS.get(r.method, r.method)} | "
                             f"`{json.dumps(params)}` |")
            return "\n".join(lines)

        def rate(who, rid, best_slot, *values):
            if not rid:
                return gr.update(), _warning("start a round first"), gr.update(), gr.update(), gr.update()
            try:
                n = len(studio.slots(rid, who))
            except REFUSALS as exc:
                return gr.update(), _warning(exc), gr.update(), gr.update(), gr.update()
            ts, fs = values[:MAX_SLOTS], values[MAX_SLOTS:]
            missing = [SLOT_NAMES[i] for i in range(n) if ts[i] is None or fs[i] is None]
            if missing or not best_slot:
                what = f"score answer{'s' if len(missing) > 1 else ''} {', '.join(missing)} (both scales)" \
                    if missing else "pick the best portrayal"
                return gr.update(), _warning(f"Before submitting: {what}."), gr.update(), gr.update(), gr.update()
            scores = {i: (int(ts[i]), int(fs[i])) for i in range(n)}
            try:
                revealed = studio.rate(rid, who, scores, SLOT_NAMES.index(best_slot))
            except REFUSALS as exc:
                return gr.update(), _warning(exc), gr.update(), gr.update(), gr.update()
            return (gr.update(interactive=False), "",
                    "**Thank you — saved.** Here is who wrote what:\n\n" + table(revealed, best_slot),
                    gr.update(visible=True), counted(who))

        submit.click(rate, [rater, round_id, best, *trait_scores, *fluency_scores],
                     [submit, notice, reveal, again, count], api_visibility="private").then(
            None, js=SCROLL_TO_REVEAL)

        def vote(who, rid, outcome):
            if not rid:
                return _warning("start a round first"), gr.update(), gr.update(), gr.update(), None
            try:
                revealed = studio.vote(rid, who, outcome)
            except REFUSALS as exc:
                return _warning(exc), gr.update(), gr.update(), gr.update(), None
            said = {"a": "A was better", "b": "B was better", "tie": "a tie", "bad": "both bad"}[outcome]
            mark = {"a": "A", "b": "B"}.get(outcome)
            return ("", f"**Saved ({said}).** The last pair was:\n\n" + table(revealed, mark) +
                    "\n\nThe next pair is on its way.", counted(who), gr.update(visible=False), True)

        def next_pair(voted, who, m, t, p, q, progress=gr.Progress()):
            if not voted:  # the vote was refused: keep the pair and the message
                return [gr.update()] * len(round_outputs)
            return new_round(who, "quick", t, p, q, progress)

        voted = gr.State(None)
        for button, key in zip(votes, ("a", "tie", "bad", "b")):
            button.click(vote, [rater, round_id, gr.State(key)], [notice, reveal, count, quick, voted],
                         api_visibility="private").then(
                next_pair, [voted, *round_inputs], round_outputs, api_visibility="private")
    return page


JUDGE_COLUMNS = pd.DataFrame(columns=["judge", "method", "answers", "human: target (1–5)", "judge: target",
                                      "human: fluency (1–5)", "judge: fluency"])


def results_tab(studio: Studio):
    gr.Markdown("Human ratings from blind rounds. The leaderboard is a Bradley–Terry fit of every comparison the "
                "raters made: a full round's best pick beat every other answer of its round; a quick vote is a "
                "win, or half a win to each side for a tie (\"both bad\" is counted but not fitted). Ratings are "
                "on an Elo-like scale (1000 = average; +400 = 10:1 odds) with 95% bootstrap intervals; methods are "
                "ranked by the interval's lower end, then the rating, then the amount of evidence.\n\n"
                + _method_notes())
    with gr.Row():
        min_votes = gr.Number(value=10, precision=0, minimum=1, label="Rounds a method needs to be ranked")
        include_custom = gr.Checkbox(value=True, label="Include rounds on typed (custom) questions")
        refresh = gr.Button("Refresh")
    counts = gr.Markdown(elem_id="results-summary")
    board = gr.Dataframe(label="Leaderboard", interactive=False, max_height=2000, wrap=True,
                         elem_id="leaderboard")
    table = gr.Dataframe(label="Mean human ratings per method, trait and pole (1–5, higher is better; "
                               "95% t-interval in brackets)", interactive=False, max_height=2000, wrap=True)
    plot = gr.Plot(label="Mean 'portrays the target' score per method (bars from 0; n = ratings)")
    with gr.Row():
        token = gr.Textbox(label="Admin token", type="password", visible=studio.admin_token is not None,
                           info="the exports and judge runs need the studio's admin token")
        download = gr.DownloadButton("Download the ratings (CSV)")
        download_votes = gr.DownloadButton("Download the quick votes (CSV)")
    gr.Markdown("#### Automatic judges beside the human ratings\nScore the human-rated answers with a judge and "
                "compare. **offline**: the offline judge (trained on our corpus), not ground truth. Its trait score "
                "is P(the text reads like our answers of the target pole), 0–1, higher is better; its fluency is "
                "0–1, 1 / (perplexity under the unsteered model × (1 + repeated 4-gram share)), higher is better "
                "(unsteered answers score about 0.2–0.3). **llm**: an LLM judge on an OpenAI-compatible endpoint "
                "from the environment, 1–5 for both, higher is better. Judge scores are turned toward the target "
                "pole before comparing; agreement is Spearman's rank correlation over answers (1 = same order).")
    with gr.Row():
        which = gr.Dropdown(studio.judges(), value="offline", label="Judge")
        run_judge = gr.Button("Judge the rated answers")
    agreement = gr.Markdown()
    by_method = gr.Dataframe(JUDGE_COLUMNS, label="Human and judge means per method (judge scores turned toward the "
                                                "target; higher is better everywhere)",
                             interactive=False, max_height=2000)

    def load(mv, custom, key):
        try:
            r = studio.results(int(mv or 10), bool(custom))
        except StoreBusy as exc:
            return _warning(exc), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        files = [str(studio.ratings_csv(what)) if studio.is_admin(key) else None for what in ("ratings", "votes")]
        return (r.summary, r.board, r.scores, r.figure, *files)

    inputs, outputs = [min_votes, include_custom, token], [counts, board, table, plot, download, download_votes]
    refresh.click(load, inputs, outputs, api_name="results")
    for changed in (min_votes, include_custom, token):
        changed.change(load, inputs, outputs, api_visibility="private")

    def judge_and_compare(kind, key, progress=gr.Progress()):
        from steering.evaluation.ratings import judge_agreement

        if not studio.is_admin(key):
            return _warning("judge runs need the admin token"), gr.update()
        progress(0, desc="judging")
        try:
            n = studio.judge_rated(kind)
        except REFUSALS as exc:
            return _warning(exc), gr.update()
        per_method, overall = judge_agreement(studio.store.ratings_frame(), studio.store.judgments_frame())
        lines = [f"{n} answers newly judged."]
        for _, r in overall.iterrows():
            lines.append(f"- **{r['judge']}**: trait Spearman {r['trait_spearman']:.2f} (n={r['trait_n']}), "
                         f"fluency Spearman {r['fluency_spearman']:.2f} (n={r['fluency_n']})")
        per_method = per_method.round(3).assign(method=lambda f: [LABELS.get(m, m) for m in f["method"]])
        per_method.columns = list(JUDGE_COLUMNS.columns)  # judge_agreement's seven columns, said in words
        return "\n".join(lines), per_method

    run_judge.click(judge_and_compare, [which, token], [agreement, by_method], api_visibility="private")
    return load, inputs, outputs


FIT_FRAME = """
const frame = element.querySelector('iframe');
function fit() {
  try {
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement) return;
    const needed = doc.documentElement.scrollHeight;
    if (needed > frame.clientHeight + 2) frame.style.height = needed + 'px';
  } catch (e) {}
}
setInterval(fit, 250);
"""


def main_page(studio: Studio, blind_path: str = "blind/") -> gr.Blocks:
    with gr.Blocks(title="Persona Studio") as page:
        if studio.notice:
            gr.Markdown(f"⚠️ {studio.notice}", elem_classes=["studio-notice"])
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                compare_tab(studio)
            with gr.Tab("Blind rating", id="blind"):
                # the rating page in a frame that grows with its content (same origin): no scrollbar inside
                gr.HTML(f'<p><a href="{blind_path}" target="_blank">Open the blind rating page on its own</a></p>'
                        f'<iframe class="blind-frame" src="{blind_path}" title="blind rating" scrolling="no" '
                        'style="width:100%;height:900px;border:0;overflow:hidden"></iframe>', js_on_load=FIT_FRAME)
            with gr.Tab("Results", id="results") as results:
                load, inputs, outputs = results_tab(studio)
        results.select(load, inputs, outputs, api_visibility="private")
        page.load(load, inputs, outputs, api_visibility="private")
        gr.Markdown(f"Model: `{studio.lm.name}` ({studio.lm.quantization}); ratings are stored in a "
                    f"{studio.store.url.split(':')[0].split('+')[0]} database.")
    return page
