"""HTTP prediction service: ``python -m nerkit.serve run_dir=DIR [host=127.0.0.1] [port=8000]``.

``POST /predict`` with ``{"texts": ["...", ...]}`` returns ``{"entities": [[{"start", "end",
"label", "text", "score"}, ...], ...]}``, one list per text, offsets into that text.
``GET /health`` says the model is loaded, which entity types and limits it has, and whether
it is ``busy`` with a request (and for how long) or ``idle``.
``GET /`` is a demo page: a text box whose text comes back with its entities highlighted.

The model is loaded once at start-up from ``run_dir``; a request cannot name another (unknown
fields are rejected), and nothing in the run directory runs as code (``trust_remote_code=true``
lets its encoder run its own Python files, for a run directory you trust). Limits:
``max_bytes`` per request body (413), ``max_docs`` texts per request and ``max_chars``
characters per text (422, naming the offending text; an invalid request is never echoed
back). Requests are predicted one at a time (the model and tokenizer are shared), each as its
own batch, and each within ``request_timeout`` seconds, waiting included: a request still
waiting for the previous one then gets 503, one still predicting 504, and a request whose
client went away stops too, at its next batch.

``auth_token=...`` (or the environment variable NERKIT_AUTH_TOKEN, which keeps it out of the
process list) makes every path but ``/health`` and the demo page require ``Authorization: Bearer <token>`` (401).

Options: backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16 compile=false batch_size=64 threads=N
max_docs=64 max_chars=100000 max_bytes=4000000 request_timeout=60 auth_token=... trust_remote_code=false
log_level=info (precision and compile as in ``nerkit.predict``)
"""
# No `from __future__ import annotations`: FastAPI reads the request model from the annotations
# of endpoints defined inside create_app.
import asyncio
import hmac
import ipaddress
import logging
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Annotated, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from omegaconf import MISSING
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.responses import HTMLResponse, JSONResponse

from nerkit.cli import Backend, PrecisionChoice, load_predictor, parse_args, setup_logging
from nerkit.predict import Predictor

log = logging.getLogger(__name__)


@dataclass
class Limits:
    max_docs: int = 64  # texts per request
    max_chars: int = 100_000  # characters per text
    max_bytes: int = 4_000_000  # request body
    request_timeout: Optional[float] = 60.0  # seconds per request, waiting included (null: none)


@dataclass
class ServeConfig(Limits):
    run_dir: str = MISSING
    auth_token: Optional[str] = None  # default: $NERKIT_AUTH_TOKEN; none: no authentication
    trust_remote_code: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    backend: Backend = Backend.torch
    device: Optional[str] = None
    precision: PrecisionChoice = PrecisionChoice.auto  # torch backend
    compile: bool = False  # torch backend: torch.compile the encoder at load
    batch_size: int = 64
    threads: Optional[int] = None
    log_level: str = "info"


class EntityOut(BaseModel):
    start: int
    end: int
    label: str
    text: str
    score: float


class PredictResponse(BaseModel):
    entities: list[list[EntityOut]]


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request body over ``max_bytes``, whether announced in
    Content-Length or streamed in chunks, before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.reject(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.reject(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def reject(self, scope, receive, send):
        detail = f"request body is larger than the server's limit of {self.max_bytes} bytes (max_bytes)"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


OPEN_PATHS = ("/health", "/")  # what answers without the bearer token


class BearerAuth:
    """ASGI middleware: every path but /health and the demo page needs ``Authorization: Bearer <token>``
    (401 otherwise). The page holds no data: it sends the token, typed in, with its own requests."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            detail = "missing or wrong token: send the header 'Authorization: Bearer <token>'"
            response = JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


UNICODE_ERROR = "not valid Unicode: a text may not hold a lone surrogate (an unpaired \\ud800-\\udfff escape)"


class Cancelled(Exception):
    """The request being predicted was called off (client gone, deadline passed)."""


class Job:
    """The request being predicted: its start, and a flag that stops it before its next batch."""

    def __init__(self):
        self.started = time.monotonic()
        self.stop = threading.Event()


def stop_between_batches(predictor: Predictor) -> dict:
    """Make ``predictor`` check, before each batch of windows, whether the current job (the
    returned holder's "job") was called off, and raise ``Cancelled`` if so."""
    holder: dict = {"job": None}
    scores = predictor.scores

    def checked_scores(*tensors):
        job = holder["job"]
        if job is not None and job.stop.is_set():
            raise Cancelled
        return scores(*tensors)

    predictor.scores = checked_scores
    return holder


# The page runs only its own inline script and style and talks only to this server.
DEMO_PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


def demo_page() -> str:
    """The demo page (nerkit/static/demo.html) with the shared highlight style inlined."""
    static = resources.files("nerkit") / "static"
    css = (static / "highlight.css").read_text(encoding="utf-8")
    return (static / "demo.html").read_text(encoding="utf-8").replace("/*HIGHLIGHT_CSS*/", css, 1)


def create_app(predictor: Predictor, limits: Limits | None = None, info: dict | None = None,
               auth_token: str | None = None):
    """The FastAPI app around one loaded predictor; ``auth_token`` guards all but /health and the demo page."""
    limits = limits or Limits()
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    request_model = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        texts=(list[text], Field(min_length=1, max_length=limits.max_docs,
                                 description=f"1 to {limits.max_docs} texts of at most {limits.max_chars} characters")),
    )
    running = stop_between_batches(predictor)
    turn = asyncio.Lock()  # one request at a time: the model and tokenizer are shared
    waiting = 0
    app = FastAPI(title="nerkit", description="Named-entity recognition with a model fixed at start-up.")
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_bytes)
    if auth_token:
        app.add_middleware(BearerAuth, token=auth_token)  # added last: runs first, before the body is read

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input: a text of up to max_chars, or one that is not
        # valid Unicode (a lone surrogate), which cannot be encoded and turned the 422 into a 500.
        detail = [{"loc": list(e["loc"]), "type": e["type"],
                   "msg": UNICODE_ERROR if e["type"] == "string_unicode" else e["msg"]} for e in err.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    page = demo_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def demo() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DEMO_PAGE_POLICY})

    @app.get("/health")
    async def health() -> dict:
        job = running["job"]
        return {"status": "ok", "state": "busy" if job else "idle",
                "current_request_seconds": round(time.monotonic() - job.started, 3) if job else None,
                "waiting_requests": waiting, "entity_types": predictor.entity_types,
                "limits": asdict(limits), **(info or {})}

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: request_model, request: Request):
        nonlocal waiting
        timeout = limits.request_timeout
        deadline = time.monotonic() + timeout if timeout else math.inf
        waiting += 1
        try:
            await asyncio.wait_for(turn.acquire(), timeout=timeout)
        except TimeoutError:
            return JSONResponse({"detail": f"server busy: the requests before this one took longer than "
                                           f"request_timeout={timeout}s; retry later"},
                                status_code=503, headers={"Retry-After": str(math.ceil(timeout))})
        finally:
            waiting -= 1
        job = running["job"] = Job()
        try:
            if await request.is_disconnected():
                return JSONResponse({"detail": "client closed the request"}, status_code=499)
            # Predicted in a worker thread, so the event loop stays free to notice a client that
            # goes away and a deadline that passes; the job then stops at its next batch.
            work = asyncio.ensure_future(run_in_threadpool(predictor.predict, body.texts))
            while not work.done():
                await asyncio.wait({work}, timeout=0.05)
                if not job.stop.is_set() and (time.monotonic() > deadline or await request.is_disconnected()):
                    job.stop.set()
            try:
                entities = work.result()
            except Cancelled:
                if await request.is_disconnected():
                    log.info("client closed its request of %d texts; stopped after %.1fs",
                             len(body.texts), time.monotonic() - job.started)
                    return JSONResponse({"detail": "client closed the request"}, status_code=499)
                return JSONResponse({"detail": f"prediction did not finish within request_timeout={timeout}s; "
                                               "send fewer or shorter texts"}, status_code=504)
        finally:
            running["job"] = None
            turn.release()
        return PredictResponse(entities=[[EntityOut(**asdict(e)) for e in doc] for doc in entities])

    return app


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(ServeConfig, sys.argv[1:] if argv is None else argv, __doc__)
    token = cfg.auth_token or os.environ.get("NERKIT_AUTH_TOKEN") or None
    if token is None and not is_loopback(cfg.host):
        log.warning("serving on %s without a token: anyone who can reach it may use it; set NERKIT_AUTH_TOKEN "
                    "(or auth_token=...)", cfg.host)
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads,
                               cfg.trust_remote_code, cfg.precision, cfg.compile)
    limits = Limits(cfg.max_docs, cfg.max_chars, cfg.max_bytes, cfg.request_timeout)
    app = create_app(predictor, limits, {"backend": cfg.backend.value, "head": predictor.head_name,
                                         "precision": predictor.precision}, token)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
