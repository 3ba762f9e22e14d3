"""Long-text benchmark: sliding windows vs truncation (CoNLL-2003 document-level NER) and
long-document classification strategies (Hyperpartisan).

    python -m bench.longtext [--part conll|hyperpartisan|all] [options]
    python -m bench.longtext --part conll_fair --weights bench/runs/<run> [--lengths 128 512] [--limit-docs N]

``conll_fair`` takes ONE trained softmax run (trained on sentences; see bench/README.md for the
command) and reads the whole CoNLL-2003 test documents with those same weights in every way of
``READINGS``: nerkit's sliding windows and nerkit truncated (``truncate``: the first window only),
the HF token-classification pipeline (aggregation "first") chunking the whole document with
``stride=`` and the pipeline truncating; each given the dataset tokens and, separately, the raw
document text. Every reading at a length uses windows of that many sub-word tokens (special tokens
included; the pipeline's is its tokenizer's ``model_max_length``) with the same overlap, every
reading's character spans are mapped to dataset tokens by one function (``to_dataset_tokens``:
nerkit.evaluation's own ``char_to_unit_spans``, widened and lost spans counted) and scored by
``nerkit.evaluation.score``. The results carry the weights' run directory, digests and training set.

Each finished run is merged into ``--out`` (default bench/results/longtext.json; parts may run
separately, or in parallel with OMP_NUM_THREADS=1), and the whole table is printed as Markdown.
"""
from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.common import machine_info
from nerkit.config import register_resolvers
from nerkit.data.encoding import AlignmentStats, TextEncoder, char_to_unit_spans, char_to_word_spans
from nerkit.data.readers import Document
from nerkit.data.schemes import Span
from nerkit.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "longtext.json"


def config(overrides: list[str]) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def subsample(cfg: DictConfig, split: str, n: int | None) -> None:
    """Replace data.<split> by a seeded random subset of n documents."""
    if n:
        with open_dict(cfg):
            cfg.data[split] = {"_target_": "nerkit.data.readers.split_documents", "documents": cfg.data[split],
                               "held_out": n, "seed": cfg.seed, "part": "held_out"}


def beyond_first_window(cfg: DictConfig, split: str) -> dict:
    """Gold entities of a split that do not lie whole in the first window (truncation cannot find them)."""
    from transformers import AutoTokenizer

    docs = instantiate(cfg.data[split])
    enc = TextEncoder(AutoTokenizer.from_pretrained(cfg.encoder.pretrained), cfg.max_length, cfg.stride)
    encodings = enc.encode([d.text for d in docs])
    total = lost = 0
    for doc, e in zip(docs, encodings):
        for s, end, _ in char_to_word_spans(e, doc.spans, AlignmentStats()):
            total += 1
            lost += end > e.windows[0].word_end
    return {"documents": len(docs), "multi_window_documents": sum(len(e.windows) > 1 for e in encodings),
            "gold_entities": total, "gold_entities_beyond_first_window": lost}


def run(name: str, overrides: list[str], args, tweak=None) -> dict:
    stamp = machine_info()  # each entry of the merged results file keeps its own run's stamp
    cfg = config(overrides)
    if tweak:
        tweak(cfg)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        train(cfg, out)
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["overrides"] = overrides
    metrics["stamp"] = stamp
    return metrics


def save(key: str, value: dict, path: Path) -> None:
    """Merge one run into the results file (locked: parts may run in parallel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "nerkit-longtext-results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {}
        results[key] = value
        partial = path.with_name(path.name + ".partial")  # a crash mid-write never leaves half a file
        partial.write_text(json.dumps(results, indent=1))
        partial.replace(path)


def conll(args) -> None:
    base = ["data=conll2003_docs", f"head={args.head}", f"max_length={args.conll_max_length}", f"stride={args.stride}",
            f"trainer.epochs={args.conll_epochs}", f"trainer.lr={args.conll_lr}", "trainer.device=cpu"]

    def tweak(cfg):
        subsample(cfg, "train", args.conll_train_docs)
        subsample(cfg, "dev", args.conll_dev_docs)
        subsample(cfg, "test", args.conll_dev_docs)

    if args.conll_max_steps:
        base.append(f"trainer.max_steps={args.conll_max_steps}")
    for mode in args.conll_modes:
        metrics = run(f"conll-{mode}", base + [f"truncate={mode == 'truncate'}"], args, tweak)
        probe = config(base)
        tweak(probe)
        metrics["dev_coverage"] = beyond_first_window(probe, "dev")
        save(f"conll2003_docs/{mode}" + (f"-{args.conll_max_steps}steps" if args.conll_max_steps else ""), metrics,
             args.out)


def joined_offsets(words: Sequence[str], delimiter: str = " ") -> list[tuple[int, int]]:
    """Character spans of ``words`` in ``delimiter.join(words)``: the text the HF pipeline's
    offsets point into when it is given pre-split words (``is_split_into_words=True``)."""
    offsets, at = [], 0
    for word in words:
        offsets.append((at, at + len(word)))
        at += len(word) + len(delimiter)
    return offsets


def to_dataset_tokens(units: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, str]],
                      stats: AlignmentStats) -> list[Span]:
    """Predicted character spans -> dataset-token spans, the way nerkit.evaluation maps gold spans
    (``char_to_unit_spans``): a span that does not start and end on token boundaries is widened to
    whole tokens (``stats.widened``), one covering no token is lost (``stats.lost``)."""
    return char_to_unit_spans([s for s, _ in units], [e for _, e in units], spans, stats)


@dataclass
class Reading:
    """Predicted character spans per document, the units (dataset tokens) they point into, and the
    model inputs (windows or chunks, special tokens included) the reading fed the encoder."""

    spans: list[list[tuple[int, int, str]]]
    units: list[list[tuple[int, int]]]
    window_tokens: list[int]


def nerkit_reading(model, docs: Sequence[Document], length: int, stride: int, truncate: bool, raw: bool,
                   words: str) -> Reading:
    """nerkit's Predictor at ``length`` tokens per window (``stride`` overlap; ``truncate``: the first
    window only). ``raw``: predict the document text (words cut by the run's splitter, ``words``) rather than
    the dataset tokens. Offsets point into ``doc.text`` either way."""
    from nerkit.predict import Predictor

    predictor = Predictor(model, length, stride, truncate=truncate, precision="fp32", words=words)
    if raw:
        encodings = predictor.text_encoder.encode([d.text for d in docs])
        entities = predictor.predict([d.text for d in docs])
    else:
        encodings, entities = predictor.predict_documents(docs)
    specials = len(predictor.text_encoder.prefix_ids) + len(predictor.text_encoder.suffix_ids)
    return Reading([[(e.start, e.end, e.label) for e in found] for found in entities], [d.tokens for d in docs],
                   [w.token_end - w.token_start + specials for enc in encodings for w in enc.windows])


def pipeline_reading(model, twin, docs: Sequence[Document], length: int, stride: int, truncate: bool,
                     raw: bool) -> Reading:
    """The HF token-classification pipeline (aggregation "first") with the same weights. Its chunk
    length is its tokenizer's ``model_max_length`` (it tokenizes with ``truncation=True`` and no
    ``max_length``), set here to ``length``; ``stride=`` makes it chunk the whole document with that
    overlap, without it the pipeline truncates. ``raw``: it reads the document text, else the
    dataset tokens (``is_split_into_words=True``; its offsets then point into them joined by spaces)."""
    from transformers import pipeline

    tokenizer = copy.deepcopy(model.encoder.tokenizer)  # the model's own stays as nerkit set it
    tokenizer.model_max_length = length
    pipe = pipeline("token-classification", model=twin, tokenizer=tokenizer, device="cpu",
                    aggregation_strategy="first", **({} if truncate else {"stride": stride}))
    if raw:
        inputs, units = [d.text for d in docs], [d.tokens for d in docs]
    else:
        inputs = [[d.text[s:e] for s, e in d.tokens] for d in docs]
        units = [joined_offsets(words) for words in inputs]
    # The chunks the pipeline's own preprocessing cuts (what its model sees), to check their length.
    params = {**pipe._preprocess_params, **pipe._sanitize_parameters(is_split_into_words=not raw)[0]}
    window_tokens = [int(chunk["attention_mask"].sum()) for x in inputs for chunk in pipe.preprocess(x, **params)]
    outputs = pipe(inputs, is_split_into_words=not raw)
    spans = [[(e["start"], e["end"], e["entity_group"]) for e in found] for found in outputs]
    return Reading(spans, units, window_tokens)


# name -> (system, truncate, raw)
READINGS = {
    "nerkit windows, dataset tokens": ("nerkit", False, False),
    "nerkit truncated, dataset tokens": ("nerkit", True, False),
    "HF pipeline stride, dataset tokens": ("pipeline", False, False),
    "HF pipeline truncated, dataset tokens": ("pipeline", True, False),
    "nerkit windows, raw text": ("nerkit", False, True),
    "nerkit truncated, raw text": ("nerkit", True, True),
    "HF pipeline stride, raw text": ("pipeline", False, True),
    "HF pipeline truncated, raw text": ("pipeline", True, True),
}


def weights_record(run_dir: Path, cfg: DictConfig) -> dict:
    """What identifies the weights every reading used, read from the run directory's files (a run
    directory records no commit: its config and weights digests name it instead)."""
    from nerkit.data.readers import read_conll

    def digest(name: str) -> str:
        return hashlib.sha256((run_dir / name).read_bytes()).hexdigest()[:12]

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    train = OmegaConf.to_container(cfg.data.train)
    path = Path(train["path"])
    path = path if path.is_absolute() or path.exists() else ROOT / path  # relative to where it was trained
    texts = len(read_conll(path, documents=train.get("documents", False), limit=train.get("limit"))) \
        if path.exists() and train.get("_target_") == "nerkit.data.readers.read_conll" else None
    saved = time.gmtime((run_dir / "model.safetensors").stat().st_mtime)
    return {"run_dir": str(run_dir), "config_sha256": digest("config.yaml"),
            "weights_sha256": digest("model.safetensors"), "trained": time.strftime("%Y-%m-%d %H:%M UTC", saved),
            "train_data": train, "train_texts": texts, "train_windows": metrics.get("train_windows"),
            "finished": metrics.get("finished"), "steps": metrics.get("steps"),
            "best_dev_f1": metrics.get("best_dev_f1"),
            "precision": metrics.get("precision"), "encoder": cfg.encoder.get("pretrained"),
            "head": cfg.head.get("_target_"), "epochs": cfg.trainer.epochs, "max_length": cfg.max_length}


def conll_fair(args) -> None:
    """One trained softmax run reads whole CoNLL-2003 test documents every way in READINGS, every
    reading at the same window length (``--lengths``, sub-word tokens with specials) and overlap
    (``--stride``), every reading's character spans mapped to dataset tokens by ``to_dataset_tokens``
    and scored by ``nerkit.evaluation.score``; per-document entity counts are kept for the paired
    intervals of ``PAIRED``."""
    import numpy as np
    import torch

    from bench.heads import entity_counts, micro_f1

    from bench.common import CONLL, hf_twin
    from nerkit.data.readers import read_conll
    from nerkit.data.words import words_of
    from nerkit.evaluation import score
    from nerkit.model import NerModel
    from nerkit.runs import CONFIG

    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = NerModel.load(args.weights, "cpu")
    if type(model.head).__name__ != "SoftmaxHead":
        raise SystemExit(f"{args.weights}: the HF pipeline reads a token classifier; train it with head=softmax")
    weights = weights_record(args.weights, cfg)
    words = words_of(cfg, str(args.weights / CONFIG))
    twin = hf_twin(model)
    docs = read_conll(CONLL / "test.txt", documents=True, limit=args.limit_docs)
    stamp = machine_info()  # after torch is loaded: it records the threads every reading runs with
    for length in args.lengths:
        for name in args.readings:
            system, truncate, raw = READINGS[name]
            started = time.perf_counter()
            with torch.inference_mode():
                if system == "nerkit":
                    reading = nerkit_reading(model, docs, length, args.stride, truncate, raw, words)
                else:
                    reading = pipeline_reading(model, twin, docs, length, args.stride, truncate, raw)
            seconds = time.perf_counter() - started
            stats = AlignmentStats()
            predicted = [to_dataset_tokens(u, s, stats) for u, s in zip(reading.units, reading.spans)]
            test, counts = score(docs, predicted, "BIO"), entity_counts(docs, predicted)
            if abs(micro_f1(np.array(counts)) - test["f1"]) > 1e-9:  # the paired intervals resample these
                raise AssertionError(f"{name} @{length}: per-document counts give another F1 than nerkit.evaluation")
            save(f"conll2003_docs_fair/{name} @{length}", {
                "test": test, "counts": counts, "seconds": round(seconds, 1), "length": length,
                "overlap": None if truncate else args.stride, "windows": len(reading.window_tokens),
                "max_window_tokens": max(reading.window_tokens),
                "mapping": {"predicted_entities": sum(map(len, reading.spans)), "widened": stats.widened,
                            "lost": stats.lost},
                "weights": weights, "stamp": stamp}, args.out)
            logging.info("%s @%d: done in %.0f s", name, length, seconds)


def hyperpartisan(args) -> None:
    def tweak(cfg):
        subsample(cfg, "train", args.hp_train_docs)
        subsample(cfg, "test", args.hp_test_docs)

    for name in args.hp_strategies:
        strategy, _, pooling = name.partition("-")
        length = args.hp_window_length if strategy == "windows" else args.hp_max_length
        overrides = ["task=classify", "data=hyperpartisan", f"task.strategy={strategy}", f"task.pooling={pooling or 'mean'}",
                     f"max_length={length}", f"stride={args.stride}", f"trainer.epochs={args.hp_epochs}",
                     f"trainer.batch_size={args.hp_batch_size}", f"trainer.lr={args.hp_lr}", "trainer.device=cpu",
                     f"task.freeze_encoder={not args.hp_fine_tune}"]
        metrics = run(name, overrides, args, tweak)
        tail = length - 2 - 128
        metrics["strategy_note"] = {
            "head": f"first {length - 2} tokens (word boundary)",
            "head_tail": f"first 128 + last {tail} tokens",
            "windows": f"windows of {length} overlapping by {args.stride}, {pooling} pooling",
        }[strategy] + ("; fine-tuned" if args.hp_fine_tune else "; frozen encoder")
        save(f"hyperpartisan/{name}", metrics, args.out)


FAIR, OLD = "conll2003_docs_fair/", "conll2003_docs_same_weights/"
# The readings compared at each window length, (a, b) read "a vs b": a paired bootstrap over documents.
PAIRED = [("nerkit windows, dataset tokens", "HF pipeline stride, dataset tokens"),
          ("nerkit windows, raw text", "HF pipeline stride, raw text"),
          ("nerkit windows, dataset tokens", "nerkit truncated, dataset tokens"),
          ("HF pipeline stride, dataset tokens", "HF pipeline truncated, dataset tokens")]


def paired_lines(rows: dict) -> list[str]:
    """Markdown rows for PAIRED at every length both readings of a pair ran: the F1 difference and a
    95% bootstrap interval over documents (both readings resampled together); an ordering only
    where the interval excludes 0."""
    from bench.heads import paired_bootstrap

    lines = []
    for length in sorted({r["length"] for r in rows.values()}):
        for a, b in PAIRED:
            ra, rb = rows.get(f"{a} @{length}"), rows.get(f"{b} @{length}")
            if not (ra and rb and "counts" in ra and "counts" in rb):
                continue
            lo, hi = paired_bootstrap([ra["counts"]], [rb["counts"]])
            verdict = "no detectable difference" if lo <= 0 <= hi else (f"{a} better" if lo > 0 else f"{b} better")
            lines.append(f"| {a} vs {b} | {length} | {100 * (ra['test']['f1'] - rb['test']['f1']):+.2f} | "
                         f"{100 * lo:+.2f} to {100 * hi:+.2f} | {verdict} |")
    return lines


def fair_table(results: dict) -> str:
    """The ``conll_fair`` rows as Markdown: per window length, every reading of the same weights."""
    rows = {k[len(FAIR):]: v for k, v in results.items() if k.startswith(FAIR)}
    weights = {json.dumps(r["weights"], sort_keys=True) for r in rows.values()}
    if len(weights) != 1:
        raise ValueError(f"the {FAIR}* entries come from {len(weights)} different weights; "
                         "rerun them with one --weights")
    first = next(iter(rows.values()))
    w, test, data = first["weights"], first["test"], first["weights"]["train_data"]
    trained_on = (f"{w['train_texts']} {'documents' if data.get('documents') else 'sentences'} of `{data['path']}`"
                  + (f" (limit {data['limit']})" if data.get("limit") else ""))
    stamps = sorted({(r["length"], r["stamp"]["commit"] + (" (dirty)" if r["stamp"]["dirty"] else ""),
                      r["stamp"]["date"], r["stamp"]["torch_threads"]) for r in rows.values()})
    measured = "; ".join(f"window {length}: commit {commit}, {date}, {threads} torch threads"
                         for length, commit, date, threads in stamps)
    lines = [
        f"Whole CoNLL-2003 test documents ({test['documents']} documents, {test['scored_units']} tokens), one set of "
        f"weights read every way: `{w['run_dir']}` ({'/'.join(Path(w['encoder']).parts[-2:])}, "
        f"{w['head'].rsplit('.', 1)[-1]}, trained on {trained_on}: {w['train_windows']} windows of {w['max_length']} "
        f"tokens, epochs {w['epochs']}, {w['steps']} steps, {w['precision']}, "
        f"best dev F1 {100 * w['best_dev_f1']:.2f}; "
        f"config.yaml sha256 {w['config_sha256']}, weights sha256 {w['weights_sha256']}, saved {w['trained']}). "
        "At each window length every reading feeds the encoder inputs of at most that many sub-word tokens (special "
        "tokens included), consecutive inputs sharing the same overlap; every reading's entities reach the dataset's "
        "tokens through the same mapping (widened: a predicted span not on token boundaries; lost: one covering no "
        f"token) and are scored by nerkit.evaluation (seqeval strict IOB2). Measured {measured}.",
        "",
        "| reading | window / overlap | test F1 | CI95 | model inputs (longest) | predicted entities | widened | lost "
        "| overlaps dropped | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    order = list(READINGS)
    for key, r in sorted(rows.items(), key=lambda kv: (kv[1]["length"], order.index(kv[0].rsplit(" @", 1)[0]))):
        t, m = r["test"], r["mapping"]
        lo, hi = t["ci95"]
        overlap = "-" if r["overlap"] is None else r["overlap"]
        lines.append(f"| {key.rsplit(' @', 1)[0]} | {r['length']} / {overlap} | {100 * t['f1']:.2f} | "
                     f"{100 * lo:.2f}-{100 * hi:.2f} | {r['windows']} ({r['max_window_tokens']}) | "
                     f"{m['predicted_entities']} | {m['widened']} | {m['lost']} | "
                     f"{t['overlapping_entities_dropped']['predicted']} | {r['seconds']} |")
    if paired := paired_lines(rows):
        lines += ["", "| pair | window | F1 difference | paired bootstrap CI95 (documents) | verdict |",
                  "|---|---|---|---|---|", *paired]
    return "\n".join(lines)


def old_table(results: dict) -> str:
    """The superseded ``conll2003_docs_same_weights`` rows, labelled as the confounded protocol they are."""
    rows = {k[len(OLD):]: v for k, v in results.items() if k.startswith(OLD)}
    stamp = next(iter(rows.values()))["stamp"]
    lines = ["Old, confounded protocol (superseded by `--part conll_fair`, issue 24): nerkit read 128-token windows "
             "and the pipeline 512-token chunks, the pipeline's raw-text entities were widened to tokens, and the "
             "weights were a weak model. Whole CoNLL-2003 test documents, the same trained weights "
             f"(`{next(iter(rows.values()))['weights']}`), scored on dataset tokens; commit {stamp['commit']}"
             f"{' (dirty)' if stamp['dirty'] else ''}, {stamp['date']}.",
             "", "| how the document is read | test F1 | CI95 |", "|---|---|---|"]
    for name, row in rows.items():
        lo, hi = row["test"]["ci95"]
        lines.append(f"| {name} | {100 * row['test']['f1']:.2f} | {100 * lo:.2f}-{100 * hi:.2f} |")
    return "\n".join(lines)


def documents_table(results: dict) -> str:
    """The README block: the fair table when its rows exist, else the old one, labelled as such."""
    if any(k.startswith(FAIR) for k in results):
        return fair_table(results)
    if any(k.startswith(OLD) for k in results):
        return old_table(results)
    return ("No whole-document CoNLL-2003 results yet: run `python bench/longtext.py --part conll_fair "
            "--weights RUN_DIR` (bench/README.md).")


def table(results: dict) -> str:
    """Every run of the results file: the trained runs one per row, then the documents table."""
    rows = ["| run | dev | test | train windows/docs | wall s | notes |", "|---|---|---|---|---|---|"]
    for key, m in sorted(results.items()):
        if key.startswith((FAIR, OLD)):
            continue
        if key.startswith("conll"):
            cov = m["dev_coverage"]
            note = (f"dev: {cov['gold_entities_beyond_first_window']}/{cov['gold_entities']} gold entities beyond "
                    f"the first window; {cov['multi_window_documents']}/{cov['documents']} docs need >1 window")
            rows.append(f"| {key} | F1 {m['best_dev_f1']:.4f} | F1 {m['test']['f1']:.4f} | {m['train_windows']} | "
                        f"{m['wall_seconds']} | {note} |")
        else:
            rows.append(f"| {key} | acc {m['best_dev_accuracy']:.4f} | acc {m['test']['accuracy']:.4f} "
                        f"(n={m['test']['documents']}) | {m['train_inputs']} | {m['wall_seconds']} | {m['strategy_note']} |")
    return ("\n".join(rows) + "\n\n" if len(rows) > 2 else "") + documents_table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["conll", "conll_fair", "hyperpartisan", "all"], default="all")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file runs are merged into")
    parser.add_argument("--head", default="softmax")
    parser.add_argument("--weights", type=Path, help="conll_fair: a trained softmax run directory")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512],
                        help="conll_fair: window lengths in sub-word tokens, special tokens included")
    parser.add_argument("--readings", nargs="+", choices=list(READINGS), default=list(READINGS), metavar="READING",
                        help="conll_fair: a subset of: " + "; ".join(READINGS))
    parser.add_argument("--limit-docs", type=int, default=None, help="conll_fair: the first N test documents only")
    parser.add_argument("--stride", type=int, default=32, help="overlap of consecutive windows, in tokens")
    parser.add_argument("--threads", type=int, default=None, help="conll_fair: torch threads (default: torch's own)")
    parser.add_argument("--conll-modes", nargs="+", default=["windows", "truncate"])
    parser.add_argument("--conll-max-length", type=int, default=128)
    parser.add_argument("--conll-train-docs", type=int, default=None, help="random subset (default: all 946)")
    parser.add_argument("--conll-dev-docs", type=int, default=None, help="random subset of dev and test")
    parser.add_argument("--conll-epochs", type=int, default=1)
    parser.add_argument("--conll-lr", type=float, default=1e-4)
    parser.add_argument("--conll-max-steps", type=int, default=None,
                        help="fixed number of optimizer steps (e.g. truncation trained as long as windows)")
    parser.add_argument("--hp-strategies", nargs="+", default=["head", "head_tail", "windows-mean", "windows-max",
                                                               "windows-attention"])
    parser.add_argument("--hp-max-length", type=int, default=512, help="window of head and head_tail")
    parser.add_argument("--hp-window-length", type=int, default=256, help="window of the sliding-window strategies")
    parser.add_argument("--hp-fine-tune", action="store_true",
                        help="fine-tune the encoder (default: frozen encoder, [CLS] features computed once)")
    parser.add_argument("--hp-train-docs", type=int, default=300, help="random subset of the 581 train documents")
    parser.add_argument("--hp-test-docs", type=int, default=300, help="random subset of the 628 test documents")
    parser.add_argument("--hp-epochs", type=int, default=30)
    parser.add_argument("--hp-batch-size", type=int, default=16)
    parser.add_argument("--hp-lr", type=float, default=1e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.part in ("conll", "all"):
        conll(args)
    if args.part == "conll_fair":
        if not args.weights:
            parser.error("--part conll_fair needs --weights RUN_DIR")
        conll_fair(args)
    if args.part in ("hyperpartisan", "all"):
        hyperpartisan(args)
    print(table(json.loads(args.out.read_text()) if args.out.exists() else {}))


if __name__ == "__main__":
    main()
