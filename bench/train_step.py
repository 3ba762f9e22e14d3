"""One training step of MiniLM + softmax head, taken apart: forward, backward, optimizer.

    python -m bench.train_step [--batch 32] [--length 128] [--steps 6] [--variants fp32 bf16 ...] [--profile]

Variants (all AdamW, lr 5e-5, weight decay 0.01, as nerkit trains):
* ``fp32``: fp32 weights, no autocast, torch's default AdamW (on CPU: one tensor at a time).
* ``bf16``: ``torch.autocast`` bf16 around forward + loss, default AdamW.
* ``bf16_foreach`` / ``bf16_fused``: the same with ``AdamW(foreach=True)`` / ``AdamW(fused=True)``.
* ``fp32_fused``: fp32 with the fused AdamW, to separate the optimizer gain from bf16's.
* ``bf16_master``: bf16 weights (forward and backward entirely in bf16), fp32 master weights
  updated by the fused AdamW and copied back (``nerkit.optim.MasterWeights``).
* ``bf16_compile``: autocast + ``torch.compile`` of the model (compile time is reported apart).
* ``..._fastdrop``: every ``nn.Dropout`` replaced by ``FastDropout`` below (4x fewer random draws);
  ``..._noattndrop``: attention-probability dropout off as well (changes the recipe).

Prints median seconds per phase and real tokens/s per variant and writes bench/results/train_step.json.
``--profile`` adds torch.profiler's top operators of one autocast step (where backward spends its time).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from bench.common import CONLL_TYPES, RESULTS, compose_cfg, machine_info
from nerkit.model import NerModel
from nerkit.optim import MasterWeights


# An experiment, not part of nerkit: CPU dropout draws its mask with bernoulli_, one serial 32-bit
# Mersenne-Twister draw per element; this takes four 16-bit samples from each 64-bit draw.
class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        threshold = round(self.p * 65536) - 32768  # P(sample < threshold) = p, to 1/65536
        keep = draws.view(torch.int16)[:n].view(x.shape) >= threshold
        return x * keep * (1.0 / (1.0 - self.p))


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` module of ``model`` by a ``FastDropout`` of the same ``p``;
    returns how many were replaced. (Attention-probability dropout inside a fused attention
    kernel is not a module and is left as it is.)"""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                replaced += 1
    return replaced


def make_batch(model: NerModel, batch: int, length: int) -> tuple:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, len(model.encoder.tokenizer), (batch, length), generator=generator)
    attention = torch.ones(batch, length, dtype=torch.long)
    word_index = torch.arange(1, length - 1).repeat(batch, 1)
    word_mask = torch.ones_like(word_index, dtype=torch.bool)
    spans = [[(3, 5, 0), (10, 11, 2)] for _ in range(batch)]
    return ids, attention, word_index, word_mask, spans


class Variant:
    """One model + optimizer set up as ``name`` says; ``step()`` times forward, backward and optimizer."""

    def __init__(self, name: str):
        torch.manual_seed(0)
        self.name = name
        self.model = NerModel.from_config(compose_cfg(["encoder=bert", "head=softmax"]), CONLL_TYPES).train()
        if "fastdrop" in name:
            use_fast_dropout(self.model)
        if "noattndrop" in name:  # attention-probability dropout off (a recipe change: check F1)
            for module in self.model.modules():
                if type(module).__name__.endswith("SelfAttention"):  # its dropout.p goes to the attention kernel
                    module.dropout.p = 0.0
        if name.endswith("master"):
            self.optimizer = MasterWeights(self.model.parameters(), lr=5e-5, weight_decay=0.01)
        else:
            kwargs = {"foreach": True} if "foreach" in name else {"fused": True} if "fused" in name else {}
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5, weight_decay=0.01, **kwargs)
        self.forward_model = torch.compile(self.model, dynamic=False) if name == "bf16_compile" else self.model
        self.autocast = name.startswith("bf16") and not name.endswith("master")
        self.times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
        self.first_step = 0.0

    def step(self, batch: tuple, record: bool) -> None:
        ids, attention, word_index, word_mask, spans = batch
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.model.head.loss(self.forward_model(ids, attention, word_index, word_mask), word_mask, spans)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if not record:
            self.first_step = t3 - t0
            return
        for key, seconds in zip(self.times, (t1 - t0, t2 - t1, t3 - t2)):
            self.times[key].append(seconds)

    def summary(self, tokens: int) -> dict:
        med = {k: statistics.median(v) for k, v in self.times.items()}
        step = statistics.median(sum(parts) for parts in zip(*self.times.values()))
        return {**med, "step": step, "tokens_per_s": tokens / step, "first_step_s": self.first_step}


def profile_step(batch: tuple) -> str:
    torch.manual_seed(0)
    model = NerModel.from_config(compose_cfg(["encoder=bert", "head=softmax"]), CONLL_TYPES).train()
    ids, attention, word_index, word_mask, spans = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.head.loss(model(ids, attention, word_index, word_mask), word_mask, spans)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", nargs="*", default=["fp32", "bf16", "fp32_fused", "bf16_foreach", "bf16_fused",
                                                           "bf16_master", "bf16_compile"])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": machine_info(), "settings": vars(args), "variants": {}}
    model_batch = make_batch(NerModel.from_config(compose_cfg(["encoder=bert", "head=softmax"]), CONLL_TYPES),
                             args.batch, args.length)
    # All variants live side by side and take their steps in turn (rotating who goes first), so
    # other jobs on the machine slow them alike; ratios are what this measures.
    variants = [Variant(name) for name in args.variants]
    for v in variants:
        v.step(model_batch, record=False)  # warm up (and compile)
    for step in range(args.steps):
        for v in variants[step % len(variants):] + variants[: step % len(variants)]:
            v.step(model_batch, record=True)
    base = None
    for v in variants:
        r = results["variants"][v.name] = v.summary(args.batch * args.length)
        base = base or r["step"]
        print(f"{v.name:14s} forward {r['forward']:.3f} s  backward {r['backward']:.3f} s  optimizer {r['optimizer']:.3f} s"
              f"  step {r['step']:.3f} s  {r['tokens_per_s']:.0f} tokens/s  {base / r['step']:.2f}x {args.variants[0]}"
              f"  (first step {r['first_step_s']:.1f} s)", flush=True)
    if args.profile:
        results["profile_bf16"] = profile_step(model_batch)
        print(results["profile_bf16"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_step.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
