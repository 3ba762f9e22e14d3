"""Readers: files on disk -> ``Document`` objects with character-level entity spans.

Each reader validates as it goes and raises ``DataError`` naming the file, the line and the
problem; recoverable oddities (empty sentences, I- without B-) are counted and logged, never
dropped silently.
"""
from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from nerkit.data.schemes import Span, TagError, get_scheme, label_problem

log = logging.getLogger(__name__)

# Line breaks of text files. str.splitlines also breaks at U+2028, U+0085, \f, \v and \x1c-\x1e,
# which may sit inside a token or a JSON string; a line ends only at \n, \r\n or \r.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
# CoNLL columns are separated by spaces or tabs; other whitespace belongs to the token.
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


class DataError(ValueError):
    """Bad input data; the message names file, line and problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass
class Document:
    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    label: str | None = None  # document class, for classification tasks
    # The dataset's own tokens as character spans [start, end) into `text`, in order, when the
    # data comes tokenized (CoNLL columns, HF `tokens`): the model labels and is scored on these
    # units, as conlleval and HF run_ner do. None for raw text and character-span data, which
    # use the tokenizer's pre-tokenizer words.
    tokens: list[tuple[int, int]] | None = None


@dataclass
class ReadStats:
    """What a reader skipped or repaired, so the caller can report it."""

    empty_sentences: int = 0
    empty_documents: int = 0
    repaired_tags: int = 0

    def log(self, path: str | Path) -> None:
        for name, count in vars(self).items():
            if count:
                log.warning("%s: %d %s", path, count, name.replace("_", " "))


def _not_found(path: Path) -> DataError:
    """A missing data file; a relative path says which directory it was looked for in. A
    directory given as a file says so."""
    if path.is_dir():
        return DataError(path, None, "is a directory, not a data file; name a file in it")
    where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
    return DataError(path, None, "file not found" + where)


def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise _not_found(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is not part of the data
    except UnicodeDecodeError as err:
        line = len(_LINE_BREAK_BYTES.split(raw[: err.start]))
        raise DataError(path, line, f"not valid UTF-8 (byte {raw[err.start]:#04x}); convert the file to UTF-8") from None
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines[-1] == "" else lines  # a final line break ends the last line


def limitable(reader: Callable[..., list[Document]]) -> Callable[..., list[Document]]:
    """Give a reader a ``limit`` argument: keep only the first ``limit`` documents, for quick
    experiments on a CPU budget (``+data.train.limit=2000``). The cut is logged."""

    @functools.wraps(reader)
    def read(*args, limit: int | None = None, **kwargs) -> list[Document]:
        docs = reader(*args, **kwargs)
        if limit is None:
            return docs
        if limit < 1:
            raise ValueError(f"limit must be a positive number of documents, got {limit}")
        if limit < len(docs):
            source = args[0] if args else kwargs.get("path", reader.__name__)
            log.info("%s: keeping the first %d of %d documents (limit=%d)", source, limit, len(docs), limit)
        return docs[:limit]

    return read


@limitable
def read_conll(
    path: str | Path,
    scheme: str = "BIO",
    tag_column: int = -1,
    documents: bool = False,
    token_separator: str = " ",
) -> list[Document]:
    """Read a CoNLL-style column file: one token per line, blank lines between sentences.

    ``-DOCSTART-`` lines separate documents. With ``documents=False`` every sentence is a
    Document (tokens joined by spaces); with ``documents=True`` each ``-DOCSTART-`` document
    becomes one Document whose sentences are joined by newlines (long-text NER). Tokens are
    joined by ``token_separator``: use "" for one-character-per-line Chinese data.
    """
    tag_scheme = get_scheme(scheme)
    stats = ReadStats()
    docs: list[Document] = []
    doc_sentences: list[tuple[str, list[Span], list[tuple[int, int]]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_columns: int | None = None
    doc_line = 1
    doc_open = False  # a -DOCSTART- or a token line started a document

    def end_sentence(line_no: int) -> None:
        if not tokens:
            return
        try:
            word_spans, repairs = tag_scheme.decode(tags)
        except TagError as err:  # pragma: no cover - tags are checked per line below
            raise DataError(path, line_no, str(err)) from None
        stats.repaired_tags += repairs
        starts, pos = [], 0
        for tok in tokens:
            starts.append(pos)
            pos += len(tok) + len(token_separator)
        spans = [Span(starts[s], starts[e - 1] + len(tokens[e - 1]), lab) for s, e, lab in word_spans]
        token_spans = [(start, start + len(tok)) for start, tok in zip(starts, tokens)]
        doc_sentences.append((token_separator.join(tokens), spans, token_spans))
        tokens.clear()
        tags.clear()

    def end_document(line_no: int) -> None:
        if not doc_sentences:
            stats.empty_documents += doc_open
            return
        if documents:
            text, spans, token_spans, offset = "", [], [], 0
            for sent, sent_spans, sent_tokens in doc_sentences:
                spans += [Span(s + offset, e + offset, lab) for s, e, lab in sent_spans]
                token_spans += [(s + offset, e + offset) for s, e in sent_tokens]
                text += sent + "\n"
                offset = len(text)
            docs.append(Document(f"{Path(path).name}:{doc_line}", text.rstrip("\n"), spans, tokens=token_spans))
        else:
            for i, (sent, spans, token_spans) in enumerate(doc_sentences):
                docs.append(Document(f"{Path(path).name}:{doc_line}:{i}", sent, spans, tokens=token_spans))
        doc_sentences.clear()

    lines = _read_lines(path)
    blank_run = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            blank_run += 1
            if blank_run >= 2 and not tokens:  # each extra blank line is an empty sentence
                stats.empty_sentences += 1
            end_sentence(line_no)
            continue
        blank_run = 0
        columns = _COLUMN_SEPARATOR.split(line.strip())
        if columns[0] == "-DOCSTART-":
            if tokens:  # read as a marker, it would cut the sentence in two; as a token, drop a row
                raise DataError(path, line_no, "-DOCSTART- inside a sentence: a document marker needs a blank line "
                                               f"before it, and -DOCSTART- is not a token ({line!r})")
            if len(columns) > 1 and columns[tag_column] != "O" and _is_tag(tag_scheme, columns[tag_column]):
                raise DataError(path, line_no, f"-DOCSTART- marker tagged as an entity: {line!r}; "
                                               "a marker is not a token and its row would be dropped")
            end_document(line_no)
            doc_line, doc_open = line_no, True
            blank_run = 0  # the blank line after a marker is not an empty sentence
            continue
        if n_columns is None:
            n_columns = len(columns)
            if n_columns < 2:
                raise DataError(path, line_no, f"expected a token and a tag column, found {line!r}")
        elif len(columns) != n_columns:
            raise DataError(path, line_no, f"expected {n_columns} columns like the first token line, found {len(columns)}: {line!r}")
        tag = columns[tag_column]
        try:
            tag_scheme.split(tag)
        except TagError as err:
            raise DataError(path, line_no, f"{err} (scheme={scheme})") from None
        tokens.append(columns[0])
        tags.append(tag)
        doc_open = True
    end_sentence(len(lines))
    end_document(len(lines))
    stats.log(path)
    return docs


def _is_tag(scheme, tag: str) -> bool:
    try:
        scheme.split(tag)
    except TagError:
        return False
    return True


class RepeatedKeyError(ValueError):
    """A key repeated inside one JSON object."""

    def __init__(self, key: str):
        super().__init__(f"key {key!r} appears twice in one object (JSON would keep only the last one)")
        self.key, self.position = key, None  # position: the '{' of the object holding it


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` of every JSON reader: a key repeated in one object raises
    ``RepeatedKeyError`` (json keeps the last one silently: two "text" keys moved every offset)."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKeyError(key)
        obj[key] = value
    return obj


def _repeated_key_position(text: str, pos: int) -> int:
    """Where the innermost object holding a repeated key starts, decoding again from ``pos`` with
    the pure-Python scanner, which lets us see each object's start (only on that error)."""
    decoder = json.JSONDecoder(object_pairs_hook=unique_keys)

    def parse_object(s_and_end, *args):
        try:
            return json.decoder.JSONObject(s_and_end, *args)
        except RepeatedKeyError as err:
            if err.position is None:
                err.position = s_and_end[1] - 1
            raise

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        decoder.raw_decode(text, pos)
    except RepeatedKeyError as err:
        return err.position
    return pos  # pragma: no cover - both scanners find the same keys


def decode_json(text: str, path: str | Path, pos: int = 0) -> tuple[object, int]:
    """One JSON value of ``text`` (a file's contents) from ``pos`` -> (value, end position), for
    every JSON reader. Invalid JSON, and a key repeated inside one object, raise DataError naming
    the file and the line."""
    def line_at(at: int) -> int:
        return 1 + text.count("\n", 0, at)

    try:
        return _UNIQUE_KEYS_DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as err:
        raise DataError(path, line_at(err.pos), f"invalid JSON: {err.msg}") from None
    except RepeatedKeyError as err:
        raise DataError(path, line_at(_repeated_key_position(text, pos)),
                        f"key {err.key!r} appears twice in the object starting on this line "
                        "(JSON would keep only the last one)") from None


_UNIQUE_KEYS_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys)


def _iter_json_objects(path: str | Path):
    """Yield (line, object) from JSON Lines or from concatenated (pretty-printed) JSON objects."""
    text = "\n".join(_read_lines(path))
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        line = text.count("\n", 0, pos) + 1
        obj, pos = decode_json(text, path, pos)
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(path, line, "expected an object with a string 'text' field")
        yield line, obj


def _span_documents(path: str | Path, object_spans, expected: str) -> list[Document]:
    """Documents of a JSON file whose objects ``object_spans(line, obj)`` turns into spans (None:
    the object has no entity key); the loop, id and warnings every span format shares."""
    docs: list[Document] = []
    stats = ReadStats()
    unkeyed: list[tuple[int, list[str]]] = []
    for line, obj in _iter_json_objects(path):
        spans = object_spans(line, obj)
        if spans is None:
            unkeyed.append((line, sorted(obj)))
            spans = []
        if not obj["text"].strip():
            stats.empty_documents += 1
            continue
        docs.append(Document(str(obj.get("id", f"{Path(path).name}:{line}")), obj["text"], sorted(set(spans))))
    _report_missing_entities(path, unkeyed, docs, expected)
    stats.log(path)
    return docs


@limitable
def read_json_spans(path: str | Path) -> list[Document]:
    """Read character-span JSON: CLUENER style or nerkit's own entity lists.

    CLUENER: ``{"text": ..., "label": {type: {surface: [[start, end_inclusive], ...]}}}``.
    nerkit: ``{"id": ..., "text": ..., "entities": [{"start", "end", "label"}]}`` (end exclusive).
    Both as JSON Lines or as concatenated pretty-printed objects. Spans may overlap (nested
    entities); a span out of range or whose surface does not match the text is an error. An
    object with neither entity key reads as a document without entities, with a warning.
    """

    def object_spans(line: int, obj: dict) -> list[Span] | None:
        text = obj["text"]
        if "label" in obj:
            if not isinstance(obj["label"], dict):
                hint = " (a doccano export? read it with read_doccano: data=doccano)" if isinstance(obj["label"], list) else ""
                raise DataError(path, line, "'label' must map type -> surface -> [[start, end_inclusive], ...], "
                                            f"found a {type(obj['label']).__name__}{hint}")
            try:
                found = [(label, surface, start, end_inclusive) for label, surfaces in obj["label"].items()
                         for surface, positions in surfaces.items() for start, end_inclusive in positions]
            except (AttributeError, TypeError, ValueError):
                problem = "'label' must map type -> surface -> [[start, end_inclusive], ...]"
                raise DataError(path, line, problem) from None
            return [_checked_span(path, line, text, start, end_inclusive + 1 if _is_offset(end_inclusive) else end_inclusive,
                                  label, surface) for label, surface, start, end_inclusive in found]
        if "entities" in obj:
            if not isinstance(obj["entities"], list):
                raise DataError(path, line, f"'entities' must be a list, found {obj['entities']!r}")
            for ent in obj["entities"]:
                if not isinstance(ent, dict) or not {"start", "end", "label"} <= ent.keys():
                    raise DataError(path, line, f"an entity needs 'start', 'end' and 'label', got {ent!r}")
            return [_checked_span(path, line, text, ent["start"], ent["end"], ent["label"], ent.get("text"))
                    for ent in obj["entities"]]
        return None

    return _span_documents(path, object_spans, "'entities' (or CLUENER's 'label')")


@limitable
def read_doccano(path: str | Path) -> list[Document]:
    """Read a doccano sequence-labelling export (JSON Lines), end offsets exclusive:
    ``{"id": ..., "text": ..., "label": [[start, end, type], ...]}``, or, from newer doccano
    versions, ``"entities": [{"start_offset": ..., "end_offset": ..., "label": ...}]``."""

    def object_spans(line: int, obj: dict) -> list[Span] | None:
        if "label" in obj:
            triples = obj["label"]
            if not isinstance(triples, list) or not all(isinstance(t, list) and len(t) == 3 for t in triples):
                raise DataError(path, line, f"'label' must be a list of [start, end, type] triples, found {triples!r}")
        elif "entities" in obj:
            keys = ("start_offset", "end_offset", "label")
            entities = obj["entities"]
            if not isinstance(entities, list) or not all(isinstance(e, dict) and set(keys) <= e.keys() for e in entities):
                raise DataError(path, line, f"'entities' must be a list of objects with {keys}, found {entities!r}")
            triples = [[e[k] for k in keys] for e in entities]
        else:
            return None
        return [_checked_span(path, line, obj["text"], start, end, label, None) for start, end, label in triples]

    return _span_documents(path, object_spans, "'label' (or 'entities')")


def _iter_json_lines(path: str | Path):
    """Yield (line, object) of a JSON Lines file; blank lines are skipped."""
    lines = _read_lines(path)
    if next((line for line in lines if line.strip()), "").lstrip().startswith("["):
        raise DataError(path, 1, "expected JSON Lines (one object per line), found a JSON array; "
                                 "write one object per line")
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as err:
            raise DataError(path, line_no, f"invalid JSON: {err.msg} (column {err.colno})") from None
        except RepeatedKeyError as err:
            raise DataError(path, line_no, str(err)) from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, f"expected a JSON object, found {type(obj).__name__}")
        yield line_no, obj


def _token_documents(path: str | Path, token_key: str, object_spans) -> list[Document]:
    """Documents of a JSON Lines file of tokenized sentences: ``obj[token_key]`` is the token list,
    ``object_spans(line, obj, n_tokens)`` gives its entities as token spans ``(start, end, label)``
    (end exclusive). The text is the tokens joined by single spaces; ``Document.tokens`` holds
    their character spans, as ``read_conll`` gives them, so scoring is on the dataset's tokens."""
    docs: list[Document] = []
    stats = ReadStats()
    for line, obj in _iter_json_lines(path):
        tokens = obj.get(token_key)
        if not isinstance(tokens, list):
            raise DataError(path, line, f"expected a list of strings under {token_key!r}, found {tokens!r}")
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or token.split() != [token]:
                raise DataError(path, line, f"token {i} must be a non-empty string without whitespace, found {token!r}")
        token_spans = object_spans(line, obj, len(tokens))
        if not tokens:
            stats.empty_sentences += 1
            continue
        starts, pos = [], 0
        for token in tokens:
            starts.append(pos)
            pos += len(token) + 1
        char_spans = sorted({Span(starts[s], starts[e - 1] + len(tokens[e - 1]), label) for s, e, label in token_spans})
        docs.append(Document(str(obj.get("id", f"{Path(path).name}:{line}")), " ".join(tokens), char_spans,
                             tokens=[(s, s + len(t)) for s, t in zip(starts, tokens)]))
    stats.log(path)
    return docs


def _checked_token_span(path, line, n_tokens: int, start, end, label) -> tuple[int, int, str]:
    if problem := label_problem(label, "an entity label"):
        raise DataError(path, line, problem)
    for name, value in (("start", start), ("end", end)):
        if not _is_offset(value):
            raise DataError(path, line, f"span {name} of {label!r} must be an integer token index, got {value!r}")
    if not 0 <= start < end <= n_tokens:
        raise DataError(path, line, f"token span [{start}, {end}) of {label!r} is out of range for {n_tokens} tokens")
    return start, end, label


@limitable
def read_token_spans(path: str | Path) -> list[Document]:
    """Read tokens with token-index entity spans (JSON Lines), nested entities allowed:
    ``{"tokens": [...], "entities": [{"start": i, "end": j, "label": type}]}``, ``end``
    exclusive (tokens[i:j] is the entity), with an optional ``id``."""

    def object_spans(line: int, obj: dict, n_tokens: int) -> list[tuple[int, int, str]]:
        entities = obj.get("entities")
        if not isinstance(entities, list):
            raise DataError(path, line, f"expected a list under 'entities', found {entities!r}")
        for ent in entities:
            if not isinstance(ent, dict) or not {"start", "end", "label"} <= ent.keys():
                raise DataError(path, line, f"an entity needs 'start', 'end' and 'label', got {ent!r}")
        return [_checked_token_span(path, line, n_tokens, e["start"], e["end"], e["label"]) for e in entities]

    return _token_documents(path, "tokens", object_spans)


@limitable
def read_w2ner(path: str | Path) -> list[Document]:
    """Read the W2NER format (JSON Lines), nested entities allowed:
    ``{"sentence": [tokens], "ner": [{"index": [token positions], "type": type}]}``. An
    entity's positions must be consecutive and increasing: a discontinuous entity cannot be
    represented as a span and is an error, never silently bridged."""

    def object_spans(line: int, obj: dict, n_tokens: int) -> list[tuple[int, int, str]]:
        entities = obj.get("ner")
        if not isinstance(entities, list):
            raise DataError(path, line, f"expected a list under 'ner', found {entities!r}")
        spans = []
        for ent in entities:
            if not isinstance(ent, dict) or not {"index", "type"} <= ent.keys():
                raise DataError(path, line, f"an entity needs 'index' and 'type', got {ent!r}")
            index = ent["index"]
            if not isinstance(index, list) or not index or not all(_is_offset(i) for i in index):
                raise DataError(path, line, f"'index' of {ent.get('type')!r} must be a non-empty list of token "
                                            f"positions, got {index!r}")
            if index != list(range(index[0], index[0] + len(index))):
                raise DataError(path, line, f"'index' of {ent['type']!r} is not contiguous: {index} (discontinuous "
                                            "entities are not supported)")
            spans.append(_checked_token_span(path, line, n_tokens, index[0], index[-1] + 1, ent["type"]))
        return spans

    return _token_documents(path, "sentence", object_spans)


def _report_missing_entities(path: str | Path, unkeyed: list[tuple[int, list[str]]], docs: list[Document],
                             expected: str, shown: int = 3) -> None:
    """Warn about objects read as entity-free because they have no entity key (a typo, another
    format), and about a file in which no document has an entity at all."""
    for line, keys in unkeyed[:shown]:
        log.warning("%s:%d: no entity key %s, found keys %s: read as a document without entities",
                    path, line, expected, keys)
    if len(unkeyed) > shown:
        log.warning("%s: %d objects in all have no entity key %s", path, len(unkeyed), expected)
    if docs and not any(doc.spans for doc in docs):
        log.warning("%s: none of its %d documents has an entity; is the entity key or format right?", path, len(docs))


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not offset 1


def _checked_span(path, line, text, start, end, label, surface) -> Span:
    if problem := label_problem(label, "an entity label"):
        raise DataError(path, line, problem)
    for name, value in (("start", start), ("end", end)):
        if not _is_offset(value):
            raise DataError(path, line, f"span {name} of {label!r} must be an integer character offset, got {value!r}")
    if not 0 <= start < end <= len(text):
        raise DataError(path, line, f"span [{start}, {end}) of {label!r} is out of range for a text of {len(text)} characters")
    if surface is not None and text[start:end] != surface:
        raise DataError(path, line, f"span [{start}, {end}) of {label!r} reads {text[start:end]!r}, not {surface!r}")
    return Span(start, end, label)


def split_documents(documents: list[Document], held_out: float | int, seed: int, part: str) -> list[Document]:
    """One part of a seeded random split: ``part="held_out"`` gives ``held_out`` documents (a
    fraction if below 1, else a count), ``part="rest"`` the others; both keep the original order.
    Use it to carve a dev set out of a train file, or to subsample for quick experiments."""
    if part not in ("held_out", "rest"):
        raise ValueError(f"part must be 'held_out' or 'rest', got {part!r}")
    n = round(held_out * len(documents)) if held_out < 1 else int(held_out)
    if not 0 < n < len(documents):
        raise ValueError(f"cannot hold out {held_out} of {len(documents)} documents and keep both parts non-empty")
    chosen = set(random.Random(seed).sample(range(len(documents)), n))
    return [doc for i, doc in enumerate(documents) if (i in chosen) == (part == "held_out")]


def _xml_root(path: str | Path) -> ElementTree.Element:
    path = Path(path)
    if not path.is_file():
        raise _not_found(path)
    try:
        return ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise DataError(path, err.position[0], f"invalid XML: {err}") from None


def read_hyperpartisan(articles: str | Path, ground_truth: str | Path) -> list[Document]:
    """SemEval-2019 Task 4 (Hyperpartisan News Detection) by-article XML and its ground truth.

    Text is the title, a newline, then the body with its HTML tags stripped, one paragraph per
    line; the label is the ``hyperpartisan`` attribute ("true" / "false") joined on ``id``.
    """
    labels = {}
    for el in _xml_root(ground_truth).iter("article"):
        if el.get("id") is None or el.get("hyperpartisan") not in ("true", "false"):
            raise DataError(ground_truth, None, f"article {el.attrib} lacks an id or a true/false hyperpartisan value")
        labels[el.get("id")] = el.get("hyperpartisan")
    docs, stats = [], ReadStats()
    for el in _xml_root(articles).iter("article"):
        art_id = el.get("id")
        if art_id not in labels:
            raise DataError(articles, None, f"article id={art_id!r} has no entry in {ground_truth}")
        # Paragraphs on their own lines; whitespace inside a paragraph collapsed.
        blocks = [el.text or ""] + [text for child in el for text in ("".join(child.itertext()), child.tail or "")]
        paragraphs = [" ".join(block.split()) for block in blocks]
        body = "\n".join(p for p in paragraphs if p)
        text = "\n".join(p for p in (" ".join((el.get("title") or "").split()), body) if p)
        if not text:
            stats.empty_documents += 1
            continue
        docs.append(Document(art_id, text, label=labels[art_id]))
    if len(docs) + stats.empty_documents != len(labels):
        log.warning("%s: %d ground-truth labels, %d articles", ground_truth, len(labels), len(docs) + stats.empty_documents)
    stats.log(articles)
    return docs


def read_jsonl_labels(path: str | Path) -> list[Document]:
    """Labelled documents as JSON Lines (or concatenated objects): ``{"text": ..., "label": ...}``
    with an optional ``id``; the label may be a string, an integer or a boolean."""
    docs, stats = [], ReadStats()
    for line, obj in _iter_json_objects(path):
        label = obj.get("label")
        if isinstance(label, bool):
            label = str(label).lower()
        elif isinstance(label, int):
            label = str(label)
        if not isinstance(label, str) or not label:
            raise DataError(path, line, f"expected a non-empty string, integer or boolean 'label', found {label!r}")
        if problem := label_problem(label):
            raise DataError(path, line, problem)
        if not obj["text"].strip():
            stats.empty_documents += 1
            continue
        docs.append(Document(str(obj.get("id", f"{Path(path).name}:{line}")), obj["text"], label=label))
    stats.log(path)
    return docs
