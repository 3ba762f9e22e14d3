"""Where predict time goes: tokenise / model / the rest (window inputs, padding, decoding, offsets).

    python -m bench.profile_predict [--run-dir bench/runs/speed_model] [--limit 1000] [--cprofile]

Times ``Predictor.predict`` (loaded with ``Predictor.from_run``) on CoNLL-2003 test sentences as
raw text at fp32, bf16 and bf16 with the compiled encoder, split into the model calls (timed
inside ``TimedPredictor.scores``), the tokeniser call (timed on its own) and the rest; writes
bench/results/profile_predict.json and .md.
``--cprofile`` prints the top functions of one bf16 call by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from pathlib import Path

import torch

from bench.common import CONLL, RUNS, machine_info, markdown_table, save_results, window_lengths
from nerkit.data.readers import read_conll
from nerkit.predict import Predictor


class TimedPredictor(Predictor):
    """A Predictor that sums the seconds its model calls take (``scores``, the hook another
    runtime overrides)."""

    model_seconds = 0.0

    def scores(self, *inputs):
        t0 = time.perf_counter()
        try:
            return super().scores(*inputs)
        finally:
            self.model_seconds += time.perf_counter() - t0


def split_times(predictor: TimedPredictor, texts: list[str], rounds: int) -> dict:
    """Median over rounds of one predict call, its model time, and the tokeniser call it makes
    (timed on its own, the same call on the same texts)."""
    rows = []
    for _ in range(rounds):
        predictor.model_seconds = 0.0
        t0 = time.perf_counter()
        predictor.predict(texts)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        predictor.text_encoder.encode(texts)
        tokenise = time.perf_counter() - t0
        rows.append({"total": total, "tokenise": tokenise, "model": predictor.model_seconds,
                     "rest": total - tokenise - predictor.model_seconds})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUNS / "speed_model")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()}, "rows": {}}
    texts = [d.text for d in read_conll(CONLL / "test.txt")][: args.limit]
    for name, precision, compile in (("fp32", "fp32", False), ("bf16", "bf16", False), ("bf16 compiled", "bf16", True)):
        predictor = TimedPredictor.from_run(args.run_dir, "cpu", precision=precision, compile=compile)
        predictor.predict(texts)  # warm up (oneDNN primitive caches; compiled shapes)
        split = split_times(predictor, texts, args.rounds)
        results["rows"][name] = {**split, "real_tokens_per_s": sum(window_lengths(predictor.text_encoder, texts)) / split["total"]}
        if name == "bf16":
            results["bf16_operators"] = operator_shares(predictor, texts)
        if args.cprofile and name == "bf16":
            profile = cProfile.Profile()
            profile.runcall(predictor.predict, texts)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    save_results("profile_predict", results, table(results))


def operator_shares(predictor: Predictor, texts: list[str], top: int = 8) -> dict[str, float]:
    """Share of one call's operator time (torch.profiler, self CPU time) per operator, the top ones."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        predictor.predict(texts)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {e.key: e.self_cpu_time_total / total for e in events[:top]}


def table(results: dict) -> str:
    m = results["machine"]
    rows = [[name, *(f"{r[k]:.3f}" for k in ("total", "tokenise", "model", "rest")), f"{r['model'] / r['total']:.0%}",
             f"{r['real_tokens_per_s']:.0f}"] for name, r in results["rows"].items()]
    return (f"Predict time split on {results['settings']['limit']} CoNLL-2003 test sentences, median of "
            f"{results['settings']['rounds']} calls, {m['torch_threads']} threads; commit {m['commit']}"
            f"{' (dirty)' if m['dirty'] else ''}, {m['date']}, load average {m['load_average'][0]:.1f}\n\n"
            + markdown_table(["precision", "total s", "tokenise s", "model s", "rest s", "model share", "real tokens/s"], rows)
            + "\n\nInside the bf16 call, share of operator time (torch.profiler, self CPU time):\n\n"
            + markdown_table(["operator", "share"], [[k, f"{v:.1%}"] for k, v in results["bf16_operators"].items()]))


if __name__ == "__main__":
    main()
