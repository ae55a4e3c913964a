"""The Compare tab: one question answered by every chosen method side by side, streamed as it is written, each
answer with its parameters, its trait read-out and what the method was given; and "high vs low", one method pushed
toward each pole. Model output goes into text boxes, or is escaped where it is coloured (never run as markup)."""

from __future__ import annotations

import html
import json

import gradio as gr

from steering.methods.dispatch import METHODS
from steering.npti.induce import MAX_STRENGTH
from steering.traits import POLES, TRAITS

from .core import LABELS, CompareResult, Studio
from .widgets import REFUSALS, client_of, escape, warning

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
        return f"⚠️ **Unavailable:** {escape(column.reason or '')}"
    shown = {k: v for k, v in column.params.items() if k not in ("method", "trait", "pole")}
    return "`" + json.dumps(shown, ensure_ascii=False) + "`"


def _strength_info(studio: Studio, trait: str, pole: str, method: str) -> str:
    shipped = studio.default_strength(trait, pole, method)
    default = f"shipped default for {trait} {pole}: {shipped:g}" if shipped is not None else "no shipped default"
    if method == "npti":
        return (f"How far NPTI raises the pole's neurons (× their 95th-percentile activation). {default}; the "
                f"selection sweep tried 0.5–2; the maximum is {MAX_STRENGTH:g}, where answers fall apart.")
    return (f"A fraction of each steered layer's typical residual norm. {default}; the selection sweep tried "
            "0.05 and 0.08; above about 0.2 answers lose fluency.")


# what each method's column shows of its answer, in the order of the outputs after the columns themselves: the
# answer, its parameters, its read-out and its prompt
SHOWN = (lambda c: c.text or "", _params_md, lambda c: readout_html(c.readout), lambda c: c.prompt or "")


def _written(chosen: list[str], texts: dict[str, str]) -> list:
    """The updates while the answers are being written: the chosen columns shown, each answer so far."""
    return ([gr.update(visible=m in chosen) for m in METHODS]
            + [gr.update(value=texts[m]) if m in texts else gr.update() for m in METHODS]
            + [gr.update()] * ((len(SHOWN) - 1) * len(METHODS)) + ["writing…"])


def _finished(result: CompareResult) -> list:
    """The updates for a finished compare run: every column of a chosen method filled, then the status line."""
    by = {c.method: c for c in result.columns}
    outs = [gr.update(visible=m in by) for m in METHODS]
    for shown in SHOWN:
        outs += [gr.update(value=shown(by[m])) if m in by else gr.update() for m in METHODS]
    saved = "" if result.round_id else " (not saved: the database did not answer)"
    outs.append(f"{len([c for c in result.columns if c.text is not None])} answers in one batch, "
                f"{result.seconds:.1f} s{saved}")
    return outs


def _compare_runner(studio: Studio):
    """The Generate button's event (the page's "compare" API): streams the columns, then fills them."""
    def run(q, t, p, s, ms, sd, vs, request: gr.Request, progress=gr.Progress()):
        total = studio.decoding.max_new_tokens
        progress(0, desc="generating every method in one batch")
        try:
            chosen = list(ms or [])
            for update in studio.stream(studio.compare, q or "", t, p, chosen, float(s), int(sd or 0),
                                        on_step=lambda n: progress((min(n, total), total), desc="tokens"),
                                        vector_strength=float(vs) if vs is not None else None,
                                        client=client_of(studio, request)):
                if not isinstance(update, CompareResult):  # the answers so far, column by column
                    yield _written(chosen, update)
                    continue
                result = update
        except REFUSALS as exc:
            yield [gr.update()] * (len(SHOWN) + 1) * len(METHODS) + [warning(exc)]
            return
        yield _finished(result)

    return run


def _poles_runner(studio: Studio):
    """The "Generate both poles" button's event: one method, the high and the low pole."""
    def run_poles(q, t, m, s, vs, sd, request: gr.Request):
        given = float(s) if m == "npti" else float(vs) if m == "vector" else None
        try:
            for update in studio.stream(studio.compare_poles, q or "", t, m, given, int(sd or 0),
                                        client=client_of(studio, request)):
                if not isinstance(update, CompareResult):
                    yield [gr.update(value=update.get(p, "")) for p in POLES] + [gr.update()] * 2 + ["writing…"]
                    continue
                result = update
        except REFUSALS as exc:
            yield [gr.update()] * 4 + [warning(exc)]
            return
        yield ([c.text if c.text is not None else f"unavailable: {c.reason}" for c in result.columns]
               + [c.prompt or "" for c in result.columns] + [f"{result.seconds:.1f} s"])

    return run_poles


def _on_pole(studio: Studio):
    """A new trait or pole: its shipped strengths, and what they mean, on the two sliders."""
    def on_pole(t, p):
        value, vector = studio.default_strength(t, p), studio.default_strength(t, p, "vector")
        return (gr.update(value=value if value is not None else 1.0, info=_strength_info(studio, t, p, "npti")),
                gr.update(value=vector if vector is not None else 0.1, info=_strength_info(studio, t, p, "vector")))

    return on_pole


def _method_columns() -> tuple[list, ...]:
    """One column per method (answer, read-out, parameters, prompt): the columns, then each kind of box."""
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
    return cols, boxes, notes, reads, prompts


def _poles_panel() -> tuple:
    """The "High vs low" accordion: its button, its method and its outputs."""
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
    return go_poles, one, [*pole_boxes, *pole_prompts, poles_status]


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
    cols, boxes, notes, reads, prompts = _method_columns()
    gr.Markdown(READOUT_LEGEND)
    go_poles, one, pole_outputs = _poles_panel()
    draw.click(lambda t: studio.draw_question(t), trait, question)

    on_pole = _on_pole(studio)
    trait.change(on_pole, [trait, pole], [strength, vstrength])
    pole.change(on_pole, [trait, pole], [strength, vstrength])
    methods.change(lambda ms: (gr.update(visible="npti" in (ms or [])), gr.update(visible="vector" in (ms or []))),
                   methods, [strength, vstrength])

    run = _compare_runner(studio)
    outputs = [*cols, *boxes, *notes, *reads, *prompts, status]
    inputs = [question, trait, pole, strength, methods, seed, vstrength]
    go.click(run, inputs, outputs, api_name="compare")

    def new_seed(sd):
        return int(sd or 0) + 1

    reseed.click(new_seed, seed, seed, api_visibility="private").then(run, inputs, outputs,
                                                                        api_visibility="private")
    go_poles.click(_poles_runner(studio), [question, trait, one, strength, vstrength, seed], pole_outputs,
                   api_visibility="private")
