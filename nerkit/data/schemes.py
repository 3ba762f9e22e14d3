"""Tagging schemes (IOB2, BIOES, BMES) and their conversion to and from spans.

Everything inside nerkit works on spans ``(start, end, label)`` with ``end`` exclusive; a
scheme only matters at the edges: reading tagged files, the tag set of token-level heads,
and seqeval scoring.
"""
from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from seqeval.scheme import IOB2, IOBES


class Span(NamedTuple):
    start: int
    end: int  # exclusive
    label: str


def inner_spans(spans: Sequence[Span] | set[Span]) -> set[Span]:
    """The spans lying inside another span of other extent: entities nested in another entity."""
    extents = {(s.start, s.end) for s in spans}
    return {a for a in spans if any(s <= a.start and a.end <= e and (s, e) != (a.start, a.end) for s, e in extents)}


class TagError(ValueError):
    """A tag that does not belong to the scheme."""


def label_problem(label: object, what: str = "a label") -> str | None:
    """What is wrong with an entity or class label, or None. A label is a non-empty string without
    surrounding whitespace or control characters: " LOC " or "LOC\\n" would be a type apart from "LOC"."""
    if not isinstance(label, str) or not label.strip():
        return f"{what} must be a non-empty string, got {label!r}"
    if _has_stray_characters(label):
        return f"{what} {label!r} has surrounding whitespace or control characters"
    return None


@functools.lru_cache(maxsize=4096)  # called for every tag of a file: a few distinct labels
def _has_stray_characters(label: str) -> bool:
    return label != label.strip() or any(unicodedata.category(c) == "Cc" for c in label)


# Roles a prefix plays: starts an entity, continues it, ends it.
_PREFIX_ALIASES = {"M": "I", "L": "E", "U": "S"}  # BMES / BILOU spellings of BIOES roles


@dataclass(frozen=True)
class Scheme:
    name: str
    prefixes: frozenset[str] = field(compare=False)

    @property
    def seqeval_scheme(self) -> type:
        return IOB2 if self.name == "BIO" else IOBES

    def split(self, tag: str) -> tuple[str, str | None]:
        """``"B-PER"`` -> ``("B", "PER")``; raises TagError for tags outside the scheme."""
        if tag == "O":
            return "O", None
        prefix, sep, label = tag.partition("-")
        if not sep or not label or prefix not in self.prefixes:
            raise TagError(f"tag {tag!r} is not a valid {self.name} tag")
        if problem := label_problem(label):
            raise TagError(f"tag {tag!r}: {problem}")
        return _PREFIX_ALIASES.get(prefix, prefix), label

    def tags(self, entity_types: Sequence[str]) -> list[str]:
        roles = ["B", "I"] if self.name == "BIO" else ["B", "I", "E", "S"]
        return ["O"] + [f"{role}-{t}" for t in entity_types for role in roles]

    def encode(self, spans: Sequence[tuple[int, int, str]], length: int) -> list[str]:
        """Spans (non-overlapping) over ``length`` positions -> one tag per position."""
        out = ["O"] * length
        for start, end, label in spans:
            if self.name == "BIO" or end - start > 1:
                out[start] = f"B-{label}"
                for i in range(start + 1, end):
                    out[i] = f"I-{label}"
                if self.name != "BIO":
                    out[end - 1] = f"E-{label}"
            else:
                out[start] = f"S-{label}"
        return out

    def decode(self, tags: Sequence[str]) -> tuple[list[Span], int]:
        """Tags -> spans, repairing ill-formed sequences deterministically.

        An I-/E- tag that does not continue an entity of its own type starts a new one (the
        conlleval convention); a BIOES entity left open is closed where it stops. Returns the
        spans and how many repairs were needed, so that readers can report bad data.
        """
        spans: list[Span] = []
        repairs = 0
        start, current = None, None
        for i, tag in enumerate([*tags, "O"]):
            role, label = self.split(tag)
            continues = start is not None and label == current and role in ("I", "E")
            if not continues:
                if start is not None:
                    spans.append(Span(start, i, current))
                    repairs += self.name != "BIO"  # a BIOES entity that never saw its E-
                start, current = (None, None) if role == "O" else (i, label)
                repairs += role in ("I", "E")  # an entity that never saw its B-
            if role in ("E", "S") and start is not None:
                spans.append(Span(start, i + 1, current))
                start, current = None, None
        return spans, repairs

    def allowed(self, tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of ``tags`` may start a sequence [n], end one [n], and follow one another [n, n]
        (row: previous tag), as boolean arrays: a CRF over thousands of tags builds its mask in
        array operations, not a Python loop over every pair."""
        roles, labels = zip(*(self.split(tag) for tag in tags)) if tags else ((), ())
        role = np.array(roles, dtype="U1")
        ids: dict[str | None, int] = {}
        label = np.array([ids.setdefault(lab, len(ids)) for lab in labels], dtype=np.int64)
        opens, continues = np.isin(role, ["B", "I"]), np.isin(role, ["I", "E"])
        closed = np.isin(role, ["O", "E", "S"])  # no entity left open after it
        # I- and E- continue an open entity of their own type; O, B and S may follow anything in
        # BIO, and in BIOES anything that leaves no entity open.
        continuing = opens[:, None] & (label[:, None] == label[None, :])
        otherwise = np.ones(len(tags), dtype=bool) if self.name == "BIO" else closed
        transition = np.where(continues[None, :], continuing, otherwise[:, None])
        start = ~continues
        end = np.ones(len(tags), dtype=bool) if self.name == "BIO" else closed
        return start, end, transition


SCHEMES = {
    "BIO": Scheme("BIO", frozenset({"B", "I"})),
    "IOB2": Scheme("BIO", frozenset({"B", "I"})),
    "BIOES": Scheme("BIOES", frozenset({"B", "I", "E", "S"})),
    "IOBES": Scheme("BIOES", frozenset({"B", "I", "E", "S"})),
    "BMES": Scheme("BIOES", frozenset({"B", "M", "E", "S"})),
    "BILOU": Scheme("BIOES", frozenset({"B", "I", "L", "U"})),
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name.upper()]
    except KeyError:
        raise ValueError(f"unknown tagging scheme {name!r}; choose one of {sorted(SCHEMES)}") from None
