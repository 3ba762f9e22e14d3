"""HuggingFace datasets as NER data (``data=hf``): token and tag columns -> ``Document`` objects.

``path`` is a folder written by ``save_to_disk`` (a DatasetDict or a Dataset), local
parquet / json / jsonl / csv / arrow files (one file or a glob: split "train"; a folder of them:
splits from the file names, as ``load_dataset`` names them), or a hub name (needs the network).
Tag names come from the tags column's ``ClassLabel`` feature, from the tags themselves when they
are strings, or from ``label_names``. The documents are those ``read_conll`` gives for the same
sentences: tokens joined by one space, entities as character spans, ``Document.tokens`` the
tokens' character spans.

The conversion is a ``Dataset.map`` (``num_proc`` processes) over the Arrow data, cached by
``datasets`` like any map: next to a ``save_to_disk`` folder's own files, or in the datasets cache.
"""
from __future__ import annotations

import ast
import glob
import logging
from pathlib import Path
from typing import Sequence

import datasets
from datasets import ClassLabel, Dataset, DatasetDict

from nerkit.data.readers import DataError, Document, ReadStats
from nerkit.data.schemes import Span, TagError, get_scheme

log = logging.getLogger(__name__)

# File suffix -> the datasets builder that reads it.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


class _BadRow(ValueError):
    """A row that cannot be converted; plain args, so it crosses ``map``'s worker processes."""

    def __init__(self, row: int, problem: str):
        super().__init__(row, problem)
        self.row, self.problem = row, problem


def load_split(path: str | Path, split: str, name: str | None = None) -> Dataset:
    """One split of the dataset at ``path`` (see the module docstring for what ``path`` may be)."""
    folder = Path(path)
    if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(folder), keep_in_memory=False)
    elif folder.is_file() or (not folder.exists() and glob.glob(str(path))):
        suffix = Path(glob.glob(str(path))[0]).suffix.lower()
        if suffix not in BUILDERS:
            raise DataError(path, None, f"cannot read {suffix or 'suffix-less'} files; use one of {sorted(BUILDERS)}")
        loaded = datasets.load_dataset(BUILDERS[suffix], data_files=str(path))
    else:  # a folder of data files, or a dataset on the hub
        try:
            loaded = datasets.load_dataset(str(path), name)
        except (FileNotFoundError, ConnectionError, ValueError) as err:
            raise DataError(path, None, f"not a local dataset, and loading it from the hub failed: {err}") from None
    if isinstance(loaded, Dataset):  # a single saved Dataset is one split: its own, else "train"
        loaded = DatasetDict({str(loaded.split or "train"): loaded})
    if split not in loaded:
        raise DataError(path, None, f"has no split {split!r}; its splits are {sorted(loaded)} "
                                    f"(choose with data.split_train / split_dev / split_test, or set data.dev=null / data.test=null)")
    return loaded[split]


def tag_names(dataset: Dataset, tags_column: str, label_names: Sequence[str] | None) -> list[str] | None:
    """Names of integer tag ids (from ``label_names`` or a ClassLabel feature); None for string tags."""
    feature = getattr(dataset.features[tags_column], "feature", None)
    from_feature = feature.names if isinstance(feature, ClassLabel) else None
    if label_names is not None:
        if from_feature is not None and list(label_names) != from_feature:
            raise ValueError(f"data.label_names {list(label_names)} contradicts the ClassLabel names of "
                             f"column {tags_column!r}: {from_feature}; drop data.label_names")
        return list(label_names)
    if from_feature is None and getattr(feature, "dtype", "").startswith(("int", "uint")):
        raise ValueError(f"column {tags_column!r} holds integer tag ids without names (no ClassLabel feature): "
                         "give them as data.label_names=[O,B-PER,I-PER,...]")
    return from_feature


def _cell_list(value, row: int, column: str) -> list:
    """A list cell; CSV files hold lists as text: a Python/JSON list literal, or space-separated."""
    if isinstance(value, str):
        value = ast.literal_eval(value) if value.lstrip().startswith("[") else value.split()
    if not isinstance(value, list):
        raise _BadRow(row, f"column {column!r} holds {type(value).__name__}, not a list")
    return value


def _convert(batch: dict, rows: list[int], tokens_column: str, tags_column: str, names: list[str] | None,
             scheme: str) -> dict:
    """A batch of (tokens, tags) rows -> text, character spans and token spans; rows without
    tokens are left out (and counted by the caller, as read_conll counts empty sentences)."""
    tag_scheme = get_scheme(scheme)
    out: dict[str, list] = {"row": [], "text": [], "spans": [], "tokens": [], "repairs": []}
    for row, tokens, tags in zip(rows, batch[tokens_column], batch[tags_column]):
        tokens, tags = _cell_list(tokens, row, tokens_column), _cell_list(tags, row, tags_column)
        if len(tokens) != len(tags):
            raise _BadRow(row, f"{len(tokens)} tokens but {len(tags)} tags")
        if not tokens:
            continue
        if any(not isinstance(t, str) or not t.strip() for t in tokens):
            raise _BadRow(row, f"tokens must be strings with at least one visible character, got {tokens!r}")
        if names is not None:
            bad = [t for t in tags if not isinstance(t, int) or not 0 <= t < len(names)]
            if bad:
                raise _BadRow(row, f"tag id {bad[0]!r} is out of range for the {len(names)} tag names {names}")
            tags = [names[t] for t in tags]
        elif not all(isinstance(t, str) for t in tags):
            raise _BadRow(row, f"tags {tags!r} are not strings, and no tag names are known: give them as "
                               "data.label_names=[O,B-PER,I-PER,...]")
        try:
            word_spans, repairs = tag_scheme.decode(tags)
        except TagError as err:
            raise _BadRow(row, f"{err} (scheme={scheme})") from None
        starts, pos = [], 0
        for token in tokens:
            starts.append(pos)
            pos += len(token) + 1
        out["row"].append(row)
        out["text"].append(" ".join(tokens))
        out["spans"].append([{"start": starts[s], "end": starts[e - 1] + len(tokens[e - 1]), "label": label}
                             for s, e, label in word_spans])
        out["tokens"].append([[start, start + len(token)] for start, token in zip(starts, tokens)])
        out["repairs"].append(repairs)
    return out


def read_hf(
    path: str | Path,
    split: str = "train",
    name: str | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    label_names: Sequence[str] | None = None,
    scheme: str = "BIO",
    num_proc: int | None = None,
    limit: int | None = None,
) -> list[Document]:
    """Documents of one split of a HuggingFace dataset of (tokens, tags) rows.

    ``limit`` keeps the first rows only (quick experiments). Errors name the dataset, the split
    and the row: a missing column (with the columns there are), a missing split (with the splits
    there are), an out-of-range tag id, a tag outside ``scheme``, tokens and tags of different lengths.
    """
    get_scheme(scheme)  # an unknown scheme fails before any work
    dataset = load_split(path, split, name)
    where = f"{path} [{split}]"
    missing = [c for c in (tokens_column, tags_column) if c not in dataset.column_names]
    if missing:
        raise DataError(where, None, f"no column {missing[0]!r}; the columns are {dataset.column_names} "
                                     "(choose with data.tokens_column / data.tags_column)")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of rows, got {limit}")
        if limit < len(dataset):
            log.info("%s: keeping the first %d of %d rows (limit=%d)", where, limit, len(dataset), limit)
            dataset = dataset.select(range(limit))
    try:
        names = tag_names(dataset, tags_column, label_names)
        converted = dataset.map(
            _convert, batched=True, with_indices=True, remove_columns=dataset.column_names, num_proc=num_proc,
            fn_kwargs={"tokens_column": tokens_column, "tags_column": tags_column, "names": names, "scheme": scheme},
            keep_in_memory=False, desc=f"documents ({split})",
        )
    except _BadRow as err:
        raise DataError(where, None, f"row {err.row}: {err.problem}") from None
    except ValueError as err:
        raise DataError(where, None, str(err)) from None
    stats = ReadStats(empty_sentences=len(dataset) - len(converted))
    docs = []
    for batch in converted.iter(batch_size=1000):
        stats.repaired_tags += sum(batch["repairs"])
        for row, text, spans, tokens in zip(batch["row"], batch["text"], batch["spans"], batch["tokens"]):
            docs.append(Document(f"{split}:{row}", text, [Span(s["start"], s["end"], s["label"]) for s in spans],
                                 tokens=[(a, b) for a, b in tokens]))
    stats.log(where)
    return docs
