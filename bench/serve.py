"""Serving benchmark: CLI throughput, HTTP latency under concurrent load, ONNX Runtime vs PyTorch.

    python -m bench.serve [--run-dir DIR] [--sentences 1000] [--threads 2] [--workers 32] [--requests 8]

Texts are CoNLL-2003 test sentences as raw text (tokens joined by spaces). The model is the
run directory given, or else all-MiniLM-L6-v2 with an untrained CRF head over CoNLL's four
types (speed does not depend on training). Nothing is written into ``--run-dir``: the ONNX
graph goes to a temporary folder. Writes bench/results/serve.json and serve.md (stamped).

- CLI: ``predict_file`` (what ``python -m nerkit.predict_cli`` runs) over a text file, model load
  excluded, with the PyTorch predictor at its default precision (``auto``: bf16 where the CPU has
  bf16 units) and the ONNX Runtime predictor (the exported fp32 graph).
- ONNX vs PyTorch: ``predict`` on the same texts, same batch size, against PyTorch fp32 (the same
  arithmetic: how many texts get exactly the same entities) and against PyTorch's default.
- Server: ``python -m nerkit.serve`` (default precision, default ``round_chars``) in its own
  process on 127.0.0.1; ``--workers`` concurrent clients (threads) each send ``--requests``
  requests, one after another, of 1 to ``--max-docs-per-request`` consecutive sentences (seeded);
  after one untimed pass to warm it up, ``--rounds`` times, each beside a CLI run on exactly the
  same texts (``predict_file``, same process and threads as above), in alternating order.
  Reported: per-request latency percentiles over every round, the throughput ratio to the CLI in
  the median and the worst round, the largest batch of requests and queue ``/health`` showed, and every response checked
  against ``Predictor.predict`` on that request's texts alone at the same precision. The clients
  share the machine with the server: on few cores they take some of its CPU.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
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


def request_texts(texts: list[str], args) -> list[list[str]]:
    """Every request's texts: 1 to --max-docs-per-request consecutive sentences each (seeded)."""
    rng, position, batches = random.Random(0), 0, []
    for _ in range(args.workers * args.requests):
        k = rng.randint(1, args.max_docs_per_request)
        batches.append([texts[(position + j) % len(texts)] for j in range(k)])
        position += k
    return batches


def start_server(run_dir: Path, args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "nerkit.serve", f"run_dir={run_dir}", f"port={port}", f"device={args.device}",
         f"threads={args.threads}", f"batch_size={args.batch_size}", "log_level=warning",
         f"max_docs={args.max_docs_per_request}"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)


def load(url: str, batches: list[list[str]], workers: int) -> tuple[list, float, dict]:
    """``workers`` clients sending ``batches`` (client w sends batches w, w + workers, ...);
    the results, the wall time, and the fullest batch and queue that /health showed meanwhile."""
    seen = {"batch_requests": 0, "waiting_requests": 0}
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=url) as client:
            while not done.is_set():
                health = client.get("/health").json()
                seen["batch_requests"] = max(seen["batch_requests"], health["current_batch_requests"])
                seen["waiting_requests"] = max(seen["waiting_requests"], health["waiting_requests"])
                time.sleep(0.25)  # a round lasts longer; each poll is a request the server and this process serve

    def client(w: int) -> list[tuple[float, int, dict]]:
        out = []
        with httpx.Client(base_url=url, timeout=300) as http:
            for batch in batches[w::workers]:
                start = time.perf_counter()
                response = http.post("/predict", json={"texts": batch})
                out.append((time.perf_counter() - start, response.status_code, response.json()))
        return out

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        per_client = list(pool.map(client, range(workers)))
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    results: list = [None] * len(batches)
    for w, out in enumerate(per_client):
        results[w::workers] = out
    return results, wall, seen


def server_load(run_dir: Path, predictor: Predictor, texts: list[str], args, work: Path) -> dict:
    """``args.rounds`` rounds, each the clients' whole load on the server and the CLI on the same
    texts, in alternating order (the machine's speed drifts between rounds, not within one): the
    throughput ratio per round, its median and worst round; latencies pooled over rounds."""
    batches = request_texts(texts, args)
    same_texts = [text for batch in batches for text in batch]
    server, url = start_server(run_dir, args)
    rounds, responses = [], []
    try:
        load(url, batches[: args.workers], args.workers)  # warm-up: first batches allocate and pick kernels
        for r in range(args.rounds):
            if r % 2:
                cli = cli_throughput(predictor, same_texts, work, "server_texts")
            results, wall, seen = load(url, batches, args.workers)
            if not r % 2:
                cli = cli_throughput(predictor, same_texts, work, "server_texts")
            responses.append(results)
            rounds.append({"server_texts_per_s": len(same_texts) / wall, "cli_texts_per_s": cli["texts_per_s"],
                           "throughput_vs_cli": len(same_texts) / wall / cli["texts_per_s"], "seen": seen})
    finally:
        server.terminate()
        server.wait(timeout=60)
    expected = [as_tuples(predictor.predict(batch)) for batch in batches]
    latencies = np.array([r[0] for results in responses for r in results]) * 1000
    errors = sum(status != 200 for results in responses for _, status, _ in results)
    mismatches = sum([[(e["start"], e["end"], e["label"]) for e in doc] for doc in body["entities"]] != want
                     for results in responses for (_, status, body), want in zip(results, expected) if status == 200)
    ratios = [r["throughput_vs_cli"] for r in rounds]
    return {"workers": args.workers, "requests": len(batches), "docs_per_request": f"1-{args.max_docs_per_request}",
            "texts": len(same_texts), "rounds": rounds, "errors": errors, "responses_differing_from_python_api": mismatches,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(latencies.max()),
            "texts_per_s": float(np.median([r["server_texts_per_s"] for r in rounds])),
            "cli_texts_per_s_same_texts": float(np.median([r["cli_texts_per_s"] for r in rounds])),
            "throughput_vs_cli": float(np.median(ratios)), "throughput_vs_cli_worst": min(ratios),
            "largest_batch_seen_requests": max(r["seen"]["batch_requests"] for r in rounds),
            "longest_queue_seen_requests": max(r["seen"]["waiting_requests"] for r in rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a trained run directory (default: untrained MiniLM + CRF)")
    parser.add_argument("--sentences", type=int, default=1000, help="CoNLL-2003 test sentences to predict")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for PyTorch and for ONNX Runtime alike (1 on a busy machine)")
    parser.add_argument("--workers", type=int, default=32, help="concurrent clients of the server")
    parser.add_argument("--requests", type=int, default=8, help="requests per client, one after another")
    parser.add_argument("--max-docs-per-request", type=int, default=8, help="each request: 1 to this many sentences")
    parser.add_argument("--rounds", type=int, default=5, help="server loads, each beside a CLI run on the same texts")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the PyTorch predictor and the server run there, "
                        "into serve_cuda.{json,md}, without ONNX rows (ONNX Runtime here is its CPU build)")
    args = parser.parse_args()
    on_cpu = torch.device(args.device).type == "cpu"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    stamp = machine_info()
    texts = [d.text for d in read_conll(CONLL_TEST)][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = args.run_dir or untrained_run(work / "run")
        torch_default = Predictor.from_run(run_dir, args.device, args.batch_size)
        torch_default.predict(texts)  # warm-up: first calls allocate and pick kernels
        results = {
            "machine": stamp,
            "setup": {"model": str(args.run_dir or "all-MiniLM-L6-v2 + untrained CRF head"), "texts": len(texts),
                      "text": "CoNLL-2003 test sentences", "batch_size": args.batch_size, "threads": args.threads,
                      "torch_default_precision": torch_default.precision},
            "cli": {"torch": cli_throughput(torch_default, texts, work, "torch")},
        }
        if on_cpu:
            results["cli"]["onnx"], results["onnx_vs_torch"] = onnx_rows(run_dir, torch_default, texts, args, work)
        else:
            results["setup"]["device"] = args.device
        results["server"] = server_load(run_dir, torch_default, texts, args, work)
    save_results("serve" if on_cpu else f"serve_{torch.device(args.device).type}", results, table(results))


def onnx_rows(run_dir: Path, torch_default: Predictor, texts: list[str], args, work: Path) -> tuple[dict, dict]:
    """The ONNX Runtime predictor's CLI throughput, and its speed and entities against PyTorch's."""
    onnx_path, export_s = timed(export_onnx, run_dir, work / "model.onnx")
    torch_fp32 = Predictor.from_run(run_dir, "cpu", args.batch_size, precision="fp32")
    onnx_predictor = OnnxPredictor.from_run(run_dir, onnx_path, args.batch_size, threads=args.threads)
    for predictor in (torch_fp32, onnx_predictor):
        predictor.predict(texts)  # warm-up
    default_out, default_s = timed(torch_default.predict, texts)
    fp32_out, fp32_s = timed(torch_fp32.predict, texts)
    onnx_out, onnx_s = timed(onnx_predictor.predict, texts)
    same = sum(a == b for a, b in zip(as_tuples(fp32_out), as_tuples(onnx_out)))
    return cli_throughput(onnx_predictor, texts, work, "onnx"), {
        "export_seconds": export_s, "torch_default_seconds": default_s, "torch_fp32_seconds": fp32_s,
        "onnx_seconds": onnx_s, "speedup_vs_fp32": fp32_s / onnx_s, "speedup_vs_default": default_s / onnx_s,
        "texts_with_identical_entities_vs_fp32": same, "entities": sum(map(len, fp32_out))}


def table(results: dict) -> str:
    m, setup, cli, srv = (results[k] for k in ("machine", "setup", "cli", "server"))
    rows = [[f"CLI throughput (`predict_file`, model load excluded), PyTorch {setup['torch_default_precision']}",
             f"{cli['torch']['texts_per_s']:.0f} texts/s"]]
    if ox := results.get("onnx_vs_torch"):  # CPU runs only
        rows += [
            ["CLI throughput, ONNX Runtime (fp32 graph)", f"{cli['onnx']['texts_per_s']:.0f} texts/s"],
            ["ONNX Runtime vs PyTorch fp32, `predict` on the same texts",
             f"{ox['speedup_vs_fp32']:.2f}x faster; {ox['texts_with_identical_entities_vs_fp32']}/{setup['texts']} texts with "
             "identical entities"],
            [f"ONNX Runtime vs PyTorch {setup['torch_default_precision']} (the default)", f"{ox['speedup_vs_default']:.2f}x"],
        ]
    rows += [
        [f"server, {srv['workers']} concurrent clients x {srv['requests'] // srv['workers']} requests of "
         f"{srv['docs_per_request']} sentences: p50 / p99 latency", f"{srv['p50_ms']:.0f} / {srv['p99_ms']:.0f} ms"],
        ["server throughput (median round)", f"{srv['texts_per_s']:.0f} texts/s; {srv['errors']} errors, "
         f"{srv['responses_differing_from_python_api']} responses differing from `Predictor.predict`"],
        [f"server vs the CLI on the same {srv['texts']} texts, {len(srv['rounds'])} rounds",
         f"median {srv['throughput_vs_cli']:.1%}, worst round {srv['throughput_vs_cli_worst']:.1%}, goal >= 80% "
         f"(CLI median {srv['cli_texts_per_s_same_texts']:.0f} texts/s); up to {srv['largest_batch_seen_requests']} "
         f"requests per batch and {srv['longest_queue_seen_requests']} queued seen on /health"],
    ]
    where = f" on {m['gpu']}" if "device" in setup else ""  # a GPU run names its card
    return (f"{setup['texts']} {setup['text']} as raw text, {setup['model']}{where}, {setup['threads']} thread(s) for each "
            f"runtime; commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, {m['date']}, load average "
            f"{m['load_average'][0]:.1f} at start\n\n" + markdown_table(["what", "result"], rows))

if __name__ == "__main__":
    main()
