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
- Server: ``python -m nerkit.serve`` (default options) in its own process on 127.0.0.1, and beside
  it one server per ``--server-variant`` (a server option, by default ``batch_wait=0``);
  ``--workers`` concurrent clients (asyncio tasks in one thread, each on its own keep-alive
  connection, HTTP/1.1 written on asyncio's streams) each send ``--requests`` requests, one after
  another, of 1 to ``--max-docs-per-request`` consecutive sentences (seeded); after one untimed
  pass to warm them up, ``--rounds`` rounds, each the load on every server and a CLI run on
  exactly the same texts (``predict_file``, same process and threads as above), in an order that
  rotates by round.
  Reported per server: latency percentiles over every round, the throughput ratio to the CLI in
  the median and the worst round, the CPU seconds of server, clients and CLI, and the largest
  batch of requests and queue ``/health`` showed; per variant, its throughput against the
  default server's in the same round. Every response is checked against ``Predictor.predict`` on
  that request's texts alone at the same precision. The clients share the machine with the
  server: on few cores they take some of its CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
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
    cpu = time.process_time()
    stats, seconds = timed(predict_file, predictor, cfg)
    assert stats.documents == len(texts) and stats.bad_lines == 0
    return {"texts": len(texts), "seconds": seconds, "texts_per_s": len(texts) / seconds, "cpu_s": time.process_time() - cpu}


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid``, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(run_dir: Path, args, options: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "nerkit.serve", f"run_dir={run_dir}", f"port={port}", f"device={args.device}",
         f"threads={args.threads}", f"batch_size={args.batch_size}", "log_level=warning",
         f"max_docs={args.max_docs_per_request}", *options],
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


async def post_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, payload: dict
                    ) -> tuple[int, dict]:
    """One HTTP/1.1 POST on a kept-alive connection: the status and the JSON body. Written on asyncio's
    streams because the load generator shares the server's cores: httpx spent 2.7 ms of CPU per
    request, a third of the server's own time per request, charged to the server's throughput."""
    body = json.dumps(payload).encode()
    writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (path.encode(), len(body)) + body)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    if "content-length" not in headers:
        raise RuntimeError(f"the server answered without Content-Length: {head}")
    return int(head[0].split()[1]), json.loads(await reader.readexactly(int(headers["content-length"])))


def load(url: str, batches: list[list[str]], workers: int) -> tuple[list, float, float, dict]:
    """``workers`` clients sending ``batches`` (client w sends batches w, w + workers, ...), each on
    its own keep-alive connection, all in one asyncio thread on raw streams (``post_json``): a load
    generator that takes little of the CPU it shares with the server (32 client threads spent a
    fifth of a CLI run's CPU on switching the GIL, httpx's clients a third of the server's). The
    results, the wall time, the clients' CPU seconds, and the fullest batch and queue that /health
    showed meanwhile."""
    seen = {"batch_requests": 0, "waiting_requests": 0}
    host, port = url.removeprefix("http://").split(":")

    async def watch(done: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=url) as http:
            while not done.is_set():
                health = (await http.get("/health")).json()
                seen["batch_requests"] = max(seen["batch_requests"], health["current_batch_requests"])
                seen["waiting_requests"] = max(seen["waiting_requests"], health["waiting_requests"])
                await asyncio.sleep(0.25)  # a round lasts longer; each poll is a request the server serves

    async def client(w: int) -> list[tuple[float, int, dict]]:
        out = []
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for batch in batches[w::workers]:
                start = time.perf_counter()
                status, body = await asyncio.wait_for(post_json(reader, writer, "/predict", {"texts": batch}), 300)
                out.append((time.perf_counter() - start, status, body))
        finally:
            writer.close()
        return out

    async def everyone() -> tuple[list[list[tuple[float, int, dict]]], float]:
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        started = time.perf_counter()
        per_client = await asyncio.gather(*(client(w) for w in range(workers)))
        wall = time.perf_counter() - started
        done.set()
        await watcher  # up to one poll interval more: not the load's time
        return per_client, wall

    cpu_started = time.process_time()
    per_client, wall = asyncio.run(everyone())
    cpu = time.process_time() - cpu_started
    results: list = [None] * len(batches)
    for w, out in enumerate(per_client):
        results[w::workers] = out
    return results, wall, cpu, seen


def server_load(run_dir: Path, predictor: Predictor, texts: list[str], args, work: Path) -> dict:
    """``args.rounds`` rounds, each the clients' whole load on the default server, on each
    ``--server-variant`` and the CLI on the same texts, in an order that rotates from round to
    round (the machine's speed drifts between rounds, not within one): per server, the throughput
    ratio to the CLI per round, its median and worst round, latencies pooled over rounds; per
    variant, its throughput against the default server's in the same round."""
    batches = request_texts(texts, args)
    same_texts = [text for batch in batches for text in batch]
    servers = {"default": [], **{variant: [variant] for variant in args.server_variant}}
    running = {}
    rounds: dict[str, list] = {name: [] for name in servers}
    responses: list[list] = []
    try:
        for name, options in servers.items():
            running[name] = start_server(run_dir, args, options)
            load(running[name][1], batches[: args.workers], args.workers)  # warm-up: first batches pick kernels
        for r in range(args.rounds):
            order = ["cli", *servers]
            order = order[r % len(order):] + order[: r % len(order)]
            loads = {}
            for who in order:
                if who == "cli":
                    cli = cli_throughput(predictor, same_texts, work, "server_texts")
                    continue
                server, url = running[who]
                server_cpu = cpu_seconds(server.pid)
                results, wall, clients_cpu, seen = load(url, batches, args.workers)
                loads[who] = (results, wall, clients_cpu, seen, cpu_seconds(server.pid) - server_cpu)
            for who, (results, wall, clients_cpu, seen, server_cpu) in loads.items():
                responses.append(results)
                rounds[who].append({"server_texts_per_s": len(same_texts) / wall, "cli_texts_per_s": cli["texts_per_s"],
                                    "throughput_vs_cli": len(same_texts) / wall / cli["texts_per_s"], "seen": seen,
                                    "cpu_s": {"server": server_cpu, "clients": clients_cpu, "cli": cli["cpu_s"]},
                                    "cores_unused": 1 - (server_cpu + clients_cpu) / (wall * os.cpu_count()),
                                    "latencies_ms": [1000 * latency for latency, _, _ in results]})
    finally:
        for server, _ in running.values():
            server.terminate()
            server.wait(timeout=60)
    expected = [as_tuples(predictor.predict(batch)) for batch in batches]
    errors = sum(status != 200 for results in responses for _, status, _ in results)
    mismatches = sum([[(e["start"], e["end"], e["label"]) for e in doc] for doc in body["entities"]] != want
                     for results in responses for (_, status, body), want in zip(results, expected) if status == 200)
    out = {"workers": args.workers, "requests": len(batches), "docs_per_request": f"1-{args.max_docs_per_request}",
           "texts": len(same_texts), "errors": errors, "responses_differing_from_python_api": mismatches,
           **server_stats(rounds["default"])}
    out["variants"] = {variant: {**server_stats(rounds[variant]), **ratio_stats(
        [v["server_texts_per_s"] / d["server_texts_per_s"] for v, d in zip(rounds[variant], rounds["default"])],
        "throughput_vs_default")} for variant in args.server_variant}
    return out


def ratio_stats(ratios: list[float], name: str) -> dict:
    """The median round's ratio as ``name``, the worst round's as ``name``_worst."""
    return {name: float(np.median(ratios)), f"{name}_worst": min(ratios)}


def server_stats(rounds: list[dict]) -> dict:
    """One server's rounds: throughput against the CLI (median and worst round), latency, CPU seconds."""
    latencies = np.array([ms for r in rounds for ms in r["latencies_ms"]])
    return {"rounds": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rounds],
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max()),
            "texts_per_s": float(np.median([r["server_texts_per_s"] for r in rounds])),
            "cli_texts_per_s_same_texts": float(np.median([r["cli_texts_per_s"] for r in rounds])),
            **ratio_stats([r["throughput_vs_cli"] for r in rounds], "throughput_vs_cli"),
            "cpu_s_per_round": {who: float(np.median([r["cpu_s"][who] for r in rounds]))
                                for who in ("server", "clients", "cli")},
            "cores_unused": float(np.median([r["cores_unused"] for r in rounds])),
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
    parser.add_argument("--server-variant", action="append", default=None,
                        help="a server option (KEY=VALUE) whose server is also loaded in every round, against the "
                        "default's; repeatable (default: batch_wait=0, the rounds without waiting)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the PyTorch predictor and the server run there, "
                        "into serve_cuda.{json,md}, without ONNX rows (ONNX Runtime here is its CPU build)")
    args = parser.parse_args()
    args.server_variant = ["batch_wait=0"] if args.server_variant is None else args.server_variant
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


def ceiling_vs_cli(srv: dict, cores: int) -> float:
    """The most the server could reach against the CLI with every core busy: the server and its
    clients need their CPU seconds however well the rounds overlap, so a load takes at least those
    seconds over the cores, against the CLI's wall time for the same texts."""
    cpu = srv["cpu_s_per_round"]
    return (srv["texts"] / srv["cli_texts_per_s_same_texts"]) / ((cpu["server"] + cpu["clients"]) / cores)


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
        ["CPU seconds per round (median): server / its clients / the CLI; share of the machine's cores unused "
         "during a load", " / ".join(f"{srv['cpu_s_per_round'][who]:.1f}" for who in ("server", "clients", "cli"))
         + f"; {srv['cores_unused']:.0%}"],
        [f"ceiling with no core idle: the CLI's time over the server's and its clients' CPU seconds spread "
         f"over the machine's {m['cores']} cores", f"{ceiling_vs_cli(srv, m['cores']):.0%} of the CLI"],
    ]
    for variant, v in srv.get("variants", {}).items():
        rows.append([f"server with `{variant}`, in the same rounds",
                     f"{v['texts_per_s']:.0f} texts/s: {v['throughput_vs_default']:.2f}x the default server's (worst round "
                     f"{v['throughput_vs_default_worst']:.2f}x), {v['throughput_vs_cli']:.1%} of the CLI; p50 / p99 "
                     f"{v['p50_ms']:.0f} / {v['p99_ms']:.0f} ms; up to {v['largest_batch_seen_requests']} requests per batch"])
    where = f" on {m['gpu']}" if "device" in setup else ""  # a GPU run names its card
    return (f"{setup['texts']} {setup['text']} as raw text, {setup['model']}{where}, {setup['threads']} thread(s) for each "
            f"runtime; commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, {m['date']}, load average "
            f"{m['load_average'][0]:.1f} at start\n\n" + markdown_table(["what", "result"], rows))

if __name__ == "__main__":
    main()
