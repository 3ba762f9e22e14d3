"""Does the format=hf export predict what nerkit predicts? CoNLL-2003 test sentences through
nerkit's Predictor and through transformers' pipeline("token-classification",
aggregation_strategy="first") on the exported folder.

Reported: sentences whose entity lists are identical (all, and those that fit one nerkit window:
a longer text is cut into overlapping windows by nerkit, read whole by the pipeline), entity-level
agreement (shared / union), and each side's exact-span F1 against the gold entities.

``python -m bench.hf_export [--run-dir bench/runs/hf_model] [--limit N]`` -> bench/results/hf_export.json and .md
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.stamp import ROOT, stamp

CONLL_TEST = ROOT.parent / "shared" / "data" / "ner" / "conll2003" / "test.txt"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def span_f1(predicted: list[set], gold: list[set]) -> float:
    tp = sum(len(p & g) for p, g in zip(predicted, gold))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "bench" / "runs" / "hf_model")
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences only")
    args = parser.parse_args()
    import torch
    from transformers import pipeline

    from nerkit.data.readers import read_conll
    from nerkit.evaluation import entity_agreement
    from nerkit.export import export_hf
    from nerkit.predict import Predictor

    torch.set_num_threads(2)
    results = {"stamp": stamp(), "run_dir": str(args.run_dir)}  # after the threads are set: the stamp records them
    folder = export_hf(args.run_dir)
    docs = read_conll(CONLL_TEST)[: args.limit]
    texts = [d.text for d in docs]
    started = time.perf_counter()
    predictor = Predictor.from_run(args.run_dir, "cpu", precision="fp32")  # like for like with the fp32 side
    ours = [{(e.start, e.end, e.label) for e in doc} for doc in predictor.predict(texts)]
    nerkit_s = time.perf_counter() - started
    ner = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    started = time.perf_counter()
    theirs = [{(e["start"], e["end"], e["entity_group"]) for e in doc} for doc in ner(texts, batch_size=32)]
    pipeline_s = time.perf_counter() - started
    gold = [{tuple(s) for s in d.spans} for d in docs]

    same = sum(a == b for a, b in zip(ours, theirs))
    # nerkit cuts a text longer than its window into overlapping windows; the pipeline reads it whole.
    one_window = [len(enc.windows) <= 1 for enc in predictor.text_encoder.encode(texts)]
    same_one = sum(a == b for a, b, one in zip(ours, theirs, one_window) if one)
    results.update(
        sentences=len(texts), identical_sentences=same, sentence_agreement=same / len(texts),
        single_window_sentences=sum(one_window), single_window_agreement=same_one / max(sum(one_window), 1),
        entity_agreement=entity_agreement(ours, theirs), nerkit_entities=sum(map(len, ours)),
        pipeline_entities=sum(map(len, theirs)), nerkit_span_f1=span_f1(ours, gold), pipeline_span_f1=span_f1(theirs, gold),
        nerkit_seconds=nerkit_s, pipeline_seconds=pipeline_s,
        disagreements=[{"text": t, "nerkit": sorted(a), "pipeline": sorted(b)}
                       for t, a, b in zip(texts, ours, theirs) if a != b][:20],
    )
    text = table(results)
    (ROOT / "bench" / "results" / "hf_export.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    (ROOT / "bench" / "results" / "hf_export.md").write_text(text + "\n")
    print(text)


def table(results: dict) -> str:
    """The Markdown of bench/results/hf_export.json."""
    r = results
    return "\n".join([
        "| sentences | identical | sentence agreement | one-window sentences: agreement | entity agreement | nerkit span F1 | pipeline span F1 |",
        "|---|---|---|---|---|---|---|",
        f"| {r['sentences']} | {r['identical_sentences']} | {r['sentence_agreement']:.2%} | "
        f"{round(r['single_window_agreement'] * r['single_window_sentences'])}/{r['single_window_sentences']} = "
        f"{r['single_window_agreement']:.2%} | {r['entity_agreement']:.2%} | "
        f"{r['nerkit_span_f1']:.4f} | {r['pipeline_span_f1']:.4f} |",
    ])


if __name__ == "__main__":
    main()
