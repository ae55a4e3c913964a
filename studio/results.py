"""The Results tab: the leaderboard and mean human ratings from the blind rounds (studio.results, built in
tally.py), the CSV downloads behind the admin token, and the automatic judges beside the human ratings."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from db import StoreBusy
from steering.methods.dispatch import METHODS

from .core import LABELS, NOTES, Studio
from .widgets import REFUSALS, warning

JUDGE_COLUMNS = pd.DataFrame(columns=["judge", "method", "answers", "human: target (1–5)", "judge: target",
                                      "human: fluency (1–5)", "judge: fluency"])
ABOUT = ("Human ratings from blind rounds. The leaderboard is a Bradley–Terry fit of every comparison the raters "
         "made: a full round's best pick beat every other answer of its round; a quick vote is a win, or half a win "
         "to each side for a tie (\"both bad\" is counted but not fitted). Ratings are on an Elo-like scale (1000 = "
         "average; +400 = 10:1 odds) with 95% bootstrap intervals; methods are ranked by the interval's lower end, "
         "then the rating, then the amount of evidence.\n\n")
ABOUT_JUDGES = ("#### Automatic judges beside the human ratings\nScore the human-rated answers with a judge and "
                "compare. **offline**: the offline judge (trained on our corpus), not ground truth. Its trait score "
                "is P(the text reads like our answers of the target pole), 0–1, higher is better; its fluency is "
                "0–1, 1 / (perplexity under the unsteered model × (1 + repeated 4-gram share)), higher is better "
                "(unsteered answers score about 0.2–0.3). **llm**: an LLM judge on an OpenAI-compatible endpoint "
                "from the environment, 1–5 for both, higher is better. Judge scores are turned toward the target "
                "pole before comparing; agreement is Spearman's rank correlation over answers (1 = same order).")


def _method_notes() -> str:
    return "\n".join(f"- **{LABELS[m]}**: {NOTES[m]}" for m in METHODS)


def _loader(studio: Studio):
    """The tab's refresh (the page's "results" API): the results, and the download files for the admin."""
    def load(mv, custom, key):
        try:
            r = studio.results(int(mv or 10), bool(custom))
        except StoreBusy as exc:
            return warning(exc), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        files = [str(studio.ratings_csv(what)) if studio.is_admin(key) else None for what in ("ratings", "votes")]
        return (r.summary, r.board, r.scores, r.figure, *files)

    return load


def _agreement_md(n: int, overall) -> str:
    lines = [f"{n} answers newly judged."]
    for _, r in overall.iterrows():
        lines.append(f"- **{r['judge']}**: trait Spearman {r['trait_spearman']:.2f} (n={r['trait_n']}), "
                     f"fluency Spearman {r['fluency_spearman']:.2f} (n={r['fluency_n']})")
    return "\n".join(lines)


def _judge_runner(studio: Studio):
    """The "Judge the rated answers" button (admin only): the judge run, then its agreement with the raters."""
    def judge_and_compare(kind, key, progress=gr.Progress()):
        if not studio.is_admin(key):
            return warning("judge runs need the admin token"), gr.update()
        progress(0, desc="judging")
        try:
            n = studio.judge_rated(kind)
        except REFUSALS as exc:
            return warning(exc), gr.update()
        per_method, overall = studio.judge_agreement()
        per_method = per_method.round(3).assign(method=lambda f: [LABELS.get(m, m) for m in f["method"]])
        per_method.columns = list(JUDGE_COLUMNS.columns)  # judge_agreement's seven columns, said in words
        return _agreement_md(n, overall), per_method

    return judge_and_compare


def results_tab(studio: Studio):
    gr.Markdown(ABOUT + _method_notes())
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
    gr.Markdown(ABOUT_JUDGES)
    with gr.Row():
        which = gr.Dropdown(studio.judges(), value="offline", label="Judge")
        run_judge = gr.Button("Judge the rated answers")
    agreement = gr.Markdown()
    by_method = gr.Dataframe(JUDGE_COLUMNS, label="Human and judge means per method (judge scores turned toward the "
                                                "target; higher is better everywhere)",
                             interactive=False, max_height=2000)

    load = _loader(studio)
    inputs, outputs = [min_votes, include_custom, token], [counts, board, table, plot, download, download_votes]
    refresh.click(load, inputs, outputs, api_name="results")
    for changed in (min_votes, include_custom, token):
        changed.change(load, inputs, outputs, api_visibility="private")

    run_judge.click(_judge_runner(studio), [which, token], [agreement, by_method], api_visibility="private")
    return load, inputs, outputs
