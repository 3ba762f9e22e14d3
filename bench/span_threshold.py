"""The decision threshold of a span head: is logit > 0 where GlobalPointer should say "entity"?

    python -m bench.span_threshold --runs bench/runs/heads/conll2003_first3000
    python -m bench.span_threshold --table        # bench/results/span_threshold.md from its .json

Su's loss separates entity spans from the rest around logit 0, which is GlobalPointer's default
``head.threshold``. This reads every span-head run directory under ``--runs`` (bench/heads.py's
runs; their weights are the dev-selected best), predicts dev and test once at the lowest
threshold of the grid, and scores every threshold of the grid by filtering those spans (a span
passes threshold t when its sigmoid exceeds sigmoid(t)): dev and test F1 with nesting kept, as
the engine scores a span head. Per run, the threshold with the best dev F1 (the closest to 0 on
ties) is "tuned"; its test F1 is paired with the default's over runs of one recipe (a t-interval
over seeds, and a bootstrap over test sentences, both systems resampled together).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from hydra.utils import instantiate

from bench.common import RESULTS, machine_info, markdown_table
from bench.heads import entity_counts, micro_f1, paired_bootstrap, t_interval, verdict
from nerkit.data.encoding import TextEncoder
from nerkit.heads.decoding import SpanDecoder
from nerkit.inference import Inference
from nerkit.model import NerModel, default_batch_tokens, torch_scores
from nerkit.runs import write_text_atomically

OUT = RESULTS / "span_threshold.json"
GRID = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def sweep(run_dir: Path, grid: Sequence[float]) -> dict | None:
    """Dev and test scores of one run at every threshold of ``grid``, from one prediction each;
    None for a run whose head does not decode spans."""
    model, cfg = NerModel.load(run_dir, "cpu")
    if not isinstance(model.head.decoder(), SpanDecoder):
        return None
    cpu, low = torch.device("cpu"), min(grid) - 1e-6
    types = list(model.head.decoder().entity_types)
    # The run's own predictor pieces, with one decoder at the lowest threshold of the grid.
    inference = Inference(TextEncoder(model.encoder.tokenizer, cfg.max_length, cfg.stride, cfg.get("truncate", False)),
                          torch_scores(model.eval(), cpu, cfg.trainer.precision), lambda: SpanDecoder(types, threshold=low),
                          cfg.trainer.eval_batch_size, default_batch_tokens(cpu, cfg.trainer.eval_batch_size, cfg.max_length))
    out = {"run": str(run_dir), "seed": int(cfg.seed), "head": cfg.head._target_, "head_lr": cfg.head.get("lr"),
           "trained_threshold": float(cfg.head.get("threshold", 0.0)), "splits": {}}
    for split in ("dev", "test"):
        documents = instantiate(cfg.data[split])
        encodings = inference.text_encoder.encode([d.text for d in documents], [d.tokens for d in documents])
        spans = inference.predict_encoded(encodings)
        by_threshold = {}
        for t in grid:
            kept = [[(s, e, label) for s, e, label, p in doc if p > sigmoid(t)] for doc in spans]
            # Per-sentence counts, as nerkit.evaluation.score counts a span head (no bootstrap per threshold).
            counts = entity_counts(documents, kept, nested=True)
            tp, predicted, gold = np.sum(counts, axis=0).tolist()
            by_threshold[str(t)] = {"f1": float(micro_f1(np.asarray(counts))), "precision": tp / predicted if predicted else 0.0,
                                    "recall": tp / gold if gold else 0.0, "counts": counts}
        out["splits"][split] = {"documents": len(documents), "by_threshold": by_threshold}
    dev = out["splits"]["dev"]["by_threshold"]
    out["tuned_threshold"] = float(max(dev, key=lambda t: (dev[t]["f1"], -abs(float(t)))))
    return out


def recipe_of(run: dict) -> str:
    return f"{run['head'].rsplit('.', 1)[1]} lr {run['head_lr']}"


def summarise(runs: Sequence[dict]) -> list[dict]:
    """Per recipe: test F1 at threshold 0 and at the dev-tuned threshold, paired over seeds."""
    rows = []
    for recipe in sorted({recipe_of(r) for r in runs}):
        group = sorted((r for r in runs if recipe_of(r) == recipe), key=lambda r: r["seed"])
        default = [r["splits"]["test"]["by_threshold"][str(0.0)] for r in group]
        tuned = [r["splits"]["test"]["by_threshold"][str(r["tuned_threshold"])] for r in group]
        diffs = [b["f1"] - a["f1"] for a, b in zip(default, tuned)]
        boot = paired_bootstrap([t["counts"] for t in tuned], [d["counts"] for d in default])
        t = t_interval(diffs)
        rows.append({"recipe": recipe, "seeds": [r["seed"] for r in group],
                     "tuned_thresholds": [r["tuned_threshold"] for r in group],
                     "test_f1_default": [d["f1"] for d in default], "test_f1_tuned": [x["f1"] for x in tuned],
                     "precision_default": [d["precision"] for d in default], "recall_default": [d["recall"] for d in default],
                     "mean_difference": statistics.mean(diffs), "bootstrap_ci95": boot, "t_ci95": t,
                     "verdict": verdict("tuned", "threshold 0", [boot, t])})
    return rows


def table(results: dict) -> str:
    """The Markdown of bench/results/span_threshold.json."""
    st = results["stamp"]
    lines = [f"GlobalPointer's decision threshold, runs under `{results['runs_root']}` (bench/heads.py), grid "
             f"{', '.join(map(str, results['grid']))}; test F1 x 100 with nesting kept; the tuned threshold is the best on "
             f"dev per run. Commit {st['commit']}{'+dirty' if st['dirty'] else ''}, {st['torch_threads']} thread(s).", ""]
    rows = [[r["recipe"], ",".join(map(str, r["seeds"])), ", ".join(f"{t:g}" for t in r["tuned_thresholds"]),
             " / ".join(f"{100 * p:.1f}/{100 * q:.1f}" for p, q in zip(r["precision_default"], r["recall_default"])),
             " ".join(f"{100 * f:.2f}" for f in r["test_f1_default"]), " ".join(f"{100 * f:.2f}" for f in r["test_f1_tuned"]),
             f"{100 * r['mean_difference']:+.2f}",
             f"{100 * r['bootstrap_ci95'][0]:+.2f} to {100 * r['bootstrap_ci95'][1]:+.2f}",
             "-" if r["t_ci95"] is None else f"{100 * r['t_ci95'][0]:+.2f} to {100 * r['t_ci95'][1]:+.2f}", r["verdict"]]
            for r in results["recipes"]]
    lines.append(markdown_table(["recipe", "seeds", "dev-tuned threshold", "P/R at 0", "test F1 at 0", "test F1 tuned",
                                 "mean difference", "bootstrap CI95", "t CI95", "verdict"], rows))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="a folder of bench/heads.py run directories")
    parser.add_argument("--grid", default=",".join(map(str, GRID)))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 beside other runs)")
    parser.add_argument("--table", action="store_true", help="rebuild the .md from the .json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.table:
        results = json.loads(args.out.read_text(encoding="utf-8"))
    else:
        if not args.runs:
            parser.error("--runs is required (or --table)")
        grid = sorted(float(t) for t in args.grid.split(","))
        if 0.0 not in grid:
            parser.error("the grid must hold 0 (the default threshold)")
        stamp = machine_info()
        runs = [r for r in (sweep(config.parent, grid) for config in sorted(args.runs.glob("*/config.yaml"))) if r]
        if not runs:
            parser.error(f"{args.runs}: no span-head run directories")
        results = {"stamp": stamp, "runs_root": str(args.runs), "grid": grid, "runs": runs, "recipes": summarise(runs)}
        write_text_atomically(args.out, json.dumps(results))
    write_text_atomically(args.out.with_suffix(".md"), table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
