"""Serving benchmark: CLI throughput, HTTP latency under concurrent load, ONNX Runtime vs PyTorch.

    python -m bench.serve [--run-dir DIR] [--sentences 1000] [--threads 2] [--workers 8] [--requests 25]

Texts are CoNLL-2003 test sentences as raw text (tokens joined by spaces). The model is the
run directory given, or else all-MiniLM-L6-v2 with an untrained CRF head over CoNLL's four
types (speed does not depend on training). Nothing is written into ``--run-dir``: the ONNX
graph goes to a temporary folder. Writes bench/results/serve.json and serve.md (stamped).

- CLI: ``predict_file`` (what ``python -m nerkit.predict_cli`` runs) over a text file, model load
  excluded, with the PyTorch predictor at its default precision (``auto``: bf16 where the CPU has
  bf16 units) and the ONNX Runtime predictor (the exported fp32 graph).
- ONNX vs PyTorch: ``predict`` on the same texts, same batch size, against PyTorch fp32 (the same
  arithmetic: how many texts get exactly the same entities) and against PyTorch's default.
- Server: ``python -m nerkit.serve`` (default precision) in its own process on 127.0.0.1;
  ``--workers`` client threads each send ``--requests`` requests of ``--docs-per-request``
  sentences; per-request latency percentiles, and every response checked against
  ``Predictor.predict`` at the same precision.
"""
from __future__ import annotations

import argparse
import os
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

from bench.common import CONLL, ROOT, machine_info, markdown_table, save_results
from nerkit.config import register_resolvers
from nerkit.data.readers import read_conll
from nerkit.export import export_onnx
from nerkit.model import NerModel
from nerkit.onnx_predict import OnnxPredictor
from nerkit.predict import Predictor
from nerkit.predict_cli import Format, PredictConfig, predict_file

CONLL_TEST = CONLL / "test.txt"


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

    stamp = machine_info()
    texts = [d.text for d in read_conll(CONLL_TEST)][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = args.run_dir or untrained_run(work / "run")
        onnx_path, export_s = timed(export_onnx, run_dir, work / "model.onnx")
        torch_default = Predictor.from_run(run_dir, "cpu", args.batch_size)
        torch_fp32 = Predictor.from_run(run_dir, "cpu", args.batch_size, precision="fp32")
        onnx_predictor = OnnxPredictor.from_run(run_dir, onnx_path, args.batch_size, threads=args.threads)
        for predictor in (torch_default, torch_fp32, onnx_predictor):
            predictor.predict(texts)  # warm-up: first calls allocate and pick kernels

        default_out, default_s = timed(torch_default.predict, texts)
        fp32_out, fp32_s = timed(torch_fp32.predict, texts)
        onnx_out, onnx_s = timed(onnx_predictor.predict, texts)
        same = sum(a == b for a, b in zip(as_tuples(fp32_out), as_tuples(onnx_out)))
        results = {
            "machine": stamp,
            "setup": {"model": str(args.run_dir or "all-MiniLM-L6-v2 + untrained CRF head"), "texts": len(texts),
                      "text": "CoNLL-2003 test sentences", "batch_size": args.batch_size, "threads": args.threads,
                      "torch_default_precision": torch_default.precision},
            "cli": {"torch": cli_throughput(torch_default, texts, work, "torch"),
                    "onnx": cli_throughput(onnx_predictor, texts, work, "onnx")},
            "onnx_vs_torch": {"export_seconds": export_s, "torch_default_seconds": default_s, "torch_fp32_seconds": fp32_s,
                              "onnx_seconds": onnx_s, "speedup_vs_fp32": fp32_s / onnx_s,
                              "speedup_vs_default": default_s / onnx_s, "texts_with_identical_entities_vs_fp32": same,
                              "entities": sum(map(len, fp32_out))},
            "server": server_load(run_dir, torch_default, texts, args),
        }
    save_results("serve", results, table(results))


def table(results: dict) -> str:
    m, setup, cli, ox, srv = (results[k] for k in ("machine", "setup", "cli", "onnx_vs_torch", "server"))
    rows = [
        [f"CLI throughput (`predict_file`, model load excluded), PyTorch {setup['torch_default_precision']}",
         f"{cli['torch']['texts_per_s']:.0f} texts/s"],
        ["CLI throughput, ONNX Runtime (fp32 graph)", f"{cli['onnx']['texts_per_s']:.0f} texts/s"],
        ["ONNX Runtime vs PyTorch fp32, `predict` on the same texts",
         f"{ox['speedup_vs_fp32']:.2f}x faster; {ox['texts_with_identical_entities_vs_fp32']}/{setup['texts']} texts with "
         "identical entities"],
        [f"ONNX Runtime vs PyTorch {setup['torch_default_precision']} (the default)", f"{ox['speedup_vs_default']:.2f}x"],
        [f"server, {srv['workers']} client threads x {srv['requests'] // srv['workers']} requests x "
         f"{srv['docs_per_request']} sentences: p50 / p99 latency",
         f"{srv['p50_ms']:.0f} / {srv['p99_ms']:.0f} ms (requests queue: one prediction at a time)"],
        ["server throughput", f"{srv['requests_per_s']:.1f} requests/s, {srv['texts_per_s']:.0f} texts/s; "
         f"{srv['errors']} errors, {srv['responses_differing_from_python_api']} responses differing from `Predictor.predict`"],
    ]
    return (f"{setup['texts']} {setup['text']} as raw text, {setup['model']}, {setup['threads']} thread(s) for each "
            f"runtime; commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, {m['date']}, load average "
            f"{m['load_average'][0]:.1f} at start\n\n" + markdown_table(["what", "result"], rows))


if __name__ == "__main__":
    main()
