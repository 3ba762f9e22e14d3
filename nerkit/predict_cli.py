"""Batch prediction over files of any size: ``python -m nerkit.predict_cli run_dir=DIR input=IN output=OUT``.

Input is UTF-8, one document per line: plain text, or JSON objects ``{"id": ..., "text": ...}``
or ``{"id": ..., "tokens": ["...", ...]}`` (already tokenized: the tokens are the words the model
labels; ``format=auto`` decides from the first non-blank line). Output is JSON Lines, one line
per document in input order: ``{"id": ..., "entities": [{"start", "end", "label", "text", "score"}]}``,
with offsets into that document's text (for tokens: into the tokens joined by single spaces,
and each entity also has ``token_start`` and ``token_end``, exclusive); a plain-text line's id
is its line number.

The input is read in chunks (``chunk_docs`` documents or ``chunk_chars`` characters, whichever
comes first), so memory stays constant however long the file. A bad line (invalid UTF-8 or
JSON, no string "text" nor a "tokens" list of non-empty strings without whitespace) is reported with its line number and skipped; the others go on, and
the exit status is 1 if any line was bad. Output is written to a temporary file renamed into
place at the end, so a crash never leaves a partial file under the output name. The output keeps
the permissions of the file it replaces (a new one follows the umask), and the temporary files of
this output that killed runs left behind are removed at the next run.

The input and output paths are checked before the model is loaded. Nothing in the run
directory runs as code; ``trust_remote_code=true`` lets its encoder run its own Python files
(from ``encoder/``), for a run directory you trust.

Options: format=auto|text|jsonl backend=torch|onnx device=cpu|cuda precision=auto|fp32|bf16|fp16|int8
compile=false batch_size=64 threads=N chunk_docs=1000 chunk_chars=1000000 progress=true trust_remote_code=false

``precision`` (torch backend): ``auto`` runs the model in bf16 (bf16 encoder weights, autocast)
where the hardware has bf16 units (CPUs with AVX-512 BF16 or AMX, recent GPUs), else fp32;
``fp16`` needs a GPU; ``int8`` (CPU) runs the int8 encoder written by ``python -m nerkit.export
run_dir=RUN format=torch precision=int8``, compiled at load. The ONNX backend runs the exported fp32 graph,
or with ``precision=int8`` the int8 graph written by ``python -m nerkit.export run_dir=RUN precision=int8``. ``compile=true``
(torch backend) compiles the encoder with ``torch.compile`` at load: tens of seconds once,
worth it for large inputs and servers (bench/README.md has the figures).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

from omegaconf import MISSING
from tqdm.auto import tqdm

from nerkit.cli import (Backend, Content, PrecisionChoice, TextPredictor, load_predictor, parse_args, predict_contents,
                        require_positive, setup_logging)
from nerkit.data.encoding import Entity
from nerkit.inference import check_token_lists
from nerkit.data.readers import RepeatedKeyError, unique_keys

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


def parse_line(raw: bytes, line_no: int, fmt: Format) -> tuple[str | int, Content]:
    """One input line -> (id, text or tokens); raises BadLine saying what is wrong."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise BadLine(f"not valid UTF-8 (byte {raw[err.start]:#04x}, the line's byte {err.start + 1})") from None
    if fmt is Format.text:
        return line_no, line
    try:
        obj = json.loads(line, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as err:
        raise BadLine(f"invalid JSON: {err.msg} at column {err.colno}") from None
    except RepeatedKeyError as err:
        raise BadLine(str(err)) from None
    if isinstance(obj, dict) and "text" in obj and "tokens" in obj:
        raise BadLine('give either a "text" or a "tokens" field, not both')
    if isinstance(obj, dict) and "tokens" in obj:
        try:
            [content] = check_token_lists([obj["tokens"]])
        except (TypeError, ValueError) as err:
            raise BadLine(str(err).replace("tokens[0]", '"tokens"', 1)) from None
    elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
        content = obj["text"]
    else:
        raise BadLine('expected a JSON object with a string "text" field or a "tokens" list of strings')
    doc_id = obj.get("id", line_no)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise BadLine(f'"id" must be a string or an integer, got {doc_id!r}')
    return doc_id, content


def read_chunks(path: Path, cfg: PredictConfig, stats: PredictStats) -> Iterator[list[tuple[str | int, Content]]]:
    """Documents of ``path`` in chunks of bounded size; bad lines are logged and counted."""
    fmt = cfg.format
    chunk: list[tuple[str | int, Content]] = []
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
            chars += len(doc[1]) if isinstance(doc[1], str) else sum(map(len, doc[1])) + len(doc[1])
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


PARTIAL = ".partial"


def partial_path(target: Path) -> Path:
    """The hidden file beside ``target`` that this process writes the output to, named by its PID."""
    return target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_partials(target: Path) -> None:
    """Remove the unfinished outputs for ``target`` that killed runs left beside it (their process
    is gone); name, and keep, those of a run still writing it."""
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*{PARTIAL}")):
        pid = path.name[len(target.name) + 2 : -len(PARTIAL)].split(".")[0]
        if pid.isdigit() and process_alive(int(pid)):
            log.warning("%s: process %s is writing this output too; its result or this run's will be lost", path, pid)
            continue
        path.unlink(missing_ok=True)
        log.warning("removed %s, the unfinished output of an earlier run that was stopped", path)


def entity_json(entity: Entity) -> dict:
    """An entity as an output record: token indices only for token input."""
    record = asdict(entity)
    if entity.token_start is None:
        del record["token_start"], record["token_end"]
    return record


def predict_file(predictor: TextPredictor, cfg: PredictConfig) -> PredictStats:
    """Stream ``cfg.input`` through ``predictor`` into ``cfg.output`` (atomically replaced)."""
    source, target = Path(cfg.input), Path(cfg.output)
    check_paths(source, target)
    remove_stale_partials(target)
    stats = PredictStats()
    tmp = partial_path(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for chunk in read_chunks(source, cfg, stats):
                for (doc_id, _), entities in zip(chunk, predict_contents(predictor, [content for _, content in chunk])):
                    record = {"id": doc_id, "entities": [entity_json(e) for e in entities]}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    stats.entities += len(entities)
                stats.documents += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():  # the replaced file's readers keep their access
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return stats


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(PredictConfig, sys.argv[1:] if argv is None else argv, __doc__)
    require_positive(cfg, "batch_size", "threads", "chunk_docs", "chunk_chars")
    check_paths(Path(cfg.input), Path(cfg.output))
    predictor = load_predictor(cfg.run_dir, cfg.backend, cfg.device, cfg.batch_size, cfg.threads,
                               cfg.trust_remote_code, cfg.precision, cfg.compile)
    stats = predict_file(predictor, cfg)
    log.info("%s: %d documents, %d entities; %d bad lines skipped, %d blank lines",
             cfg.output, stats.documents, stats.entities, stats.bad_lines, stats.blank_lines)
    return 1 if stats.bad_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
