"""Speed at the hardware's limit: nerkit against every baseline at its strongest, in one process.

    python -m bench.speed [--run-dir bench/runs/speed_model] [--limit N] [--rounds 3] [--threads 2]

* predict, CoNLL-2003 test sentences as raw text (tokens joined by spaces), all systems holding
  the same weights:
  - nerkit ``Predictor.from_run`` at fp32, at bf16 (bf16 encoder weights, autocast) and at bf16
    with ``compile=True`` (``torch.compile`` of the encoder);
  - HF ``pipeline("token-classification", aggregation_strategy="first")`` (first sub-token, as
    nerkit) with fp32 weights and with bf16 weights (``torch_dtype=bfloat16``), each at the
    fastest batch size of {1, 8, 32, 64} (picked on the first ``--sweep-texts`` texts);
  - ONNX Runtime on the exported fp32 graph and on its int8 dynamic quantisation
    (``onnxruntime.quantization.quantize_dynamic``), tokenising/decoding as nerkit.
  Every system runs once over the texts before the rounds (untimed: kernel, shape and compile
  caches). Systems alternate in a rotating order within each round; every ratio is taken inside
  a round and reported as the median and the worst over rounds. Throughput is real (non-padding) tokens
  per second: the model's input tokens of every window, special tokens included, padding not.
  Matmul peaks (1024^3 products) in fp32 and bf16 are measured in every round; each system's
  share is encoder FLOPs per second over the peak of its precision.
  Quality: entity agreement (shared / union of (start, end, label)) with nerkit fp32, and
  seqeval strict F1 on the CoNLL tokens against the gold test set.
* agreement: nerkit bf16 against fp32 on the whole CoNLL-2003 test set (entity agreement, F1).
* long documents: per-token time at 1k, 10k and 100k tokens (``--long-sizes``), fp32 and bf16;
  peak memory of the longest document in bf16, in a fresh process.
* train: one epoch over the first ``--train-sentences`` train sentences, nerkit vs the HF
  ``Trainer`` with ``train_sampling_strategy="group_by_length"`` (transformers 5's
  ``group_by_length``), fp32 and bf16 (``TrainingArguments(bf16=True)``; nerkit: its
  ``trainer.precision``), real tokens per second; and nerkit fp32 with round one's optimizer
  (``trainer.fused_optimizer=false``: torch's default unfused AdamW), the baseline of the training goal.

Writes bench/results/speed.json and speed.md, stamped with commit, dirty flag and load average
at the start (other jobs on the machine slow every system alike within a round, not across).
``--device cuda`` runs the same comparison on a GPU, fp16 rows beside bf16, no ONNX, into
bench/results/speed_cuda.json and .md (``python -m bench.speed --device cuda --threads 16``).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
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
    RESULTS,
    RUNS,
    batch_tokens,
    compose_cfg,
    conll_tokens,
    hf_twin,
    machine_info,
    markdown_table,
    save_results,
    seqeval_strict,
    spans_to_iob2,
    window_lengths,
    write_subset,
)
from nerkit.config import embedded_model_path
from nerkit.data.readers import read_conll
from nerkit.model import NerModel
from nerkit.predict import Predictor

log = logging.getLogger("bench.speed")
GOALS = {
    "predict_bf16_tokens_per_s": 20_000,  # end to end on CoNLL test sentences, 2 cores
    "predict_vs_best_pipeline": 2.0,
    "bf16_entity_agreement": 0.995,
    "bf16_f1_difference_points": 0.1,
    "long_per_token_ratio_longest_vs_shortest": 1.0,  # flat
    "train_bf16_vs_fp32": 2.0,
    "train_vs_trainer_same_precision": 1.2,
}
PIPELINE_BATCH_SIZES = (1, 8, 32, 64)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def low_precisions(device: str) -> list[str]:
    """The mixed precisions compared on ``device``: bf16 on CPU; bf16 and fp16 on a GPU."""
    return ["bf16", "fp16"] if torch.device(device).type == "cuda" else ["bf16"]


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(dtype: torch.dtype, device: str = "cpu", n: int = 1024, seconds: float = 0.5) -> float:
    """Sustained FLOP/s of back-to-back n x n x n matmuls in ``dtype`` over about ``seconds``."""
    n = n if torch.device(device).type == "cpu" else 8192  # a GPU needs bigger products to reach its peak
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    synchronize(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        count += 1
        synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - t0)


def encoder_flops(model: NerModel, lengths: list[int]) -> float:
    """Forward FLOPs over windows of the given real lengths: 2 per non-embedding weight per token
    (head included), plus attention scores and their weighted sum (4 * L^2 * hidden per layer)."""
    bert = model.encoder.model
    embedding = sum(p.numel() for p in bert.embeddings.parameters())
    weights = sum(p.numel() for p in model.parameters()) - embedding
    layers, hidden = bert.config.num_hidden_layers, bert.config.hidden_size
    return float(sum(2 * weights * n + 4 * layers * hidden * n * n for n in lengths))


def load_model(run_dir: Path) -> NerModel:
    if not (run_dir / "model.safetensors").exists():
        raise SystemExit(f"{run_dir}: no trained run; train one with (about 2 min on 2 quiet cores):\n"
                         "python -m nerkit.train data=conll2003 +data.train.limit=3000 trainer.epochs=1 "
                         f"trainer.batch_size=8 trainer.lr=2e-4 head=softmax data.test=null hydra.run.dir={run_dir}")
    return NerModel.load(run_dir, "cpu")[0]


# --- predict ------------------------------------------------------------------------------------

class PipelineSystem:
    """The HF pipeline as a callable texts -> [(start, end, label)] per text."""

    def __init__(self, twin: torch.nn.Module, tokenizer, batch_size: int, device: str):
        self.batch_size = batch_size
        self.pipe = pipeline("token-classification", model=twin, tokenizer=tokenizer,
                             aggregation_strategy="first", batch_size=batch_size, device=device)

    def __call__(self, texts: list[str]) -> list[set]:
        return [{(e["start"], e["end"], e["entity_group"]) for e in ents} for ents in self.pipe(texts)]


class NerkitSystem:
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def __call__(self, texts: list[str]) -> list[set]:
        return [{(e.start, e.end, e.label) for e in ents} for ents in self.predictor.predict(texts)]


def fastest_pipeline(model: NerModel, dtype: torch.dtype, texts: list[str], device: str) -> tuple[PipelineSystem, dict]:
    twin = hf_twin(model).to(device=device, dtype=dtype)
    seconds = {}
    for batch_size in PIPELINE_BATCH_SIZES:
        system = PipelineSystem(twin, model.encoder.tokenizer, batch_size, device)
        system(texts[:8])  # warm up
        t0 = time.perf_counter()
        system(texts)
        seconds[batch_size] = time.perf_counter() - t0
        log.info("pipeline %s batch %d: %.2f s on %d texts", dtype, batch_size, seconds[batch_size], len(texts))
    best = min(seconds, key=seconds.get)
    return PipelineSystem(twin, model.encoder.tokenizer, best, device), seconds


def onnx_systems(run_dir: Path, args: argparse.Namespace, workdir: Path) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nerkit.export import export_onnx
    from nerkit.onnx_predict import WEIGHTS_HASH, OnnxPredictor

    fp32_path = export_onnx(run_dir, workdir / "model.onnx")
    int8_path = workdir / "model_int8.onnx"
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    quantized = onnx.load(str(int8_path))
    stamp = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}[WEIGHTS_HASH]
    if WEIGHTS_HASH not in {p.key for p in quantized.metadata_props}:  # keep the weights stamp the loader checks
        onnx.helper.set_model_props(quantized, {WEIGHTS_HASH: stamp})
        onnx.save(quantized, str(int8_path))
    return {name: NerkitSystem(OnnxPredictor.from_run(run_dir, path, args.batch_size, threads=args.threads))
            for name, path in (("onnx fp32", fp32_path), ("onnx int8 (dynamic)", int8_path))}


def f1_against_gold(docs, predicted: list[set]) -> float:
    gold = [spans_to_iob2(conll_tokens(d), d.spans) for d in docs]
    pred = [spans_to_iob2(conll_tokens(d), sorted(p)) for d, p in zip(docs, predicted)]
    return seqeval_strict(gold, pred)["f1"]


def agreement(a: list[set], b: list[set]) -> float:
    union = sum(len(x | y) for x, y in zip(a, b))
    return sum(len(x & y) for x, y in zip(a, b)) / union if union else 1.0


def bench_predict(model: NerModel, run_dir: Path, docs, args: argparse.Namespace) -> dict:
    texts = [d.text for d in docs]
    systems, sweep = {}, {}
    # ONNX (on CPU) first: exporting resets torch.compile's caches, which the compiled system below fills.
    if "onnx" not in args.skip and args.device == "cpu":
        systems.update(onnx_systems(run_dir, args, Path(tempfile.mkdtemp(prefix="nerkit-bench-onnx-"))))
    precisions = ["fp32", *low_precisions(args.device)]
    for precision in precisions:
        name = f"pipeline {precision}"
        systems[name], sweep[name] = fastest_pipeline(model, DTYPES[precision], texts[: args.sweep_texts], args.device)
    # nerkit as users load it (Predictor.from_run: in bf16 the encoder's weights are bf16 too).
    load = functools.partial(Predictor.from_run, run_dir, args.device, args.batch_size)
    fp32 = load(precision="fp32")
    systems.update({f"nerkit {precision}": NerkitSystem(fp32 if precision == "fp32" else load(precision=precision))
                    for precision in precisions})
    t0 = time.perf_counter()
    systems["nerkit bf16 compiled"] = NerkitSystem(load(precision="bf16", compile=True))
    compile_seconds = time.perf_counter() - t0
    for system in systems.values():  # every system once over the texts, untimed: kernel, shape and compile caches
        system(texts)
    precision_of = {"nerkit bf16 compiled": "bf16", "onnx fp32": "fp32", "onnx int8 (dynamic)": "int8",
                    **{f"{side} {p}": p for side in ("nerkit", "pipeline") for p in precisions}}

    lengths = window_lengths(fp32.text_encoder, texts)
    real_tokens, flops = sum(lengths), encoder_flops(model, lengths)

    names = list(systems)
    outputs: dict[str, list[set]] = {}
    rounds = []
    for r in range(args.rounds):
        timing: dict[str, float] = {}
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            t0 = time.perf_counter()
            out = systems[name](texts)  # Python entities: the device has finished
            timing[name] = time.perf_counter() - t0
            outputs.setdefault(name, out)
        peaks = {p: matmul_flops(DTYPES[p], args.device) for p in precisions}
        row = {"seconds": timing, "matmul_gflops": {k: v / 1e9 for k, v in peaks.items()},
               "tokens_per_s": {n: real_tokens / t for n, t in timing.items()},
               "peak_share": {n: flops / t / peaks[precision_of[n]] for n, t in timing.items() if precision_of[n] in peaks}}
        row["nerkit_bf16_vs"] = {n: timing[n] / timing["nerkit bf16"] for n in names if n != "nerkit bf16"}
        log.info("predict round %d: %s", r, row)
        rounds.append(row)

    def med(*keys):
        values = [r for r in rounds]
        for k in keys:
            values = [v[k] for v in values]
        return statistics.median(values)

    summary = {}
    for name in names:
        summary[name] = {
            "precision": precision_of[name], "seconds": med("seconds", name), "tokens_per_s": med("tokens_per_s", name),
            "tokens_per_s_worst": min(r["tokens_per_s"][name] for r in rounds),
            "peak_share": med("peak_share", name) if name in rounds[0]["peak_share"] else None,
            "agreement_with_nerkit_fp32": agreement(outputs[name], outputs["nerkit fp32"]),
            "f1": f1_against_gold(docs, outputs[name]),
        }
        if name != "nerkit bf16":
            ratios = [r["nerkit_bf16_vs"][name] for r in rounds]
            summary[name]["nerkit_bf16_speedup_median"] = statistics.median(ratios)
            summary[name]["nerkit_bf16_speedup_worst"] = min(ratios)
        if name in sweep:
            summary[name]["batch_size"] = systems[name].batch_size
            summary[name]["sweep_seconds"] = sweep[name]
    return {"texts": len(texts), "real_tokens": real_tokens, "windows": len(lengths), "batch_size": args.batch_size,
            "compile_seconds": compile_seconds, "flops_per_real_token": flops / real_tokens, "systems": summary,
            "bf16_f1_difference_points": 100 * (summary["nerkit bf16"]["f1"] - summary["nerkit fp32"]["f1"]),
            "rounds": rounds}


def bench_agreement(run_dir: Path, args: argparse.Namespace) -> dict:
    """bf16 against fp32 predictions on the whole CoNLL-2003 test set: entity agreement and F1."""
    docs = read_conll(CONLL / "test.txt")
    texts = [d.text for d in docs]
    out = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_run(run_dir, args.device, args.batch_size, precision=precision)
        out[precision] = NerkitSystem(predictor)(texts)
    f1 = {p: f1_against_gold(docs, out[p]) for p in out}
    return {"texts": len(texts), "entities_fp32": sum(map(len, out["fp32"])), "entities_bf16": sum(map(len, out["bf16"])),
            "agreement": agreement(out["bf16"], out["fp32"]), "f1_fp32": f1["fp32"], "f1_bf16": f1["bf16"],
            "f1_difference_points": 100 * (f1["bf16"] - f1["fp32"])}


# --- long documents -------------------------------------------------------------------------------

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


def _peak_rss_child(run_dir: Path, text: str, args: argparse.Namespace, precision: str, queue) -> None:
    """In a fresh process: time, entities, and RSS before and at peak (sampled every 5 ms)
    while predicting ``text``."""
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_run(run_dir, "cpu", args.batch_size, precision=precision)
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
    queue.put({"precision": precision, "seconds": seconds, "entities": len(entities), "rss_before_mb": before / 2**20,
               "peak_rss_mb": peak[0] / 2**20, "peak_increase_mb": (peak[0] - before) / 2**20})


def bench_long(model: NerModel, run_dir: Path, args: argparse.Namespace) -> dict:
    tokenizer = model.encoder.tokenizer
    texts = {n: long_document(n, tokenizer) for n in args.long_sizes}
    out = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_run(run_dir, args.device, args.batch_size, precision=precision)
        predictor.predict([texts[args.long_sizes[0]]])  # warm up
        rows = []
        for n, text in texts.items():
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            times = []
            for _ in range(3 if n <= 1_000 else 1):
                t0 = time.perf_counter()
                entities = len(predictor.predict([text])[0])
                times.append(time.perf_counter() - t0)
            seconds = statistics.median(times)
            rows.append({"target_tokens": n, "tokens": tokens, "characters": len(text), "entities": entities,
                         "seconds": seconds, "us_per_token": 1e6 * seconds / tokens})
            log.info("long document %s: %s", precision, rows[-1])
        out[precision] = {"documents": rows, "per_token_ratio_longest_vs_shortest": rows[-1]["us_per_token"] / rows[0]["us_per_token"]}
    if args.device != "cpu":
        return out  # host RSS says nothing about GPU memory
    # Peak memory of the 100k-token document in a fresh process, so that it is its own.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_child, args=(run_dir, texts[args.long_sizes[-1]], args, "bf16", queue))
    child.start()
    out["memory_100k"] = queue.get()
    child.join()
    return out


# --- train ----------------------------------------------------------------------------------------

class TokenCounter:
    """Wraps a batch-building function and counts the real and padded tokens of every batch it
    builds (``mask_of`` finds the batch's attention mask)."""

    def __init__(self, build, mask_of):
        self.build, self.mask_of, self.real, self.padded = build, mask_of, 0, 0

    def __call__(self, *args, **kwargs):
        batch = self.build(*args, **kwargs)
        mask = self.mask_of(batch)
        self.real += int(mask.sum())
        self.padded += mask.numel()
        return batch


def train_nerkit(data_root: Path, args: argparse.Namespace, out: Path, precision: str, round_one: bool = False) -> dict:
    """``round_one``: the engine with torch's default (unfused, one tensor at a time) AdamW, as
    round one trained: the "today's fp32" that issue 14's training goal is measured against."""
    cfg = compose_cfg(["encoder=bert", "head=softmax", "data=conll2003", f"data.root={data_root}", "data.dev=null",
                       "data.test=null", "trainer.epochs=1", f"trainer.batch_size={args.train_batch_size}",
                       f"max_length={args.max_length}", f"trainer.device={args.device}", "trainer.keep_checkpoints=0",
                       f"trainer.precision={precision}", "trainer.tensorboard=false",
                       "trainer.batch_order=length",  # nerkit's fastest order, as group_by_length is the Trainer's
                       f"trainer.fused_optimizer={not round_one}"])
    (real, padded), = batch_tokens(cfg)  # one epoch
    nerkit.train.train(cfg, out)
    # train_seconds is the loop's time up to its last step: the final save is not in it.
    seconds = json.loads((out / "metrics.json").read_text())["train_seconds"]
    logged = sum(r["tokens"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train")
    if logged != real:
        raise AssertionError(f"the engine logged {logged} real tokens, the batch plan has {real}")
    return {"seconds": seconds, "real_tokens": real, "padded_tokens": padded}


def train_hf(data_root: Path, args: argparse.Namespace, out: Path, precision: str) -> dict:
    model = AutoModelForTokenClassification.from_pretrained(embedded_model_path(), num_labels=1 + 2 * len(CONLL_TYPES))
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    docs = read_conll(data_root / "train.txt")
    words = [d.text.split(" ") for d in docs]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=args.max_length)
    # Labels do not change the cost; what matters is the standard first-sub-token layout.
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": [0 if w is not None and w != prev else -100 for prev, w in zip([None, *enc.word_ids(i)], enc.word_ids(i))]}
            for i in range(len(docs))]
    counter = TokenCounter(DataCollatorForTokenClassification(tokenizer), lambda batch: batch["attention_mask"])
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.train_batch_size, learning_rate=5e-5,
        num_train_epochs=1, warmup_steps=0.1, weight_decay=0.01, seed=42, report_to="none",
        save_strategy="no", logging_strategy="no", use_cpu=args.device == "cpu", disable_tqdm=True,
        train_sampling_strategy="group_by_length", bf16=precision == "bf16", fp16=precision == "fp16")
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows), data_collator=counter)
    seconds = trainer.train().metrics["train_runtime"]
    return {"seconds": seconds, "real_tokens": counter.real, "padded_tokens": counter.padded}


def bench_train(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nerkit-bench-train-"))
    write_subset(CONLL / "train.txt", tmp / "train.txt", args.train_sentences)
    low = low_precisions(args.device)
    runs = [("hf", "fp32"), ("nerkit", "fp32"), ("nerkit round-one optimizer", "fp32"),
            *((side, precision) for precision in low for side in ("hf", "nerkit"))]
    rounds = []
    for r in range(args.rounds):
        result = {}
        for side, precision in runs[r % len(runs):] + runs[: r % len(runs)]:
            out = tmp / f"{side.replace(' ', '_')}_{precision}_{r}"
            if side == "hf":
                run = train_hf(tmp, args, out, precision)
            else:
                run = train_nerkit(tmp, args, out, precision, round_one=side != "nerkit")
            run["real_tokens_per_s"] = run["real_tokens"] / run["seconds"]
            result[f"{side} {precision}"] = run
        tps = {name: run["real_tokens_per_s"] for name, run in result.items()}
        result["ratios"] = {
            "nerkit bf16 / nerkit round-one optimizer fp32": tps["nerkit bf16"] / tps["nerkit round-one optimizer fp32"],
            **{f"nerkit {p} / nerkit fp32": tps[f"nerkit {p}"] / tps["nerkit fp32"] for p in low},
            **{f"nerkit {p} / hf {p}": tps[f"nerkit {p}"] / tps[f"hf {p}"] for p in ("fp32", *low)},
        }
        log.info("train round %d: %s", r, result)
        rounds.append(result)
    systems = {name: {"real_tokens_per_s": statistics.median(r[name]["real_tokens_per_s"] for r in rounds),
                      "padding_fraction": 1 - rounds[0][name]["real_tokens"] / rounds[0][name]["padded_tokens"]}
               for name in rounds[0] if name != "ratios"}
    ratios = {k: {"median": statistics.median(r["ratios"][k] for r in rounds), "worst": min(r["ratios"][k] for r in rounds)}
              for k in rounds[0]["ratios"]}
    return {"batch_size": args.train_batch_size, "sentences": args.train_sentences, "systems": systems,
            "ratios": ratios, "rounds": rounds}


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUNS / "speed_model", help="trained softmax run")
    parser.add_argument("--limit", type=int, default=1000, help="first N test sentences")
    parser.add_argument("--sweep-texts", type=int, default=200, help="texts on which the pipeline batch size is picked")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--train-sentences", type=int, default=800, help="one epoch over the first N train sentences")
    parser.add_argument("--long-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="long-document lengths in tokens, ascending")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: a GPU adds fp16 rows and skips ONNX")
    parser.add_argument("--skip", nargs="*", default=[], choices=["predict", "onnx", "agreement", "train", "long"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    results = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()}, "goals": GOALS}
    name = "speed" if args.device == "cpu" else f"speed_{torch.device(args.device).type}"  # a GPU run has its own file
    previous = RESULTS / f"{name}.json"
    if args.skip and previous.exists():  # a partial rerun keeps the other parts, each with its own stamp
        earlier = json.loads(previous.read_text())
        for part in ("predict", "agreement", "long", "train"):
            if part in args.skip and part in earlier:
                results[part] = {**earlier[part], "machine": earlier[part].get("machine", earlier["machine"])}
    model = load_model(args.run_dir)
    docs = read_conll(CONLL / "test.txt")[: args.limit]
    # Results are written after each part, so that a part cut short leaves the others.
    if "predict" not in args.skip:
        results["predict"] = {**bench_predict(model, args.run_dir, docs, args), "machine": results["machine"]}
        save_results(name, results, table(results))
    if "agreement" not in args.skip:
        results["agreement"] = {**bench_agreement(args.run_dir, args), "machine": results["machine"]}
        save_results(name, results, table(results))
    if "long" not in args.skip:
        results["long"] = {**bench_long(model, args.run_dir, args), "machine": results["machine"]}
        save_results(name, results, table(results))
    if "train" not in args.skip:
        results["train"] = {**bench_train(args), "machine": results["machine"]}
        save_results(name, results, table(results))
    results["machine"]["load_average_end"] = list(os.getloadavg())
    save_results(name, results, table(results))


def table(results: dict) -> str:
    m = results["machine"]
    out = [f"Machine: {results['settings'].get('device', 'cpu')}, {m['torch_threads']} torch threads, load average {m['load_average'][0]:.1f} at start"
           + (f", {m['load_average_end'][0]:.1f} at end" if "load_average_end" in m else "")
           + f"; commit {m['commit']}{' (dirty)' if m.get('dirty') else ''}; weights {results['settings']['run_dir']}"]
    if "predict" in results:
        p = results["predict"]
        rows = []
        for name, s in p["systems"].items():
            speedup = ("-" if name == "nerkit bf16" else
                       f"{s['nerkit_bf16_speedup_median']:.2f}x (worst {s['nerkit_bf16_speedup_worst']:.2f}x)")
            rows.append([name + (f" (batch {s['batch_size']})" if "batch_size" in s else ""), s["tokens_per_s"],
                         s["tokens_per_s_worst"], "-" if s["peak_share"] is None else f"{s['peak_share']:.0%}",
                         speedup, s["agreement_with_nerkit_fp32"], s["f1"]])
        peaks = p["rounds"][0]["matmul_gflops"]
        out.append(f"Predict: {p['texts']} CoNLL-2003 test sentences as raw text, {p['real_tokens']} real tokens in "
                   f"{p['windows']} windows, {p['flops_per_real_token'] / 1e6:.1f} MFLOP per real token; matmul peak "
                   f"(round 1) fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
        out.append(markdown_table(["system", "real tokens/s (median)", "worst round", "share of matmul peak",
                                   "nerkit bf16 speed-up", "entity agreement with nerkit fp32", "test F1"], rows))
        best_pipe = min(("pipeline fp32", "pipeline bf16"), key=lambda n: p["systems"][n]["seconds"])
        bf16 = p["systems"]["nerkit bf16"]
        goals = []
        for name in ("nerkit bf16", "nerkit bf16 compiled"):
            s = p["systems"][name]
            ratios = [r["seconds"][best_pipe] / r["seconds"][name] for r in p["rounds"]]
            goals.append(f"{name} {s['tokens_per_s']:.0f} real tokens/s, worst round {s['tokens_per_s_worst']:.0f} (goal >= "
                         f"{GOALS['predict_bf16_tokens_per_s']}); {statistics.median(ratios):.2f}x the strongest pipeline "
                         f"({best_pipe}; worst round {min(ratios):.2f}x, goal >= {GOALS['predict_vs_best_pipeline']}x)")
        out.append("Goals: " + "; ".join(goals) + f". bf16 entity agreement {bf16['agreement_with_nerkit_fp32']:.4f} (goal >= "
                   f"{GOALS['bf16_entity_agreement']}), F1 difference {p['bf16_f1_difference_points']:+.2f} points (goal within "
                   f"{GOALS['bf16_f1_difference_points']}). Loading with compile=true (torch.compile, once per "
                   f"process) took {p['compile_seconds']:.0f} s. Every system ran once over the texts before the rounds.")
    if "agreement" in results:
        a = results["agreement"]
        out.append(f"bf16 vs fp32 on the whole CoNLL-2003 test set ({a['texts']} sentences, {a['entities_fp32']} fp32 "
                   f"entities): entity agreement {a['agreement']:.4f} (goal >= {GOALS['bf16_entity_agreement']}), test F1 "
                   f"{a['f1_fp32']:.4f} fp32 vs {a['f1_bf16']:.4f} bf16, {a['f1_difference_points']:+.2f} points "
                   f"(goal within {GOALS['bf16_f1_difference_points']})")
    if "long" in results:
        lg = results["long"]
        rows = [[precision, d["tokens"], d["seconds"], d["us_per_token"], d["entities"]]
                for precision in ("fp32", "bf16") for d in lg[precision]["documents"]]
        out.append(markdown_table(["precision", "document tokens", "seconds", "us per token", "entities"], rows))
        mem = lg["memory_100k"]
        docs = lg["bf16"]["documents"]
        out.append(f"Per-token time at {docs[-1]['tokens']} vs {docs[0]['tokens']} tokens: fp32 "
                   f"{lg['fp32']['per_token_ratio_longest_vs_shortest']:.2f}x, bf16 "
                   f"{lg['bf16']['per_token_ratio_longest_vs_shortest']:.2f}x (goal: flat, 1.0x). Peak memory predicting "
                   f"the longest document in bf16: +{mem['peak_increase_mb']:.0f} MiB over the loaded model "
                   f"({mem['peak_rss_mb']:.0f} MiB RSS).")
    if "train" in results:
        t = results["train"]
        out.append(markdown_table(["training system", "real tokens/s (median)", "padding fraction"],
                                  [[n, s["real_tokens_per_s"], s["padding_fraction"]] for n, s in t["systems"].items()]))
        goals = {"bf16 / nerkit round-one": GOALS["train_bf16_vs_fp32"], "/ hf": GOALS["train_vs_trainer_same_precision"]}
        out.append(markdown_table(["training ratio (hf = Trainer, group_by_length)", "median", "worst round", "goal"], [
            [k, v["median"], v["worst"], next((f">= {g}x" for key, g in goals.items() if key in k), "-")]
            for k, v in t["ratios"].items()]))
        out.append(f"Training: one epoch over {t['sentences']} CoNLL train sentences, batch {t['batch_size']}, "
                   "real tokens per second of training time (the final save excluded); nerkit at trainer.precision; "
                   "\"round-one optimizer\": the engine with torch's default unfused AdamW, as round one trained "
                   "(the training goal's \"today's fp32\").")
    for part in ("predict", "agreement", "long", "train"):
        if part in results and "machine" in results[part]:
            pm = results[part]["machine"]
            out.append(f"{part}: measured {pm['date']}, commit {pm['commit']}{' (dirty)' if pm.get('dirty') else ''}, "
                       f"load average {pm['load_average'][0]:.1f} at its start, {pm['torch_threads']} torch threads")
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
