"""HTTP prediction service: ``python -m nerkit.serve run_dir=DIR [host=127.0.0.1] [port=8000]``.

``POST /predict`` with ``{"texts": ["...", ...]}`` returns ``{"entities": [[{"start", "end",
"label", "text", "score"}, ...], ...]}``, one list per text, offsets into that text.
``GET /health`` says the model is loaded and which entity types and limits it has.

The model is loaded once at start-up from ``run_dir``; a request cannot name another (unknown
fields are rejected). Limits: ``max_bytes`` per request body (413), ``max_docs`` texts per
request and ``max_chars`` characters per text (422, naming the offending text). Requests are
predicted one at a time (the model and tokenizer are shared), each as its own batch.

Options: backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16 batch_size=64 threads=N
max_docs=64 max_chars=100000 max_bytes=4000000 log_level=info (precision as in ``nerkit.predict``)
"""
# No `from __future__ import annotations`: FastAPI reads the request model from the annotations
# of endpoints defined inside create_app.
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Annotated, Optional

import uvicorn
from fastapi import FastAPI
from omegaconf import MISSING
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.responses import JSONResponse

from nerkit.predict import Predictor
from nerkit.predict_cli import Backend, PrecisionChoice, load_predictor, parse_args


@dataclass
class Limits:
    max_docs: int = 64  # texts per request
    max_chars: int = 100_000  # characters per text
    max_bytes: int = 4_000_000  # request body


@dataclass
class ServeConfig(Limits):
    run_dir: str = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    backend: Backend = Backend.torch
    device: Optional[str] = None
    precision: PrecisionChoice = PrecisionChoice.auto  # torch backend
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


def create_app(predictor: Predictor, limits: Limits | None = None, info: dict | None = None):
    """The FastAPI app around one loaded predictor."""
    limits = limits or Limits()
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    request_model = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        texts=(list[text], Field(min_length=1, max_length=limits.max_docs,
                                 description=f"1 to {limits.max_docs} texts of at most {limits.max_chars} characters")),
    )
    lock = threading.Lock()
    app = FastAPI(title="nerkit", description="Named-entity recognition with a model fixed at start-up.")
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_bytes)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "entity_types": predictor.model.head.entity_types, "limits": asdict(limits),
                **(info or {})}

    # A plain `def`: FastAPI runs it in its thread pool, so the event loop stays free meanwhile.
    @app.post("/predict", response_model=PredictResponse)
    def predict(request: request_model) -> PredictResponse:
        with lock:
            entities = predictor.predict(request.texts)
        return PredictResponse(entities=[[EntityOut(**asdict(e)) for e in doc] for doc in entities])

    return app


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(ServeConfig, sys.argv[1:] if argv is None else argv, __doc__)
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads, cfg.precision)
    limits = Limits(cfg.max_docs, cfg.max_chars, cfg.max_bytes)
    app = create_app(predictor, limits, {"backend": cfg.backend.value, "head": type(predictor.model.head).__name__,
                                         "precision": predictor.precision})
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
