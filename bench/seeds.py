"""The softmax-vs-HF-baseline gap of bench/conll2003_full.py over several seeds.

    OMP_NUM_THREADS=1 python -m bench.conll2003_full --rows softmax,baseline --seed 43 \
        --out bench/results/conll2003_seeds/seed43.json        # one run per extra seed
    OMP_NUM_THREADS=1 python -m bench.conll2003_full --rows softmax_random --seed 42 \
        --out bench/results/conll2003_seeds/seed42_random.json  # optional: random batches
    python -m bench.seeds                                      # -> bench/results/conll2003_seeds.{json,md}

Reads the rows of bench/results/conll2003_full.json (its own seed) and of every
bench/results/conll2003_seeds/*.json, keeps the runs whose recipe equals the main file's but for
the seed, and reports each system's test F1 per seed, the mean and the spread, and the
difference of each nerkit row from the baseline per paired seed. Every run keeps its own stamp.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.common import RESULTS, markdown_table, save_results

SEEDS_DIR = RESULTS / "conll2003_seeds"
SYSTEMS = {"baseline": "HF AutoModelForTokenClassification + Trainer", "softmax": "nerkit MiniLM softmax",
           "softmax_random": "nerkit MiniLM softmax, random batches",
           "softmax_word_weighted": "nerkit MiniLM softmax, length-grouped, words weigh the same"}


def runs_of(path: Path) -> list[dict]:
    """The runs in one conll2003_full results file (its own and the merged ``other_runs``)."""
    results = json.loads(path.read_text())
    return [results, *results.get("other_runs", [])]


def collect(main: Path, seeds_dir: Path) -> dict:
    reference = json.loads(main.read_text())["recipe"]
    same_recipe = {k: v for k, v in reference.items() if k != "seed"}
    rows: dict[str, dict[int, dict]] = {}
    for path in [main, *sorted(seeds_dir.glob("*.json"))]:
        for run in runs_of(path):
            if {k: v for k, v in run["recipe"].items() if k != "seed"} != same_recipe:
                raise SystemExit(f"{path}: another recipe than {main}'s (beyond the seed): {run['recipe']}")
            for row in run["rows"]:
                if row["key"] in SYSTEMS:
                    rows.setdefault(row["key"], {})[run["recipe"]["seed"]] = {
                        "test_f1": row["test_f1"], "dev_f1": row["dev_f1"], "file": path.name,
                        "commit": run["commit"], "dirty": run["dirty"], "started": run["started"]}
    baseline = rows.get("baseline", {})
    gaps = {key: {seed: by_seed[seed]["test_f1"] - baseline[seed]["test_f1"] for seed in sorted(by_seed) if seed in baseline}
            for key, by_seed in rows.items() if key != "baseline"}
    return {"recipe": same_recipe, "rows": rows, "minus_baseline": gaps}


def table(results: dict) -> str:
    seeds = sorted({seed for by_seed in results["rows"].values() for seed in by_seed}, key=int)
    lines = []
    for key in [k for k in SYSTEMS if k in results["rows"]]:
        by_seed = results["rows"][key]
        f1s = [by_seed[s]["test_f1"] for s in seeds if s in by_seed]
        spread = f"{100 * statistics.stdev(f1s):.2f}" if len(f1s) > 1 else "-"
        lines.append([SYSTEMS[key], *(f"{100 * by_seed[s]['test_f1']:.2f}" if s in by_seed else "-" for s in seeds),
                      f"{100 * statistics.mean(f1s):.2f}" if f1s else "-", spread])
    for key, gaps in results["minus_baseline"].items():
        lines.append([f"{SYSTEMS[key]} - baseline (paired seeds)",
                      *(f"{100 * gaps[s]:+.2f}" if s in gaps else "-" for s in seeds),
                      f"{100 * statistics.mean(gaps.values()):+.2f}" if gaps else "-",
                      f"{100 * statistics.stdev(gaps.values()):.2f}" if len(gaps) > 1 else "-"])
    stamps = sorted({f"{r['commit']}{' (dirty)' if r['dirty'] else ''} {r['started'][:16]}"
                     for by_seed in results["rows"].values() for r in by_seed.values()})
    return (f"CoNLL-2003 test F1 by seed, the recipe of the full-data table otherwise; runs: {', '.join(stamps)}\n\n"
            + markdown_table(["system", *(f"seed {s}" for s in seeds), "mean", "std"], lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=Path, default=RESULTS / "conll2003_full.json")
    parser.add_argument("--seeds-dir", type=Path, default=SEEDS_DIR)
    args = parser.parse_args()
    results = collect(args.main, args.seeds_dir)
    save_results("conll2003_seeds", results, table(results))


if __name__ == "__main__":
    main()
