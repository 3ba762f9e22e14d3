"""Quality: nerkit's heads against a standard HuggingFace fine-tune, in one run.

    python -m bench.quality [--train-sentences 3000] [--epochs 1]

CoNLL-2003 (English, all-MiniLM-L6-v2): the same train subset, encoder, epochs, learning
rate, batch size and seed for every system. The baseline is ``AutoModelForTokenClassification``
trained by the HF ``Trainer`` with first-sub-token labels, the way the HF token-classification
example does it. Every system is scored on the same dev set with seqeval (strict, IOB2) over
the original CoNLL tokens, on sentences and on whole ``-DOCSTART-`` documents (the baseline
truncates documents at 512 tokens, as a standard pipeline does; nerkit slides windows).
nerkit's rows are scored by nerkit.evaluation, on the same tokens. Superseded for converged
numbers by bench/conll2003_full.py; this one is a quick one-epoch check.

Resume NER (Chinese, BiLSTM over a character vocabulary) has no offline HF baseline; nerkit only.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

from bench.common import (
    CONLL,
    CONLL_TYPES,
    RESUME,
    RUNS,
    compose_cfg,
    conll_tokens,
    machine_info,
    markdown_table,
    save_results,
    seqeval_strict,
    spans_to_iob2,
    write_subset,
)
from nerkit.config import embedded_model_path
from nerkit.data.readers import Document, read_conll
from nerkit.evaluation import evaluate
from nerkit.predict import Predictor
from nerkit.train import train

log = logging.getLogger("bench.quality")


def gold_tags(docs: list[Document]) -> list[list[str]]:
    return [spans_to_iob2(conll_tokens(d), d.spans) for d in docs]


def hf_baseline(args: argparse.Namespace, train_docs: list[Document], eval_sets: dict[str, list[Document]], out: Path) -> dict:
    """Fine-tune AutoModelForTokenClassification with the Trainer; score on CoNLL tokens."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    labels = ["O"] + [f"{p}-{t}" for t in CONLL_TYPES for p in "BI"]
    label_ids = {tag: i for i, tag in enumerate(labels)}

    def encode(docs: list[Document], max_length: int):
        words = [[d.text[s:e] for s, e in conll_tokens(d)] for d in docs]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        rows = []
        for i, tags in enumerate(gold_tags(docs)):
            row_labels, previous = [], None
            for w in enc.word_ids(i):  # label each word's first sub-token only
                row_labels.append(-100 if w is None or w == previous else label_ids[tags[w]])
                previous = w
            rows.append({k: enc[k][i] for k in enc} | {"labels": row_labels})
        return Dataset.from_list(rows), enc

    model = AutoModelForTokenClassification.from_pretrained(
        embedded_model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids)
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0,
        seed=args.seed, report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    train_set, _ = encode(train_docs, args.max_length)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    trainer.train()
    result = {"system": "HF AutoModelForTokenClassification (Trainer)", "head": "softmax",
              "train_seconds": time.perf_counter() - started}
    for name, docs in eval_sets.items():
        # Sentences fit the training length; documents are truncated at the model's 512 positions.
        dataset, enc = encode(docs, args.max_length if name == "sentences" else 512)
        logits = trainer.predict(dataset.remove_columns("labels")).predictions
        predicted, truncated = [], 0
        for i, d in enumerate(docs):
            tags = ["O"] * len(conll_tokens(d))
            seen = set()
            for t, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = labels[int(np.argmax(logits[i, t]))]
            truncated += len(tags) - len(seen)
            predicted.append(tags)
        result[name] = seqeval_strict(gold_tags(docs), predicted) | {"words_without_prediction": truncated}
    return result


def nerkit_system(overrides: list[str], eval_sets: dict[str, list[Document]], out: Path) -> dict:
    """Train with nerkit.train exactly as the CLI would (no dev pass during training: the one
    epoch's model is scored here), then score with nerkit.evaluation on the CoNLL tokens."""
    cfg = compose_cfg(overrides)
    started = time.perf_counter()
    train(cfg, out)
    result = {"system": "nerkit", "head": cfg.head._target_.rsplit(".", 1)[-1],
              "train_seconds": time.perf_counter() - started, "overrides": overrides}
    predictor = Predictor.from_run(out, "cpu", precision="fp32")  # trained and compared in fp32, as the baseline
    for name, docs in eval_sets.items():
        result[name] = evaluate(predictor, docs)
    return result


def report(args: argparse.Namespace, train_docs: list[Document], eval_sets: dict[str, list[Document]],
           systems: list[dict], resume: list[dict], stamp: dict) -> None:
    """Write results/quality.{json,md} with what has been measured so far, under the run's start stamp."""
    baseline_f1 = next((s["sentences"]["f1"] for s in systems if s["system"] != "nerkit"), None)
    softmax_f1 = next((s["sentences"]["f1"] for s in systems if s["head"] == "SoftmaxHead"), None)
    goal = None
    if baseline_f1 is not None and softmax_f1 is not None:
        goal = {"softmax_minus_baseline_f1": softmax_f1 - baseline_f1, "within_0.3_f1_points": softmax_f1 - baseline_f1 >= -0.003}
    results = {"machine": stamp, "settings": vars(args), "train_sentences": len(train_docs),
               "dev_sentences": len(eval_sets["sentences"]), "dev_documents": len(eval_sets["documents"]),
               "conll2003": systems, "resume_ner": resume, "goal": goal}
    save_results(args.name, results, table(results))


def table(results: dict) -> str:
    """The Markdown of bench/results/quality*.json."""
    settings, goal, resume = results["settings"], results["goal"], results["resume_ner"]
    rows = [[s["system"], s["head"], s["sentences"]["precision"], s["sentences"]["recall"], s["sentences"]["f1"],
             s["documents"]["f1"], round(s["train_seconds"])] for s in results["conll2003"]]
    text = (f"CoNLL-2003 dev ({results['dev_sentences']} sentences / {results['dev_documents']} documents), "
            f"trained on {results['train_sentences']} sentences, {settings['epochs']} epoch(s), MiniLM-L6, "
            f"seqeval strict IOB2 on CoNLL tokens\n\n")
    text += markdown_table(["system", "head", "P", "R", "F1", "F1 (whole documents)", "train s"], rows)
    if goal:
        text += f"\n\nnerkit softmax - baseline: {100 * goal['softmax_minus_baseline_f1']:+.2f} F1 points (goal: >= -0.3)"
    if resume:
        text += f"\n\nResume NER (Chinese, BiLSTM, {settings['resume_epochs']} epochs, nerkit word-level strict seqeval)\n\n"
        text += markdown_table(["head", "dev F1", "test P", "test R", "test F1", "train s"],
                               [[r["head"], r["dev_f1"], r["test_precision"], r["test_recall"], r["test_f1"],
                                 round(r["train_seconds"])] for r in resume])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-sentences", type=int, default=3000)
    parser.add_argument("--dev-sentences", type=int, default=None, help="default: the whole dev set")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--heads", nargs="*", default=["softmax", "crf", "global_pointer"])
    parser.add_argument("--resume-heads", nargs="*", default=["softmax", "crf", "global_pointer"])
    parser.add_argument("--resume-epochs", type=int, default=1)
    parser.add_argument("--resume-lr", type=float, default=2e-3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--name", default="quality", help="results file name: bench/results/<name>.json")
    args = parser.parse_args()
    stamp = machine_info()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="nerkit-bench-"))
    data_root = tmp / "conll2003"
    write_subset(CONLL / "train.txt", data_root / "train.txt", args.train_sentences)
    write_subset(CONLL / "valid.txt", data_root / "valid.txt", args.dev_sentences)
    train_docs = read_conll(data_root / "train.txt")
    eval_sets = {"sentences": read_conll(data_root / "valid.txt"),
                 "documents": read_conll(data_root / "valid.txt", documents=True)}
    common = ["encoder=bert", "data=conll2003", f"data.root={data_root}", "data.dev=null", "data.test=null", f"seed={args.seed}",
              f"max_length={args.max_length}", f"trainer.epochs={args.epochs}", f"trainer.batch_size={args.batch_size}",
              f"trainer.lr={args.lr}", "trainer.device=cpu", "trainer.keep_checkpoints=0"]

    # Resume NER first: it is quick, and its results are written even if the CoNLL part is cut short.
    resume = []
    for head in args.resume_heads:
        log.info("nerkit resume_ner %s", head)
        cfg = ["encoder=bilstm", "data=resume_ner", f"data.root={RESUME}", f"head={head}", f"seed={args.seed}",
               f"trainer.epochs={args.resume_epochs}", f"trainer.lr={args.resume_lr}", "trainer.device=cpu",
               "trainer.keep_checkpoints=0"]
        started = time.perf_counter()
        train(compose_cfg(cfg), RUNS / f"resume_{head}")
        metrics = json.loads((RUNS / f"resume_{head}" / "metrics.json").read_text())
        resume.append({"head": head, "dev_f1": metrics["best_dev_f1"], "test_f1": metrics["test"]["f1"],
                       "test_precision": metrics["test"]["precision"], "test_recall": metrics["test"]["recall"],
                       "train_seconds": time.perf_counter() - started, "overrides": cfg})
        report(args, train_docs, eval_sets, [], resume, stamp)

    systems: list[dict] = []
    if not args.no_baseline:
        log.info("HF baseline")
        systems.append(hf_baseline(args, train_docs, eval_sets, tmp / "hf"))
        report(args, train_docs, eval_sets, systems, resume, stamp)
    for head in args.heads:
        log.info("nerkit %s", head)
        systems.append(nerkit_system([*common, f"head={head}"], eval_sets, RUNS / f"conll_{head}"))
        report(args, train_docs, eval_sets, systems, resume, stamp)


if __name__ == "__main__":
    main()
