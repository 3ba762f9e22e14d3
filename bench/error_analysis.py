"""Error classes of a trained model on real data: the first sentences of CoNLL-2003 valid, and the
first documents of it at document level (long texts, so errors near window edges show up).

    PYTHONPATH=. python -m bench.error_analysis [--run-dir bench/runs/pages_model] [--sentences 200] [--documents 30]

Writes each report (errors.json + errors.html) under ``<run-dir>/errors_bench/{sentences,documents}``
and the counts to bench/results/error_analysis.json and .md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from bench.common import CONLL, ROOT, machine_info, markdown_table, save_results
from nerkit.data.readers import read_conll
from nerkit.error_analysis import ERROR_CLASSES
from nerkit.error_report import write_error_report
from nerkit.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "bench" / "runs" / "pages_model")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--margin", type=int, default=3, help="tokens from a window edge that count as near it")
    args = parser.parse_args()
    machine = machine_info()  # stamped when the run starts
    machine["dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                                           text=True, check=False).stdout.strip())
    predictor = Predictor.from_run(args.run_dir, "cpu", precision="fp32")  # the precision its dev scores were taken at
    splits = {
        f"first {args.sentences} sentences": ("sentences", read_conll(CONLL / "valid.txt", limit=args.sentences)),
        f"first {args.documents} documents": ("documents", read_conll(CONLL / "valid.txt", documents=True,
                                                                       limit=args.documents)),
    }
    results = {"machine": machine, "run_dir": str(args.run_dir), "splits": {}}
    for name, (folder, documents) in splits.items():
        out = args.run_dir / "errors_bench" / folder
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_error_report(predictor, documents, out, f"CoNLL-2003 valid, {name}", args.margin)
        seconds = time.perf_counter() - started
        report = json.loads((out / "errors.json").read_text())
        overall, edges = report["scores"]["overall"], report["window_edges"]
        counts = {kind: report["errors"][kind]["count"] for kind in ERROR_CLASSES}
        results["splits"][name] = {"documents": len(documents), "seconds": seconds, "overall": overall,
                                   "per_type": {k: v for k, v in report["scores"].items() if k != "overall"},
                                   "errors": counts, "window_edges": {k: v for k, v in edges.items() if k != "examples"},
                                   "report": str(out / "errors.html")}
    save_results("error_analysis", results, table(results))


def table(results: dict) -> str:
    """The Markdown of bench/results/error_analysis.json."""
    rows, margins = [], set()
    for name, split in results["splits"].items():
        overall, edges = split["overall"], split["window_edges"]
        margins.add(edges["margin_tokens"])
        rows.append([name, overall["gold"], overall["predicted"], overall["correct"], round(100 * overall["f1"], 1),
                     *(split["errors"][kind] for kind in ERROR_CLASSES), edges["long_documents"],
                     edges["errors_in_long_documents"], edges["errors_near_edges"],
                     f'{edges["gold_near_edges"]}/{edges["gold_in_long_documents"]}'])
    return markdown_table(["CoNLL-2003 valid", "gold", "predicted", "correct", "exact-span F1 %", *ERROR_CLASSES,
                           "long docs", "errors in long docs", f"errors near edges (<{'/'.join(map(str, sorted(margins)))} tokens)",
                           "gold near edges"], rows)


if __name__ == "__main__":
    main()
