"""Serving benchmark: CLI throughput, HTTP latency under concurrent load, ONNX Runtime vs PyTorch.

    PYTHONPATH=. python bench/serve.py [--run-dir DIR] [--sentences 1000] [--threads 1] [--workers 8] [--requests 25]

Texts are CoNLL-2003 test sentences as raw text (tokens joined by spaces). The model is the
run directory given, or else all-MiniLM-L6-v2 with an untrained CRF head over CoNLL's four
types (speed does not depend on training). Nothing is written into ``--run-dir``: the ONNX
graph goes to a temporary folder. Writes bench/results/serve.json and prints a table.

- CLI: ``predict_file`` (what ``python -m nerkit.predict`` runs) over a text file, model load
  excluded, with the PyTorch and the ONNX Runtime predictor.
- ONNX vs PyTorch: ``predict`` on the same texts, same batch size; how many texts get exactly
  the same entities from both.
- Server: ``python -m nerkit.serve`` in its own process on 127.0.0.1; ``--workers`` client
  threads each send ``--requests`` requests of ``--docs-per-request`` sentences; per-request
  latency percentiles, and every response checked against ``Predictor.predict``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from nerkit.config import register_resolvers
from nerkit.data.readers import read_conll
from nerkit.export import export_onnx
from nerkit.onnx_predict import OnnxPredictor
from nerkit.model import NerModel
from nerkit.predict import Predictor
from nerkit.predict_cli import Format, PredictConfig, predict_file

ROOT = Path(__file__).resolve().parents[1]
CONLL_TEST = ROOT.parent / "shared" / "data" / "ner" / "conll2003" / "test.txt"
RESULTS = ROOT / "bench" / "results" / "serve.json"


def untrained_run(directory: Path) -> Path:
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["head=crf"])
    torch.manual_seed(0)
    NerModel.from_config(cfg, ["LOC", "MISC", "ORG", "PER"]).save(directory, cfg)
    return directory


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def as_tuples(predictions) -> list[list[tuple]]:
    return [[(e.start, e.end, e.label) for e in doc] for doc in predictions]


def cli_throughput(predictor: Predictor, texts: list[str], work: Path, name: str) -> dict:
    source, target = work / "texts.txt", work / f"{name}.jsonl"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    cfg = PredictConfig(run_dir="-", input=str(source), output=str(target), format=Format.text, progress=False)
    stats, seconds = timed(predict_file, predictor, cfg)
    assert stats.documents == len(texts) and stats.bad_lines == 0
    return {"texts": len(texts), "seconds": seconds, "texts_per_s": len(texts) / seconds}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_load(run_dir: Path, predictor: Predictor, texts: list[str], args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "nerkit.serve", f"run_dir={run_dir}", f"port={port}", "device=cpu",
         f"threads={args.threads}", "log_level=warning"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        n = args.workers * args.requests
        batches = [[texts[(i * args.docs_per_request + k) % len(texts)] for k in range(args.docs_per_request)]
                   for i in range(n)]

        def call(i: int) -> tuple[float, int, dict]:
            with httpx.Client(base_url=url, timeout=300) as client:
                start = time.perf_counter()
                response = client.post("/predict", json={"texts": batches[i]})
                return time.perf_counter() - start, response.status_code, response.json()

        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(call, range(n)))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    latencies = np.array([r[0] for r in results]) * 1000
    errors = sum(status != 200 for _, status, _ in results)
    mismatches = sum(
        [[(e["start"], e["end"], e["label"]) for e in doc] for doc in body["entities"]] != as_tuples(predictor.predict(batch))
        for (_, status, body), batch in zip(results, batches) if status == 200
    )
    return {"workers": args.workers, "requests": n, "docs_per_request": args.docs_per_request, "errors": errors,
            "responses_differing_from_python_api": mismatches, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max()),
            "requests_per_s": n / wall, "texts_per_s": n * args.docs_per_request / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a trained run directory (default: untrained MiniLM + CRF)")
    parser.add_argument("--sentences", type=int, default=1000, help="CoNLL-2003 test sentences to predict")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for PyTorch and for ONNX Runtime alike (1 on a busy machine)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per worker")
    parser.add_argument("--docs-per-request", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    texts = [d.text for d in read_conll(CONLL_TEST)][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = args.run_dir or untrained_run(work / "run")
        onnx_path, export_s = timed(export_onnx, run_dir, work / "model.onnx")
        torch_predictor = Predictor.from_run(run_dir, "cpu", args.batch_size)
        onnx_predictor = OnnxPredictor.from_run(run_dir, onnx_path, args.batch_size, threads=args.threads)
        torch_predictor.predict(texts[:64])  # warm-up: first calls allocate
        onnx_predictor.predict(texts[:64])

        torch_out, torch_s = timed(torch_predictor.predict, texts)
        onnx_out, onnx_s = timed(onnx_predictor.predict, texts)
        same = sum(a == b for a, b in zip(as_tuples(torch_out), as_tuples(onnx_out)))
        results = {
            "setup": {"model": str(args.run_dir or "all-MiniLM-L6-v2 + untrained CRF head"), "texts": len(texts),
                      "text": "CoNLL-2003 test sentences", "batch_size": args.batch_size,
                      "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                      "load_average_at_start": os.getloadavg()[0], "torch": torch.__version__},
            "cli": {"torch": cli_throughput(torch_predictor, texts, work, "torch"),
                    "onnx": cli_throughput(onnx_predictor, texts, work, "onnx")},
            "onnx_vs_torch": {"export_seconds": export_s, "torch_seconds": torch_s, "onnx_seconds": onnx_s,
                              "speedup": torch_s / onnx_s, "texts_with_identical_entities": same,
                              "entities": sum(map(len, torch_out))},
            "server": server_load(run_dir, torch_predictor, texts, args),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")

    cli, ox, srv = results["cli"], results["onnx_vs_torch"], results["server"]
    rows = [
        ("CLI throughput, PyTorch", f"{cli['torch']['texts_per_s']:.0f} texts/s"),
        ("CLI throughput, ONNX Runtime", f"{cli['onnx']['texts_per_s']:.0f} texts/s"),
        ("ONNX Runtime speed-up over PyTorch", f"{ox['speedup']:.2f}x ({ox['texts_with_identical_entities']}/{len(texts)} texts identical)"),
        (f"server p50 / p99 ({srv['workers']} workers x {args.requests} requests x {srv['docs_per_request']} texts)",
         f"{srv['p50_ms']:.0f} / {srv['p99_ms']:.0f} ms"),
        ("server throughput", f"{srv['requests_per_s']:.1f} req/s, {srv['texts_per_s']:.0f} texts/s"),
        ("server errors / responses differing from Python API", f"{srv['errors']} / {srv['responses_differing_from_python_api']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{len(texts)} {results['setup']['text']}, {results['setup']['model']}, {args.threads} thread(s) for each runtime, "
          f"load average {results['setup']['load_average_at_start']:.1f} at start")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
