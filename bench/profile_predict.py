"""Where predict time goes: tokenise / model / the rest (window inputs, padding, decoding, offsets).

    python -m bench.profile_predict [--run-dir bench/runs/speed_model] [--limit 1000] [--precision bf16] [--cprofile]

Times ``Predictor.predict`` on CoNLL-2003 test sentences as raw text, split by wrapping the
tokeniser call and the model call with timers; ``--cprofile`` prints the top functions by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from pathlib import Path

import torch

from bench.common import CONLL, RUNS
from nerkit.data.readers import read_conll
from nerkit.predict import Predictor


class Timed:
    """Wraps a callable and sums the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def split_times(predictor: Predictor, texts: list[str], rounds: int) -> dict:
    encode, scores = Timed(predictor.text_encoder.encode), Timed(predictor.scores)
    predictor.text_encoder.encode, predictor.scores = encode, scores
    try:
        rows = []
        for _ in range(rounds):
            encode.seconds = scores.seconds = 0.0
            t0 = time.perf_counter()
            predictor.predict(texts)
            total = time.perf_counter() - t0
            rows.append({"total": total, "tokenise": encode.seconds, "model": scores.seconds,
                         "rest": total - encode.seconds - scores.seconds})
    finally:
        del predictor.text_encoder.encode, predictor.scores
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUNS / "speed_model")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    predictor = Predictor.from_run(args.run_dir, "cpu", precision=args.precision)
    texts = [d.text for d in read_conll(CONLL / "test.txt")][: args.limit]
    predictor.predict(texts[:64])  # warm up (oneDNN primitive caches)
    split = split_times(predictor, texts, args.rounds)
    tokens = sum(len(ids) for ids in predictor.text_encoder.tokenizer(texts, add_special_tokens=False)["input_ids"])
    print(f"{len(texts)} texts, {tokens} tokens, precision {args.precision}, {torch.get_num_threads()} threads")
    print(" | ".join(f"{k} {v:.3f} s" for k, v in split.items()), f"| {tokens / split['total']:.0f} tokens/s")
    if args.cprofile:
        profile = cProfile.Profile()
        profile.runcall(predictor.predict, texts)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
