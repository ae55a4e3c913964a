"""The web server: the Gradio pages and a small JSON API over the same Studio object, on one FastAPI app.

The API is what scripts and load tests use: POST /api/raters, GET /api/raters/{rater}, POST /api/blind/rounds
(mode "full" or "quick"), POST /api/blind/rounds/{round}/rating (full rounds), POST /api/blind/rounds/{round}/vote
(quick rounds), POST /api/compare, POST /api/compare/poles, GET /api/ratings.csv, GET /api/votes.csv. An unknown
rater id is a 403; a refused rating or vote a 409 with the reason; a busy database a 503 (nothing was written:
submit again)."""

from __future__ import annotations

import gradio as gr
from typing import Literal

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from db import RatingRefused, StoreBusy
from steering.methods import MethodUnavailable

from .core import LABELS, SLOT_NAMES, Studio, UnknownRater
from .ui import blind_page, main_page


class RoundAsk(BaseModel):
    rater: str
    trait: str
    pole: str
    question: str | None = None
    mode: Literal["full", "quick"] = "full"


class VoteIn(BaseModel):
    rater: str
    outcome: Literal["a", "b", "tie", "bad"]


class PolesAsk(BaseModel):
    question: str
    trait: str
    method: str
    strength: float | None = None
    seed: int = Field(default=0, ge=0, lt=2**31)


class Score(BaseModel):
    trait: int
    fluency: int


class RatingIn(BaseModel):
    rater: str
    scores: dict[int, Score]
    best: int


class CompareAsk(BaseModel):
    question: str
    trait: str
    pole: str
    methods: list[str] = Field(default_factory=lambda: list(LABELS))
    strength: float | None = None
    vector_strength: float | None = None
    seed: int = Field(default=0, ge=0, lt=2**31)


def _refused(exc: Exception) -> JSONResponse:
    status = 503 if isinstance(exc, (StoreBusy, MethodUnavailable)) else 403 if isinstance(exc, UnknownRater) \
        else 409 if isinstance(exc, RatingRefused) else 422
    return JSONResponse({"error": str(exc)}, status_code=status)


def _reveal(revealed) -> dict:
    return {"revealed": [{"slot": r.slot, "label": SLOT_NAMES[r.slot], "method": r.method,
                          "name": LABELS.get(r.method, r.method), "params": r.params} for r in revealed]}


def _column(c) -> dict:
    return {"method": c.method, "name": c.label, "text": c.text, "raw_text": c.raw_text, "params": c.params,
            "unavailable": c.reason, "prompt": c.prompt, "readout": [list(t) for t in c.readout or ()]}


def _csv(data: bytes, name: str) -> Response:
    return Response(data, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def api(studio: Studio) -> FastAPI:
    app = FastAPI(title="Persona Studio API")

    @app.post("/api/raters")
    def new_rater() -> dict:
        return {"rater": studio.store.new_rater()}

    @app.get("/api/raters/{rater}")
    def rater(rater: str):
        try:
            return {"rated_rounds": studio.rated_rounds(studio.check_rater(rater))}
        except (RatingRefused, StoreBusy) as exc:
            return _refused(exc)

    @app.post("/api/blind/rounds")
    def blind_round(ask: RoundAsk):
        try:
            r = studio.blind_round(ask.rater, ask.trait, ask.pole, ask.question, mode=ask.mode)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            return _refused(exc)
        return {"round": r.round_id, "question": r.question, "target": r.target, "custom": r.custom, "mode": r.mode,
                "answers": [{"slot": s.slot, "label": SLOT_NAMES[s.slot], "text": s.text} for s in r.slots]}

    @app.post("/api/blind/rounds/{round_id}/vote")
    def vote(round_id: str, ask: VoteIn = Body(...)):
        try:
            return _reveal(studio.vote(round_id, studio.check_rater(ask.rater), ask.outcome))
        except (RatingRefused, StoreBusy) as exc:
            return _refused(exc)

    @app.post("/api/blind/rounds/{round_id}/rating")
    def rate(round_id: str, rating: RatingIn = Body(...)):
        try:
            return _reveal(studio.rate(round_id, studio.check_rater(rating.rater),
                                       {k: (v.trait, v.fluency) for k, v in rating.scores.items()}, rating.best))
        except (RatingRefused, StoreBusy) as exc:
            return _refused(exc)

    @app.post("/api/compare")
    def compare(ask: CompareAsk):
        try:
            result = studio.compare(ask.question, ask.trait, ask.pole, ask.methods, ask.strength, ask.seed,
                                    vector_strength=ask.vector_strength)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            return _refused(exc)
        return {"round": result.round_id, "question": result.question, "seconds": result.seconds,
                "columns": [_column(c) for c in result.columns]}

    @app.post("/api/compare/poles")
    def compare_poles(ask: PolesAsk):
        try:
            result = studio.compare_poles(ask.question, ask.trait, ask.method, ask.strength, ask.seed)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            return _refused(exc)
        return {"question": result.question, "seconds": result.seconds,
                "columns": [{"pole": pole, **_column(c)} for pole, c in zip(("high", "low"), result.columns)]}

    @app.get("/api/ratings.csv")
    def ratings_csv():
        return _csv(studio.export_csv("ratings"), "persona-studio-ratings.csv")

    @app.get("/api/votes.csv")
    def votes_csv():
        return _csv(studio.export_csv("votes"), "persona-studio-votes.csv")

    return app


def theme() -> gr.themes.Base:
    """Gradio's default look on the system's own fonts: nothing is fetched from a font service (a Space or a lab
    machine may have no route to it), and headings do not mix a web font's glyphs with fallback ones."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def create_app(studio: Studio) -> FastAPI:
    """One app: the JSON API, the blind page at /blind/ and the main page at /."""
    app = api(studio)
    app = gr.mount_gradio_app(app, blind_page(studio), path="/blind", ssr_mode=False, footer_links=[],
                              theme=theme())
    return gr.mount_gradio_app(app, main_page(studio), path="", ssr_mode=False, theme=theme())
