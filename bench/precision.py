"""Training precision, fp32 vs bf16, side by side in one process: real (non-pad) tokens per
second of training and the dev score, for one NER run (MiniLM on a CoNLL-2003 subset) and one
classification run (MiniLM on a Hyperpartisan subset, first window of each article).

``python -m bench.precision [--ner-sentences 256] [--dev-sentences 200] [--docs 64] [--dev-docs 32]``
writes bench/results/precision.json and precision.md. Throughput leaves out each run's first
step (kernel warm-up). GPU rows are recorded as not run when there is no GPU.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import open_dict

from bench.common import CONLL, ROOT, compose_cfg, machine_info, markdown_table, save_results, write_subset
from nerkit.precision import cpu_has_bf16
from nerkit.train import train

HYPERPARTISAN = ROOT.parent / "shared" / "data" / "longtext" / "hyperpartisan"
PRECISIONS = ("fp32", "bf16")


def stamp() -> dict:
    """Commit and dirty flag, taken before anything runs."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()), **machine_info()}


def throughput(run_dir: Path) -> dict:
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["type"] == "train"][1:]  # the first step warms the kernels up
    tokens = sum(r["tokens"] for r in steps)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in steps)
    return {"tokens_per_s": tokens / seconds, "timed_steps": len(steps), "timed_tokens": tokens}


def ner_cfg(work: Path, args, precision: str):
    train_file = write_subset(CONLL / "train.txt", work / "train.txt", args.ner_sentences)
    dev_file = write_subset(CONLL / "valid.txt", work / "dev.txt", args.dev_sentences)
    return compose_cfg(["data=conll2003", f"data.train.path={train_file}", f"data.dev.path={dev_file}", "data.test=null",
                        # Small batches at a high learning rate: 32 updates are enough to find entities.
                        "trainer.epochs=1", "trainer.batch_size=8", "trainer.lr=5e-4", "trainer.log_every=1",
                        "trainer.device=cpu", f"trainer.precision={precision}", "trainer.keep_checkpoints=0"])


def classify_cfg(args, precision: str):
    cfg = compose_cfg(["task=classify", "data=hyperpartisan", f"data.root={HYPERPARTISAN}", "task.strategy=head",
                       "max_length=256", "trainer.epochs=1", "trainer.batch_size=8", "trainer.lr=5e-5",
                       "trainer.log_every=1", "trainer.device=cpu", f"trainer.precision={precision}",
                       "trainer.keep_checkpoints=0"])
    with open_dict(cfg):  # seeded subsets of the training articles: train and dev stay disjoint
        for split, n in (("train", args.docs), ("dev", args.dev_docs)):
            cfg.data[split] = {"_target_": "nerkit.data.readers.split_documents", "documents": cfg.data[split],
                               "held_out": n, "seed": cfg.seed, "part": "held_out"}
        cfg.data.test = None
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ner-sentences", type=int, default=256)
    parser.add_argument("--dev-sentences", type=int, default=200)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--dev-docs", type=int, default=32)
    args = parser.parse_args()
    results = {"stamp": stamp(), "args": vars(args), "cpu_has_bf16": cpu_has_bf16(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task, build, metric in (("ner", lambda p: ner_cfg(work, args, p), "f1"),
                                    ("classify", lambda p: classify_cfg(args, p), "accuracy")):
            for precision in PRECISIONS:
                run_dir = work / f"{task}-{precision}"
                started = time.perf_counter()
                best = train(build(precision), run_dir)
                run = {"task": task, "device": "cpu", "precision": precision, f"dev_{metric}": best,
                       "wall_seconds": time.perf_counter() - started, **throughput(run_dir)}
                results["runs"].append(run)
    reason = "not run: no GPU on the benchmark machine" if not torch.cuda.is_available() else "not run: CPU-only benchmark"
    for task in ("ner", "classify"):
        for precision in ("fp32", "bf16", "fp16"):
            results["runs"].append({"task": task, "device": "cuda", "precision": precision, "skipped": reason})
    for task in ("ner", "classify"):
        fp32, bf16 = (next(r for r in results["runs"] if r["task"] == task and r["device"] == "cpu" and r["precision"] == p)
                      for p in PRECISIONS)
        results[f"{task}_bf16_speedup"] = bf16["tokens_per_s"] / fp32["tokens_per_s"]
    save_results("precision", results, table(results))


def table(results: dict) -> str:
    """The Markdown of bench/results/precision.json."""
    rows = []
    for run in results["runs"]:
        if "skipped" in run:
            rows.append([run["task"], run["device"], run["precision"], "-", "-", run["skipped"]])
        else:
            metric = "f1" if "dev_f1" in run else "accuracy"
            rows.append([run["task"], run["device"], run["precision"], f"{run['tokens_per_s']:.0f}",
                         f"{metric} {run[f'dev_{metric}']:.4f}", f"{run['wall_seconds']:.0f}"])
    stamp = results["stamp"]
    return (markdown_table(["task", "device", "precision", "real tokens/s (train)", "dev", "wall s"], rows)
            + f"\n\nbf16 / fp32 training throughput on CPU: NER {results['ner_bf16_speedup']:.2f}x, "
              f"classification {results['classify_bf16_speedup']:.2f}x "
              f"(commit {stamp['commit'][:10]}{' dirty' if stamp['dirty'] else ''}, "
              f"{stamp['date']}, load average {stamp['load_average'][0]:.1f})")


if __name__ == "__main__":
    main()
