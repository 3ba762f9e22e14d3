"""The [CLS] question, by experiment over seeds: which vector of a window should stand for the document?

    python -m bench.sentence_vector --seeds 42,43,44        # every vector x seed still missing (processes side by side share them)
    python -m bench.sentence_vector --vectors mean --seeds 43
    python -m bench.sentence_vector --table                 # bench/results/sentence_vector.{json,md} from the row files

BERT's [CLS] output is trained (by next-sentence prediction) to summarise the input; the first
content token's output, or the mean of all token outputs, are the alternatives
(``task.sentence_vector=cls|first_token|mean``). Every vector gets the same budget on
SemEval-2019 Hyperpartisan (train minus the seeded 10% dev split; all 628 test articles), the
embedded MiniLM fine-tuned with head+tail truncation (first 128 + last 382 tokens). Each (vector,
seed) writes its own stamped row file under bench/results/sentence_vector/ with every test
article's outcome, so that ``--table`` pairs the vectors: per pair, over the seeds both have, a
95% bootstrap interval of the accuracy difference (articles resampled, one resample for both
vectors and every seed) and a 95% t-interval over per-seed differences; an ordering is stated only
where both exclude 0 (bench/heads.py's statistics). ``--table`` also names the vector the result
supports as the default: one that beats every other, else the configured default stays.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from bench.common import RESULTS, ROOT, RUNS, compose_cfg, machine_info, markdown_table
from bench.heads import RESAMPLES, claim, compared, documents_key, load_code, pairs_table, runs_text
from nerkit.classifier import Classifier
from nerkit.runs import write_text_atomically
from nerkit.tasks.base import read_splits
from nerkit.train import train

VECTORS = ("cls", "first_token", "mean")
PAIRS = [("mean", "cls"), ("first_token", "cls"), ("mean", "first_token")]
PARTS = RESULTS / "sentence_vector"


def recipe(args: argparse.Namespace) -> list[str]:
    """The overrides every vector and seed shares (the budget)."""
    return ["task=classify", "data=hyperpartisan", "task.strategy=head_tail", "max_length=512",
            f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}", f"trainer.batch_size={args.batch_size}",
            f"trainer.precision={args.precision}", "trainer.device=cpu", "trainer.keep_checkpoints=0",
            "trainer.tensorboard=false", "report_errors=false"]


def run_one(vector: str, seed: int, shared: list[str], stamp: dict) -> dict:
    """Train one vector at one seed, then predict every test article with the best model as a
    user would (``Classifier.from_run``); the outcomes must give the engine's test accuracy."""
    cfg = compose_cfg([*shared, f"task.sentence_vector={vector}", f"seed={seed}"])
    stamp = stamp | {"row_started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "row_load_average": list(os.getloadavg())}
    test = read_splits(cfg)["test"]
    out = RUNS / "sentence_vector" / f"{vector}_seed{seed}"
    started = time.perf_counter()
    train(cfg, out)
    wall_s = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    predicted = Classifier.from_run(out, batch_size=cfg.trainer.eval_batch_size, precision=cfg.trainer.precision).predict([d.text for d in test])
    correct = [int(label == doc.label) for (label, _), doc in zip(predicted, test)]
    if not np.isclose(np.mean(correct), metrics["test"]["accuracy"], atol=1e-12):
        raise AssertionError(f"{vector} seed {seed}: predicted articles give accuracy {np.mean(correct)}, "
                             f"the engine's test {metrics['test']['accuracy']}")
    return {"vector": vector, "seed": seed, "stamp": stamp, "overrides": shared, "documents": len(test),
            "documents_key": documents_key(test), "dev_accuracy": metrics["best_dev_accuracy"],
            "test_accuracy": metrics["test"]["accuracy"], "test_ci95": metrics["test"]["ci95"],
            "wall_s": round(wall_s), "correct": correct}


def load_parts(parts_dir: Path) -> dict[str, dict[int, dict]]:
    """vector -> seed -> row file, checking that every row shares one budget and one test set."""
    out: dict[str, dict[int, dict]] = {}
    for path in sorted(parts_dir.glob("*_seed*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(r["vector"], {})[r["seed"]] = r
    rows = [r for by_seed in out.values() for r in by_seed.values()]
    for key in ("overrides", "documents_key"):
        if len({json.dumps(r[key]) for r in rows}) > 1:
            raise ValueError(f"{parts_dir}: row files differ in {key}; they cannot be paired")
    return out


def outcome_counts(correct: Sequence[int]) -> list[list[int]]:
    """An article's outcome as (true positives, predicted, gold) counts, for which micro F1 is
    accuracy: bench/heads.py's paired bootstrap applies unchanged."""
    return [[c, 1, 1] for c in correct]


def merge(parts_dir: Path, expected_seeds: Sequence[int], configured_default: str) -> dict:
    parts = load_parts(parts_dir)
    if not parts:
        raise SystemExit(f"no row files in {parts_dir}: run some vectors first")
    vectors = {}
    for vector in (v for v in VECTORS if v in parts):
        by_seed = parts[vector]
        accuracies = [by_seed[s]["test_accuracy"] for s in sorted(by_seed)]
        vectors[vector] = {"test_by_seed": {s: by_seed[s]["test_accuracy"] for s in sorted(by_seed)},
                           "dev_by_seed": {s: by_seed[s]["dev_accuracy"] for s in sorted(by_seed)},
                           "mean": statistics.mean(accuracies),
                           "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
                           "stamps": {s: by_seed[s]["stamp"] for s in sorted(by_seed)},
                           "wall_s": {s: by_seed[s]["wall_s"] for s in sorted(by_seed)}}
    pairs = []
    for a, b in PAIRS:
        seeds = sorted(set(parts.get(a, {})) & set(parts.get(b, {})))
        if not seeds:
            continue
        pairs.append(compared(a, b, seeds, [parts[a][s]["test_accuracy"] - parts[b][s]["test_accuracy"] for s in seeds],
                              [outcome_counts(parts[a][s]["correct"]) for s in seeds],
                              [outcome_counts(parts[b][s]["correct"]) for s in seeds]))
    missing = [f"{v} seed {s}" for v in VECTORS for s in expected_seeds if s not in parts.get(v, {})]
    first = next(iter(next(iter(parts.values())).values()))
    return {"overrides": first["overrides"], "documents": first["documents"], "expected_seeds": list(expected_seeds),
            "resamples": RESAMPLES, "vectors": vectors, "pairs": pairs, "missing": missing,
            "configured_default": configured_default,
            "supported_default": supported_default(pairs, configured_default, complete=not missing)}


def supported_default(pairs: Sequence[dict], configured: str, complete: bool) -> str:
    """The vector that beats every other with both intervals excluding 0, once every vector x
    seed has run; otherwise the configured default."""
    if not complete:
        return configured
    for vector in VECTORS:
        others = [p for p in pairs if vector in (p["a"], p["b"])]
        if len(others) == len(VECTORS) - 1 and all(p["verdict"] == f"{vector} > {p['b'] if p['a'] == vector else p['a']}"
                                                   for p in others):
            return vector
    return configured


def table(results: dict) -> str:
    """The Markdown of bench/results/sentence_vector.json."""
    seeds = sorted({int(s) for v in results["vectors"].values() for s in v["test_by_seed"]})
    rows = [[vector, *(f"{100 * v['test_by_seed'][str(s)]:.2f}" if str(s) in v["test_by_seed"] else "-" for s in seeds),
             f"{100 * v['mean']:.2f}", "-" if v["std"] is None else f"{100 * v['std']:.2f}", runs_text(v["stamps"])]
            for vector, v in results["vectors"].items()]
    out = [f"Hyperpartisan (SemEval-2019 by-article), MiniLM fine-tuned, the same budget for every vector and seed: "
           f"`{' '.join(results['overrides'])}`. Test accuracy x 100 on all {results['documents']} test articles; "
           f"paired intervals over the seeds both vectors have: bootstrap over articles ({results['resamples']} "
           "resamples, one resample for both vectors and every seed) and Student t over per-seed differences, both "
           "95%. An ordering is stated only where both exclude 0.", "",
           markdown_table(["sentence vector", *(f"seed {s}" for s in seeds), "mean", "std", "runs (commit/threads)"], rows)]
    if results["pairs"]:
        out += ["", pairs_table(results["pairs"])]
    out += ["", "Missing: " + (", ".join(results["missing"]) if results["missing"] else "none"),
            f"Default (`conf/task/classify.yaml`): `{results['configured_default']}`; the result supports "
            f"`{results['supported_default']}`" + ("" if not results["missing"] else " (until every vector x seed has run)") + "."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", default=",".join(VECTORS), help=f"comma-separated, of {VECTORS}")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--table", action="store_true", help="join the row files into bench/results/sentence_vector.{json,md}")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16 only where the CPU has it natively (elsewhere it is emulated, many times slower)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", type=Path, default=PARTS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.table:
        configured = OmegaConf.load(ROOT / "conf" / "task" / "classify.yaml").sentence_vector
        results = json.loads(json.dumps(merge(args.parts, seeds, configured)))  # the table reads what is stored
        write_text_atomically(RESULTS / "sentence_vector.json", json.dumps(results, indent=1))
        write_text_atomically(RESULTS / "sentence_vector.md", table(results) + "\n")
        return print(table(results))
    vectors = args.vectors.split(",")
    if unknown := set(vectors) - set(VECTORS):
        parser.error(f"unknown vectors {sorted(unknown)}; choose from {VECTORS}")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    shared = recipe(args)
    for vector in vectors:  # every class imported now: the start stamp is the code every row runs
        load_code(compose_cfg([*shared, f"task.sentence_vector={vector}"]))
    stamp = machine_info()
    for seed in seeds:
        for vector in vectors:
            path = args.parts / f"{vector}_seed{seed}.json"
            if path.exists() or not claim(path.with_suffix(".claimed")):
                print(f"{path}: done or being run by another process; skipped")
                continue
            write_text_atomically(path, json.dumps(run_one(vector, seed, shared, stamp)))
            path.with_suffix(".claimed").unlink()
            print(f"{path}: test accuracy {json.loads(path.read_text())['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
