"""The heads comparison at today's defaults, over seeds, with paired intervals.

    OMP_NUM_THREADS=1 python -m bench.heads --data resume_ner --seeds 42,43,44           # every row of a dataset
                                                  # (run it twice side by side: each process claims rows)
    OMP_NUM_THREADS=1 python -m bench.heads --data conll2003 --rows crf,softmax --seeds 42
    python -m bench.heads --merge                       # -> bench/results/heads.{json,md}

``--data`` names a data config (``conf/data/<name>.yaml``). Each (dataset, row, seed) trains
with ``nerkit.train`` exactly as the CLI would (conf/train.yaml's defaults: 3 epochs, encoder lr
5e-5, batch 16, random batch order; the rows differ only in the overrides listed in ``ROWS``:
the head (GlobalPointer rows with their lr), and for the BiLSTM its lr 2e-3; every row in fp32)
and writes its own stamped file ``bench/results/heads/<data>/<row>_seed<N>.json`` holding its
score on the scored split (test, or dev where the data has no test) and, per sentence, the
entity counts (true positives, predicted, gold) that the paired statistics resample. The HF
baseline is bench/conll2003_full.py's (``AutoModelForTokenClassification`` + ``Trainer``) at
the same defaults, scored by the same code.

``--merge`` joins every row file: per row the mean and standard deviation of F1 over seeds; per
compared pair (``PAIRS``) over the seeds both have, a 95% paired bootstrap interval of the F1
difference (sentences resampled, the same resample for both systems and every seed) and a 95%
t-interval over seeds of the per-seed differences. An ordering is stated only where both
intervals exclude 0; otherwise "no detectable difference".
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import stats as scipy_stats

from omegaconf import DictConfig

from bench.common import RESULTS, RUNS, compose_cfg, machine_info, markdown_table
from bench.conll2003_full import baseline_row
from nerkit.data.batching import remove_overlaps
from nerkit.data.encoding import AlignmentStats, word_to_char_span
from nerkit.data.readers import Document
from nerkit.evaluation import gold_token_spans, score, scored_on_tokens
from nerkit.model import NerModel
from nerkit.predict import Predictor
from nerkit.runs import write_text_atomically
from nerkit.tasks.base import read_splits
from nerkit.train import train

log = logging.getLogger("bench.heads")
ROWS_DIR = RESULTS / "heads"
# Every row trains in fp32, conf/train.yaml's default and the same arithmetic on every CPU (bf16 is
# emulated, about 13x slower, on CPUs without AVX-512 BF16 or AMX; rows of one table may come from
# different machines). The BiLSTM trains from scratch at a larger lr, for the default 3 epochs.
MINILM = ["encoder=bert", "trainer.precision=fp32"]
BILSTM = ["encoder=bilstm", "trainer.lr=2e-3", "trainer.precision=fp32"]
# GlobalPointer rows pin their head lr: its conf/head default moved from 1e-3 to 3e-3 on the
# conll2003_first3000 and Resume NER rows below (the head starts from scratch; docs/comparison.md
# found it very sensitive to its own lr), and a row's meaning must not move with a default.
HEADS = {
    "softmax": ("softmax", ["head=softmax"]),
    "crf_encoder_lr": ("CRF at the encoder's lr", ["head=crf", "head.lr=null"]),
    "crf": ("CRF, own lr (conf/head/crf.yaml)", ["head=crf"]),
    "global_pointer_lr3e-3": ("GlobalPointer, head lr 3e-3 (conf/head default)", ["head=global_pointer", "head.lr=3e-3"]),
    "global_pointer": ("GlobalPointer, head lr 1e-3 (the default before 2026-12-07)", ["head=global_pointer", "head.lr=1e-3"]),
    "global_pointer_lr1e-2": ("GlobalPointer, head lr 1e-2", ["head=global_pointer", "head.lr=1e-2"]),
    "efficient_global_pointer": ("efficient GlobalPointer", ["head=efficient_global_pointer"]),
    "efficient_global_pointer_lr3e-3": ("efficient GlobalPointer, head lr 3e-3",
                                        ["head=efficient_global_pointer", "head.lr=3e-3"]),
}
BASELINE = "baseline"
# row -> (label, overrides of conf/train.yaml); the baseline row is the HF Trainer.
ROWS: dict[str, tuple[str, list[str]]] = {
    **{name: (f"MiniLM + {label}", [*MINILM, *overrides]) for name, (label, overrides) in HEADS.items()},
    **{f"bilstm_{name}": (f"BiLSTM + {label}", [*BILSTM, *overrides]) for name, (label, overrides) in HEADS.items()},
    BASELINE: ("HF AutoModelForTokenClassification + Trainer", MINILM),
}
# Datasets that are a data config plus overrides: the small flat set of the GlobalPointer question.
DATA_VARIANTS = {"conll2003_first3000": ("conll2003", ["+data.train.limit=3000"])}
# The rows a dataset runs by default: Chinese has no offline BERT (MiniLM's vocabulary lacks most
# characters), so Resume NER compares the heads on the character BiLSTM; a token-tag baseline
# cannot represent nested entities.
TODAY = ["softmax", "crf_encoder_lr", "crf", "global_pointer_lr3e-3", "efficient_global_pointer"]
DATASET_ROWS = {
    "conll2003": [*TODAY, "bilstm_crf", BASELINE],
    "resume_ner": [f"bilstm_{name}" for name in [*TODAY, "global_pointer"]],
    "genia_nested": TODAY,
    "conll2003_first3000": ["softmax", "global_pointer", "global_pointer_lr3e-3", "global_pointer_lr1e-2"],
}
# The pairs the README states: (a, b) reads "a vs b"; the bilstm_ rows pair the same way.
PAIRS = [("global_pointer_lr3e-3", "global_pointer"), ("global_pointer_lr1e-2", "global_pointer"),
         ("global_pointer_lr3e-3", "softmax"), ("global_pointer_lr1e-2", "softmax"), ("global_pointer_lr3e-3", "crf"),
         ("crf", "softmax"), ("crf", "crf_encoder_lr"), ("crf_encoder_lr", "softmax"), ("global_pointer", "softmax"),
         ("efficient_global_pointer", "global_pointer"),
         ("efficient_global_pointer_lr3e-3", "efficient_global_pointer"), ("efficient_global_pointer_lr3e-3", "global_pointer_lr3e-3"),
         ("crf", "global_pointer"), ("crf", "efficient_global_pointer"),
         ("softmax", BASELINE), ("crf", BASELINE), ("crf", "bilstm_crf")]
RESAMPLES = 1000


# --- statistics ------------------------------------------------------------------------------------

def micro_f1(counts: np.ndarray) -> np.ndarray:
    """F1 from (true positives, predicted, gold) summed over the second-to-last axis."""
    tp, pred, gold = np.moveaxis(counts.sum(axis=-2), -1, 0)
    return np.divide(2 * tp, pred + gold, out=np.zeros(np.shape(tp)), where=(pred + gold) > 0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> list[float]:
    """Percentile interval of mean-over-seeds F1(a) - F1(b), resampling sentences with replacement.

    ``a`` and ``b``: per-sentence entity counts, shape [seeds, sentences, 3] (tp, predicted,
    gold), seeds paired by position. Each resample draws one set of sentence indices and applies
    it to both systems and every seed, so what the two systems share (a sentence's difficulty)
    cancels out of the difference."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"need two [seeds, sentences, 3] count arrays of one shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    n, diffs = a.shape[1], []
    for chunk in range(0, resamples, 100):  # 100 resamples at a time bounds the memory
        idx = rng.integers(0, n, size=(min(100, resamples - chunk), n))
        # [resamples, seeds, sentences, 3] -> F1 per resample and seed
        diffs.append((micro_f1(a[:, idx].swapaxes(0, 1)) - micro_f1(b[:, idx].swapaxes(0, 1))).mean(axis=1))
    lo, hi = np.quantile(np.concatenate(diffs), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def t_interval(differences: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean of paired per-seed differences; None under two seeds."""
    n = len(differences)
    if n < 2:
        return None
    mean, sd = statistics.mean(differences), statistics.stdev(differences)
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def verdict(a: str, b: str, intervals: Sequence[Sequence[float] | None]) -> str:
    """An ordering only where every interval excludes 0 on the same side."""
    if any(i is None for i in intervals):
        return "too few seeds to tell"
    if all(lo > 0 for lo, _ in intervals):
        return f"{a} > {b}"
    if all(hi < 0 for _, hi in intervals):
        return f"{b} > {a}"
    return "no detectable difference"


def compared(a: str, b: str, seeds: Sequence[int], differences: Sequence[float],
             counts_a: Sequence, counts_b: Sequence) -> dict:
    """One compared pair over the seeds both have: per-seed differences of the metric, the paired
    bootstrap of ``counts_a``/``counts_b`` ([seeds, units, 3]), the t-interval, the verdict."""
    boot, t = paired_bootstrap(counts_a, counts_b), t_interval(differences)
    return {"a": a, "b": b, "seeds": list(seeds), "differences": list(differences),
            "mean_difference": statistics.mean(differences), "bootstrap_ci95": boot, "t_ci95": t,
            "verdict": verdict(a, b, [boot, t])}


def pairs_table(pairs: Sequence[dict]) -> str:
    """The Markdown of compared pairs, differences in points (x 100)."""
    def pts(x: float) -> str:
        return f"{100 * x:+.2f}"

    def interval(ci: Sequence[float] | None) -> str:
        return "-" if ci is None else f"{pts(ci[0])} to {pts(ci[1])}"

    return markdown_table(["pair", "seeds", "mean difference", "bootstrap CI95", "t CI95 over seeds", "verdict"],
                          [[f"{p['a']} - {p['b']}", ",".join(map(str, p["seeds"])), pts(p["mean_difference"]),
                            interval(p["bootstrap_ci95"]), interval(p["t_ci95"]), p["verdict"]] for p in pairs])


def runs_text(stamps: dict) -> str:
    """The distinct commit (+dirty) / threads of a row's runs."""
    return " ".join(sorted({f"{st['commit']}{'+dirty' if st['dirty'] else ''}/{st['torch_threads']}t"
                            for st in stamps.values()}))


# --- one row ---------------------------------------------------------------------------------------

def entity_counts(documents: Sequence[Document], predicted: Sequence[Sequence[tuple[int, int, str]]],
                  nested: bool = False) -> list[list[int]]:
    """Per document (true positives, predicted, gold) entities, counted as nerkit.evaluation.score
    counts them: exact character spans; or dataset tokens, overlaps removed for a tag head's
    scoring (``nested`` False) and every span kept for a span head's (``nested`` True)."""
    counts = []
    if scored_on_tokens(documents):
        stats = AlignmentStats()
        for doc, pred in zip(documents, predicted):
            gold, pred = set(gold_token_spans(doc, stats)), set(pred)
            if not nested:
                gold, pred = set(remove_overlaps(gold)[0]), set(remove_overlaps(pred)[0])
            counts.append([len(gold & pred), len(pred), len(gold)])
    else:
        for doc, pred in zip(documents, predicted):
            gold, pred = set(doc.spans), set(pred)
            counts.append([len(gold & pred), len(pred), len(gold)])
    return counts


def nerkit_predictions(run_dir: Path, documents: Sequence[Document],
                       device: str = "cpu") -> tuple[list[list[tuple[int, int, str]]], bool]:
    """The best model's predictions in the scoring units, as the engine evaluates it (fp32
    weights, the training precision's autocast), and whether its decoder's spans may nest (a span
    head's predictions are scored with every span kept, as the engine and a user see them)."""
    model, cfg = NerModel.load(run_dir, device)
    predictor = Predictor(model, cfg.max_length, cfg.stride, cfg.trainer.eval_batch_size, device,
                          cfg.get("truncate", False), precision=cfg.trainer.precision)
    encodings = predictor.text_encoder.encode([d.text for d in documents], [d.tokens for d in documents])
    spans = predictor.predict_encoded(encodings)
    if scored_on_tokens(documents):
        return [[(s, e, label) for s, e, label, _ in doc_spans] for doc_spans in spans], predictor.nested
    return [[(*word_to_char_span(enc, s, e), label) for s, e, label, _ in doc_spans]
            for enc, doc_spans in zip(encodings, spans)], predictor.nested


def documents_key(documents: Sequence[Document]) -> str:
    """A digest of the scored documents (ids and texts): rows pair only over the same sentences."""
    digest = hashlib.sha1()
    for doc in documents:
        digest.update(f"{doc.id}\x00{doc.text}\x00".encode())
    return digest.hexdigest()[:16]


def common_overrides(data: str, seed: int, device: str = "cpu") -> list[str]:
    config, variant = DATA_VARIANTS.get(data, (data, []))
    return [f"data={config}", *variant, f"seed={seed}", f"trainer.device={device}", "trainer.keep_checkpoints=0", "trainer.tensorboard=false",
            "report_errors=false"]


def row_config(data: str, row: str, seed: int, limit: int | None = None, device: str = "cpu") -> tuple[DictConfig, list[str]]:
    """The row's training config and the smoke-test limits in it (``limit``: the first N
    sentences of every split; never for reported numbers)."""
    cfg = compose_cfg([*ROWS[row][1], *common_overrides(data, seed, device)])
    limits = [f"{'' if 'limit' in cfg.data[split] else '+'}data.{split}.limit={limit}"
              for split in ("train", "dev", "test") if cfg.data.get(split)] if limit else []
    return compose_cfg([*ROWS[row][1], *common_overrides(data, seed, device), *limits]), limits


def load_code(cfg: DictConfig) -> None:
    """Import every class the config names now, so that the code a process runs is the code of
    its start stamp (hydra would import them at first use, after later edits)."""
    for node in (cfg.encoder, cfg.head, cfg.task, *(cfg.data[s] for s in ("train", "dev", "test") if cfg.data.get(s))):
        importlib.import_module(node._target_.rsplit(".", 1)[0])


def run_row(data: str, row: str, seed: int, cfg: DictConfig, limits: list[str], stamp: dict) -> dict:
    """Train and score one (dataset, row, seed) with its config; returns the row file's content.
    ``stamp``: the process's, taken when it started, composed its configs and loaded its code."""
    label, overrides = ROWS[row]
    stamp = stamp | {"row_started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "row_load_average": list(os.getloadavg())}
    splits = read_splits(cfg)
    split = "test" if "test" in splits else "dev"
    documents = splits[split]
    started = time.perf_counter()
    if row == BASELINE:
        hf_args = argparse.Namespace(batch_size=cfg.trainer.batch_size, lr=cfg.trainer.lr, epochs=cfg.trainer.epochs,
                                     seed=seed, max_length=cfg.max_length, precision=cfg.trainer.precision,
                                     device=cfg.trainer.device)
        scheme = cfg.data[split].get("scheme", "BIO")
        info, predicted = baseline_row(hf_args, splits["train"], splits["dev"], documents, scheme)
        dev_history, engine_f1, nested = info["dev_history"], info["test_f1"], False
    else:
        run_dir = RUNS / "heads" / data / f"{row}_seed{seed}"
        train(cfg, run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        dev_history = [h["dev"]["f1"] for h in metrics["history"]]
        engine_f1 = metrics["test"]["f1"] if split == "test" else metrics["best_dev_f1"]
        predicted, nested = nerkit_predictions(run_dir, documents, cfg.trainer.device)
    train_s = time.perf_counter() - started
    scheme = cfg.data[split].get("scheme") or "BIO"
    metrics = score(documents, predicted, scheme, nested=nested)
    counts = entity_counts(documents, predicted, nested)
    if not math.isclose(float(micro_f1(np.asarray(counts))), metrics["f1"], abs_tol=1e-12):
        raise AssertionError(f"{data}/{row}: per-sentence counts give F1 {micro_f1(np.asarray(counts))}, "
                             f"nerkit.evaluation.score {metrics['f1']}")
    return {"data": data, "row": row, "label": label, "seed": seed, "stamp": stamp, "split": split,
            "overrides": overrides, "common_overrides": common_overrides(data, seed, cfg.trainer.device), "limits": limits,
            "documents": len(documents), "documents_key": documents_key(documents),
            "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"], "ci95": metrics["ci95"],
            "scored_on": metrics["scored_on"], "engine_f1": engine_f1, "dev_history": dev_history,
            "train_s": round(train_s), "counts": counts}


def claim(marker: Path) -> bool:
    """Claim a row for this process (processes run side by side share the rows this way); the
    marker goes when the row file is written, a crashed row's stays until deleted."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def row_path(rows_dir: Path, data: str, row: str, seed: int) -> Path:
    return rows_dir / data / f"{row}_seed{seed}.json"


# --- merge -----------------------------------------------------------------------------------------

def load_rows(rows_dir: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """data -> row -> seed -> row file, checking that every row of a dataset scored the same
    sentences and that a row's seeds differ in nothing but the seed."""
    out: dict[str, dict[str, dict[int, dict]]] = {}
    for path in sorted(rows_dir.glob("*/*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        by_seed = out.setdefault(r["data"], {}).setdefault(r["row"], {})
        for other in by_seed.values():
            if (other["overrides"], other["limits"]) != (r["overrides"], r["limits"]):
                raise ValueError(f"{path}: other overrides than seed {other['seed']} of the same row")
        by_seed[r["seed"]] = r
    for data, rows in out.items():
        keys = {(r["split"], r["documents_key"]) for by_seed in rows.values() for r in by_seed.values()}
        if len(keys) > 1:
            raise ValueError(f"{rows_dir / data}: rows scored different sentences {sorted(keys)}; they cannot be paired")
    return out


def merge(rows_dir: Path, expected_seeds: Sequence[int]) -> dict:
    datasets = {}
    for data, rows in load_rows(rows_dir).items():
        summary = {}
        for row, by_seed in sorted(rows.items(), key=lambda item: list(ROWS).index(item[0])):
            f1s = [by_seed[s]["f1"] for s in sorted(by_seed)]
            summary[row] = {"label": ROWS[row][0], "f1_by_seed": {s: by_seed[s]["f1"] for s in sorted(by_seed)},
                            "mean": statistics.mean(f1s), "std": statistics.stdev(f1s) if len(f1s) > 1 else None,
                            "stamps": {s: by_seed[s]["stamp"] for s in sorted(by_seed)},
                            "train_s": {s: by_seed[s]["train_s"] for s in sorted(by_seed)}}
        pairs = []
        for a, b in ([(f"bilstm_{x}", f"bilstm_{y}") for x, y in PAIRS if f"bilstm_{x}" in ROWS and f"bilstm_{y}" in ROWS] + PAIRS):
            if a not in rows or b not in rows:
                continue
            seeds = sorted(set(rows[a]) & set(rows[b]))
            if not seeds:
                continue
            pairs.append(compared(a, b, seeds, [rows[a][s]["f1"] - rows[b][s]["f1"] for s in seeds],
                                  [rows[a][s]["counts"] for s in seeds], [rows[b][s]["counts"] for s in seeds]))
        first = next(iter(next(iter(rows.values())).values()))
        missing = [f"{row} seed {s}" for row in DATASET_ROWS.get(data, list(rows)) for s in expected_seeds
                   if s not in rows.get(row, {})]
        # Tag heads are scored by seqeval strict, span heads by exact match with every span kept:
        # both micro F1 over exact (start, end, type), different only where predictions overlap.
        scorings = sorted({r["scored_on"] for by_seed in rows.values() for r in by_seed.values()})
        datasets[data] = {"split": first["split"], "documents": first["documents"], "scored_on": " | ".join(scorings),
                          "rows": summary, "pairs": pairs, "missing": missing}
    return {"expected_seeds": list(expected_seeds), "resamples": RESAMPLES, "datasets": datasets,
            "not_run": [data for data in DATASET_ROWS if data not in datasets]}


def table(results: dict) -> str:
    """The Markdown of bench/results/heads.json."""
    out = ["Heads at today's defaults (conf/train.yaml; rows differ only in their overrides, bench/heads.py ROWS), "
           "F1 x 100 on the scored split; paired intervals over the seeds both rows have: bootstrap over sentences "
           f"({results['resamples']} resamples, one resample for both systems and every seed) and Student t over "
           "per-seed differences, both 95%. An ordering is stated only where both exclude 0."]
    for data, d in results["datasets"].items():
        seeds = sorted({int(s) for r in d["rows"].values() for s in r["f1_by_seed"]})
        rows = [[key, r["label"], *(f"{100 * r['f1_by_seed'][str(s)]:.2f}" if str(s) in r["f1_by_seed"] else "-"
                                    for s in seeds),
                 f"{100 * r['mean']:.2f}", "-" if r["std"] is None else f"{100 * r['std']:.2f}", runs_text(r["stamps"])]
                for key, r in d["rows"].items()]
        out += ["", f"### {data} ({d['split']}, {d['documents']} sentences; {d['scored_on']})", "",
                markdown_table(["row", "system", *(f"seed {s}" for s in seeds), "mean", "std", "runs (commit/threads)"],
                               rows), ""]
        if d["pairs"]:
            out += [pairs_table(d["pairs"]), ""]
        out.append("Missing: " + (", ".join(d["missing"]) if d["missing"] else "none"))
    if results["not_run"]:
        out += ["", f"Not run yet (no row file): {', '.join(results['not_run'])}."]
    return "\n".join(out)


def save_merged(results: dict, out: Path) -> None:
    # JSON keys are strings; the table reads the merged file exactly as it is stored.
    results = json.loads(json.dumps(results))
    write_text_atomically(out, json.dumps(results, indent=1))
    write_text_atomically(out.with_suffix(".md"), table(results) + "\n")
    print(table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data config name (conf/data/<name>.yaml)")
    parser.add_argument("--rows", help=f"comma-separated rows of {sorted(ROWS)} (default: the dataset's, {DATASET_ROWS})")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: training and prediction of every row (the stamp names the card)")
    parser.add_argument("--rows-dir", type=Path, default=ROWS_DIR)
    parser.add_argument("--limit", type=int, help="smoke test only: the first N sentences of every split")
    parser.add_argument("--merge", action="store_true", help="join the row files into bench/results/heads.{json,md}")
    parser.add_argument("--out", type=Path, default=RESULTS / "heads.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.merge:
        return save_merged(merge(args.rows_dir, seeds), args.out)
    if not args.data:
        parser.error("--data is required (or --merge)")
    rows = args.rows.split(",") if args.rows else DATASET_ROWS.get(args.data, [*HEADS, BASELINE])
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}; choose from {sorted(ROWS)}")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Every config composed and every class imported now: conf/ and nerkit/ edited while this
    # process runs change nothing in it, so its start stamp is what every row runs on.
    configs = {(row, seed): row_config(args.data, row, seed, args.limit, args.device) for seed in seeds for row in rows}
    for cfg, _ in configs.values():
        load_code(cfg)
    stamp = machine_info()
    for seed in seeds:
        for row in rows:
            path = row_path(args.rows_dir, args.data, row, seed)
            if path.exists() or not claim(path.with_suffix(".claimed")):
                log.info("%s: done or being run by another process; skipped", path)
                continue
            log.info("row %s seed %d on %s", row, seed, args.data)
            result = run_row(args.data, row, seed, *configs[row, seed], stamp)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(path, json.dumps(result))  # a row file exists only once its row is complete
            path.with_suffix(".claimed").unlink()
            log.info("%s: F1 %.4f", path, result["f1"])


if __name__ == "__main__":
    main()
