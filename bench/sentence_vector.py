"""The [CLS] question, by experiment: which vector of a window should stand for the document?

    python -m bench.sentence_vector --vector cls      # one run per vector (they can run side by side)
    python -m bench.sentence_vector --table           # bench/results/sentence_vector.{json,md} from the runs

BERT's [CLS] output is trained (by next-sentence prediction) to summarise the input; the first
content token's output, or the mean of all token outputs, are the alternatives
(``task.sentence_vector=cls|first_token|mean``). Every vector gets the same budget on
SemEval-2019 Hyperpartisan (train minus the seeded 10% dev split; all 628 test articles), the
embedded MiniLM fine-tuned with head+tail truncation (first 128 + last 382 tokens), and test
accuracy with a 95% bootstrap interval over articles. Each run writes its own file under
bench/results/sentence_vector/ with the stamp taken when it started.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bench.common import RESULTS, RUNS, compose_cfg, machine_info, markdown_table
from nerkit.train import train

VECTORS = ("cls", "first_token", "mean")
PARTS = RESULTS / "sentence_vector"


def run(args: argparse.Namespace) -> None:
    stamp = machine_info()
    overrides = ["task=classify", "data=hyperpartisan", "task.strategy=head_tail", "max_length=512",
                 f"task.sentence_vector={args.vector}", f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}",
                 f"trainer.batch_size={args.batch_size}", f"trainer.precision={args.precision}", "trainer.device=cpu",
                 "trainer.keep_checkpoints=0", f"seed={args.seed}"]
    out = RUNS / f"sentence_vector_{args.vector}"
    started = time.perf_counter()
    train(compose_cfg(overrides), out)
    metrics = json.loads((out / "metrics.json").read_text())
    PARTS.mkdir(parents=True, exist_ok=True)
    (PARTS / f"{args.vector}.json").write_text(json.dumps({
        **stamp, "vector": args.vector, "overrides": overrides, "dev_accuracy": metrics["best_dev_accuracy"],
        "test": metrics["test"], "wall_s": round(time.perf_counter() - started)}, indent=1))


def assemble() -> None:
    parts = [json.loads((PARTS / f"{v}.json").read_text()) for v in VECTORS if (PARTS / f"{v}.json").exists()]
    if not parts:
        raise SystemExit(f"no runs in {PARTS}: run --vector first")
    text = table(parts)
    (RESULTS / "sentence_vector.json").write_text(json.dumps(parts, indent=1))
    (RESULTS / "sentence_vector.md").write_text(text + "\n")
    print(text)


def table(parts: list[dict]) -> str:
    """The Markdown of bench/results/sentence_vector.json (one entry per run)."""
    rows = [[p["vector"], f"{p['dev_accuracy']:.3f}", f"{p['test']['accuracy']:.3f}",
             f"{p['test']['ci95'][0]:.3f}-{p['test']['ci95'][1]:.3f}", p["test"]["documents"], p["wall_s"],
             f"{p['commit']}{'+dirty' if p['dirty'] else ''} {p['date'][:16]}"] for p in parts]
    recipe = " ".join(o for o in parts[0]["overrides"] if not o.startswith("task.sentence_vector"))
    return (f"Hyperpartisan (SemEval-2019 by-article), MiniLM fine-tuned, the same budget for every vector: "
            f"`{recipe}`.\n\n" + markdown_table(["sentence vector", "dev accuracy", "test accuracy", "test CI95",
                                                 "test articles", "wall s", "run"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vector", choices=VECTORS)
    parser.add_argument("--table", action="store_true", help="assemble the table from the runs done")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.table:
        return assemble()
    if args.vector is None:
        parser.error("give --vector or --table")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    run(args)


if __name__ == "__main__":
    main()
