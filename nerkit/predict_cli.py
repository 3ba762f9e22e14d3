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

The input and output paths are checked before the model is loaded. Nothing in the run
directory runs as code; ``trust_remote_code=true`` lets its encoder run its own Python files
(from ``encoder/``), for a run directory you trust.

Options: format=auto|text|jsonl backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16|int8
compile=false batch_size=64 threads=N chunk_docs=1000 chunk_chars=1000000 progress=true trust_remote_code=false

``precision`` (torch backend): ``auto`` runs the model in bf16 (bf16 encoder weights, autocast)
where the hardware has bf16 units (CPUs with AVX-512 BF16 or AMX, recent GPUs), else fp32;
``fp16`` needs a GPU. The ONNX backend runs the exported fp32 graph, or with ``precision=int8``
the int8 graph written by ``python -m nerkit.export run_dir=RUN precision=int8``. ``compile=true``
(torch backend) compiles the encoder with ``torch.compile`` at load: tens of seconds once,
worth it for large inputs and servers (bench/README.md has the figures).
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
from typing import TYPE_CHECKING, Iterator, Optional

from omegaconf import MISSING
from tqdm.auto import tqdm

from nerkit.cli import Backend, PrecisionChoice, load_predictor, parse_args, setup_logging

if TYPE_CHECKING:  # torch is imported only by backend=torch: backend=onnx runs without it
    from nerkit.predict import Predictor

log = logging.getLogger(__name__)


class Format(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"


@dataclass
class PredictConfig:
    run_dir: str = MISSING
    input: str = MISSING
    output: str = MISSING
    format: Format = Format.auto
    backend: Backend = Backend.torch
    device: Optional[str] = None  # default: cuda if available (torch backend)
    precision: PrecisionChoice = PrecisionChoice.auto  # torch backend
    compile: bool = False  # torch backend: torch.compile the encoder at load
    batch_size: int = 64
    threads: Optional[int] = None  # CPU threads for the model (default: the runtime's own choice)
    chunk_docs: int = 1000
    chunk_chars: int = 1_000_000
    progress: bool = True
    trust_remote_code: bool = False


@dataclass
class PredictStats:
    documents: int = 0
    entities: int = 0
    bad_lines: int = 0
    blank_lines: int = 0


class BadLine(ValueError):
    pass


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


def check_paths(source: Path, target: Path) -> None:
    """Fail before any work when the input is missing or the output cannot be written."""
    if not source.is_file():
        raise FileNotFoundError(f"{source}: input file not found")
    if target.is_dir():
        raise IsADirectoryError(f"output={target} is a directory; give a file name")
    if source.resolve() == target.resolve():
        raise ValueError(f"output={target} would overwrite the input")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target.parent):  # the output is written there, then renamed
            pass
    except OSError as err:
        raise OSError(f"output={target}: cannot write in {target.parent} ({err.strerror or err})") from None


def predict_file(predictor: Predictor, cfg: PredictConfig) -> PredictStats:
    """Stream ``cfg.input`` through ``predictor`` into ``cfg.output`` (atomically replaced)."""
    source, target = Path(cfg.input), Path(cfg.output)
    check_paths(source, target)
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
    check_paths(Path(cfg.input), Path(cfg.output))
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads,
                               cfg.trust_remote_code, cfg.precision, cfg.compile)
    stats = predict_file(predictor, cfg)
    log.info("%s: %d documents, %d entities; %d bad lines skipped, %d blank lines",
             cfg.output, stats.documents, stats.entities, stats.bad_lines, stats.blank_lines)
    return 1 if stats.bad_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
