"""Batch prediction over files of any size: ``python -m nerkit.predict run_dir=DIR input=IN output=OUT``.

Input is UTF-8, one document per line: plain text, or JSON objects ``{"id": ..., "text": ...}``
(``format=auto`` decides from the first non-blank line). Output is JSON Lines, one line per
document in input order: ``{"id": ..., "entities": [{"start", "end", "label", "text", "score"}]}``,
with offsets into that document's text; a plain-text line's id is its line number.

The input is read in chunks (``chunk_docs`` documents or ``chunk_chars`` characters, whichever
comes first), so memory stays constant however long the file. A bad line (invalid UTF-8 or
JSON, no string "text") is reported with its line number and skipped; the others go on, and
the exit status is 1 if any line was bad. Output is written to a temporary file renamed into
place at the end, so a crash never leaves a partial file under the output name.

Options: format=auto|text|jsonl backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16
batch_size=64 threads=N chunk_docs=1000 chunk_chars=1000000 progress=true

``precision`` (torch backend): ``auto`` runs the model under bf16 autocast where the hardware has
bf16 units (CPUs with AVX-512 BF16 or AMX, recent GPUs), else fp32; ``fp16`` needs a GPU. The
ONNX backend always runs the exported fp32 graph.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional, TypeVar

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from nerkit.predict import Predictor

log = logging.getLogger(__name__)
T = TypeVar("T")


class Format(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"


class Backend(str, Enum):
    torch = "torch"
    onnx = "onnx"


class PrecisionChoice(str, Enum):  # checked by OmegaConf: a typo is a "bad argument", not a traceback
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class PredictConfig:
    run_dir: str = MISSING
    input: str = MISSING
    output: str = MISSING
    format: Format = Format.auto
    backend: Backend = Backend.torch
    device: Optional[str] = None  # default: cuda if available (torch backend)
    precision: PrecisionChoice = PrecisionChoice.auto  # torch backend
    batch_size: int = 64
    threads: Optional[int] = None  # CPU threads for the model (default: the runtime's own choice)
    chunk_docs: int = 1000
    chunk_chars: int = 1_000_000
    progress: bool = True


@dataclass
class PredictStats:
    documents: int = 0
    entities: int = 0
    bad_lines: int = 0
    blank_lines: int = 0


class BadLine(ValueError):
    pass


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


def load_predictor(run_dir: str | Path, backend: Backend = Backend.torch, device: str | None = None,
                   batch_size: int = 64, threads: int | None = None, precision: str = "auto") -> Predictor:
    if Backend(backend) is Backend.onnx:
        from nerkit.export import OnnxPredictor

        if PrecisionChoice(precision) not in (PrecisionChoice.auto, PrecisionChoice.fp32):
            raise ValueError(f"precision={precision}: the ONNX backend runs the exported fp32 graph; use backend=torch")
        return OnnxPredictor.from_run(run_dir, batch_size=batch_size, threads=threads)
    if threads:
        torch.set_num_threads(threads)
    return Predictor.from_run(run_dir, device, batch_size, precision=PrecisionChoice(precision).value)


def parse_line(raw: bytes, line_no: int, fmt: Format) -> tuple[str | int, str]:
    """One input line -> (id, text); raises BadLine saying what is wrong."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise BadLine(f"not valid UTF-8 (byte {raw[err.start]:#04x}, the line's byte {err.start + 1})") from None
    if fmt is Format.text:
        return line_no, line
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadLine(f"invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise BadLine('expected a JSON object with a string "text" field')
    doc_id = obj.get("id", line_no)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise BadLine(f'"id" must be a string or an integer, got {doc_id!r}')
    return doc_id, obj["text"]


def read_chunks(path: Path, cfg: PredictConfig, stats: PredictStats) -> Iterator[list[tuple[str | int, str]]]:
    """Documents of ``path`` in chunks of bounded size; bad lines are logged and counted."""
    fmt = cfg.format
    chunk: list[tuple[str | int, str]] = []
    chars = 0
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="predict",
                                     disable=not cfg.progress, dynamic_ncols=True) as progress:
        for line_no, raw in enumerate(f, start=1):
            progress.update(len(raw))
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark is not part of the first document
            if not raw.strip():
                stats.blank_lines += 1
                continue
            if fmt is Format.auto:
                fmt = Format.jsonl if raw.lstrip().startswith(b"{") else Format.text
                log.info("%s: reading %s lines", path, fmt.value)
            try:
                doc = parse_line(raw, line_no, fmt)
            except BadLine as err:
                stats.bad_lines += 1
                log.error("%s:%d: %s", path, line_no, err)
                continue
            chunk.append(doc)
            chars += len(doc[1])
            if len(chunk) >= cfg.chunk_docs or chars >= cfg.chunk_chars:
                yield chunk
                progress.set_postfix(docs=stats.documents, bad=stats.bad_lines)
                chunk, chars = [], 0
    if chunk:
        yield chunk


def predict_file(predictor: Predictor, cfg: PredictConfig) -> PredictStats:
    """Stream ``cfg.input`` through ``predictor`` into ``cfg.output`` (atomically replaced)."""
    source, target = Path(cfg.input), Path(cfg.output)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: input file not found")
    if source.resolve() == target.resolve():
        raise ValueError(f"{target}: output would overwrite the input")
    target.parent.mkdir(parents=True, exist_ok=True)
    stats = PredictStats()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for chunk in read_chunks(source, cfg, stats):
                for (doc_id, _), entities in zip(chunk, predictor.predict([text for _, text in chunk])):
                    record = {"id": doc_id, "entities": [asdict(e) for e in entities]}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    stats.entities += len(entities)
                stats.documents += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stats


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(PredictConfig, sys.argv[1:] if argv is None else argv, __doc__)
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads, cfg.precision)
    stats = predict_file(predictor, cfg)
    log.info("%s: %d documents, %d entities; %d bad lines skipped, %d blank lines",
             cfg.output, stats.documents, stats.entities, stats.bad_lines, stats.blank_lines)
    return 1 if stats.bad_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
