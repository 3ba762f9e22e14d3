"""One MiniLM training step taken apart: forward, backward, gradient clipping, optimizer.

    python -m bench.train_step [--batch 16] [--length 32] [--steps 20] [--variants ...] [--profile]

Every variant clips gradients to norm 1.0 and runs AdamW (lr 5e-5, weight decay 0.01), as both
nerkit's engine and the HF Trainer do. Variants:

* ``fp32``: fp32, torch's default AdamW (one tensor at a time on CPU): round one's engine.
* ``fp32_fused``: fp32, ``AdamW(fused=True)`` (``nerkit.optim.adamw``): today's engine at fp32.
* ``bf16_fused``: bf16 autocast + fused AdamW: today's engine at ``trainer.precision=bf16``.
* ``bf16_master``: bf16 weights (forward and backward entirely in bf16) with fp32 master weights
  that the fused AdamW updates and copies back (``MasterWeights`` below, an experiment).
* ``bf16_fused_compile``: ``bf16_fused`` with the model through ``torch.compile`` (compile time apart).
* ``hf_bf16_fused``: transformers' ``BertForTokenClassification`` (what the Trainer trains) on the
  same batch, bf16 autocast, fused AdamW (the Trainer's default optimizer).

The default batch is CoNLL-sized (16 sentences of ~22 sub-word tokens, no padding). Variants live
side by side and take their steps in turn (rotating who goes first), so other jobs on the machine
slow them alike. Writes bench/results/train_step.json and train_step.md; ``--profile`` adds
torch.profiler's top operators of one ``bf16_fused`` step.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Iterable

import torch
from transformers import AutoModelForTokenClassification

from bench.common import CONLL_TYPES, compose_cfg, machine_info, markdown_table, save_results
from nerkit.config import embedded_model_path
from nerkit.model import NerModel
from nerkit.optim import adamw

PHASES = ("forward", "backward", "clip", "optimizer")


class MasterWeights:
    """Turns the given parameters into ``dtype`` in place and keeps fp32 masters for a fused AdamW:
    ``step()`` copies the low-precision gradients onto the masters, steps, and copies back."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                 dtype: torch.dtype = torch.bfloat16):
        self.pairs = []
        for param in params:
            master = param.detach().float().clone()
            param.data = param.data.to(dtype)
            self.pairs.append((param, master))
        self.optimizer = adamw([m for _, m in self.pairs], lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        for param, master in self.pairs:
            master.grad = None if param.grad is None else param.grad.float()
        self.optimizer.step()
        for param, master in self.pairs:
            param.copy_(master)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param, master in self.pairs:
            param.grad = master.grad = None


class Variant:
    """One model + optimizer set up as ``name`` says; ``step()`` times each phase."""

    def __init__(self, name: str, batch: dict):
        torch.manual_seed(0)
        self.name, self.batch = name, batch
        if name.startswith("hf"):
            self.model = AutoModelForTokenClassification.from_pretrained(
                embedded_model_path(), num_labels=1 + 2 * len(CONLL_TYPES)).train()
        else:
            self.model = NerModel.from_config(compose_cfg(["encoder=bert", "head=softmax"]), CONLL_TYPES).train()
        params = list(self.model.parameters())
        if name.endswith("master"):
            self.optimizer = MasterWeights(params, lr=5e-5, weight_decay=0.01)
        elif "fused" in name:
            self.optimizer = adamw(params, lr=5e-5, weight_decay=0.01)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
        self.forward_model = torch.compile(self.model, dynamic=False) if name.endswith("compile") else self.model
        self.autocast = "bf16" in name and not name.endswith("master")
        self.times: dict[str, list[float]] = {phase: [] for phase in PHASES}
        self.first_step = 0.0

    def loss(self) -> torch.Tensor:
        b = self.batch
        if self.name.startswith("hf"):
            return self.forward_model(input_ids=b["ids"], attention_mask=b["attention"], labels=b["labels"]).loss
        scores = self.forward_model(b["ids"], b["attention"], b["word_index"], b["word_mask"])
        return self.model.head.loss(scores.float(), b["word_mask"], b["spans"])

    def step(self, record: bool) -> None:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.loss()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        t3 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if not record:
            self.first_step = t4 - t0
            return
        for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.times[phase].append(seconds)

    def summary(self, tokens: int) -> dict:
        step = statistics.median(sum(parts) for parts in zip(*self.times.values()))
        return {**{k: statistics.median(v) for k, v in self.times.items()}, "step": step,
                "tokens_per_s": tokens / step, "first_step_s": self.first_step}


def make_batch(batch: int, length: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    word_index = torch.arange(1, length - 1).repeat(batch, 1)
    labels = torch.randint(0, 1 + 2 * len(CONLL_TYPES), (batch, length), generator=generator)
    return {"ids": ids, "attention": torch.ones(batch, length, dtype=torch.long), "word_index": word_index,
            "word_mask": torch.ones_like(word_index, dtype=torch.bool), "labels": labels,
            "spans": [[(3, 5, 0), (10, 11, 2)] for _ in range(batch)]}


def profile_step(batch: dict) -> str:
    variant = Variant("bf16_fused", batch)
    variant.step(record=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        variant.step(record=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def table(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    names = list(results["variants"])
    base = results["variants"][names[0]]["step"]
    rows = [[name, *(f"{1000 * r[p]:.1f}" for p in PHASES), f"{1000 * r['step']:.1f}", f"{r['tokens_per_s']:.0f}",
             f"{base / r['step']:.2f}x", f"{r['first_step_s']:.1f}"] for name, r in results["variants"].items()]
    return (f"One training step of MiniLM-L6 on {s['batch']} x {s['length']} tokens, median of {s['steps']} steps, "
            f"{m['torch_threads']} threads; commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, {m['date']}, "
            f"load average {m['load_average'][0]:.1f}\n\n"
            + markdown_table(["variant", *(f"{p} ms" for p in PHASES), "step ms", "tokens/s", f"vs {names[0]}",
                              "first step s"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", nargs="*", default=["fp32", "fp32_fused", "bf16_fused", "hf_bf16_fused",
                                                           "bf16_master", "bf16_fused_compile"])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": machine_info(), "settings": vars(args), "variants": {}}
    batch = make_batch(args.batch, args.length)
    variants = [Variant(name, batch) for name in args.variants]
    for v in variants:
        v.step(record=False)  # warm up (and compile)
    for step in range(args.steps):
        for v in variants[step % len(variants):] + variants[: step % len(variants)]:
            v.step(record=True)
    for v in variants:
        results["variants"][v.name] = v.summary(args.batch * args.length)
    if args.profile:
        results["profile_bf16_fused"] = profile_step(batch)
        print(results["profile_bf16_fused"])
    save_results("train_step", results, table(results))


if __name__ == "__main__":
    main()
