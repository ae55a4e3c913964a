"""The Gradio pages. The main page has the Compare, Blind and Results tabs; the blind rating itself is a page of
its own (/blind/) whose configuration names no method at all, so nothing on it can tell a rater which answer came
from where before the vote (the Blind tab shows that page in a frame). Model output is always put in text
boxes, never rendered as HTML or Markdown."""

from __future__ import annotations

import html
import json

import gradio as gr

from db import RatingRefused, StoreBusy
from steering.methods import MethodUnavailable
from steering.methods import METHODS
from steering.traits import POLES, TRAITS

from .core import LABELS, SLOT_NAMES, Studio

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
        return f"⚠️ **Unavailable:** {column.reason}"
    shown = {k: v for k, v in column.params.items() if k not in ("method", "trait", "pole")}
    return "`" + json.dumps(shown, ensure_ascii=False) + "`"


def _fail(exc: Exception):
    """Bad input or a refused action: a clear message, and the page keeps what it had."""
    raise gr.Error(str(exc), print_exception=False)


def compare_tab(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            question = gr.Textbox(label="Question", lines=3, max_lines=8,
                                  placeholder="Ask anything, or draw one of the bank's development questions")
            draw = gr.Button("Draw a question", size="sm")
        with gr.Column(scale=2):
            trait = gr.Dropdown(list(TRAITS), value="Extraversion", label="Trait")
            pole = gr.Radio(list(POLES), value="high", label="Pole")
            strength = gr.Slider(0, 4, value=studio.default_strength("Extraversion", "high") or 1.0, step=0.05,
                                 label="NPTI strength", info="defaults to the profile's shipped strength")
            vstrength = gr.Slider(0, 0.5, value=studio.default_strength("Extraversion", "high", "vector") or 0.1,
                                  step=0.01, label="Vector strength",
                                  info="a fraction of each steered layer's typical residual norm; defaults to the "
                                       "shipped one")
    methods = gr.CheckboxGroup([(LABELS[m], m) for m in METHODS], value=list(METHODS), label="Methods")
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1)
        go = gr.Button("Generate", variant="primary")
        reseed = gr.Button("New seed")
    status = gr.Markdown(elem_id="compare-status")
    boxes, notes, cols, reads = [], [], [], []
    with gr.Row(equal_height=True):
        for m in METHODS:
            with gr.Column(min_width=150) as col:  # six columns fit 1400 px; they stack on a phone
                gr.Markdown(f"### {LABELS[m]}")
                boxes.append(gr.Textbox(label=LABELS[m], show_label=False, lines=10, interactive=False,
                                        elem_classes=["answer", f"answer-{m}"]))
                reads.append(gr.HTML(elem_classes=["readout", f"readout-{m}"]))
                notes.append(gr.Markdown(elem_classes=["params"]))
            cols.append(col)
    gr.Markdown(READOUT_LEGEND)
    draw.click(lambda t: studio.draw_question(t), trait, question)

    def on_pole(t, p):
        value, vector = studio.default_strength(t, p), studio.default_strength(t, p, "vector")
        return (gr.update(value=value if value is not None else 1.0),
                gr.update(value=vector if vector is not None else 0.1))

    trait.change(on_pole, [trait, pole], [strength, vstrength])
    pole.change(on_pole, [trait, pole], [strength, vstrength])

    def run(q, t, p, s, ms, sd, vs, progress=gr.Progress()):
        total = studio.decoding.max_new_tokens
        progress(0, desc="generating every method in one batch")
        try:
            result = studio.compare(q or "", t, p, list(ms or []), float(s), int(sd or 0),
                                    on_step=lambda n: progress((min(n, total), total), desc="tokens"),
                                    vector_strength=float(vs) if vs is not None else None)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            _fail(exc)
        by = {c.method: c for c in result.columns}
        outs = [gr.update(visible=m in by) for m in METHODS]
        outs += [gr.update(value=by[m].text or "") if m in by else gr.update() for m in METHODS]
        outs += [gr.update(value=_params_md(by[m])) if m in by else gr.update() for m in METHODS]
        outs += [gr.update(value=readout_html(by[m].readout)) if m in by else gr.update() for m in METHODS]
        saved = "" if result.round_id else " (not saved: the database was busy)"
        outs.append(f"{len([c for c in result.columns if c.text is not None])} answers in one batch, "
                    f"{result.seconds:.1f} s{saved}")
        return outs

    outputs = [*cols, *boxes, *notes, *reads, status]
    inputs = [question, trait, pole, strength, methods, seed, vstrength]
    go.click(run, inputs, outputs, api_name="compare")

    def new_seed(sd):
        return int(sd or 0) + 1

    reseed.click(new_seed, seed, seed, api_visibility="private").then(run, inputs, outputs,
                                                                        api_visibility="private")


def blind_page(studio: Studio) -> gr.Blocks:
    """The blind rating page. Its round id and rater id live in server-side session state; the slot-to-method
    mapping lives in the database only, and comes back after the vote."""
    with gr.Blocks(title="Persona Studio: blind rating") as page:
        rater = gr.State(None)
        round_id = gr.State(None)
        gr.Markdown("### Blind rating\nPick a trait and a pole (or keep the defaults) and start a round. The same "
                    "question is answered several ways, in a random order. Score every answer for how well it "
                    "portrays the target and for fluency, pick the best portrayal, then submit; only then do you "
                    "see which answer came from where.")
        with gr.Row():
            trait = gr.Dropdown(list(TRAITS), value="Extraversion", label="Trait")
            pole = gr.Radio(list(POLES), value="low", label="Pole")
            own = gr.Textbox(label="Your own question (optional)", placeholder="empty: one from the bank")
        start = gr.Button("New round", variant="primary")
        prompt = gr.Markdown(elem_id="blind-question")
        groups, texts, trait_scores, fluency_scores = [], [], [], []
        for i in range(MAX_SLOTS):
            with gr.Group(visible=False) as g:
                texts.append(gr.Textbox(label=f"Answer {SLOT_NAMES[i]}", lines=5, interactive=False,
                                        elem_classes=["blind-answer"]))
                with gr.Row():
                    trait_scores.append(gr.Radio([1, 2, 3, 4, 5], label="Portrays the target (1 = not at all)",
                                                 elem_classes=[f"trait-{SLOT_NAMES[i]}"]))
                    fluency_scores.append(gr.Radio([1, 2, 3, 4, 5], label="Fluency (1 = broken, 5 = natural)",
                                                   elem_classes=[f"fluency-{SLOT_NAMES[i]}"]))
            groups.append(g)
        best = gr.Radio([], label="Best portrayal", elem_id="blind-best")
        submit = gr.Button("Submit ratings", interactive=False, elem_id="blind-submit")
        reveal = gr.Markdown(elem_id="blind-reveal")

        def new_round(who, t, p, q, progress=gr.Progress()):
            total = studio.decoding.max_new_tokens
            progress(0, desc="writing the answers")
            try:
                who = who or studio.store.new_rater()
                r = studio.blind_round(who, t, p, q, on_step=lambda n: progress((min(n, total), total),
                                                                                desc="tokens"))
            except (ValueError, StoreBusy, MethodUnavailable) as exc:
                _fail(exc)
            n = len(r.slots)
            custom = " *(your question)*" if r.custom else ""
            out = [who, r.round_id, f"**Question:** {_escape(r.question)}{custom}\n\n**{r.target}**"]
            out += [gr.update(visible=i < n) for i in range(MAX_SLOTS)]
            out += [gr.update(value=r.slots[i].text if i < n else "") for i in range(MAX_SLOTS)]
            out += [gr.update(value=None) for _ in range(2 * MAX_SLOTS)]
            out += [gr.update(choices=list(SLOT_NAMES[:n]), value=None), gr.update(interactive=True), ""]
            return out

        start.click(new_round, [rater, trait, pole, own],
                    [rater, round_id, prompt, *groups, *texts, *trait_scores, *fluency_scores, best, submit, reveal],
                    api_visibility="private")

        def rate(who, rid, best_slot, *values):
            if not rid:
                _fail(ValueError("start a round first"))
            try:
                n = len(studio.store.round_for_rater(rid, who))
            except (RatingRefused, StoreBusy) as exc:
                _fail(exc)
            ts, fs = values[:MAX_SLOTS], values[MAX_SLOTS:]
            if any(ts[i] is None or fs[i] is None for i in range(n)) or not best_slot:
                _fail(ValueError("rate every answer (1–5) for the target and for fluency, and pick the best "
                                 "portrayal, before submitting"))
            scores = {i: (int(ts[i]), int(fs[i])) for i in range(n)}
            try:
                revealed = studio.rate(rid, who, scores, SLOT_NAMES.index(best_slot))
            except (RatingRefused, StoreBusy) as exc:
                _fail(exc)
            lines = ["| answer | method | parameters |", "|---|---|---|"]
            for r in revealed:
                params = {k: v for k, v in r.params.items() if k not in ("method", "trait", "pole", "n_tokens")}
                mark = " ⭐" if SLOT_NAMES[r.slot] == best_slot else ""
                lines.append(f"| {SLOT_NAMES[r.slot]}{mark} | {LABELS.get(r.method, r.method)} | "
                             f"`{json.dumps(params)}` |")
            return gr.update(interactive=False), "**Thank you — saved.** Here is who wrote what:\n\n" + "\n".join(lines)

        submit.click(rate, [rater, round_id, best, *trait_scores, *fluency_scores], [submit, reveal],
                     api_visibility="private")
    return page


def _escape(text: str) -> str:
    """A typed question shown in Markdown: escape what Markdown or HTML would interpret."""
    import html

    return html.escape(text).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`").replace("[", "\\[")


def results_tab(studio: Studio) -> None:
    from steering.ratings import bradley_terry, plot_scores, score_table

    gr.Markdown("Human ratings from blind rounds. Means with 95% t-intervals per method, trait and pole; the "
                "leaderboard is a Bradley–Terry fit of the \"best portrayal\" picks (the picked answer beat every "
                "other answer of its round) with bootstrap 95% intervals, sorted by the lower bound. A method "
                "needs the minimum number of rounds before it is ranked.")
    with gr.Row():
        min_votes = gr.Number(value=10, precision=0, minimum=1, label="Minimum rounds to be ranked")
        include_custom = gr.Checkbox(value=True, label="Include rounds on typed (custom) questions")
        refresh = gr.Button("Refresh", variant="primary")
    counts = gr.Markdown()
    board = gr.Dataframe(label="Leaderboard (Bradley–Terry on best picks)", interactive=False)
    table = gr.Dataframe(label="Mean ratings per method, trait and pole", interactive=False)
    plot = gr.Plot(label="Trait scores")
    download = gr.DownloadButton("Download all ratings (CSV)")
    gr.Markdown("#### Automatic judges beside the human ratings\nScore the human-rated answers with a judge and "
                "compare. **offline**: the offline judge (trained on our corpus), not ground truth. Its trait score "
                "is P(the text reads like our answers of the target pole), 0-1, higher is better; its fluency is "
                "0-1, 1 / (perplexity under the unsteered model x (1 + repeated 4-gram share)), higher is better "
                "(unsteered answers score about 0.2-0.3). **llm**: an LLM judge on an OpenAI-compatible endpoint "
                "from the environment, 1-5 for both, higher is better. Judge scores are turned toward the target "
                "pole before comparing; agreement is Spearman's rank correlation over answers.")
    with gr.Row():
        which = gr.Dropdown(studio.judges(), value="offline", label="Judge")
        run_judge = gr.Button("Judge the rated answers")
    agreement = gr.Markdown()
    by_method = gr.Dataframe(label="Human and judge means per method (judge scores toward the target)",
                             interactive=False)

    def load(mv, custom):
        ratings = studio.store.ratings_frame()
        picks = studio.store.picks_frame()
        if not custom:
            ratings, picks = ratings[~ratings["custom"]], picks[~picks["custom"]]
        scores = score_table(ratings).round(2)
        bt = bradley_terry(picks, min_votes=int(mv or 1)).round(1)
        c = studio.store.counts()
        text = (f"{c['ratings']} ratings of {c['picks']} blind rounds by {c['raters']} raters; "
                f"{c['rounds']} rounds in all.")
        figure = plot_scores(score_table(ratings), None) if len(ratings) else None
        return text, bt, scores, figure, str(studio.ratings_csv())

    refresh.click(load, [min_votes, include_custom], [counts, board, table, plot, download], api_name="results")

    def judge_and_compare(kind, progress=gr.Progress()):
        from steering.ratings import judge_agreement

        progress(0, desc="judging")
        try:
            n = studio.judge_rated(kind)
        except (ValueError, StoreBusy) as exc:
            _fail(exc)
        per_method, overall = judge_agreement(studio.store.ratings_frame(), studio.store.judgments_frame())
        lines = [f"{n} answers newly judged."]
        for _, r in overall.iterrows():
            lines.append(f"- **{r['judge']}**: trait Spearman {r['trait_spearman']:.2f} (n={r['trait_n']}), "
                         f"fluency Spearman {r['fluency_spearman']:.2f} (n={r['fluency_n']})")
        return "\n".join(lines), per_method.round(3)

    run_judge.click(judge_and_compare, which, [agreement, by_method], api_visibility="private")


def main_page(studio: Studio, blind_path: str = "blind/") -> gr.Blocks:
    with gr.Blocks(title="Persona Studio") as page:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                compare_tab(studio)
            with gr.Tab("Blind rating", id="blind"):
                gr.HTML(f'<p><a href="{blind_path}" target="_blank">Open the blind rating page on its own</a></p>'
                        f'<iframe src="{blind_path}" title="blind rating" '
                        'style="width:100%;height:1400px;border:0"></iframe>')
            with gr.Tab("Results", id="results"):
                results_tab(studio)
        gr.Markdown(f"Model: `{studio.lm.name}` ({studio.lm.quantization}); ratings are stored in a "
                    f"{studio.store.url.split(':')[0].split('+')[0]} database.")
    return page
