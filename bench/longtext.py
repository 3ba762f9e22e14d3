"""Long-text benchmark: sliding windows vs truncation (CoNLL-2003 document-level NER) and
long-document classification strategies (Hyperpartisan).

    PYTHONPATH=$PWD python bench/longtext.py [--part conll|hyperpartisan|all] [options]
    PYTHONPATH=$PWD python bench/longtext.py --part conll_pipeline --weights bench/runs/<run>

``conll_pipeline`` takes ONE trained softmax run and predicts whole CoNLL-2003 test documents
four ways with those same weights: nerkit's sliding windows, nerkit truncated at 512 tokens,
the HF token-classification pipeline with its own ``stride=`` chunking over the whole
document (its strongest long-text setting, aggregation "first" for a first-sub-token model),
and the pipeline truncating at 512. All are scored on the dataset's tokens by nerkit.evaluation.

Each finished run is merged into bench/results/longtext.json (so parts can run separately, or
in parallel with OMP_NUM_THREADS=1), and the whole table is printed as Markdown at the end.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from bench.common import machine_info
from nerkit.config import register_resolvers
from nerkit.data.encoding import AlignmentStats, TextEncoder, char_to_unit_spans, char_to_word_spans
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


def save(key: str, value: dict) -> None:
    """Merge one run into the results file (locked: parts may run in parallel)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "nerkit-longtext-results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results[key] = value
        RESULTS.write_text(json.dumps(results, indent=1))


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
        save(f"conll2003_docs/{mode}" + (f"-{args.conll_max_steps}steps" if args.conll_max_steps else ""), metrics)


def conll_pipeline(args) -> None:
    """The same trained weights on whole test documents: windows vs stride chunking vs truncation at 512."""
    from transformers import pipeline

    from bench.common import CONLL, hf_twin
    from nerkit.data.readers import read_conll
    from nerkit.evaluation import evaluate, score
    from nerkit.model import NerModel
    from nerkit.predict import Predictor

    stamp = machine_info()
    model, cfg = NerModel.load(args.weights, "cpu")
    docs = read_conll(CONLL / "test.txt", documents=True, limit=args.conll_dev_docs)
    runs = {
        f"nerkit windows {cfg.max_length}/{args.stride}": lambda: evaluate(Predictor(model, cfg.max_length, args.stride), docs),
        "nerkit truncated at 512": lambda: evaluate(Predictor(model, 512, args.stride, truncate=True), docs),
    }
    twin = hf_twin(model)
    for name, extra in ((f"HF pipeline stride={args.pipeline_stride} (whole document)", {"stride": args.pipeline_stride}),
                        ("HF pipeline truncated at 512", {})):
        def run_pipeline(extra=extra):
            pipe = pipeline("token-classification", model=twin, tokenizer=model.encoder.tokenizer, device="cpu",
                            aggregation_strategy="first", **extra)
            stats = AlignmentStats()
            predicted = [char_to_unit_spans([s for s, _ in d.tokens], [e for _, e in d.tokens],
                                            [(e["start"], e["end"], e["entity_group"]) for e in entities], stats)
                         for d, entities in zip(docs, pipe([d.text for d in docs]))]
            return score(docs, predicted, "BIO") | {"predicted_entities_widened_to_tokens": stats.widened}
        runs[name] = run_pipeline
    for name, evaluate_one in runs.items():
        started = time.perf_counter()
        metrics = evaluate_one()
        save(f"conll2003_docs_same_weights/{name}", {"test": metrics, "seconds": round(time.perf_counter() - started, 1),
                                                     "weights": str(args.weights), "stamp": stamp})


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
        save(f"hyperpartisan/{name}", metrics)


def table() -> str:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows = ["| run | dev | test | train windows/docs | wall s | notes |", "|---|---|---|---|---|---|"]
    for key, m in sorted(results.items()):
        if key.startswith("conll2003_docs_same_weights/"):
            lo, hi = m["test"]["ci95"]
            rows.append(f"| {key} | - | F1 {m['test']['f1']:.4f} (CI95 {lo:.4f}-{hi:.4f}) | - | {m['seconds']} | "
                        f"weights {Path(m['weights']).name}; {m['test']['scored_on']} |")
        elif key.startswith("conll"):
            cov = m["dev_coverage"]
            note = (f"dev: {cov['gold_entities_beyond_first_window']}/{cov['gold_entities']} gold entities beyond "
                    f"the first window; {cov['multi_window_documents']}/{cov['documents']} docs need >1 window")
            rows.append(f"| {key} | F1 {m['best_dev_f1']:.4f} | F1 {m['test']['f1']:.4f} | {m['train_windows']} | "
                        f"{m['wall_seconds']} | {note} |")
        else:
            rows.append(f"| {key} | acc {m['best_dev_accuracy']:.4f} | acc {m['test']['accuracy']:.4f} "
                        f"(n={m['test']['documents']}) | {m['train_inputs']} | {m['wall_seconds']} | {m['strategy_note']} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["conll", "conll_pipeline", "hyperpartisan", "all"], default="all")
    parser.add_argument("--head", default="softmax")
    parser.add_argument("--weights", type=Path, help="conll_pipeline: a trained softmax run directory")
    parser.add_argument("--pipeline-stride", type=int, default=128, help="conll_pipeline: the HF pipeline's stride=")
    parser.add_argument("--stride", type=int, default=32)
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
    if args.part == "conll_pipeline":
        if not args.weights:
            parser.error("--part conll_pipeline needs --weights RUN_DIR")
        conll_pipeline(args)
    if args.part in ("hyperpartisan", "all"):
        hyperpartisan(args)
    print(table())


if __name__ == "__main__":
    main()
