"""The web server: the Gradio pages and a small JSON API over the same Studio object, on one FastAPI app.

The API is what scripts and load tests use: POST /api/raters, GET /api/raters/{rater}, POST /api/blind/rounds
(mode "full" or "quick"), POST /api/blind/rounds/{round}/rating (full rounds), POST /api/blind/rounds/{round}/vote
(quick rounds), POST /api/compare, POST /api/compare/poles, GET /api/ratings.csv, GET /api/votes.csv.

Every refusal is a JSON body {"error": "..."} with one status: 422 bad input (the field named; never the input
echoed back), 401 an export without the admin token, 403 an unknown rater id, 409 a refused rating or vote, 413 a
body over the size limit, 429 over a rate limit and 503 a busy studio or database (both with Retry-After; nothing
was written: ask again)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Literal

import gradio as gr
from fastapi import Body, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from db import RatingRefused, StoreBusy
from steering.methods.dispatch import MethodUnavailable

from .core import LABELS, SLOT_NAMES, Studio, UnknownRater
from .limits import Busy, TooMany, client_address
from .ui import blind_page, main_page

Seed = Annotated[int, Field(ge=0, lt=2**31)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class RoundAsk(_Strict):
    rater: str
    trait: str
    pole: str
    question: str | None = None
    mode: Literal["full", "quick"] = "full"


class VoteIn(_Strict):
    rater: str
    outcome: Literal["a", "b", "tie", "bad"]


class PolesAsk(_Strict):
    question: str
    trait: str
    method: str
    strength: float | None = None
    seed: Seed = 0


class Score(_Strict):
    trait: StrictInt  # strict: true or "3" is refused, not coerced and stored
    fluency: StrictInt


class RatingIn(_Strict):
    rater: str
    scores: dict[int, Score]
    best: StrictInt


class CompareAsk(_Strict):
    question: str
    trait: str
    pole: str
    methods: list[str] = Field(default_factory=lambda: list(LABELS), max_length=len(LABELS))
    strength: float | None = None
    vector_strength: float | None = None
    seed: Seed = 0


def _error(message: str, status: int, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _refused(exc: Exception) -> JSONResponse:
    if isinstance(exc, (TooMany, Busy)):
        return _error(str(exc), 429 if isinstance(exc, TooMany) else 503, exc.retry_after)
    if isinstance(exc, (StoreBusy, MethodUnavailable)):
        return _error(str(exc), 503, 5)
    status = 403 if isinstance(exc, UnknownRater) else 409 if isinstance(exc, RatingRefused) else 422
    return _error(str(exc), status)


REFUSALS = (ValueError, StoreBusy, MethodUnavailable, TooMany, Busy)  # RatingRefused is a ValueError


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    """A 422 naming the first bad field in words. FastAPI's own body echoes the input, which fails to serialise when
    the input holds NaN or Infinity (a 500) and can be megabytes long. Gradio's routes keep FastAPI's own."""
    if not request.url.path.startswith("/api/"):
        return await request_validation_exception_handler(request, exc)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return _error(f"{where}: {first.get('msg', 'invalid')}", 422)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413 before anything parses it: by its Content-Length, or, for
    a body sent without one, as soon as the bytes received pass the limit."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI lets an HTTPException through its body parsing; the handler renders it
                raise HTTPException(413, f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _too_large(self, scope, receive, send) -> None:
        await _error(f"the request body is over {self.limit} bytes", 413)(scope, receive, send)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if not request.url.path.startswith("/api/") and exc.status_code != 413:
        return await http_exception_handler(request, exc)  # Gradio's routes keep FastAPI's own answers
    return _error(str(exc.detail), exc.status_code)


HANDLERS = {RequestValidationError: _invalid, HTTPException: _http_error}


def _csv(data: bytes, name: str) -> Response:
    return Response(data, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _reveal(revealed) -> dict:
    return {"revealed": [{"slot": r.slot, "label": SLOT_NAMES[r.slot], "method": r.method,
                          "name": LABELS.get(r.method, r.method), "params": r.params} for r in revealed]}


def _column(c) -> dict:
    return {"method": c.method, "name": c.label, "text": c.text, "raw_text": c.raw_text, "params": c.params,
            "unavailable": c.reason, "prompt": c.prompt, "readout": [list(t) for t in c.readout or ()]}


def _client(studio: Studio, request: Request) -> str:
    """The address the limits count for an API request."""
    return client_address(request.client.host if request.client else None, request.headers,
                          studio.limits.trust_proxy)


def _admin(studio: Studio, request: Request) -> bool:
    """Whether the request opens the exports: the admin token as Authorization: Bearer or ?token= (any request
    where the studio has no admin token)."""
    auth = request.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token")
    return studio.is_admin(token)


def _refusing(route: Callable) -> Callable:
    """A route whose refusals (REFUSALS) come back as the API's JSON errors (FastAPI reads the route's own
    signature through functools.wraps)."""
    @functools.wraps(route)
    def answer(*args, **kwargs):
        try:
            return route(*args, **kwargs)
        except REFUSALS as exc:
            return _refused(exc)

    return answer


def _rater_routes(app: FastAPI, studio: Studio) -> None:
    """New rater ids and a rater's count of rated rounds."""
    @app.post("/api/raters")
    @_refusing
    def new_rater(request: Request):
        return {"rater": studio.new_rater(_client(studio, request))}

    @app.get("/api/raters/{rater}")
    @_refusing
    def rater(rater: str):
        return {"rated_rounds": studio.rated_rounds(studio.check_rater(rater))}


def _blind_routes(app: FastAPI, studio: Studio) -> None:
    """Blind rounds: a new round (full or quick), a quick round's vote, a full round's rating."""
    @app.post("/api/blind/rounds")
    @_refusing
    def blind_round(ask: RoundAsk):
        r = studio.blind_round(ask.rater, ask.trait, ask.pole, ask.question, mode=ask.mode)
        return {"round": r.round_id, "question": r.question, "target": r.target, "custom": r.custom, "mode": r.mode,
                "answers": [{"slot": s.slot, "label": SLOT_NAMES[s.slot], "text": s.text} for s in r.slots]}

    @app.post("/api/blind/rounds/{round_id}/vote")
    @_refusing
    def vote(round_id: str, ask: VoteIn = Body(...)):
        return _reveal(studio.vote(round_id, studio.check_rater(ask.rater), ask.outcome))

    @app.post("/api/blind/rounds/{round_id}/rating")
    @_refusing
    def rate(round_id: str, rating: RatingIn = Body(...)):
        return _reveal(studio.rate(round_id, studio.check_rater(rating.rater),
                                   {k: (v.trait, v.fluency) for k, v in rating.scores.items()}, rating.best))


def _compare_routes(app: FastAPI, studio: Studio) -> None:
    """Compare runs: every chosen method on one pole, or one method on both poles."""
    @app.post("/api/compare")
    @_refusing
    def compare(ask: CompareAsk, request: Request):
        result = studio.compare(ask.question, ask.trait, ask.pole, ask.methods, ask.strength, ask.seed,
                                vector_strength=ask.vector_strength, client=_client(studio, request))
        return {"round": result.round_id, "question": result.question, "seconds": result.seconds,
                "columns": [_column(c) for c in result.columns]}

    @app.post("/api/compare/poles")
    @_refusing
    def compare_poles(ask: PolesAsk, request: Request):
        result = studio.compare_poles(ask.question, ask.trait, ask.method, ask.strength, ask.seed,
                                      client=_client(studio, request))
        return {"question": result.question, "seconds": result.seconds,
                "columns": [{"pole": pole, **_column(c)} for pole, c in zip(("high", "low"), result.columns)]}


def _export_routes(app: FastAPI, studio: Studio) -> None:
    """The CSV exports, behind the admin token."""
    def export(request: Request, what: str) -> Response:
        if not _admin(studio, request):
            return _error("the exports need the admin token (Authorization: Bearer <token>)", 401)
        try:
            return _csv(studio.export_csv(what), f"persona-studio-{what}.csv")
        except StoreBusy as exc:
            return _refused(exc)

    @app.get("/api/ratings.csv")
    def ratings_csv(request: Request):
        return export(request, "ratings")

    @app.get("/api/votes.csv")
    def votes_csv(request: Request):
        return export(request, "votes")


ROUTES = (_rater_routes, _blind_routes, _compare_routes, _export_routes)


def api(studio: Studio) -> FastAPI:
    """The JSON API over `studio` (the routes in the module docstring), with its error handlers."""
    app = FastAPI(title="Persona Studio API", exception_handlers=HANDLERS)
    for add_routes in ROUTES:  # on the app itself, not an included router: `launch` takes the /api/ routes from
        add_routes(app, studio)  # app.routes by path, and FastAPI keeps an included router's routes out of it
    return app


def theme() -> gr.themes.Base:
    """Gradio's default look on the system's own fonts: nothing is fetched from a font service (a Space or a lab
    machine may have no route to it), and headings do not mix a web font's glyphs with fallback ones."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


QUEUE_SIZE = 16  # events waiting in each page's Gradio queue; past it Gradio answers "queue full" at once


def _pages(studio: Studio) -> tuple[gr.Blocks, gr.Blocks]:
    blind, main = blind_page(studio), main_page(studio)
    for page in (blind, main):  # one event of each kind at a time (the model runs one batch at a time anyway)
        page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return blind, main


def create_app(studio: Studio) -> FastAPI:
    """One FastAPI app: the JSON API, the blind page at /blind/ and the main page at /, behind the body size limit
    (for uvicorn, the tests, and anyone embedding the studio in a FastAPI app of their own; `launch` serves the same
    through Gradio's own path)."""
    app = api(studio)
    blind, main = _pages(studio)
    app = gr.mount_gradio_app(app, blind, path="/blind", ssr_mode=False, footer_links=[], theme=theme())
    app = gr.mount_gradio_app(app, main, path="", ssr_mode=False, theme=theme())
    app.add_middleware(BodyLimit, limit=studio.limits.max_body_bytes)
    return app


def launch(studio: Studio, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Serve the studio through Gradio's own path, `Blocks.launch` on the main page (its server and queue, and what
    a Space's ZeroGPU support hooks into), with the JSON API routes, the blind page's mount, the body size limit and
    the API's error handlers built into the app Gradio creates. Returns the main page (`.close()` stops it)."""
    from starlette.middleware import Middleware

    blind, main = _pages(studio)
    holder = FastAPI()  # mount_gradio_app wires the blind page's start-up into its holder's lifespan: reuse both
    gr.mount_gradio_app(holder, blind, path="/blind", ssr_mode=False, footer_links=[], theme=theme())
    routes = [r for r in api(studio).routes if getattr(r, "path", "").startswith("/api/")]
    main.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False, theme=theme(),
                quiet=True, show_error=False,
                app_kwargs={"routes": [*routes, holder.routes[-1]], "lifespan": holder.router.lifespan_context,
                            "middleware": [Middleware(BodyLimit, limit=studio.limits.max_body_bytes)],
                            "exception_handlers": dict(HANDLERS)})
    return main
