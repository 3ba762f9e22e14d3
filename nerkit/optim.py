"""Optimizer pieces for low-precision training on CPU (measured in bench/train_step.py).

Under ``torch.autocast`` on CPU the matmuls run in bf16, but every step also casts each weight
to bf16 (forward) and each weight gradient back to fp32 (backward), and torch's default AdamW
on CPU updates one tensor at a time. Two changes make the step use the bf16 units:

* ``adamw``: AdamW with ``fused=True`` on CPU (one vectorised kernel over all parameters).
* ``MasterWeights``: the model's weights held in bf16 (forward and backward run entirely in
  bf16, no per-step casts), with fp32 master copies that AdamW updates and copies back, so small
  updates are not lost to bf16 rounding.
"""
from __future__ import annotations

from typing import Iterable

import torch


def adamw(params: Iterable, lr: float, weight_decay: float = 0.0, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused where the parameters' device has a fused kernel (CPU and CUDA in torch >= 2.4)."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, **kwargs)


class MasterWeights:
    """Turns the given parameters into ``dtype`` in place and keeps fp32 masters for AdamW.

    ``step()`` copies the low-precision gradients onto the masters, runs the fused AdamW on them
    and writes the result back into the low-precision parameters. ``optimizer`` (the AdamW over
    the masters) is what an LR scheduler wraps and what a checkpoint saves; save ``masters()``
    rather than the model's own bf16 weights so that resuming loses nothing.
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0,
                 dtype: torch.dtype = torch.bfloat16, **kwargs):
        params = list(params)  # tensors, or optimizer groups {"params": [...], "lr": ...}
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        master_groups = []
        for group in groups:
            masters = []
            for param in list(group["params"]):
                master = param.detach().float().clone()
                param.data = param.data.to(dtype)
                self.pairs.append((param, master))
                masters.append(master)
            master_groups.append({**group, "params": masters})
        self.optimizer = adamw(master_groups, lr=lr, weight_decay=weight_decay, **kwargs)

    @torch.no_grad()
    def step(self) -> None:
        for param, master in self.pairs:
            master.grad = None if param.grad is None else param.grad.float()
        self.optimizer.step()
        for param, master in self.pairs:
            param.copy_(master)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param, master in self.pairs:
            param.grad = None
            master.grad = None

    def masters(self) -> list[torch.Tensor]:
        return [master for _, master in self.pairs]
