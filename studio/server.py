"""The web server: the Gradio pages and a small JSON API over the same Studio object, on one FastAPI app.

The API is what scripts and load tests use: POST /api/raters, POST /api/blind/rounds, POST
/api/blind/rounds/{round}/rating, POST /api/compare, GET /api/ratings.csv. A refused rating is a 409 with the
reason; a busy database a 503 (nothing was written: submit again)."""

from __future__ import annotations

import gradio as gr
from fastapi import Body, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from db import RatingRefused, StoreBusy
from steering.methods import MethodUnavailable

from .core import LABELS, SLOT_NAMES, Studio
from .ui import blind_page, main_page


class RoundAsk(BaseModel):
    rater: str
    trait: str
    pole: str
    question: str | None = None


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
    status = 503 if isinstance(exc, (StoreBusy, MethodUnavailable)) else 409 if isinstance(exc, RatingRefused) \
        else 422
    return JSONResponse({"error": str(exc)}, status_code=status)


def api(studio: Studio) -> FastAPI:
    app = FastAPI(title="Persona Studio API")

    @app.post("/api/raters")
    def new_rater() -> dict:
        return {"rater": studio.store.new_rater()}

    @app.post("/api/blind/rounds")
    def blind_round(ask: RoundAsk):
        try:
            r = studio.blind_round(ask.rater, ask.trait, ask.pole, ask.question)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            return _refused(exc)
        return {"round": r.round_id, "question": r.question, "target": r.target, "custom": r.custom,
                "answers": [{"slot": s.slot, "label": SLOT_NAMES[s.slot], "text": s.text} for s in r.slots]}

    @app.post("/api/blind/rounds/{round_id}/rating")
    def rate(round_id: str, rating: RatingIn = Body(...)):
        try:
            revealed = studio.rate(round_id, rating.rater,
                                   {k: (v.trait, v.fluency) for k, v in rating.scores.items()}, rating.best)
        except (RatingRefused, StoreBusy) as exc:
            return _refused(exc)
        return {"revealed": [{"slot": r.slot, "label": SLOT_NAMES[r.slot], "method": r.method,
                              "name": LABELS.get(r.method, r.method), "params": r.params} for r in revealed]}

    @app.post("/api/compare")
    def compare(ask: CompareAsk):
        try:
            result = studio.compare(ask.question, ask.trait, ask.pole, ask.methods, ask.strength, ask.seed,
                                    vector_strength=ask.vector_strength)
        except (ValueError, StoreBusy, MethodUnavailable) as exc:
            return _refused(exc)
        return {"round": result.round_id, "question": result.question, "seconds": result.seconds,
                "columns": [{"method": c.method, "name": c.label, "text": c.text, "params": c.params,
                             "unavailable": c.reason, "readout": [list(t) for t in c.readout or ()]}
                            for c in result.columns]}

    @app.get("/api/ratings.csv")
    def ratings_csv():
        return FileResponse(studio.ratings_csv(), media_type="text/csv", filename="persona-studio-ratings.csv")

    return app


def create_app(studio: Studio) -> FastAPI:
    """One app: the JSON API, the blind page at /blind/ and the main page at /."""
    app = api(studio)
    app = gr.mount_gradio_app(app, blind_page(studio), path="/blind", ssr_mode=False, footer_links=[])
    return gr.mount_gradio_app(app, main_page(studio), path="", ssr_mode=False)
