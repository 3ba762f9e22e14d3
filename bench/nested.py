"""Nested NER on GENIA (../shared/data/ner/genia_nested): every head, dev F1 and inner-entity recall.

    OMP_NUM_THREADS=1 python -m bench.nested --head global_pointer --seed 42   # one row, one file
    python -m bench.nested --merge                                           # -> bench/results/nested.{json,md}

Each run trains one head with ``python -m nerkit.train data=genia_nested`` exactly as the CLI
would (MiniLM, the same epochs, batch size and encoder learning rate for every head; CRF and
GlobalPointer train their head at the lr of their conf/head yaml) and writes
bench/results/nested/seed<seed>_<head>[_<epochs>epochs].json under the stamp taken when it
started. ``--merge`` joins every such file into one table per recipe (budget).

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
DEFAULT_EPOCHS = 2  # the budget a shared 2-core machine allows for every head (one thread per run, two at a time)
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
    out = RUNS / f"nested_{row_name(args)}"
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


def row_name(args: argparse.Namespace) -> str:
    """The row file's (and run directory's) name; another budget than the default says so."""
    return f"seed{args.seed}_{args.head}" + ("" if args.epochs == DEFAULT_EPOCHS else f"_{args.epochs}epochs")


def merge(rows_dir: Path) -> dict:
    """Every row file, grouped by recipe (a budget): rows are compared only within a group."""
    files = sorted(rows_dir.glob("*.json"))
    if not files:
        raise SystemExit(f"no row files in {rows_dir}: run python -m bench.nested --head HEAD first")
    groups: list[dict] = []
    for f in files:
        run = json.loads(f.read_text())
        group = next((g for g in groups if g["recipe"] == run["recipe"]), None)
        if group is None:
            group = {"recipe": run["recipe"], "rows": {}}
            groups.append(group)
        group["rows"].setdefault(run["row"]["head"], {})[run["row"]["seed"]] = {
            **run["row"], "file": f.name, "commit": run["commit"], "dirty": run["dirty"], "started": run["started"]}
    a, b = GOAL
    for group in groups:
        rows = group["rows"] = {h: group["rows"][h] for h in HEADS if h in group["rows"]}
        paired = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
        group[f"goal_{a}_vs_{b}"] = {}
        for metric in ("f1", "inner_recall"):
            diffs = [rows[a][s][metric] - rows[b][s][metric] for s in paired]
            group[f"goal_{a}_vs_{b}"][metric] = {"seeds": paired, "differences": diffs,
                                                 "mean_difference": statistics.mean(diffs) if diffs else None,
                                                 "met": bool(diffs) and statistics.mean(diffs) >= 0}
    return {"budgets": sorted(groups, key=lambda g: g["recipe"]["epochs"])}


def group_table(group: dict) -> str:
    rows = group["rows"]
    seeds = sorted({s for by_seed in rows.values() for s in by_seed})
    common = [s for s in seeds if all(s in by_seed for by_seed in rows.values())]  # means compare alike
    lines = []
    for head, by_seed in rows.items():
        cells = []
        for metric in ("f1", "inner_recall"):
            cells += [f"{100 * by_seed[s][metric]:.2f}" if s in by_seed else "-" for s in seeds]
            cells.append(f"{100 * statistics.mean(by_seed[s][metric] for s in common):.2f}" if common else "-")
        dropped = next(iter(by_seed.values()))["flattening_dropped"]
        cells.append(f"{dropped['gold']} / {dropped['predicted']}" if dropped else "- (nesting kept)")
        cells.append(", ".join(f"{100 * by_seed[s]['selection_f1']:.2f}" for s in seeds if s in by_seed))
        lines.append([head, *cells])
    mean = f"mean s{','.join(map(str, common))}" if common else "mean"
    header = ["head", *(f"F1 s{s}" for s in seeds), f"F1 {mean}", *(f"inner rec. s{s}" for s in seeds), f"inner {mean}",
              "flattening dropped (gold / pred)", "own selection F1"]
    r = group["recipe"]
    stamps = sorted({f"{v['commit']}{'+dirty' if v['dirty'] else ''} {v['started'][:16]}"
                     for by_seed in rows.values() for v in by_seed.values()})
    goal_lines = []
    for metric, goal in group["goal_global_pointer_vs_crf"].items():
        difference = "-" if goal["mean_difference"] is None else f"{100 * goal['mean_difference']:+.2f}"
        goal_lines.append(f"- GlobalPointer >= CRF on {metric.replace('_', ' ')}: {'met' if goal['met'] else 'NOT met'} "
                          f"(mean paired difference {difference} points over seeds {goal['seeds']})")
    return "\n".join([
        f"### {r['epochs']} epochs",
        "",
        f"MiniLM, {r['epochs']} epochs, encoder lr {r['encoder_lr']}, batch {r['batch_size']} ({r['batch_order']} "
        f"batches), {r['head_lr']}; {r['model_selection']}. Runs: " + ", ".join(stamps),
        "", markdown_table(header, lines), "", *goal_lines])


def table(results: dict) -> str:
    any_row = next(iter(next(iter(results["budgets"][0]["rows"].values())).values()))
    return "\n\n".join([
        f"GENIA nested, dev set ({any_row['gold_entities']} gold entities, {any_row['gold_inner_entities']} inside "
        "another). F1: exact token spans against every gold entity, nested ones included (tag heads cannot predict "
        "nesting: what they cannot represent counts as missed); inner recall: gold entities inside another found "
        "exactly; own selection F1: the score each head is selected on (seqeval over flattened tags for tag heads).",
        *map(group_table, results["budgets"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", choices=HEADS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
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
    path = args.rows_dir / f"{row_name(args)}.json"
    path.write_text(json.dumps(results, indent=1))
    log.info("wrote %s: F1 %.4f, inner recall %s", path, row["f1"], row["inner_recall"])


if __name__ == "__main__":
    main()
