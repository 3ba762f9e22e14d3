"""Tagging schemes (IOB2, BIOES, BMES) and their conversion to and from spans.

Everything inside nerkit works on spans ``(start, end, label)`` with ``end`` exclusive; a
scheme only matters at the edges: reading tagged files, the tag set of token-level heads,
and seqeval scoring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

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

    def allowed_transition(self, prev: str, nxt: str) -> bool:
        p_role, p_label = self.split(prev)
        n_role, n_label = self.split(nxt)
        if n_role in ("I", "E"):
            return p_role in ("B", "I") and p_label == n_label
        # O, B, S may follow anything except an entity still open in BIOES.
        return self.name == "BIO" or p_role in ("O", "E", "S")

    def allowed_start(self, tag: str) -> bool:
        return self.split(tag)[0] in ("O", "B", "S")

    def allowed_end(self, tag: str) -> bool:
        return self.name == "BIO" or self.split(tag)[0] in ("O", "E", "S")


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
