"""Speed at the hardware's limit: nerkit against every baseline at its strongest, in one process per thread count.

    python -m bench.speed [--run-dir bench/runs/speed_model] [--limit N] [--rounds 3] [--threads 1,2]
                          [--parts predict,agreement,long,train] [--out PATH.json]

* predict, CoNLL-2003 test sentences as raw text, all systems holding the same weights, run once
  per ``--threads`` count (default 1 and 2), each in a fresh process whose torch, ONNX Runtime and
  tokenizer thread pools hold that many threads:
  - nerkit ``Predictor.from_run`` (as users load it) at fp32 and, where the hardware has bf16
    units, at bf16 (bf16 encoder weights, autocast) and at bf16 with ``compile=True``
    (``torch.compile`` of the encoder);
  - HF ``pipeline("token-classification", aggregation_strategy="first")`` (first sub-token, as
    nerkit) at its strongest: fp32 weights and, where the hardware has bf16 units, bf16 weights
    (``torch_dtype=bfloat16``); the texts sorted by length (sort, predict, unsort: a one-line user
    trick); the attention kernel (SDPA or the plain one, ``attn_implementation``) and the batch
    size of {1, 8, 16, 32, 64} with the lowest median of ``--sweep-repeats`` timings, each after
    a warm-up pass, over the texts of the rounds (or the first ``--sweep-texts``);
  - ONNX Runtime on the exported fp32 graph, tokenising/decoding as nerkit (its int8 is bench/int8.py's);
  - on a CPU with bf16 units, nerkit at ``precision=int8`` (the torch backend's int8 encoder,
    exported once with ``format=torch precision=int8`` into a copy of the run; ``--no-int8`` leaves it out).
  bf16 is not timed on a CPU without AVX-512 BF16 or AMX (oneDNN would emulate it, many times
  slower than fp32); the results say so. Every system runs once over the texts before the
  rounds (untimed: kernel, shape and compile caches). Systems alternate in a rotating order
  within each round. The headline is nerkit's fastest ``Predictor`` row that keeps the bf16
  agreement goal's share of the fp32 entities (a faster row that loses more does not count) over the
  pipeline's fastest row, each at its best precision: a ratio taken inside each round, reported as the
  median and the worst (lowest) round, at every thread count.
  Throughput is text tokens per second: each text's sub-word tokens counted once (the tokenizer
  without special tokens): no [CLS]/[SEP], no padding, no window overlap, the same count for
  every system. Matmul rates (best of 512^3, 1024^3 and 2048^3 products) of every timed precision
  are measured in every round; the best over rounds is the peak, and each system's share is
  encoder FLOPs (of nerkit's windows) per second over it.
  Quality: entity agreement (shared / union of (start, end, label)) with nerkit fp32, and
  seqeval strict F1 on the CoNLL tokens against the gold test set.
* agreement: nerkit bf16 against fp32 on the whole CoNLL-2003 test set (entity agreement, F1).
* long documents: per-token time at 1k, 10k and 100k tokens (``--long-sizes``) at every timed
  precision; peak memory of the longest document at the best one, in a fresh process.
* train: one epoch over the first ``--train-sentences`` train sentences, nerkit vs the HF
  ``Trainer`` at the same batch order (``--train-orders``): ``length`` (the Trainer's
  ``train_sampling_strategy="group_by_length"``, nerkit's ``trainer.batch_order=length``) and
  ``random`` (both sides' default), fp32 and bf16 where native (``TrainingArguments(bf16=True)``;
  nerkit: its ``trainer.precision``), real tokens per second. The Trainer runs padded (its
  default) and padding-free (``DataCollatorWithFlattening``), and nerkit's goal ratio is against
  the faster of the two in each round; nerkit runs packed (its default,
  ``encoder.pack_in_training``) and padded (``encoder.pack_in_training=false``); and, length-ordered, nerkit fp32 with
  round one's optimizer (``trainer.fused_optimizer=false``: torch's default unfused AdamW), the
  baseline of issue 14's training goal.
  agreement, long and train run at the largest ``--threads`` count.

Writes bench/results/speed.json and speed.md (or ``--out`` and the .md beside it), stamped with
commit, dirty flag and load average at the start, and each predict thread count with its own
stamp (its threads, load average at its start and end). Other jobs on the machine slow every
system alike within a round, not across. ``--parts predict`` reruns one part and keeps the others.
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
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import psutil
import torch
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithFlattening,
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
    text_tokens,
    window_lengths,
    write_subset,
)
from nerkit.config import embedded_model_path
from nerkit.data.readers import read_conll
from nerkit.evaluation import entity_agreement
from nerkit.model import NerModel
from nerkit.precision import cpu_has_bf16
from nerkit.predict import Predictor
from nerkit.quantize_torch import export_int8_torch, quantization_of

log = logging.getLogger("bench.speed")
GOALS = {
    "predict_bf16_tokens_per_s": 20_000,  # end to end on CoNLL test sentences, 2 cores
    "predict_vs_best_pipeline": 2.0,
    "bf16_entity_agreement": 0.995,
    "bf16_f1_difference_points": 0.1,
    "long_per_token_ratio_longest_vs_shortest": 1.0,  # flat
    "train_bf16_vs_fp32": 2.0,
    "train_vs_trainer_same_precision": 1.3,  # issue 22, at the same batch order on both sides
}
PIPELINE_BATCH_SIZES = (1, 8, 16, 32, 64)
# transformers' attention kernels: SDPA (its default) and the plain one (matmuls and softmax),
# which nerkit's compiled encoder runs on CPU; the pipeline gets the faster for it
PIPELINE_ATTENTION = ("sdpa", "eager")
# nerkit's trainer.batch_order -> the Trainer's sampler of the same kind
HF_SAMPLING = {"length": "group_by_length", "random": "random"}


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def low_precisions(device: str) -> list[str]:
    """The mixed precisions the train part compares on ``device``: those ``timed_precisions``
    times besides fp32 (bf16 only where the hardware has it; fp16 on a GPU)."""
    return [p for p in timed_precisions(device)[0] if p != "fp32"]


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(dtype: torch.dtype, device: str = "cpu", sizes: Sequence[int] = (512, 1024, 2048),
                 seconds: float = 0.3) -> float:
    """The best sustained FLOP/s of back-to-back n x n x n matmuls in ``dtype`` (about ``seconds``
    per size) over ``sizes``: one size can miss the core's peak (cache blocking, a busy moment),
    and noise only ever lowers a peak."""
    sizes = sizes if torch.device(device).type == "cpu" else (8192,)  # a GPU needs bigger products to reach its peak
    return max(_matmul_flops_at(dtype, device, n, seconds) for n in sizes)


def _matmul_flops_at(dtype: torch.dtype, device: str, n: int, seconds: float) -> float:
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


# The model every system holds: python -m nerkit.train <these> hydra.run.dir=bench/runs/speed_model
SPEED_MODEL_OVERRIDES = ["data=conll2003", "+data.train.limit=3000", "trainer.epochs=1", "trainer.batch_size=8",
                         "trainer.lr=2e-4", "head=softmax", "data.test=null"]


def load_model(run_dir: Path) -> NerModel:
    if not (run_dir / "model.safetensors").exists():
        raise SystemExit(f"{run_dir}: no trained run; train one with (about 2 min on 2 quiet cores):\n"
                         f"python -m nerkit.train {' '.join(SPEED_MODEL_OVERRIDES)} hydra.run.dir={run_dir}")
    return NerModel.load(run_dir, "cpu")[0]


# --- predict ------------------------------------------------------------------------------------

def timed_precisions(device: str) -> tuple[list[str], dict[str, str]]:
    """The precisions whose predict speed is worth timing on ``device``, and why each other one is
    not: bf16 only where the hardware has bf16 units (elsewhere oneDNN emulates it, many times
    slower than fp32: timing it would say nothing about either system)."""
    if torch.device(device).type == "cuda":
        if torch.cuda.is_bf16_supported():
            return ["fp32", "bf16", "fp16"], {}
        return ["fp32", "fp16"], {"bf16": f"{torch.cuda.get_device_name(device)} has no bf16 support"}
    if cpu_has_bf16():
        return ["fp32", "bf16"], {}
    return ["fp32"], {"bf16": "this CPU has no bf16 matmul units (AVX-512 BF16 or AMX); oneDNN would emulate bf16, "
                              "many times slower than fp32 (13x for a MiniLM training step), so bf16 rows were not timed"}


def fastest_setting(seconds: dict[str, list[float]]) -> str:
    """The setting ("<attention> <batch size>") with the lowest median time over its timings (a
    tie: the earlier timed, i.e. SDPA and the smaller batch)."""
    return min(seconds, key=lambda setting: statistics.median(seconds[setting]))


class PipelineSystem:
    """The HF pipeline as a user at their best runs it: the texts sorted by length (each batch
    pads to its longest text, so alike lengths pad little), predicted at ``batch_size`` with the
    ``attention`` kernel, and their entities put back in the texts' order."""

    def __init__(self, twin: torch.nn.Module, tokenizer, device: str, batch_size: int = 1):
        self.batch_size = batch_size
        self.pipe = pipeline("token-classification", model=twin, tokenizer=tokenizer,
                             aggregation_strategy="first", device=device)

    @property
    def attention(self) -> str:
        return self.pipe.model.config._attn_implementation

    @attention.setter
    def attention(self, kernel: str) -> None:
        self.pipe.model.set_attn_implementation(kernel)  # what from_pretrained(attn_implementation=...) sets

    def __call__(self, texts: list[str]) -> list[set]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[set] = [set()] * len(texts)
        for i, ents in zip(order, self.pipe([texts[i] for i in order], batch_size=self.batch_size)):
            out[i] = {(e["start"], e["end"], e["entity_group"]) for e in ents}
        return out


class NerkitSystem:
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def __call__(self, texts: list[str]) -> list[set]:
        return [{(e.start, e.end, e.label) for e in ents} for ents in self.predictor.predict(texts)]


def seconds_of(system, texts: list[str]) -> float:
    t0 = time.perf_counter()
    system(texts)  # Python entities come back: the device has finished
    return time.perf_counter() - t0


def sweep_settings(system: PipelineSystem, texts: list[str], repeats: int) -> dict[str, list[float]]:
    """Every attention kernel of PIPELINE_ATTENTION at every batch size of PIPELINE_BATCH_SIZES,
    timed ``repeats`` times over ``texts`` after an untimed pass (its shapes warm); leaves
    ``system`` at the fastest setting."""
    seconds = {}
    for attention in PIPELINE_ATTENTION:
        system.attention = attention
        for batch_size in PIPELINE_BATCH_SIZES:
            system.batch_size = batch_size
            system(texts)
            setting = f"{attention} {batch_size}"
            seconds[setting] = [seconds_of(system, texts) for _ in range(repeats)]
            log.info("%s texts, %s attention, batch %d: %s s", len(texts), attention, batch_size, seconds[setting])
    attention, batch_size = fastest_setting(seconds).split()
    system.attention, system.batch_size = attention, int(batch_size)
    return seconds


def export_graph(run_dir: Path) -> Path:
    """The run's fp32 ONNX graph, exported once for every thread count's process."""
    from nerkit.export import export_onnx

    return export_onnx(run_dir, Path(tempfile.mkdtemp(prefix="nerkit-bench-onnx-")) / "model.onnx")


def f1_against_gold(docs, predicted: list[set]) -> float:
    gold = [spans_to_iob2(conll_tokens(d), d.spans) for d in docs]
    pred = [spans_to_iob2(conll_tokens(d), sorted(p)) for d, p in zip(docs, predicted)]
    return seqeval_strict(gold, pred)["f1"]


def predict_at(threads: int, run_dir: Path, onnx_path: Path | None, int8_run: Path | None,
               args: argparse.Namespace) -> dict:
    """The whole predict comparison at ``threads`` threads, in a fresh process (``bench_predict``
    spawns one per thread count): torch's, ONNX Runtime's and the tokenizer's thread pools all
    hold ``threads`` from the start, and no cache carries over from another thread count."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # the fast tokenizer's pool, read at its first batch
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)
    stamp = machine_info()  # after the threads are set: the stamp records them
    model = load_model(run_dir)
    docs = read_conll(CONLL / "test.txt")[: args.limit]
    texts = [d.text for d in docs]
    sweep_texts = texts[: args.sweep_texts] if args.sweep_texts else texts
    run, skipped = timed_precisions(args.device)
    systems, precision_of, sweep = {}, {}, {}
    if onnx_path is not None:
        from nerkit.onnx_predict import OnnxPredictor

        systems["onnx fp32"] = NerkitSystem(OnnxPredictor.from_run(run_dir, onnx_path, args.batch_size, threads=threads))
        precision_of["onnx fp32"] = "fp32"
    for precision in run:
        name = f"pipeline {precision}"
        twin = hf_twin(model).to(device=args.device, dtype=DTYPES[precision])
        systems[name], precision_of[name] = PipelineSystem(twin, model.encoder.tokenizer, args.device), precision
        sweep[name] = sweep_settings(systems[name], sweep_texts, args.sweep_repeats)
    # nerkit as users load it (Predictor.from_run: in bf16 the encoder's weights are bf16 too).
    for precision in run:
        systems[f"nerkit {precision}"] = NerkitSystem(Predictor.from_run(run_dir, args.device, args.batch_size,
                                                                         precision=precision))
        precision_of[f"nerkit {precision}"] = precision
    compile_seconds = None
    if "bf16" in run:  # torch.compile of the bf16 encoder: where bf16 is timed at all
        t0 = time.perf_counter()
        systems["nerkit bf16 compiled"] = NerkitSystem(Predictor.from_run(run_dir, args.device, args.batch_size,
                                                                          precision="bf16", compile=True))
        compile_seconds, precision_of["nerkit bf16 compiled"] = time.perf_counter() - t0, "bf16"
    int8_load_seconds = None
    if int8_run is not None:  # its share of the matmul peak is taken of the bf16 peak
        t0 = time.perf_counter()
        systems["nerkit int8"] = NerkitSystem(Predictor.from_run(int8_run, args.device, args.batch_size, precision="int8"))
        int8_load_seconds, precision_of["nerkit int8"] = time.perf_counter() - t0, "bf16"
    for system in systems.values():  # every system once over the texts, untimed: kernel, shape and compile caches
        system(texts)

    tokens = sum(text_tokens(model.encoder.tokenizer, texts))
    windows = window_lengths(systems["nerkit fp32"].predictor.text_encoder, texts)
    flops = encoder_flops(model, windows)
    names = list(systems)
    outputs: dict[str, list[set]] = {}
    rounds = []
    for r in range(args.rounds):
        seconds: dict[str, float] = {}
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            t0 = time.perf_counter()
            outputs.setdefault(name, systems[name](texts))
            seconds[name] = time.perf_counter() - t0
        rounds.append({"seconds": seconds, "tokens_per_s": {n: tokens / t for n, t in seconds.items()},
                       "matmul_gflops": {p: matmul_flops(DTYPES[p], args.device) / 1e9 for p in run}})
        log.info("predict at %d threads, round %d: %s", threads, r, rounds[-1])
    # A system's share of the peak: the best matmul rate of any round is the hardware's peak.
    peak_gflops = {p: max(r["matmul_gflops"][p] for r in rounds) for p in run}
    for r in rounds:
        r["peak_share"] = {n: flops / t / 1e9 / peak_gflops[precision_of[n]] for n, t in r["seconds"].items()}

    def median_seconds(name: str) -> float:
        return statistics.median(r["seconds"][name] for r in rounds)

    agreement = {name: entity_agreement(outputs["nerkit fp32"], outputs[name]) for name in names}
    best_nerkit = min((n for n in names if n.startswith("nerkit ") and agreement[n] >= GOALS["bf16_entity_agreement"]),
                      key=median_seconds)
    best_pipeline = min((n for n in names if n.startswith("pipeline ")), key=median_seconds)
    summary = {}
    for name in names:
        vs_pipeline = [r["seconds"][best_pipeline] / r["seconds"][name] for r in rounds]
        summary[name] = {
            "precision": precision_of[name], "seconds": median_seconds(name),
            "tokens_per_s": statistics.median(r["tokens_per_s"][name] for r in rounds),
            "tokens_per_s_worst": min(r["tokens_per_s"][name] for r in rounds),
            "peak_share": statistics.median(r["peak_share"][name] for r in rounds),
            "vs_best_pipeline_median": statistics.median(vs_pipeline), "vs_best_pipeline_worst": min(vs_pipeline),
            "agreement_with_nerkit_fp32": agreement[name],
            "f1": f1_against_gold(docs, outputs[name]),
        }
        if name in sweep:
            summary[name] |= {"batch_size": systems[name].batch_size, "attention": systems[name].attention,
                              "sweep_seconds": sweep[name]}
    stamp["load_average_end"] = list(os.getloadavg())
    return {"threads": threads, "machine": stamp, "texts": len(texts), "text_tokens": tokens, "windows": len(windows),
            "window_tokens": sum(windows), "flops_per_text_token": flops / tokens, "batch_size": args.batch_size,
            "sweep_texts": len(sweep_texts), "sweep_repeats": args.sweep_repeats, "compile_seconds": compile_seconds,
            "int8_load_seconds": int8_load_seconds,
            "skipped": skipped, "systems": summary, "best_nerkit": best_nerkit, "best_pipeline": best_pipeline,
            "speedup": {"median": summary[best_nerkit]["vs_best_pipeline_median"],
                        "worst": summary[best_nerkit]["vs_best_pipeline_worst"]},
            "rounds": rounds}


def bench_predict(run_dir: Path, args: argparse.Namespace, save) -> dict:
    """``predict_at`` once per thread count, each in its own process; ``save`` is called with the
    thread counts done so far, so that a run cut short keeps them."""
    onnx_path = export_graph(run_dir) if args.onnx and torch.device(args.device).type == "cpu" else None
    int8_run = None
    if args.int8 and torch.device(args.device).type == "cpu" and cpu_has_bf16():
        int8_run = shutil.copytree(run_dir, Path(tempfile.mkdtemp(prefix="nerkit-bench-speed-")) / "run")
        t0 = time.perf_counter()
        export_int8_torch(int8_run)  # calibrated on the run's training data, checked on its dev data
        log.info("int8 export took %.0f s", time.perf_counter() - t0)
    out: dict = {"by_threads": {}, "int8": quantization_of(int8_run) if int8_run else None}
    for threads in args.threads:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            out["by_threads"][str(threads)] = pool.submit(predict_at, threads, run_dir, onnx_path, int8_run, args).result()
        save(out)
    return out


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
            "agreement": entity_agreement(out["fp32"], out["bf16"]), "f1_fp32": f1["fp32"], "f1_bf16": f1["bf16"],
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
    torch.set_num_threads(max(args.threads))  # the other parts run at the largest thread count
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
    run, _ = timed_precisions(args.device)
    for precision in run:
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
    child = context.Process(target=_peak_rss_child, args=(run_dir, texts[args.long_sizes[-1]], args, run[-1], queue))
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


def train_nerkit(data_root: Path, args: argparse.Namespace, out: Path, precision: str, order: str,
                 round_one: bool = False, packed: bool = True) -> dict:
    """``round_one``: the engine with torch's default (unfused, one tensor at a time) AdamW, as
    round one trained: the "today's fp32" that issue 14's training goal is measured against.
    ``packed``: ``encoder.pack_in_training`` (the default; false computes the padding)."""
    cfg = compose_cfg(["encoder=bert", "head=softmax", "data=conll2003", f"data.root={data_root}", "data.dev=null",
                       "data.test=null", "trainer.epochs=1", f"trainer.batch_size={args.train_batch_size}",
                       f"max_length={args.max_length}", f"trainer.device={args.device}", "trainer.keep_checkpoints=0",
                       f"trainer.precision={precision}", "trainer.tensorboard=false",
                       f"trainer.batch_order={order}",
                       f"trainer.fused_optimizer={not round_one}", f"encoder.pack_in_training={packed}"])
    (real, padded), = batch_tokens(cfg)  # one epoch
    nerkit.train.train(cfg, out)
    # train_seconds is the loop's time up to its last step: the final save is not in it.
    seconds = json.loads((out / "metrics.json").read_text())["train_seconds"]
    logged = sum(r["tokens"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train")
    if logged != real:
        raise AssertionError(f"the engine logged {logged} real tokens, the batch plan has {real}")
    return {"seconds": seconds, "real_tokens": real, "padded_tokens": padded}


def train_hf(data_root: Path, args: argparse.Namespace, out: Path, precision: str, order: str,
             padding_free: bool = False) -> dict:
    """``padding_free``: ``DataCollatorWithFlattening``, transformers' own packing (each batch one
    row, positions restarting at each sentence, so attention stays within it) instead of padding."""
    model = AutoModelForTokenClassification.from_pretrained(embedded_model_path(), num_labels=1 + 2 * len(CONLL_TYPES))
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    docs = read_conll(data_root / "train.txt")
    words = [d.text.split(" ") for d in docs]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=args.max_length)
    # Labels do not change the cost; what matters is the standard first-sub-token layout.
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": [0 if w is not None and w != prev else -100 for prev, w in zip([None, *enc.word_ids(i)], enc.word_ids(i))]}
            for i in range(len(docs))]
    if padding_free:
        counter = TokenCounter(DataCollatorWithFlattening(), lambda batch: torch.ones_like(batch["input_ids"]))
    else:
        counter = TokenCounter(DataCollatorForTokenClassification(tokenizer), lambda batch: batch["attention_mask"])
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.train_batch_size, learning_rate=5e-5,
        num_train_epochs=1, warmup_steps=0.1, weight_decay=0.01, seed=42, report_to="none",
        save_strategy="no", logging_strategy="no", use_cpu=args.device == "cpu", disable_tqdm=True,
        train_sampling_strategy=HF_SAMPLING[order], bf16=precision == "bf16", fp16=precision == "fp16")
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows), data_collator=counter)
    seconds = trainer.train().metrics["train_runtime"]
    return {"seconds": seconds, "real_tokens": counter.real, "padded_tokens": counter.padded}


# the Trainer padded (its default) and padding-free; nerkit packed (its default) and padded
TRAINING_SIDES = ("hf", "hf padding-free", "nerkit", "nerkit padded")


def bench_train(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nerkit-bench-train-"))
    write_subset(CONLL / "train.txt", tmp / "train.txt", args.train_sentences)
    low = low_precisions(args.device)
    runs = [(side, precision, order) for order in args.train_orders for precision in ("fp32", *low)
            for side in TRAINING_SIDES]
    if "length" in args.train_orders:
        runs.append(("nerkit round-one optimizer", "fp32", "length"))
    rounds = []
    for r in range(args.rounds):
        result = {}
        for side, precision, order in runs[r % len(runs):] + runs[: r % len(runs)]:
            out = tmp / f"{side.replace(' ', '_')}_{precision}_{order}_{r}"
            if side.startswith("hf"):
                run = train_hf(tmp, args, out, precision, order, padding_free=side == "hf padding-free")
            else:
                run = train_nerkit(tmp, args, out, precision, order, round_one="round-one" in side,
                                   packed=side != "nerkit padded")
            run["real_tokens_per_s"] = run["real_tokens"] / run["seconds"]
            result[f"{side} {precision}, {order} order"] = run
        tps = {name: run["real_tokens_per_s"] for name, run in result.items()}
        result["ratios"] = {}
        for o in args.train_orders:
            for p in ("fp32", *low):
                nerkit_tps = tps[f"nerkit {p}, {o} order"]
                hf = {side: tps[f"{side} {p}, {o} order"] for side in ("hf", "hf padding-free")}
                result["ratios"] |= {
                    f"nerkit {p} / the Trainer's faster setting {p}, {o} order": nerkit_tps / max(hf.values()),
                    f"nerkit {p} / hf {p}, {o} order": nerkit_tps / hf["hf"],
                    f"nerkit {p} / hf padding-free {p}, {o} order": nerkit_tps / hf["hf padding-free"],
                    f"nerkit {p} / nerkit padded {p}, {o} order": nerkit_tps / tps[f"nerkit padded {p}, {o} order"]}
        if "length" in args.train_orders:
            baseline = tps["nerkit round-one optimizer fp32, length order"]
            result["ratios"] |= {f"nerkit {p} / nerkit round-one optimizer fp32, length order":
                                 tps[f"nerkit {p}, length order"] / baseline for p in ("fp32", *low)}
        log.info("train round %d: %s", r, result)
        rounds.append(result)
    systems = {name: {"real_tokens_per_s": statistics.median(r[name]["real_tokens_per_s"] for r in rounds),
                      "padding_fraction": 1 - rounds[0][name]["real_tokens"] / rounds[0][name]["padded_tokens"]}
               for name in rounds[0] if name != "ratios"}
    ratios = {k: {"median": statistics.median(r["ratios"][k] for r in rounds), "worst": min(r["ratios"][k] for r in rounds)}
              for k in rounds[0]["ratios"]}
    return {"batch_size": args.train_batch_size, "sentences": args.train_sentences, "orders": args.train_orders,
            "not_timed": timed_precisions(args.device)[1], "systems": systems, "ratios": ratios, "rounds": rounds}


# --- main -----------------------------------------------------------------------------------------

PARTS = ("predict", "agreement", "long", "train")


def comma_list(kind, choices: tuple = ()):
    """An argparse type: "a,b" -> [kind(a), kind(b)], each one of ``choices`` if given."""
    def parse(value: str) -> list:
        items = [kind(v) for v in value.split(",") if v.strip()]
        bad = [v for v in items if (choices and v not in choices) or (kind is int and v < 1)]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{value!r}: expected a comma-separated list of "
                                             + (", ".join(choices) if choices else "positive integers"))
        return items
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUNS / "speed_model", help="trained softmax run")
    parser.add_argument("--limit", type=int, default=1000, help="first N test sentences")
    parser.add_argument("--sweep-texts", type=int, default=0,
                        help="texts on which the pipeline's batch size is picked (0: all the texts of the rounds)")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="timings per pipeline batch size, after a warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--train-sentences", type=int, default=800, help="one epoch over the first N train sentences")
    parser.add_argument("--train-orders", type=comma_list(str, tuple(HF_SAMPLING)), default=list(HF_SAMPLING),
                        help="batch orders the training comparison runs, each on both sides")
    parser.add_argument("--long-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="long-document lengths in tokens, ascending")
    parser.add_argument("--threads", type=comma_list(int), default=[1, 2],
                        help="thread counts the predict comparison runs at, one process each (default 1,2); "
                             "the other parts run at the largest")
    parser.add_argument("--parts", type=comma_list(str, PARTS), default=list(PARTS),
                        help=f"the parts to run (default {','.join(PARTS)}); a partial run keeps the others' results")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="no ONNX Runtime row in predict")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="no torch int8 row in predict")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: a GPU adds fp16 rows and skips ONNX")
    parser.add_argument("--out", type=Path, help="results json (default bench/results/speed.json, speed_cuda.json "
                        "on a GPU); the table is written beside it as .md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nerkit").setLevel(logging.WARNING)
    torch.set_num_threads(max(args.threads))

    results = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()}, "goals": GOALS}
    default = "speed" if args.device == "cpu" else f"speed_{torch.device(args.device).type}"  # a GPU run has its own file
    out = args.out or RESULTS / f"{default}.json"
    save = functools.partial(save_results, out.stem, directory=out.parent)
    if set(args.parts) != set(PARTS) and out.exists():  # a partial rerun keeps the other parts, each with its own stamp
        earlier = json.loads(out.read_text())
        for part in PARTS:
            if part not in args.parts and part in earlier:
                results[part] = {**earlier[part], "machine": earlier[part].get("machine", earlier["machine"])}
    model = load_model(args.run_dir)
    # Results are written after each part (and each predict thread count), so that a part cut short leaves the others.
    if "predict" in args.parts:
        def save_predict(done: dict) -> None:
            results["predict"] = {**done, "machine": results["machine"]}
            save(results, table(results))

        bench_predict(args.run_dir, args, save_predict)
    if "agreement" in args.parts:
        results["agreement"] = {**bench_agreement(args.run_dir, args), "machine": results["machine"]}
        save(results, table(results))
    if "long" in args.parts:
        results["long"] = {**bench_long(model, args.run_dir, args), "machine": results["machine"]}
        save(results, table(results))
    if "train" in args.parts:
        results["train"] = {**bench_train(args), "machine": results["machine"]}
        save(results, table(results))
    results["machine"]["load_average_end"] = list(os.getloadavg())
    save(results, table(results))


def threads_text(threads: int | str) -> str:
    return f"{threads} thread{'' if int(threads) == 1 else 's'}"


def pipeline_setting(system: dict) -> str:
    """" (batch 16, sdpa attention)" for a pipeline row, "" for the others."""
    return f" (batch {system['batch_size']}, {system['attention']} attention)" if "batch_size" in system else ""


def predict_tables(p: dict, goals: dict) -> list[str]:
    """The predict part: the headline (nerkit's best over the pipeline's best) at every thread
    count, then each thread count's systems."""
    blocks = p["by_threads"]
    out = ["Predict: nerkit's fastest way that keeps at least "
           f"{goals['bf16_entity_agreement']:.1%} of nerkit fp32's entities against the HF pipeline's fastest, each "
           "system at its best precision the hardware runs natively; the ratio is taken inside each round (median, and worst = the lowest round). "
           "Throughput counts text tokens: each text's sub-word tokens once, no [CLS]/[SEP], no padding, no window "
           "overlap, the same count for every system.",
           markdown_table(["threads", "nerkit best", "text tokens/s", "pipeline best", "text tokens/s",
                           "speed-up (median)", "worst round", "goal"],
                          [[t, b["best_nerkit"], b["systems"][b["best_nerkit"]]["tokens_per_s"],
                            b["best_pipeline"] + pipeline_setting(b["systems"][b["best_pipeline"]]),
                            b["systems"][b["best_pipeline"]]["tokens_per_s"], f"{b['speedup']['median']:.2f}x",
                            f"{b['speedup']['worst']:.2f}x", f">= {goals['predict_vs_best_pipeline']}x"]
                           for t, b in blocks.items()])]
    for t, b in blocks.items():
        peaks = ", ".join(f"{k} {max(r['matmul_gflops'][k] for r in b['rounds']):.0f} GFLOP/s"
                          for k in b["rounds"][0]["matmul_gflops"])
        sweep = f"the first {b['sweep_texts']}" if b["sweep_texts"] < b["texts"] else "all the"
        out.append(f"Predict at {threads_text(t)}: {b['texts']} CoNLL-2003 test sentences as raw "
                   f"text, {b['text_tokens']} text tokens ({b['window_tokens']} model input tokens in {b['windows']} "
                   f"nerkit windows), {b['flops_per_text_token'] / 1e6:.1f} MFLOP per text token; matmul peak (best round) "
                   f"{peaks}. The pipeline runs on the texts sorted by length, at the attention kernel of "
                   f"{{{', '.join(PIPELINE_ATTENTION)}}} and the batch size of "
                   f"{{{', '.join(map(str, PIPELINE_BATCH_SIZES))}}} with the lowest median of {b['sweep_repeats']} "
                   f"timings over {sweep} texts, each after a warm-up pass.")
        rows = [[name + pipeline_setting(s), s["tokens_per_s"],
                 s["tokens_per_s_worst"], f"{s['peak_share']:.0%}",
                 f"{s['vs_best_pipeline_median']:.2f}x (worst {s['vs_best_pipeline_worst']:.2f}x)",
                 s["agreement_with_nerkit_fp32"], s["f1"]] for name, s in b["systems"].items()]
        out.append(markdown_table(["system", "text tokens/s (median)", "worst round", "share of matmul peak",
                                   f"vs {b['best_pipeline']}", "entity agreement with nerkit fp32", "test F1"], rows))
        notes = [f"not timed: {precision} ({why})" for precision, why in b["skipped"].items()]
        if b["compile_seconds"] is not None:
            notes.append(f"loading with compile=true (torch.compile, once per process) took {b['compile_seconds']:.0f} s")
        if b.get("int8_load_seconds") is not None:
            q = p["int8"]
            notes.append(f"nerkit int8: static int8 for {len(q['int8_layers'])} of {len(q['sensitivity'])} encoder linear "
                         f"layers (the export kept {q['held_out_entity_agreement']:.4f} of the fp32 entities on "
                         f"{q['held_out_texts']} {q['held_out']} texts), bf16 between them, its share of the matmul "
                         f"peak taken of the bf16 peak; loading and compiling it took {b['int8_load_seconds']:.0f} s")
        if notes:
            notes[0] = notes[0][0].upper() + notes[0][1:]
            out.append("; ".join(notes) + ".")
    t, b = max(blocks.items(), key=lambda item: int(item[0]))
    best = b["systems"][b["best_nerkit"]]
    goal = (f"Goals at {threads_text(t)}: {b['best_nerkit']} {best['tokens_per_s']:.0f} text tokens/s, worst round "
            f"{best['tokens_per_s_worst']:.0f} (goal >= {goals['predict_bf16_tokens_per_s']}, "
            "issue 14's, set for bf16 on 2 cores in window tokens, which outnumber text tokens)")
    if "nerkit bf16" in b["systems"]:
        bf16, fp32 = b["systems"]["nerkit bf16"], b["systems"]["nerkit fp32"]
        goal += (f"; bf16 entity agreement {bf16['agreement_with_nerkit_fp32']:.4f} (goal >= "
                 f"{goals['bf16_entity_agreement']}), F1 difference {100 * (bf16['f1'] - fp32['f1']):+.2f} points "
                 f"(goal within {goals['bf16_f1_difference_points']})")
    return [*out, goal + ". Every system ran once over the texts before the rounds."]


def table(results: dict) -> str:
    m = results["machine"]
    out = [f"Machine: {results['settings'].get('device', 'cpu')}, {m['torch_threads']} torch threads, load average {m['load_average'][0]:.1f} at start"
           + (f", {m['load_average_end'][0]:.1f} at end" if "load_average_end" in m else "")
           + f"; commit {m['commit']}{' (dirty)' if m.get('dirty') else ''}; weights {results['settings']['run_dir']}"]
    if "predict" in results:
        p = results["predict"]
        out += predict_tables(p, results["goals"])
    if "agreement" in results:
        a = results["agreement"]
        out.append(f"bf16 vs fp32 on the whole CoNLL-2003 test set ({a['texts']} sentences, {a['entities_fp32']} fp32 "
                   f"entities): entity agreement {a['agreement']:.4f} (goal >= {GOALS['bf16_entity_agreement']}), test F1 "
                   f"{a['f1_fp32']:.4f} fp32 vs {a['f1_bf16']:.4f} bf16, {a['f1_difference_points']:+.2f} points "
                   f"(goal within {GOALS['bf16_f1_difference_points']})")
    if "long" in results:
        lg = results["long"]
        timed = [p for p in DTYPES if p in lg]  # bf16 only where the hardware has it
        rows = [[precision, d["tokens"], d["seconds"], d["us_per_token"], d["entities"]]
                for precision in timed for d in lg[precision]["documents"]]
        out.append(markdown_table(["precision", "document tokens", "seconds", "us per token", "entities"], rows))
        docs = lg[timed[-1]]["documents"]
        flat = ", ".join(f"{p} {lg[p]['per_token_ratio_longest_vs_shortest']:.2f}x" for p in timed)
        line = f"Per-token time at {docs[-1]['tokens']} vs {docs[0]['tokens']} tokens: {flat} (goal: flat, 1.0x)."
        if "memory_100k" in lg:  # a CPU run
            mem = lg["memory_100k"]
            line += (f" Peak memory predicting the longest document in {mem['precision']}: +{mem['peak_increase_mb']:.0f} "
                     f"MiB over the loaded model ({mem['peak_rss_mb']:.0f} MiB RSS).")
        out.append(line)
    if "train" in results:
        t = results["train"]
        out.append(markdown_table(["training system", "real tokens/s (median)", "padding fraction"],
                                  [[n, s["real_tokens_per_s"], s["padding_fraction"]] for n, s in t["systems"].items()]))
        goals = {"bf16 / nerkit round-one": GOALS["train_bf16_vs_fp32"], "/ the Trainer's faster": GOALS["train_vs_trainer_same_precision"]}
        out.append(markdown_table(["training ratio (hf = Trainer; length order: its group_by_length)", "median", "worst round", "goal"], [
            [k, v["median"], v["worst"], next((f">= {g}x" for key, g in goals.items() if key in k), "-")]
            for k, v in t["ratios"].items()]))
        out.append(f"Training: one epoch over {t['sentences']} CoNLL train sentences, batch {t['batch_size']}, "
                   "real tokens per second of training time (the final save excluded); nerkit at trainer.precision; "
                   "\"round-one optimizer\": the engine with torch's default unfused AdamW, as round one trained "
                   "(the training goal's \"today's fp32\")."
                   + (f" Length order sorts within groups: nerkit's of {min(50 * t['batch_size'], t['sentences'])} sentences, the Trainer's "
                      f"of {min(t['sentences'] // (4 * t['batch_size']), 50) * t['batch_size']} (LengthGroupedSampler's "
                      "megabatches), so the padding fractions differ; in random order both pad alike." if "orders" in t else "")
                   + (" The padding fraction is the batches' as built: nerkit (packed) computes only the rows its "
                      "packing leaves, a batch padded only where no row is saved; the Trainer padding-free computes each "
                      "batch as one row." if any("padding-free" in n for n in t["systems"]) else "")
                   + "".join(f" Not timed: {p} ({why})." for p, why in t.get("not_timed", {}).items()))
    for t, b in results.get("predict", {}).get("by_threads", {}).items():
        bm = b["machine"]
        out.append(f"predict at {threads_text(t)}: measured {bm['date']}, commit {bm['commit']}{' (dirty)' if bm['dirty'] else ''}, "
                   f"load average {bm['load_average'][0]:.1f} at its start, {bm['load_average_end'][0]:.1f} at its end, "
                   f"{bm['torch_threads']} torch threads")
    for part in PARTS:
        if part in results and "machine" in results[part] and "by_threads" not in results[part]:
            pm = results[part]["machine"]
            out.append(f"{part}: measured {pm['date']}, commit {pm['commit']}{' (dirty)' if pm.get('dirty') else ''}, "
                       f"load average {pm['load_average'][0]:.1f} at its start, {pm['torch_threads']} torch threads")
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
