"""The converged full-data benchmark: CoNLL-2003, whole train set, scored like conlleval.

    python -m bench.conll2003_full [--rows baseline,softmax,crf,global_pointer,efficient_global_pointer,bilstm]

(``VARIANTS``, run only when named: ``softmax_random``, the softmax row with uniformly random
batches as the Trainer draws them; ``softmax_word_weighted``, length-grouped batches with a loss
in which every word weighs the same whatever its batch: ``head.loss_divisor``.)

Every row trains on all 14,041 train sentences with one recipe (``RECIPE``, printed in the
table), picks its best epoch on dev, and is scored by nerkit.evaluation on the dataset's own
tokens (seqeval strict IOB2, first sub-token of each token labelled) with a 95% bootstrap
interval over test sentences. The baseline is HF ``AutoModelForTokenClassification`` trained by
the ``Trainer`` as the HF token-classification example does it (first-sub-token labels, linear
schedule with warm-up, best dev epoch), scored by the SAME code: its per-token tags are turned
into entities with the same I-without-B repair nerkit's softmax head applies (conlleval's rule).

Rows are saved one by one as they finish under the run's start stamp (commit, dirty flag,
machine). Rows of earlier runs that this run does not redo stay in the file under their own
stamps (``other_runs``); they are never re-stamped.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

from bench.common import CONLL, RESULTS, RUNS, compose_cfg, machine_info, markdown_table
from nerkit.config import embedded_model_path
from nerkit.data.encoding import AlignmentStats
from nerkit.data.readers import Document, read_conll
from nerkit.data.schemes import get_scheme
from nerkit.evaluation import gold_token_spans, score
from nerkit.runs import write_text_atomically
from nerkit.train import train

log = logging.getLogger("bench.conll2003_full")
DEFAULT_SEED = 42
ROWS = ["baseline", "softmax", "crf", "global_pointer", "efficient_global_pointer", "bilstm"]
# Softmax rows that differ from "softmax" in one thing, run on request (--rows): name -> (head column,
# trainer.batch_order, every word weighs the same in the loss).
VARIANTS = {"softmax_random": ("softmax (random batches)", "random", False),
            "softmax_word_weighted": ("softmax (length-grouped, words weigh the same)", "length", True)}
GOALS = {"softmax_vs_baseline": -0.003, "crf_vs_softmax": 0.0, "global_pointer_vs_softmax": 0.0}


def recipe(args: argparse.Namespace) -> dict:
    return {
        "encoder": "all-MiniLM-L6-v2 (embedded, 22M parameters)",
        "epochs": args.epochs, "encoder_lr": args.lr, "batch_size": args.batch_size, "warmup_ratio": 0.1,
        "schedule": "linear decay", "weight_decay": 0.01, "max_grad_norm": 1.0, "max_length": args.max_length,
        "stride": 32, "precision": args.precision, "seed": args.seed, "model_selection": "best dev F1 over epochs",
        "head_lr": "heads trained from scratch use their conf/head lr (CRF, GlobalPointer: 1e-3); softmax and the "
                   "HF classifier use the encoder lr",
        "bilstm": f"BiLSTM encoder (word vocabulary from train, 128-d embeddings, 256 hidden) + CRF head, "
                  f"{args.bilstm_epochs} epochs, lr {args.bilstm_lr}, same batch size, dev-selected",
        "threads": torch.get_num_threads(),
    }


def nerkit_row(name: str, args: argparse.Namespace) -> dict:
    """Train with nerkit.train exactly as the CLI would; its metrics come from nerkit.evaluation."""
    if name == "bilstm":
        system, head = "nerkit BiLSTM", "crf"
        overrides = ["encoder=bilstm", "head=crf", f"trainer.epochs={args.bilstm_epochs}", f"trainer.lr={args.bilstm_lr}"]
    else:
        system, (head, order, _) = "nerkit MiniLM", VARIANTS.get(name, (name, "length", False))
        overrides = ["encoder=bert", f"head={name.split('_')[0] if name in VARIANTS else name}",
                     f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}", f"trainer.batch_order={order}"]
    if VARIANTS.get(name, (None, None, False))[2]:
        overrides.append(f"head.loss_divisor={words_per_batch(args)}")
    overrides += ["data=conll2003", f"data.root={CONLL}", f"seed={args.seed}", f"max_length={args.max_length}",
                  f"trainer.batch_size={args.batch_size}", "trainer.warmup_ratio=0.1", f"trainer.device={args.device}",
                  f"trainer.precision={args.precision}", "trainer.keep_checkpoints=0", "report_errors=false",
                  *limits(args)]
    # Other seeds keep their own weights: the default seed's are what bench/longtext.py reads.
    out = RUNS / (f"conll2003_full_{name}" + ("" if args.seed == DEFAULT_SEED else f"_seed{args.seed}"))
    train(compose_cfg(overrides), out)
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    return {"system": system, "head": head, "dev_f1": metrics["best_dev_f1"], "test_f1": test["f1"],
            "test_ci95": test["ci95"], "test_precision": test["precision"], "test_recall": test["recall"],
            "train_s": round(metrics["train_seconds"]), "scored_units": test["scored_units"],
            "dev_history": [h["dev"]["f1"] for h in metrics["history"]], "overrides": overrides, "run_dir": str(out)}


def words_per_batch(args: argparse.Namespace) -> float:
    """The data's mean words per batch: the softmax loss divided by it instead of by the batch's own
    word count (``head.loss_divisor``) weighs a word the same in a batch of short lines as in one
    of long sentences (an experiment on the batch-order gap)."""
    docs = read_conll(CONLL / "train.txt", limit=args.train_sentences)
    return sum(len(d.tokens) for d in docs) / math.ceil(len(docs) / args.batch_size)


def limits(args: argparse.Namespace) -> list[str]:
    """Smaller splits, for a smoke test of the script only (never for reported numbers)."""
    out = []
    if args.train_sentences:
        out.append(f"+data.train.limit={args.train_sentences}")
    if args.eval_sentences:
        out += [f"+data.dev.limit={args.eval_sentences}", f"+data.test.limit={args.eval_sentences}"]
    return out


def baseline_row(args: argparse.Namespace, train_docs: list[Document], dev: list[Document], test: list[Document],
                 scheme_name: str = "BIO") -> tuple[dict, list[list[tuple[int, int, str]]]]:
    """HF AutoModelForTokenClassification + Trainer, first-sub-token labels, best dev epoch;
    returns the row and its test predictions (token spans per document)."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    scheme = get_scheme(scheme_name)
    types = sorted({s.label for d in train_docs for s in d.spans})
    labels = scheme.tags(types)
    label_ids = {tag: i for i, tag in enumerate(labels)}

    def encode(docs: list[Document], max_length: int) -> tuple[Dataset, list[list[int | None]]]:
        words = [[d.text[s:e] for s, e in d.tokens] for d in docs]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        rows, first_subtoken_of = [], []
        for i, doc in enumerate(docs):
            tags = scheme.encode(gold_token_spans(doc, AlignmentStats()), len(doc.tokens))
            row_labels, owners, previous = [], [], None
            for w in enc.word_ids(i):  # label each token's first sub-token only (HF run_ner)
                first = w is not None and w != previous
                row_labels.append(label_ids[tags[w]] if first else -100)
                owners.append(w if first else None)
                previous = w
            rows.append({k: enc[k][i] for k in enc} | {"labels": row_labels})
            first_subtoken_of.append(owners)
        return Dataset.from_list(rows), first_subtoken_of

    def token_spans(logits: np.ndarray, docs: list[Document], owners: list[list[int | None]]) -> tuple[list, int]:
        """Argmax tag of each token's first sub-token -> entities; a token with no sub-token
        in the input (none in CoNLL at 512) is tagged O and counted."""
        spans, missing = [], 0
        for i, doc in enumerate(docs):
            tags = ["O"] * len(doc.tokens)
            seen = 0
            for t, w in enumerate(owners[i]):
                if w is not None:
                    tags[w] = labels[int(np.argmax(logits[i, t]))]
                    seen += 1
            missing += len(tags) - seen
            spans.append(scheme.decode(tags)[0])
        return spans, missing

    dev_set, dev_owners = encode(dev, 512)  # no truncation at prediction: CoNLL sentences fit in 512

    def compute_metrics(prediction) -> dict:
        spans, _ = token_spans(prediction.predictions, dev, dev_owners)
        return {"f1": score(dev, spans, scheme_name)["f1"]}

    out = Path(tempfile.mkdtemp(prefix="nerkit-hf-baseline-"))
    model = AutoModelForTokenClassification.from_pretrained(
        embedded_model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids)
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1,  # a float below 1 is a ratio (transformers 5)
        weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=args.seed, report_to="none", eval_strategy="epoch", save_strategy="epoch",
        save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="f1", greater_is_better=True,
        logging_strategy="no", use_cpu=args.device == "cpu", disable_tqdm=True, bf16=args.precision == "bf16")
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train_docs, args.max_length)[0],
                      eval_dataset=dev_set, data_collator=DataCollatorForTokenClassification(tokenizer),
                      compute_metrics=compute_metrics)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    test_set, test_owners = encode(test, 512)
    trainer.compute_metrics = None  # it scores the dev set; the test predictions are scored below
    spans, missing = token_spans(trainer.predict(test_set).predictions, test, test_owners)
    metrics = score(test, spans, scheme_name)
    dev_history = [h["eval_f1"] for h in trainer.state.log_history if "eval_f1" in h]
    shutil.rmtree(out)  # the Trainer's epoch checkpoints
    return {"system": "HF AutoModelForTokenClassification + Trainer", "head": "softmax (linear)",
            "dev_f1": max(dev_history), "test_f1": metrics["f1"], "test_ci95": metrics["ci95"],
            "test_precision": metrics["precision"], "test_recall": metrics["recall"], "train_s": round(train_s),
            "scored_units": metrics["scored_units"], "dev_history": dev_history,
            "tokens_without_prediction": missing}, spans


def load_previous(path: Path) -> list[dict]:
    """Earlier runs in the results file, each with its own stamp and rows."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    current = {k: old[k] for k in ("commit", "dirty", "machine", "started", "train_sentences", "recipe") if k in old}
    return [current | {"rows": old.get("rows", [])}, *old.get("other_runs", [])]


def save(path: Path, results: dict, previous: list[dict]) -> None:
    done = {r["key"] for r in results["rows"]}
    others = [run | {"rows": [r for r in run["rows"] if r.get("key") not in done]} for run in previous]
    results["other_runs"] = [run for run in others if run["rows"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(results, indent=1))  # never a half-written results file
    table_text = table(results)
    path.with_suffix(".md").write_text(table_text + "\n")
    print(table_text, flush=True)


def merge(path: Path, other: Path) -> None:
    """Add the rows of another run of this script (e.g. run side by side with ``--out``) to the
    results file at ``path``, under that run's own stamp; rows ``path`` already has are kept."""
    results, extra = json.loads(path.read_text()), json.loads(other.read_text())
    if extra["recipe"] != results["recipe"]:
        raise SystemExit(f"{other}: another recipe than {path}'s; rows of different recipes are not merged")
    done = {r["key"] for r in results["rows"]}
    run = {k: extra[k] for k in ("commit", "dirty", "machine", "started", "train_sentences", "recipe")}
    run["rows"] = [r for r in extra["rows"] if r["key"] not in done]
    others = [r for r in results.get("other_runs", []) if r["started"] != run["started"]]
    save(path, results, [*others, run])


def table(results: dict) -> str:
    """The Markdown table of all rows (this run's and earlier runs', each with its stamp) and the goals."""
    runs = [results, *results.get("other_runs", [])]
    rows, by_key = [], {}
    for run in runs:
        stamp = f"{run['commit']}{'+dirty' if run['dirty'] else ''} {run['started'][:16]}"
        for r in run["rows"]:
            by_key.setdefault(r["key"], r)
            lo, hi = r["test_ci95"]
            rows.append([r["system"], r["head"], f"{100 * r['dev_f1']:.2f}", f"{100 * r['test_f1']:.2f}",
                         f"{100 * lo:.2f}-{100 * hi:.2f}", r["train_s"], stamp])
    rec = results["recipe"]
    out = [f"CoNLL-2003 English, trained on {results['train_sentences']} train sentences; scored on "
           f"{results['scored_on']}; test CI95: bootstrap over test sentences (1000 resamples).",
           f"Recipe (every MiniLM row): {rec['epochs']} epochs, encoder lr {rec['encoder_lr']}, batch {rec['batch_size']}, "
           f"warm-up {rec['warmup_ratio']} then linear decay, max length {rec['max_length']}, {rec['precision']}, "
           f"seed {rec['seed']}, {rec['model_selection']}; {rec['head_lr']}. BiLSTM row: {rec['bilstm']}.", "",
           markdown_table(["system", "head", "dev F1", "test F1", "test CI95", "train s", "run"], rows), ""]

    def goal(name: str, a: str, b: str, margin: float) -> str:
        if a not in by_key or b not in by_key:
            return f"- {name}: not measured yet"
        diff = by_key[a]["test_f1"] - by_key[b]["test_f1"]
        # One seed and unpaired intervals order nothing: bench/heads.py orders systems over seeds.
        return (f"- {name}: {100 * diff:+.2f} test F1 points on one seed (goal margin {100 * margin:+.1f}); "
                "no ordering is claimed from one seed (bench/heads.py pairs seeds)")

    out += [goal("softmax within 0.3 F1 of the HF baseline", "softmax", "baseline", GOALS["softmax_vs_baseline"]),
            goal("CRF >= softmax", "crf", "softmax", GOALS["crf_vs_softmax"]),
            goal("GlobalPointer >= softmax", "global_pointer", "softmax", GOALS["global_pointer_vs_softmax"])]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS + list(VARIANTS)}, "
                                                              "run in that order")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--bilstm-epochs", type=int, default=10)
    parser.add_argument("--bilstm-lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: every row trains and predicts there")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16",
                        help="every row alike: nerkit's trainer.precision, the Trainer's bf16 flag (autocast both)")
    parser.add_argument("--train-sentences", type=int, default=None, help="smoke test only: first N train sentences")
    parser.add_argument("--eval-sentences", type=int, default=None, help="smoke test only: first N dev/test sentences")
    parser.add_argument("--out", type=Path, default=RESULTS / "conll2003_full.json")
    parser.add_argument("--merge", type=Path, help="add the rows of this results file (another run) to --out and stop")
    args = parser.parse_args()
    if args.merge:
        return merge(args.out, args.merge)
    rows = args.rows.split(",")
    if unknown := set(rows) - set(ROWS) - set(VARIANTS):
        parser.error(f"unknown rows {sorted(unknown)}; choose from {ROWS + list(VARIANTS)}")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    stamp = machine_info()  # taken once, now (threads set): every row of this run carries it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    train_docs = read_conll(CONLL / "train.txt", limit=args.train_sentences)
    dev = read_conll(CONLL / "valid.txt", limit=args.eval_sentences)
    test = read_conll(CONLL / "test.txt", limit=args.eval_sentences)
    previous = load_previous(args.out)
    results = {"commit": stamp["commit"], "dirty": stamp["dirty"], "started": stamp["date"],
               "machine": {k: v for k, v in stamp.items() if k not in ("commit", "dirty", "date")},
               "train_sentences": len(train_docs),
               "scored_on": f"CoNLL dataset tokens ({sum(len(d.tokens) for d in test)} test tokens), seqeval strict IOB2",
               "recipe": recipe(args), "rows": []}
    for name in rows:
        log.info("row %s", name)
        started = time.perf_counter()
        row = baseline_row(args, train_docs, dev, test)[0] if name == "baseline" else nerkit_row(name, args)
        row["key"] = name
        row["wall_s"] = round(time.perf_counter() - started)
        results["rows"].append(row)
        save(args.out, results, previous)


if __name__ == "__main__":
    main()
