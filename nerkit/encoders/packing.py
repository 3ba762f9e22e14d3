"""Sequence packing for training: a padded batch's sequences laid end to end in fewer rows
(first-fit decreasing, rows no longer than the batch's longest sequence), with positions restarting
at each sequence. transformers reads restarting ``position_ids`` as packed sequences and masks
attention block-diagonally, so each sequence sees only itself: the padded batch's outputs, up to
float rounding, without computing the padding (in random batch order, over half a batch's slots)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows of sequence indices, longest sequences placed first, each row's lengths summing to at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


@dataclass
class Packing:
    """Where each real token of a right-padded ``(batch, length)`` batch goes in ``(rows, length)``."""

    source: torch.Tensor  # flat index in the padded batch of each real token
    target: torch.Tensor  # flat index in the packed rows of the same token
    positions: torch.Tensor  # (rows, length): each packed token's position in its own sequence; 0 in a row's tail
    padded_shape: tuple[int, int]

    @classmethod
    def plan(cls, attention_mask: torch.Tensor) -> "Packing":
        batch, length = attention_mask.shape
        lengths = attention_mask.sum(1).tolist()
        rows = first_fit_decreasing(lengths, length)
        source, target, positions = [], [], torch.zeros(len(rows), length, dtype=torch.long)
        for r, members in enumerate(rows):
            offset = 0
            for i in members:
                n = lengths[i]
                source.append(torch.arange(i * length, i * length + n))
                target.append(torch.arange(r * length + offset, r * length + offset + n))
                positions[r, offset : offset + n] = torch.arange(n)
                offset += n
        device = attention_mask.device
        return cls(torch.cat(source).to(device), torch.cat(target).to(device), positions.to(device), (batch, length))

    @property
    def rows(self) -> int:
        return len(self.positions)

    def pack(self, padded: torch.Tensor, fill: int) -> torch.Tensor:
        """``(batch, length)`` token ids into ``(rows, length)``; a row's unused tail holds ``fill``."""
        packed = padded.new_full((self.positions.numel(),), fill)
        packed[self.target] = padded.reshape(-1)[self.source]
        return packed.view_as(self.positions)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``(rows, length, hidden)`` vectors back to ``(batch, length, hidden)``, zeros at padding."""
        batch, length = self.padded_shape
        flat = packed.reshape(-1, packed.shape[-1])
        out = flat.new_zeros(batch * length, flat.shape[-1]).index_copy(0, self.source, flat.index_select(0, self.target))
        return out.view(batch, length, -1)
