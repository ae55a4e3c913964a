"""The Gradio pages. The main page has the Compare, Blind and Results tabs; the blind rating itself is a page of
its own (/blind/) whose configuration names no method at all, so nothing on it can tell a rater which answer came
from where before the vote (the Blind tab shows that page in a frame that grows with it). Model output is always
put in text boxes or escaped, never rendered as HTML or Markdown.

Each page or tab is a module of its own: compare.py, blind.py and results.py; what they share is in widgets.py.
This module builds the main page and keeps the pages' names importable from one place."""

from __future__ import annotations

import gradio as gr

from .blind import MAX_SLOTS, QUICK_HELP, SCROLL_TO_REVEAL, blind_page
from .compare import READOUT_LEGEND, compare_tab, readout_html
from .core import Studio
from .results import JUDGE_COLUMNS, results_tab
from .widgets import REFUSALS, client_of, escape, notice_line, warning

__all__ = ["FIT_FRAME", "INTRO", "JUDGE_COLUMNS", "MAX_SLOTS", "QUICK_HELP", "READOUT_LEGEND", "REFUSALS",
           "SCROLL_TO_REVEAL", "blind_page", "client_of", "compare_tab", "escape", "main_page", "readout_html",
           "results_tab", "warning"]

INTRO = ("**Persona Studio** gives a small language model a Big Five personality trait in several ways and shows "
         "them side by side: the base model, a simple adjective prompt, a richer persona-description prompt (P²), "
         "a LoRA adapter fine-tuned per trait pole, NPTI, which finds the MLP neurons whose firing differs "
         "between a trait's two poles and shifts them while the model writes (no training, no weight change), and "
         "an activation vector added to the residual stream (the difference of the mean activations of our "
         "corpus's high and low answers).")

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
        notice_line(studio)
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
                    f"{studio.database_kind()} database.")
    return page
