"""Error-message helpers: a message names the problem without printing a million values."""
from __future__ import annotations

from typing import Sequence

# Items shown of a long list, and characters shown of one long item.
SHOWN_ITEMS, SHOWN_CHARS = 10, 60


def shorten(values: Sequence, shown: int = SHOWN_ITEMS) -> str:
    """``values`` as a list literal of at most ``shown`` items (the first and the last ones, with how
    many were left out between them); each item's repr is cut to ``SHOWN_CHARS`` characters."""
    def item(value) -> str:
        text = repr(value)
        return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS - 3]}..."

    values = list(values)
    if len(values) <= shown:
        return f"[{', '.join(map(item, values))}]"
    head, tail = values[: shown - shown // 2], values[len(values) - shown // 2:]
    left_out = len(values) - len(head) - len(tail)
    shown_items = [*map(item, head), f"... {left_out:,} more ...", *map(item, tail)]
    return f"[{', '.join(shown_items)}] ({len(values):,} in all)"
