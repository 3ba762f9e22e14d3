"""Speed: nerkit against the HuggingFace baseline on the same weights and texts, in one run.

    python -m bench.speed [--limit N] [--rounds 3] [--train-sentences 800]

* predict: ``Predictor.predict`` vs ``pipeline("token-classification", aggregation_strategy="simple")``
  on the CoNLL-2003 test sentences as raw text (tokens joined by spaces), the pipeline holding
  the very weights of the nerkit model (``AutoModelForTokenClassification`` twin), same batch size.
* limit: this machine's fp32 matmul FLOP/s, measured in every round, and nerkit's predict
  throughput as a fraction of it (encoder FLOPs per real, i.e. non-padding, token).
* train: real tokens per second of ``nerkit.train`` vs the HF ``Trainer`` (standard recipe:
  random batches, ``DataCollatorForTokenClassification``), one epoch over the same sentences,
  so both see the same real tokens and the ratio is the ratio of epoch times.
* long documents: predict seconds per token at 1k, 10k and 100k tokens; the 100k-token document
  is predicted once more in a fresh process that samples its peak memory (RSS above the loaded model).

Baseline and nerkit alternate within each round (ABBA) and every goal is a ratio of figures
taken in the same round, so a busy machine slows both sides alike.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

import nerkit.train
from bench.common import (
    CONLL,
    CONLL_TYPES,
    RUNS,
    compose_cfg,
    hf_twin,
    machine_info,
    markdown_table,
    save_results,
    write_subset,
)
from nerkit.config import embedded_model_path
from nerkit.data.readers import read_conll
from nerkit.model import NerModel
from nerkit.predict import Predictor

log = logging.getLogger("bench.speed")
GOALS = {"predict_speedup": 3.0, "train_speedup": 1.3, "matmul_fraction": 0.6}


def load_model(run_dir: Path | None) -> tuple[NerModel, str]:
    """A trained nerkit softmax run when there is one (bench/quality.py leaves it), else MiniLM
    with a freshly initialised head: the speed of both sides does not depend on training."""
    if run_dir is not None and (run_dir / "model.safetensors").exists():
        return NerModel.load(run_dir)[0], f"trained run {run_dir.name}"
    torch.manual_seed(0)
    cfg = compose_cfg(["encoder=bert", "head=softmax"])
    return NerModel.from_config(cfg, CONLL_TYPES).eval(), "MiniLM + untrained softmax head"


def matmul_flops(n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained fp32 FLOP/s of back-to-back n x n x n matmuls over about ``seconds`` (the mean,
    not the best single product, which on a shared machine catches the moments others are idle)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)


def encoder_flops(model: NerModel, window_lengths: list[int]) -> float:
    """Forward FLOPs over windows of the given real lengths: 2 per non-embedding weight per token
    (head included), plus attention scores and their weighted sum (4 * L^2 * hidden per layer)."""
    bert = model.encoder.model
    embedding = sum(p.numel() for p in bert.embeddings.parameters())
    weights = sum(p.numel() for p in model.parameters()) - embedding
    layers, hidden = bert.config.num_hidden_layers, bert.config.hidden_size
    return float(sum(2 * weights * n + 4 * layers * hidden * n * n for n in window_lengths))


def bench_predict(model: NerModel, texts: list[str], args: argparse.Namespace) -> dict:
    predictor = Predictor(model, args.max_length, args.stride, args.batch_size, "cpu")
    pipe = pipeline("token-classification", model=hf_twin(model), tokenizer=model.encoder.tokenizer,
                    aggregation_strategy="simple", batch_size=args.batch_size, device="cpu")
    encodings = predictor.text_encoder.encode(texts)
    lengths = [w.token_end - w.token_start + len(predictor.text_encoder.prefix_ids) + len(predictor.text_encoder.suffix_ids)
               for enc in encodings for w in enc.windows]
    flops = encoder_flops(model, lengths)

    # Same answers? (nerkit labels each word by its first sub-token; "simple" aggregation groups
    # sub-tokens, so the two may differ on a few words.)
    sample = texts[:500]
    ours = [{(e.start, e.end, e.label) for e in ents} for ents in predictor.predict(sample)]
    theirs = [{(e["start"], e["end"], e["entity_group"]) for e in ents} for ents in pipe(sample)]
    same = sum(len(a & b) for a, b in zip(ours, theirs))
    union = sum(len(a | b) for a, b in zip(ours, theirs))

    rounds = []
    for r in range(args.rounds):
        timings = {}
        for side in (["pipeline", "nerkit"] if r % 2 == 0 else ["nerkit", "pipeline"]):
            t0 = time.perf_counter()
            predictor.predict(texts) if side == "nerkit" else pipe(texts)
            timings[side] = time.perf_counter() - t0
        timings["matmul_flops"] = matmul_flops()
        timings["speedup"] = timings["pipeline"] / timings["nerkit"]
        timings["matmul_fraction"] = flops / timings["nerkit"] / timings["matmul_flops"]
        log.info("predict round %d: %s", r, timings)
        rounds.append(timings)
    med = {k: statistics.median(t[k] for t in rounds) for k in rounds[0]}
    return {
        "texts": len(texts), "real_tokens": sum(lengths), "windows": len(lengths), "batch_size": args.batch_size,
        "nerkit_texts_per_s": len(texts) / med["nerkit"], "pipeline_texts_per_s": len(texts) / med["pipeline"],
        "speedup": med["speedup"], "encoder_gflops_per_pass": flops / 1e9, "flops_per_real_token": flops / sum(lengths),
        "nerkit_achieved_gflops": flops / med["nerkit"] / 1e9, "matmul_gflops": med["matmul_flops"] / 1e9,
        "matmul_fraction": med["matmul_fraction"], "entity_agreement_jaccard": same / union if union else 1.0,
        "rounds": rounds,
    }


class TokenCounter:
    """Wraps a collate function and counts the real and padded tokens of every batch it builds."""

    def __init__(self, collate):
        self.collate, self.real, self.padded = collate, 0, 0

    def __call__(self, *args, **kwargs):
        batch = self.collate(*args, **kwargs)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def train_nerkit(data_root: Path, args: argparse.Namespace, out: Path) -> dict:
    cfg = compose_cfg(["encoder=bert", "head=softmax", "data=conll2003", f"data.root={data_root}", "data.dev=null",
                       "data.test=null", "trainer.epochs=1", f"trainer.batch_size={args.train_batch_size}",
                       f"max_length={args.max_length}", "trainer.device=cpu", "trainer.keep_checkpoints=0"])
    counter = TokenCounter(nerkit.train.collate)
    save, saving = NerModel.save, [0.0]

    def timed_save(*a, **kw):
        t0 = time.perf_counter()
        save(*a, **kw)
        saving[0] += time.perf_counter() - t0

    nerkit.train.collate, NerModel.save = counter, timed_save
    try:
        nerkit.train.train(cfg, out)
    finally:
        nerkit.train.collate, NerModel.save = counter.collate, save
    # train_seconds covers the loop and the final model save; the save is not training.
    seconds = json.loads((out / "metrics.json").read_text())["train_seconds"] - saving[0]
    return {"seconds": seconds, "save_seconds": saving[0], "real_tokens": counter.real, "padded_tokens": counter.padded}


def train_hf(data_root: Path, args: argparse.Namespace, out: Path) -> dict:
    model = AutoModelForTokenClassification.from_pretrained(embedded_model_path(), num_labels=1 + 2 * len(CONLL_TYPES))
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    docs = read_conll(data_root / "train.txt")
    words = [d.text.split(" ") for d in docs]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=args.max_length)
    # Labels do not change the cost; what matters is the standard first-sub-token layout.
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": [0 if w is not None and w != prev else -100 for prev, w in zip([None, *enc.word_ids(i)], enc.word_ids(i))]}
            for i in range(len(docs))]
    counter = TokenCounter(DataCollatorForTokenClassification(tokenizer))
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.train_batch_size, learning_rate=5e-5,
        num_train_epochs=1, warmup_steps=0.1, weight_decay=0.01, seed=42, report_to="none",
        save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows), data_collator=counter)
    seconds = trainer.train().metrics["train_runtime"]
    return {"seconds": seconds, "real_tokens": counter.real, "padded_tokens": counter.padded}


def bench_train(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nerkit-bench-train-"))
    write_subset(CONLL / "train.txt", tmp / "train.txt", args.train_sentences)
    rounds = []
    for r in range(args.rounds):
        result = {}
        for side in (["hf", "nerkit"] if r % 2 == 0 else ["nerkit", "hf"]):
            run = (train_hf if side == "hf" else train_nerkit)(tmp, args, tmp / f"{side}{r}")
            run["real_tokens_per_s"] = run["real_tokens"] / run["seconds"]
            result[side] = run
        result["speedup"] = result["nerkit"]["real_tokens_per_s"] / result["hf"]["real_tokens_per_s"]
        log.info("train round %d: %s", r, result)
        rounds.append(result)
    pick = lambda side, key: statistics.median(r[side][key] for r in rounds)
    return {
        "batch_size": args.train_batch_size, "sentences": args.train_sentences,
        "nerkit_real_tokens_per_s": pick("nerkit", "real_tokens_per_s"), "hf_real_tokens_per_s": pick("hf", "real_tokens_per_s"),
        "nerkit_padding_fraction": 1 - pick("nerkit", "real_tokens") / pick("nerkit", "padded_tokens"),
        "hf_padding_fraction": 1 - pick("hf", "real_tokens") / pick("hf", "padded_tokens"),
        "speedup": statistics.median(r["speedup"] for r in rounds), "rounds": rounds,
    }


def long_document(n_tokens: int, tokenizer) -> str:
    """CoNLL train sentences, one per line, until the text holds ``n_tokens`` sub-word tokens."""
    sentences = [d.text for d in read_conll(CONLL / "train.txt")]
    counts = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
    lines, total = [], 0
    for sentence, count in zip(sentences, counts):
        if total >= n_tokens:
            break
        lines.append(sentence)
        total += count
    return "\n".join(lines)


def _peak_rss_child(run_dir: Path | None, text: str, args: argparse.Namespace, queue) -> None:
    """In a fresh process: time, entities, and RSS before and at peak (sampled every 5 ms)
    while predicting ``text``."""
    torch.set_num_threads(args.threads)
    model, _ = load_model(run_dir)
    predictor = Predictor(model, args.max_length, args.stride, args.batch_size, "cpu")
    predictor.predict(["warm up the allocator with a short text ."])
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    before = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    entities = predictor.predict([text])[0]
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    queue.put({"seconds": seconds, "entities": len(entities), "rss_before_mb": before / 2**20,
               "peak_rss_mb": peak[0] / 2**20, "peak_increase_mb": (peak[0] - before) / 2**20})


def bench_long(model: NerModel, run_dir: Path | None, args: argparse.Namespace) -> dict:
    predictor = Predictor(model, args.max_length, args.stride, args.batch_size, "cpu")
    tokenizer = model.encoder.tokenizer
    rows = []
    for n, reps in ((1_000, 3), (10_000, 1), (100_000, 1)):
        text = long_document(n, tokenizer)
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            entities = len(predictor.predict([text])[0])
            times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        rows.append({"target_tokens": n, "tokens": tokens, "characters": len(text), "entities": entities,
                     "seconds": seconds, "us_per_token": 1e6 * seconds / tokens, "matmul_gflops": matmul_flops() / 1e9})
        log.info("long document: %s", rows[-1])
    # Peak memory of the 100k-token document in a fresh process, so that it is its own.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_child, args=(run_dir, text, args, queue))
    child.start()
    memory = queue.get()
    child.join()
    return {"documents": rows, "memory_100k": memory,
            "per_token_ratio_100k_vs_1k": rows[-1]["us_per_token"] / rows[0]["us_per_token"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUNS / "conll_softmax", help="trained run to use if it exists")
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--train-sentences", type=int, default=800, help="one epoch over the first N train sentences")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip", nargs="*", default=[], choices=["predict", "train", "long"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    model, weights = load_model(args.run_dir)
    results = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()}, "weights": weights,
               "goals": GOALS}
    texts = [d.text for d in read_conll(CONLL / "test.txt")][: args.limit]
    # Results are written after each part, so that a part cut short leaves the others.
    if "predict" not in args.skip:
        results["predict"] = bench_predict(model, texts, args)
        save_results("speed", results, tables(results))
    if "train" not in args.skip:
        results["train"] = bench_train(args)
        save_results("speed", results, tables(results))
    if "long" not in args.skip:
        results["long"] = bench_long(model, args.run_dir if "trained" in weights else None, args)
        save_results("speed", results, tables(results))


def tables(results: dict) -> str:
    out = [(f"Machine: {results['machine']['torch_threads']} torch threads, load average "
            f"{results['machine']['load_average'][0]:.1f} at start; weights: {results['weights']}")]
    rows = []
    if "predict" in results:
        p = results["predict"]
        rows += [["predict texts/s (CoNLL test, raw text)", p["pipeline_texts_per_s"], p["nerkit_texts_per_s"],
                  p["speedup"], f">= {GOALS['predict_speedup']}x"],
                 ["predict: fraction of fp32 matmul FLOP/s", "-", p["matmul_fraction"], "-", f">= {GOALS['matmul_fraction']:.0%}"]]
    if "train" in results:
        t = results["train"]
        rows += [["train real tokens/s", t["hf_real_tokens_per_s"], t["nerkit_real_tokens_per_s"], t["speedup"],
                  f">= {GOALS['train_speedup']}x"],
                 ["train padding fraction", t["hf_padding_fraction"], t["nerkit_padding_fraction"], "-", "-"]]
    out.append(markdown_table(["measure", "HF baseline", "nerkit", "ratio", "goal"], rows))
    if "predict" in results:
        p = results["predict"]
        out.append(f"Predict: {p['texts']} texts, {p['real_tokens']} real tokens in {p['windows']} windows, "
                   f"{p['flops_per_real_token'] / 1e6:.1f} MFLOP per real token; nerkit {p['nerkit_achieved_gflops']:.1f} GFLOP/s "
                   f"vs {p['matmul_gflops']:.1f} GFLOP/s matmul; entity agreement with the pipeline (Jaccard) "
                   f"{p['entity_agreement_jaccard']:.3f}")
    if "long" in results:
        lg = results["long"]
        out.append(markdown_table(["document tokens", "seconds", "us per token", "entities"],
                                  [[d["tokens"], d["seconds"], d["us_per_token"], d["entities"]] for d in lg["documents"]]))
        m = lg["memory_100k"]
        out.append(f"Per-token time at 100k vs 1k tokens: {lg['per_token_ratio_100k_vs_1k']:.2f}x (goal: flat, 1.0x). "
                   f"Peak memory predicting the 100k-token document: +{m['peak_increase_mb']:.0f} MiB over the loaded model "
                   f"({m['peak_rss_mb']:.0f} MiB RSS).")
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
