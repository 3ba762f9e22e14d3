"""What the command-line faces share: ``key=value`` argument parsing, logging set-up and
loading a predictor for a run directory (PyTorch, or ONNX Runtime from ``nerkit.export``)."""
from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nerkit.data.encoding import Entity

T = TypeVar("T")


class TextPredictor(Protocol):
    """What the faces need of a predictor: ``nerkit.predict.Predictor`` (torch) and
    ``nerkit.onnx_predict.OnnxPredictor`` (no torch) both are one. Typed by this protocol, a face
    imports neither: torch is imported only for backend=torch."""

    precision: str

    @property
    def entity_types(self) -> list[str]: ...

    @property
    def head_name(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]: ...

    def predict_tokens(self, tokens: Sequence[Sequence[str]]) -> list[list[Entity]]: ...

    def scores(self, *batch: Any) -> Any:
        """One padded batch's window scores (the server wraps it to stop between batches)."""


Content = str | list[str]  # a document's text, or its tokens


def predict_contents(predictor: TextPredictor, contents: list[Content]) -> list[list[Entity]]:
    """Texts (``predict``) and token lists (``predict_tokens``), in input order."""
    out: list[list[Entity]] = [[] for _ in contents]
    texts = [i for i, content in enumerate(contents) if isinstance(content, str)]
    token_lists = [i for i, content in enumerate(contents) if not isinstance(content, str)]
    for indices, predict in ((texts, predictor.predict), (token_lists, predictor.predict_tokens)):
        if indices:
            for i, entities in zip(indices, predict([contents[i] for i in indices])):
                out[i] = entities
    return out



class Backend(str, Enum):
    torch = "torch"
    onnx = "onnx"


class PrecisionChoice(str, Enum):  # checked by OmegaConf: a typo is a "bad argument", not a traceback
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"  # the run's int8 encoder (torch) or graph (onnx), written by python -m nerkit.export ... precision=int8


def parse_args(schema: type[T], argv: list[str], usage: str) -> T:
    """``key=value`` arguments checked against a dataclass (types, unknown and missing keys)."""
    if {"-h", "--help"} & set(argv):
        print(usage)
        raise SystemExit(0)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_cli(argv))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise SystemExit(f"missing required argument(s): {', '.join(k + '=...' for k in missing)}\n\n{usage}")
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise SystemExit(f"bad argument: {err}\n\n{usage}") from None


def setup_logging() -> None:
    """nerkit's messages at INFO on stderr, other libraries' at WARNING."""
    logging.basicConfig(format="%(levelname)s %(message)s")
    for name in ("nerkit", "__main__"):  # a module run with -m logs as __main__
        logging.getLogger(name).setLevel(logging.INFO)
    # torchao (the int8 extra), which transformers imports whenever it is installed, warns at import
    # about each CUDA kernel a CPU build cannot load and each type it registers with torch's pytree.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def require_positive(cfg: Any, *names: str) -> None:
    """``bad argument`` for any of the integer options ``names`` below 1 (None means the default)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise SystemExit(f"bad argument: {name}={value}: must be at least 1")


def load_predictor(run_dir: str | Path, backend: Backend = Backend.torch, device: str | None = None,
                   batch_size: int = 64, threads: int | None = None, trust_remote_code: bool = False,
                   precision: str = "auto", compile: bool = False) -> TextPredictor:
    if Backend(backend) is Backend.onnx:
        from nerkit.onnx_predict import OnnxPredictor  # lazy: onnxruntime is an extra

        if trust_remote_code:
            raise ValueError("trust_remote_code=true works with backend=torch only")
        choice = PrecisionChoice(precision)
        if choice not in (PrecisionChoice.auto, PrecisionChoice.fp32, PrecisionChoice.int8):
            raise ValueError(f"precision={precision}: the ONNX backend runs an fp32 or int8 graph; use backend=torch")
        if compile:
            raise ValueError("compile=true works with backend=torch only (ONNX Runtime optimizes its graph itself)")
        return OnnxPredictor.from_run(run_dir, batch_size=batch_size, threads=threads,
                                      precision="int8" if choice is PrecisionChoice.int8 else "fp32")
    import torch

    from nerkit.predict import Predictor

    if threads:
        torch.set_num_threads(threads)
    return Predictor.from_run(run_dir, device, batch_size, trust_remote_code, PrecisionChoice(precision).value, compile)
