"""Do label units and batch order change F1? A short, one-seed investigation on CoNLL-2003.

    python -m bench.units_batching [--train-sentences 2000] [--epochs 2]

Four arms, identical except for:
- units: the model labels the dataset's tokens (``Document.tokens``) or the tokenizer's
  pre-tokenizer words (tokens dropped, as nerkit did before: "1996-08-22" is five words);
- batches: length-grouped (nerkit's default) or uniformly random (the HF Trainer's default).
Every arm is scored the same way on the whole test set: predictions -> character spans ->
dataset tokens (a word-level entity is widened to the tokens it touches), seqeval strict IOB2.
Writes bench/results/units_batching.{json,md}.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import open_dict

import nerkit.train
from bench.common import CONLL, RUNS, batch_tokens, compose_cfg, machine_info, markdown_table, save_results
from nerkit.data.encoding import AlignmentStats, char_to_unit_spans, word_to_char_span
from nerkit.data.readers import Document, read_conll
from nerkit.evaluation import score
from nerkit.predict import Predictor

log = logging.getLogger("bench.units_batching")


def without_tokens(documents: list[Document]) -> list[Document]:
    """The same documents, labelled on pre-tokenizer words instead of dataset tokens."""
    return [dataclasses.replace(d, tokens=None) for d in documents]


def words_file(sentences: int) -> Path:
    """The first ``sentences`` CoNLL train sentences as character-span JSON Lines (no tokens)."""
    path = RUNS / f"units_batching_train_{sentences}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": d.id, "text": d.text, "entities": [{"start": s, "end": e, "label": label} for s, e, label in d.spans]}
            for d in read_conll(CONLL / "train.txt", limit=sentences)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def score_on_tokens(predictor: Predictor, test: list[Document], units: str) -> dict:
    """Predict on the arm's units, map entities to character spans, then to dataset tokens."""
    given = test if units == "tokens" else without_tokens(test)
    encodings = predictor.text_encoder.encode([d.text for d in given], [d.tokens for d in given])
    stats = AlignmentStats()
    predicted = []
    for doc, enc, spans in zip(test, encodings, predictor.predict_encoded(encodings)):
        chars = [(*word_to_char_span(enc, s, e), label) for s, e, label, _ in spans]
        predicted.append(char_to_unit_spans([s for s, _ in doc.tokens], [e for _, e in doc.tokens], chars, stats))
    return score(test, predicted, "BIO") | {"predicted_entities_widened_to_tokens": stats.widened}


def table(results: dict) -> str:
    """The Markdown of bench/results/units_batching.json."""
    s = results["settings"]
    rows = [[a["units"], a["batches"], f"{100 * a['test_f1']:.2f}",
             f"{100 * a['test_ci95'][0]:.2f}-{100 * a['test_ci95'][1]:.2f}", f"{a['padding_fraction']:.1%}",
             a["predicted_entities_widened_to_tokens"], a["train_s"]] for a in results["arms"]]
    tokens = f"{results['scored_units']} tokens, " if "scored_units" in results else ""
    return (f"CoNLL-2003 test ({tokens}seqeval strict IOB2 on dataset tokens); MiniLM + softmax, "
            f"first {s['train_sentences']} train sentences, {s['epochs']} epochs, lr {s['lr']}, seed {s['seed']}\n\n"
            + markdown_table(["units", "batches", "test F1", "CI95", "padding", "widened predictions", "train s"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-sentences", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test-sentences", type=int, default=None, help="smoke test only: first N test sentences")
    parser.add_argument("--name", default="units_batching", help="results file: bench/results/<name>.json")
    parser.add_argument("--arms", default="tokens/grouped,words/grouped,tokens/random,words/random")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    stamp = machine_info()  # after the thread count is set: the threads this run uses
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)
    test = read_conll(CONLL / "test.txt", limit=args.test_sentences)
    results = {"machine": stamp, "settings": vars(args), "arms": []}
    for arm in args.arms.split(","):
        units, batches = arm.split("/")
        order = "random" if batches == "random" else "length"
        cfg = compose_cfg(["encoder=bert", "head=softmax", "data=conll2003", f"data.root={CONLL}", "data.dev=null",
                           "data.test=null", f"seed={args.seed}", f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}",
                           "trainer.device=cpu", "trainer.keep_checkpoints=0", f"+data.train.limit={args.train_sentences}",
                           f"trainer.batch_order={order}"])
        if units == "words":  # the same sentences as character-span JSON: no dataset tokens, so pre-tokenizer words
            with open_dict(cfg):
                cfg.data.train = {"_target_": "nerkit.data.readers.read_json_spans",
                                  "path": str(words_file(args.train_sentences))}
        padding = [1 - real / padded for real, padded in batch_tokens(cfg)]  # what the engine's batches pad, per epoch
        out = RUNS / f"units_batching_{units}_{batches}"
        started = time.perf_counter()
        nerkit.train.train(cfg, out)
        train_s = time.perf_counter() - started
        metrics = score_on_tokens(Predictor.from_run(out, "cpu", precision="fp32"), test, units)  # as trained
        results["arms"].append({"units": units, "batches": batches, "test_f1": metrics["f1"], "test_ci95": metrics["ci95"],
                                "test_precision": metrics["precision"], "test_recall": metrics["recall"],
                                "padding_fraction": float(np.mean(padding)), "train_s": round(train_s),
                                "predicted_entities_widened_to_tokens": metrics["predicted_entities_widened_to_tokens"]})
        results["scored_units"] = metrics["scored_units"]
        save_results(args.name, results, table(results))


if __name__ == "__main__":
    main()
