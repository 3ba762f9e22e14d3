"""Start-up time and memory of backend=onnx (torch-free) vs backend=torch, in fresh processes.

Each backend runs in its own process: import, load the run directory, predict the first
``--texts`` CoNLL-2003 test sentences. Reported: seconds to a loaded predictor (imports
included), seconds to predict, peak RSS (VmHWM), whether torch was imported, and whether both
backends give the same entities. The ONNX graph is exported first if the run has none.

``python -m bench.onnx_light [--run-dir bench/runs/hf_model] [--texts 500] [--repeats 3]``
-> bench/results/onnx_light.json and .md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.stamp import ROOT, stamp

CONLL_TEST = ROOT.parent / "shared" / "data" / "ner" / "conll2003" / "test.txt"
MEASURE = """
import json, sys, time
started = time.perf_counter()
from nerkit.predict_cli import load_predictor
predictor = load_predictor({run_dir!r}, {backend!r}, device="cpu", threads=1)
loaded = time.perf_counter()
texts = json.loads(open({texts_file!r}).read())
out = predictor.predict(texts)
done = time.perf_counter()
print(json.dumps({{"load_seconds": loaded - started, "predict_seconds": done - loaded, "torch_imported": "torch" in sys.modules,
                  "peak_rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
                  "entities": [[[e.start, e.end, e.label] for e in doc] for doc in out]}}))
"""


def run_backend(run_dir: Path, backend: str, texts_file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    code = MEASURE.format(run_dir=str(run_dir), backend=backend, texts_file=str(texts_file))
    return json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                     text=True).stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "bench" / "runs" / "hf_model")
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {"stamp": stamp(), "run_dir": str(args.run_dir), "texts": args.texts, "threads": 1}
    if not (args.run_dir / "model.onnx").is_file():
        from nerkit.export import export_onnx

        export_onnx(args.run_dir)
    from nerkit.data.readers import read_conll

    runs = {backend: [] for backend in ("torch", "onnx")}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as texts_file:
        json.dump([d.text for d in read_conll(CONLL_TEST)[: args.texts]], texts_file)
        texts_file.flush()
        for _ in range(args.repeats):  # interleaved, so that both see the same machine load
            for backend in runs:
                runs[backend].append(run_backend(args.run_dir, backend, Path(texts_file.name)))
    summary = {}
    for backend, measured in runs.items():
        summary[backend] = {k: statistics.median(m[k] for m in measured) for k in ("load_seconds", "predict_seconds", "peak_rss_mib")}
        summary[backend]["torch_imported"] = all(m["torch_imported"] for m in measured)
    first = {b: m[0]["entities"] for b, m in runs.items()}
    same = sum(a == b for a, b in zip(first["torch"], first["onnx"]))
    results.update(backends=summary, identical_texts=same, saved={
        "load_seconds": summary["torch"]["load_seconds"] - summary["onnx"]["load_seconds"],
        "peak_rss_mib": summary["torch"]["peak_rss_mib"] - summary["onnx"]["peak_rss_mib"]})
    results["repeats"] = args.repeats
    text = table(results)
    (ROOT / "bench" / "results" / "onnx_light.json").write_text(json.dumps(results, indent=1))
    (ROOT / "bench" / "results" / "onnx_light.md").write_text(text + "\n")
    print(text)


def table(results: dict) -> str:
    """The Markdown of bench/results/onnx_light.json."""
    lines = ["| backend | imports torch | load s (imports included) | predict s | peak RSS MiB |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {s['torch_imported']} | {s['load_seconds']:.2f} | {s['predict_seconds']:.2f} | {s['peak_rss_mib']:.0f} |"
              for b, s in results["backends"].items()]
    repeats = f"Medians of {results['repeats']} fresh processes" if "repeats" in results else "Medians of fresh processes"
    lines.append(f"\n{repeats}, {results['texts']} CoNLL-2003 test sentences, {results['threads']} thread; "
                 f"identical entities on {results['identical_texts']}/{results['texts']} texts.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
