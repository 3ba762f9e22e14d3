"""Nested NER on GENIA (../shared/data/ner/genia_nested): every head, dev F1 and inner-entity recall.

    OMP_NUM_THREADS=1 python -m bench.nested --head global_pointer --seed 42   # one row, one file
    python -m bench.nested --merge                                           # -> bench/results/nested.{json,md}

Each run trains one head with ``python -m nerkit.train data=genia_nested`` exactly as the CLI
would (MiniLM, the same epochs, batch size and encoder learning rate for every head; CRF and
GlobalPointer train their head at the lr of their conf/head yaml) and writes
bench/results/nested/seed<seed>_<head>.json under the stamp taken when it started. ``--merge``
joins every such file into one table; runs of another recipe than the first are refused.

Scores come from nerkit.evaluation on the dev set at the model-selected step: ``f1`` is exact
token-span match against every gold entity, nested ones included (for tag heads, whose tag
sequences cannot hold nesting, the inner entities they cannot represent count as missed);
inner recall is the recall of gold entities lying inside another gold entity. A tag head is
selected on its own seqeval F1 over flattened tags, a span head on the nested F1.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from bench.common import RESULTS, ROOT, RUNS, compose_cfg, machine_info, markdown_table, save_results
from nerkit.train import train

GENIA = ROOT.parent / "shared" / "data" / "ner" / "genia_nested"
ROWS_DIR = RESULTS / "nested"
HEADS = ["softmax", "crf", "global_pointer", "efficient_global_pointer"]
GOAL = ("global_pointer", "crf")  # the goal: GlobalPointer >= CRF on F1 and on inner recall

log = logging.getLogger("bench.nested")


def recipe(args: argparse.Namespace) -> dict:
    return {"data": "GENIA nested (W2NER JSON Lines), train -> dev", "encoder": "all-MiniLM-L6-v2 (embedded)",
            "epochs": args.epochs, "encoder_lr": args.lr, "batch_size": args.batch_size, "batch_order": args.batch_order,
            "max_length": args.max_length,
            "precision": "fp32", "warmup_ratio": 0.1, "schedule": "linear decay",
            "head_lr": "conf/head lr (CRF, GlobalPointer: 1e-3; softmax: the encoder lr)",
            "model_selection": "best dev F1 of the head's own score over epochs",
            "train_limit": args.train_limit, "dev_limit": args.dev_limit}


def run_row(args: argparse.Namespace) -> dict:
    """Train one head as the CLI does; the dev scores of its model-selected evaluation."""
    overrides = ["data=genia_nested", f"data.root={GENIA}", f"head={args.head}", f"seed={args.seed}",
                 f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}", f"trainer.batch_size={args.batch_size}",
                 f"max_length={args.max_length}", f"trainer.batch_order={args.batch_order}", "trainer.device=cpu", "trainer.precision=fp32",
                 "trainer.keep_checkpoints=0", "trainer.tensorboard=false", "report_errors=false"]
    if args.train_limit:
        overrides.append(f"+data.train.limit={args.train_limit}")
    if args.dev_limit:
        overrides.append(f"+data.dev.limit={args.dev_limit}")
    out = RUNS / f"nested_{args.head}_seed{args.seed}"
    train(compose_cfg(overrides), out)
    metrics = json.loads((out / "metrics.json").read_text())
    best = next(h for h in metrics["history"] if h["step"] == metrics["best_step"])
    dev = best["dev"]
    nesting = dev["nesting"]
    return {"head": args.head, "seed": args.seed, "f1": nesting["f1"], "precision": nesting["precision"],
            "recall": nesting["recall"], "ci95": nesting["ci95"], "inner_recall": nesting["inner_recall"],
            "gold_entities": dev["gold_entities"] + dev.get("overlapping_entities_dropped", {}).get("gold", 0),
            "gold_inner_entities": nesting["gold_inner_entities"],
            "predicted_inner_entities": nesting["predicted_inner_entities"],
            "selection_f1": dev["f1"], "selection_scored_on": dev["scored_on"],
            "flattening_dropped": dev.get("overlapping_entities_dropped"), "best_epoch": best["epoch"],
            "history": [{"epoch": h["epoch"], "f1": h["dev"]["nesting"]["f1"],
                         "inner_recall": h["dev"]["nesting"]["inner_recall"]} for h in metrics["history"]],
            "train_s": round(metrics["train_seconds"]), "overrides": overrides, "run_dir": str(out)}


def merge(rows_dir: Path) -> dict:
    files = sorted(rows_dir.glob("*.json"))
    if not files:
        raise SystemExit(f"no row files in {rows_dir}: run python -m bench.nested --head HEAD first")
    runs = [json.loads(f.read_text()) for f in files]
    reference = {k: v for k, v in runs[0]["recipe"].items()}
    for f, run in zip(files, runs):
        if run["recipe"] != reference:
            raise SystemExit(f"{f}: another recipe than {files[0]}'s: {run['recipe']}")
    rows = {}
    for f, run in zip(files, runs):
        rows.setdefault(run["row"]["head"], {})[run["row"]["seed"]] = {
            **run["row"], "file": f.name, "commit": run["commit"], "dirty": run["dirty"], "started": run["started"]}
    goal = {}
    a, b = GOAL
    paired = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    for metric in ("f1", "inner_recall"):
        diffs = [rows[a][s][metric] - rows[b][s][metric] for s in paired]
        goal[metric] = {"seeds": paired, "differences": diffs,
                        "mean_difference": statistics.mean(diffs) if diffs else None,
                        "met": bool(diffs) and statistics.mean(diffs) >= 0}
    return {"recipe": reference, "rows": {h: rows[h] for h in HEADS if h in rows},
            f"goal_{a}_vs_{b}": goal}


def table(results: dict) -> str:
    seeds = sorted({s for by_seed in results["rows"].values() for s in by_seed})
    common = [s for s in seeds if all(s in by_seed for by_seed in results["rows"].values())]  # means compare alike
    lines = []
    for head, by_seed in results["rows"].items():
        cells = []
        for metric in ("f1", "inner_recall"):
            cells += [f"{100 * by_seed[s][metric]:.2f}" if s in by_seed else "-" for s in seeds]
            cells.append(f"{100 * statistics.mean(by_seed[s][metric] for s in common):.2f}" if common else "-")
        one = by_seed[seeds[0]] if seeds[0] in by_seed else next(iter(by_seed.values()))
        dropped = one["flattening_dropped"]
        cells.append(f"{dropped['gold']} / {dropped['predicted']}" if dropped else "- (nesting kept)")
        cells.append(", ".join(f"{100 * by_seed[s]['selection_f1']:.2f}" for s in seeds if s in by_seed))
        lines.append([head, *cells])
    mean = f"mean s{','.join(map(str, common))}"
    header = ["head", *(f"F1 s{s}" for s in seeds), f"F1 {mean}", *(f"inner rec. s{s}" for s in seeds), f"inner {mean}",
              "flattening dropped (gold / pred)", "own selection F1"]
    r = results["recipe"]
    stamps = sorted({f"{v['commit']}{'+dirty' if v['dirty'] else ''} {v['started'][:16]}"
                     for by_seed in results["rows"].values() for v in by_seed.values()})
    any_row = next(iter(next(iter(results["rows"].values())).values()))
    goal_lines = []
    for metric, goal in results["goal_global_pointer_vs_crf"].items():
        difference = "-" if goal["mean_difference"] is None else f"{100 * goal['mean_difference']:+.2f}"
        goal_lines.append(f"- GlobalPointer >= CRF on {metric.replace('_', ' ')}: {'met' if goal['met'] else 'NOT met'} "
                          f"(mean paired difference {difference} points over seeds {goal['seeds']})")
    return "\n".join([
        f"GENIA nested, dev set ({any_row['gold_entities']} gold entities, {any_row['gold_inner_entities']} inside "
        f"another); MiniLM, {r['epochs']} epochs, encoder lr {r['encoder_lr']}, batch {r['batch_size']}, "
        f"{r['head_lr']}; {r['model_selection']}. F1: exact token spans against every gold entity, nested ones "
        "included; inner recall: gold entities inside another found exactly. Runs: " + ", ".join(stamps),
        "", markdown_table(header, lines), "", *goal_lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", choices=HEADS)
    parser.add_argument("--seed", type=int, default=42)
    # The budget that fits a shared 2-core machine (one thread per run, two runs at a time).
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-order", choices=["length", "random"], default="length",
                        help="length: similar lengths per batch, less padding (faster on CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--train-limit", type=int, default=None, help="smoke test only: first N train sentences")
    parser.add_argument("--dev-limit", type=int, default=None, help="smoke test only: first N dev sentences")
    parser.add_argument("--rows-dir", type=Path, default=ROWS_DIR)
    parser.add_argument("--merge", action="store_true", help="join the row files of --rows-dir into nested.{json,md}")
    args = parser.parse_args()
    if args.merge:
        results = merge(args.rows_dir)
        save_results("nested", results, table(results))
        return
    if not args.head:
        parser.error("--head is required to run a row (or --merge)")
    stamp = machine_info()  # taken once, now: the row carries it
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    row = run_row(args)
    row["wall_s"] = round(time.perf_counter() - started)
    results = {"commit": stamp["commit"], "dirty": stamp["dirty"], "started": stamp["date"],
               "machine": {k: v for k, v in stamp.items() if k not in ("commit", "dirty", "date")},
               "recipe": recipe(args), "row": row}
    args.rows_dir.mkdir(parents=True, exist_ok=True)
    path = args.rows_dir / f"seed{args.seed}_{args.head}.json"
    path.write_text(json.dumps(results, indent=1))
    log.info("wrote %s: F1 %.4f, inner recall %s", path, row["f1"], row["inner_recall"])


if __name__ == "__main__":
    main()
