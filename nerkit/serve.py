"""HTTP prediction service: ``python -m nerkit.serve run_dir=DIR [host=127.0.0.1] [port=8000]``.

``POST /predict`` with ``{"texts": ["...", ...]}`` (or ``{"tokens": [["...", ...], ...]}``: already
tokenized documents, predicted on their tokens) returns ``{"entities": [[{"start", "end",
"label", "text", "score"}, ...], ...]}``, one list per text, offsets into that text (for tokens:
into the tokens joined by single spaces, and each entity has ``token_start``/``token_end`` too).
``GET /health`` says the model is loaded, which entity types and limits it has, and whether
it is ``busy`` (how long the current batch has run, for how many requests) or ``idle``, and how
many requests wait.
``GET /`` is a demo page: a text box whose text comes back with its entities highlighted.

The model is loaded once at start-up from ``run_dir``; a request cannot name another (unknown
fields are rejected), and nothing in the run directory runs as code (``trust_remote_code=true``
lets its encoder run its own Python files, for a run directory you trust). Limits:
``max_bytes`` per request body (413), ``max_docs`` texts per request and ``max_chars``
characters per text (422, naming the offending text; an invalid request is never echoed
back).

Concurrent requests are predicted together: they queue, and each round takes the waiting
requests, oldest first, up to ``round_chars`` characters (at least one request), and runs the
predictor once over all their texts in a worker thread, so that their windows share token-budget
batches; each request gets back its own texts' entities, the same as ``Predictor.predict`` on
them alone. After a round, the next waits up to ``batch_wait`` seconds for as many requests as
the last had, so that clients which send again as soon as they are answered keep sharing rounds (a
lone client does not wait: its last round had one request; nor does a request to an idle server).
Each request has ``request_timeout`` seconds from its arrival, reading its body and waiting
included: a request still queued then gets 503, one being predicted 504. A request
whose client went away or whose time ran out leaves the queue (its texts never reach the model)
or, once its round has started, has its result discarded, the others' unaffected; a round whose
requests are all gone stops at its next batch. A connection must send a request's
head, and then its body, within ``read_timeout`` seconds (else it is closed, or answered 408).

``auth_token=...`` (or the environment variable NERKIT_AUTH_TOKEN, which keeps it out of the
process list) makes every path but ``/health`` and the demo page require ``Authorization: Bearer <token>``
(401; the scheme name in any case).

Options: backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16|int8 compile=false batch_size=64 threads=N
max_docs=64 max_chars=100000 max_bytes=4000000 request_timeout=60 read_timeout=30 round_chars=100000 batch_wait=0.1
auth_token=... trust_remote_code=false log_level=info (precision and compile as in ``nerkit.predict``)
"""
# No `from __future__ import annotations`: FastAPI reads the request model from the annotations
# of endpoints defined inside create_app.
import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Annotated, Optional

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from omegaconf import MISSING
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, create_model, model_validator
from starlette.responses import HTMLResponse, JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from nerkit.cli import (Backend, Content, PrecisionChoice, TextPredictor, load_predictor, parse_args, predict_contents,
                        require_positive, setup_logging)
from nerkit.data.encoding import Entity

log = logging.getLogger(__name__)


@dataclass
class Limits:
    max_docs: int = 64  # texts per request
    max_chars: int = 100_000  # characters per text
    max_bytes: int = 4_000_000  # request body
    request_timeout: Optional[float] = 60.0  # seconds from a request's arrival, body and queue included
    read_timeout: Optional[float] = 30.0  # seconds to receive a request's head, and then its body (null: none)


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
    round_chars: int = 100_000  # characters of queued texts predicted together (at least one request)
    batch_wait: float = 0.1  # seconds a round may wait for as many requests as the previous round had
    threads: Optional[int] = None
    log_level: str = "info"


class EntityOut(BaseModel):
    start: int
    end: int
    label: str
    text: str
    score: float
    token_start: Optional[int] = None  # token input only: token indices, end exclusive
    token_end: Optional[int] = None


class PredictResponse(BaseModel):
    entities: list[list[EntityOut]]


ENTITIES_JSON = TypeAdapter(list[list[Entity]])  # an EntityOut's fields are an Entity's


ARRIVED = "nerkit.arrived"  # the request's arrival time (time.monotonic()), in the ASGI scope's state


class ReadBody:
    """ASGI middleware: read the whole request body before anything parses it. It answers 413 to a
    body over ``max_bytes`` (announced in Content-Length or streamed in chunks), and 408 to one that
    has not fully arrived ``timeout`` seconds after the request did (a Content-Length larger than
    what is sent would otherwise hold the request open)."""

    def __init__(self, app, max_bytes: int, timeout: float | None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})[ARRIVED] = time.monotonic()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.reject(scope, receive, send)
        chunks: list[bytes] = []

        async def read() -> bool:
            """The body into ``chunks``; False when the client went away or it is over the limit."""
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":  # client went away
                    return False
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_bytes:
                    await self.reject(scope, receive, send)
                    return False
                if not message.get("more_body"):
                    return True

        try:
            if not await asyncio.wait_for(read(), self.timeout):
                return
        except asyncio.TimeoutError:
            received = sum(map(len, chunks))
            announced = f" of the {int(declared)} announced" if declared is not None and declared.isdigit() else ""
            detail = (f"the request body did not arrive within {self.timeout:g}s (read_timeout, request_timeout): "
                      f"{received} bytes{announced} arrived")
            return await JSONResponse({"detail": detail}, status_code=408, headers={"Connection": "close"})(
                scope, receive, send)
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


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 connection, closed when a request's head has not fully arrived ``read_timeout``
    seconds after the connection opened or its previous response ended. uvicorn's own keep-alive
    timeout restarts at every byte, so a client sending its head a byte at a time (slowloris) would
    hold the connection for ever."""

    def __init__(self, *args, read_timeout: float | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.wait_for_head()

    def handle_events(self) -> None:
        super().handle_events()
        if self.head_timer is not None and self.conn.their_state is not h11.IDLE:  # a head arrived
            self.head_timer.cancel()
            self.head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:  # kept alive: the next head
            self.wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def wait_for_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = None
        if self.read_timeout:
            self.head_timer = self.loop.call_later(self.read_timeout, self.close_without_head)

    def close_without_head(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection whose request head did not arrive within read_timeout=%gs", self.read_timeout)
            self.transport.close()


def http_protocol(read_timeout: float | None):
    """uvicorn's ``http=`` argument: its h11 protocol with a time limit on request heads."""
    return functools.partial(HeadTimeoutH11, read_timeout=read_timeout)


OPEN_PATHS = ("/health", "/")  # what answers without the bearer token


class BearerAuth:
    """ASGI middleware: every path but /health and the demo page needs ``Authorization: Bearer <token>``
    (401 otherwise; the scheme name is case-insensitive, as HTTP's are). The page holds no data: it
    sends the token, typed in, with its own requests."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        scheme, _, credentials = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        # Both checks always run: the time taken says nothing about which part was wrong.
        if not (hmac.compare_digest(credentials.lstrip(b" "), self.expected) & (scheme.lower() == b"bearer")):
            detail = "missing or wrong token: send the header 'Authorization: Bearer <token>'"
            response = JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


UNICODE_ERROR = "not valid Unicode: a text may not hold a lone surrogate (an unpaired \\ud800-\\udfff escape)"


class Cancelled(Exception):
    """Every request of the round being predicted was called off (clients gone, deadlines passed)."""


class Job:
    """One request's documents (texts or token lists) on their way through the queue; the round
    that predicts them sets ``result``."""

    def __init__(self, contents: list[Content]):
        self.contents = contents
        self.chars = sum(len(c) if isinstance(c, str) else sum(map(len, c)) + len(c) for c in contents)
        self.result: asyncio.Future = asyncio.get_running_loop().create_future()
        self.stop = threading.Event()  # set by the request, read by the worker thread between batches
        self.started: float | None = None  # when its round began


class Batcher:
    """Predicts queued requests together: one round at a time takes the waiting requests, oldest
    first, up to ``round_chars`` characters (at least one request), and runs ``predictor.predict``
    over all their texts in a worker thread, which sorts their windows by length and packs them
    into token-budget batches. Each request's result is its own slice of the round's.

    After a round, it waits up to ``batch_wait`` seconds for as many requests as that round
    answered: clients that wait for their answer before sending again come back together,
    and without the wait the first few back would make a small round of their own, splitting the
    clients into cohorts that never share a batch again."""

    def __init__(self, predictor: TextPredictor, round_chars: int, batch_wait: float = 0.1):
        self.predictor = predictor
        self.round_chars = round_chars
        self.batch_wait = batch_wait
        self.queue: deque[Job] = deque()
        self.current: list[Job] = []  # the round being predicted
        self.round_started = 0.0
        self.task: asyncio.Task | None = None
        self.wakeup: asyncio.Event | None = None
        scores = predictor.scores

        def scores_unless_abandoned(*batch):
            if self.current and all(job.stop.is_set() for job in self.current):
                raise Cancelled
            return scores(*batch)

        predictor.scores = scores_unless_abandoned

    def submit(self, contents: list[Content]) -> Job:
        """Queue a request (starting the rounds in this event loop if they are not running)."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.wakeup = asyncio.Event()
            self.task = loop.create_task(self.run())
        job = Job(contents)
        self.queue.append(job)
        self.wakeup.set()
        return job

    def waiting(self) -> list[Job]:
        return [job for job in self.queue if not job.stop.is_set()]

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while jobs := self.next_round():
                await self.predict(jobs)
                await self.gather(len(jobs))  # its clients may be about to send again

    async def gather(self, expected: int) -> None:
        """Wait until ``expected`` requests (or ``round_chars`` characters) wait, at most ``batch_wait`` seconds."""
        deadline = time.monotonic() + self.batch_wait
        while (len(waiting := self.waiting()) < expected and sum(job.chars for job in waiting) < self.round_chars
               and (left := deadline - time.monotonic()) > 0):
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), left)

    def next_round(self) -> list[Job]:
        jobs, chars = [], 0
        while self.queue and (not jobs or chars + self.queue[0].chars <= self.round_chars):
            job = self.queue.popleft()
            if not job.stop.is_set():  # a request called off while it waited is dropped
                jobs.append(job)
                chars += job.chars
        return jobs

    async def predict(self, jobs: list[Job]) -> None:
        self.current, self.round_started = jobs, time.monotonic()
        for job in jobs:
            job.started = self.round_started
        try:
            entities = await run_in_threadpool(predict_contents, self.predictor, [c for job in jobs for c in job.contents])
        except Cancelled:
            return  # every request of the round has already answered
        except Exception as err:
            if len(jobs) > 1:  # one request's texts may be the cause: the others are not failed with it
                for job in jobs:
                    if not job.stop.is_set():
                        await self.predict([job])
                return
            settle(jobs[0].result, exception=err)
            return
        finally:
            self.current = []
        offset = 0
        for job in jobs:
            settle(job.result, entities[offset : offset + len(job.contents)])
            offset += len(job.contents)


def settle(result: asyncio.Future, value: list[list[Entity]] | None = None, exception: Exception | None = None) -> None:
    """Give a request its result, unless it has already answered (client gone, deadline passed)."""
    if result.done():
        return
    if exception is not None:
        result.set_exception(exception)
    else:
        result.set_result(value)


async def client_gone(receive) -> None:
    """Returns when the client closes the connection (the request's body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# The page runs only its own inline script and style and talks only to this server.
DEMO_PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


def demo_page() -> str:
    """The demo page (nerkit/static/demo.html) with the shared highlight style inlined."""
    static = resources.files("nerkit") / "static"
    css = (static / "highlight.css").read_text(encoding="utf-8")
    return (static / "demo.html").read_text(encoding="utf-8").replace("/*HIGHLIGHT_CSS*/", css, 1)


def create_app(predictor: TextPredictor, limits: Limits | None = None, info: dict | None = None,
               auth_token: str | None = None, round_chars: int = 100_000, batch_wait: float = 0.1):
    """The FastAPI app around one loaded predictor; ``auth_token`` guards all but /health and the demo page."""
    limits = limits or Limits()
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    # A token is one or more characters without whitespace (offsets are into the space-joined tokens).
    token = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars, pattern=r"^\S+$")]

    def one_kind_within_limits(body):
        if (body.texts is None) == (body.tokens is None):
            raise ValueError('give either "texts" (strings) or "tokens" (lists of token strings), not both')
        for i, doc in enumerate(body.tokens or []):
            if len(" ".join(doc)) > limits.max_chars:
                raise ValueError(f"tokens[{i}] joined by spaces is longer than max_chars={limits.max_chars}")
        return body

    request_model = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __validators__={"one_kind_within_limits": model_validator(mode="after")(one_kind_within_limits)},
        texts=(Optional[list[text]], Field(None, min_length=1, max_length=limits.max_docs, description=(
            f"1 to {limits.max_docs} texts of at most {limits.max_chars} characters"))),
        tokens=(Optional[list[list[token]]], Field(None, min_length=1, max_length=limits.max_docs, description=(
            f"or 1 to {limits.max_docs} already tokenized documents: lists of tokens without whitespace"))),
    )
    batcher = Batcher(predictor, round_chars, batch_wait)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if batcher.task is not None:
            batcher.task.cancel()

    app = FastAPI(title="nerkit", description="Named-entity recognition with a model fixed at start-up.",
                  lifespan=lifespan)
    read_limits = [t for t in (limits.read_timeout, limits.request_timeout) if t]
    app.add_middleware(ReadBody, max_bytes=limits.max_bytes, timeout=min(read_limits, default=None))
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
        current, waiting = [job for job in batcher.current if not job.stop.is_set()], batcher.waiting()
        busy_for = round(time.monotonic() - batcher.round_started, 3) if batcher.current else None
        return {"status": "ok", "state": "busy" if batcher.current else "idle", "current_batch_seconds": busy_for,
                "current_batch_requests": len(current), "waiting_requests": len(waiting),
                "waiting_texts": sum(len(job.contents) for job in waiting), "entity_types": predictor.entity_types,
                "limits": asdict(limits), **(info or {})}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(body: request_model, request: Request):
        timeout = limits.request_timeout
        arrived = request.scope["state"][ARRIVED]
        contents = body.texts if body.texts is not None else body.tokens
        job = batcher.submit(contents)
        # The event loop waits for the result, the client leaving or the deadline, whichever comes first.
        gone = asyncio.ensure_future(client_gone(request.receive))
        try:
            remaining = max(0.0, arrived + timeout - time.monotonic()) if timeout else None
            done, _ = await asyncio.wait({job.result, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if job.result.done():
            # PredictResponse's JSON, written by pydantic's serializer straight from the entities
            # (FastAPI would first validate the response field by field)
            return Response(b'{"entities":' + ENTITIES_JSON.dump_json(job.result.result(), exclude_none=True) + b"}",
                            media_type="application/json")
        job.stop.set()
        if gone in done:
            log.info("client closed its request of %d texts after %.1fs; its result is discarded",
                     len(contents), time.monotonic() - arrived)
            return JSONResponse({"detail": "client closed the request"}, status_code=499)
        if job.started is None:
            return JSONResponse({"detail": f"server busy: the requests before this one took longer than "
                                           f"request_timeout={timeout}s; retry later"},
                                status_code=503, headers={"Retry-After": str(math.ceil(timeout))})
        return JSONResponse({"detail": f"prediction did not finish within request_timeout={timeout}s; "
                                       "send fewer or shorter texts"}, status_code=504)

    return app


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def build_app(cfg: ServeConfig):
    """Load the predictor ``cfg`` names and wrap it in the app (torch is imported for backend=torch only)."""
    require_positive(cfg, "max_docs", "max_chars", "max_bytes", "batch_size", "round_chars", "threads")
    if not cfg.batch_wait >= 0:  # NaN too
        raise SystemExit(f"bad argument: batch_wait={cfg.batch_wait}: must be 0 (no wait) or more seconds")
    token = cfg.auth_token or os.environ.get("NERKIT_AUTH_TOKEN") or None
    if token is None and not is_loopback(cfg.host):
        log.warning("serving on %s without a token: anyone who can reach it may use it; set NERKIT_AUTH_TOKEN "
                    "(or auth_token=...)", cfg.host)
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads,
                               cfg.trust_remote_code, cfg.precision, cfg.compile)
    limits = Limits(cfg.max_docs, cfg.max_chars, cfg.max_bytes, cfg.request_timeout, cfg.read_timeout)
    return create_app(predictor, limits, {"backend": cfg.backend.value, "head": predictor.head_name,
                                          "precision": predictor.precision}, token, cfg.round_chars, cfg.batch_wait)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(ServeConfig, sys.argv[1:] if argv is None else argv, __doc__)
    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                http=http_protocol(cfg.read_timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
