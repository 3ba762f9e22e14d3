"""The optimizer the engine trains with (measured in bench/train_step.py).

torch's default AdamW on CPU updates one tensor at a time: for MiniLM's 22.7M parameters (half
of them the word embeddings) that was half of a bf16 training step on CoNLL-sized batches. The
fused kernel updates them all in one vectorised pass.
"""
from __future__ import annotations

from typing import Iterable

import torch


def adamw(params: Iterable, lr: float, weight_decay: float = 0.0, fused: bool = True, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused where the parameters' device has a fused kernel (CPU and CUDA in torch >= 2.4);
    ``fused=False``: torch's default, one tensor at a time (what round one trained with)."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, **kwargs)
