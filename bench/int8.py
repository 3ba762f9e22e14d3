"""int8 prediction against fp32: entity agreement, test F1 and speed, at 1 thread.

Systems, all on the same CoNLL-2003 test sentences as raw text:
* nerkit fp32 / bf16: the torch Predictor (bf16: bf16 encoder weights, autocast); bf16 compiled:
  ``compile=True`` as well, nerkit's fastest bf16 and the yardstick of the speed goal;
* nerkit int8: the torch Predictor at ``precision=int8`` (``nerkit.quantize_torch``, exported with
  ``format=torch precision=int8`` into a copy of the run: SmoothQuant, static int8 for the layers
  that keep the entities on the run's dev data, oneDNN's int8 kernels through inductor, bf16 beside them);
* onnx fp32: RUN/model.onnx;
* onnx int8 dynamic (plain): ``quantize_dynamic`` with its defaults, as bench/speed.py measured it;
* onnx int8 nerkit: ``nerkit.quantize.export_int8`` (``precision=int8`` at export: fused graph,
  SmoothQuant, per-channel int8 weights; the layers whose int8 would change the entities on the
  run's dev data kept fp32), activation statistics from ``--calibration-windows`` windows of
  CoNLL-2003 training text.

The weights are the full-CoNLL softmax run of bench/heads.py (seed 42, converged: 3 epochs on all
14,041 training sentences), as users quantize a finished model; the test sentences are unseen by
both the training and the export. Agreement: entities (start, end, label) shared with nerkit fp32
over their union (``nerkit.evaluation.entity_agreement``, as the export checks it). Speed: real
text tokens per second (sub-word tokens of the texts, no [CLS]/[SEP], no padding), every system
once untimed, then ``--rounds`` interleaved rounds (the order rotates each round): the machine is
shared, so the per-round ratios matter more than the absolute figures.

``python -m bench.heads --data conll2003 --rows softmax --seeds 42`` then ``python -m bench.int8``
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import shutil
import tempfile
import time
from pathlib import Path

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench.common import CONLL, machine_info, markdown_table, save_results
from bench.speed import NerkitSystem, f1_against_gold
from bench.stamp import stamp
from nerkit.data.readers import read_conll
from nerkit.evaluation import entity_agreement
from nerkit.export import export_onnx
from nerkit.onnx_predict import QUANTIZATION, WEIGHTS_HASH, OnnxPredictor
from nerkit.precision import cpu_has_bf16
from nerkit.predict import Predictor
from nerkit.quantize import export_int8
from nerkit.quantize_torch import export_int8_torch, quantization_of

log = logging.getLogger("bench.int8")
GOALS = {"entity_agreement": 0.99, "f1_within_points": 0.3, "speedup_over_bf16": 1.5}
BF16 = "nerkit bf16 compiled"  # the speed yardstick: nerkit's fastest bf16
RUN_DIR = Path("bench/runs/heads/conll2003/softmax_seed42")


def plain_dynamic(fp32_path: Path, output: Path) -> Path:
    quantize_dynamic(str(fp32_path), str(output), weight_type=QuantType.QInt8)
    graph = onnx.load(str(output))
    meta = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    onnx.helper.set_model_props(graph, meta)
    onnx.save(graph, str(output))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-windows", type=int, default=300, help="ONNX int8; the torch export takes its default")
    parser.add_argument("--agreement-target", type=float, default=0.995,
                        help="both int8 exports' agreement_target: the share of the fp32 dev entities they keep")
    parser.add_argument("--calibration-skip", type=int, default=5000, help="training sentences skipped before calibrating")
    parser.add_argument("--name", default="int8", help="results file stem: bench/results/<name>.{json,md} "
                        "(another CPU's run beside the committed one, e.g. int8_avx512)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    machine, started = machine_info(), stamp()

    docs = read_conll(CONLL / "test.txt")[: args.texts]
    texts = [d.text for d in docs]
    workdir = Path(tempfile.mkdtemp(prefix="nerkit-bench-int8-"))
    fp32_path = export_onnx(args.run_dir, workdir / "model.onnx")
    calibration = workdir / "calibration.txt"  # training sentences, as the export reads them by default
    lines = (CONLL / "train.txt").read_text(encoding="utf-8").split("\n\n")
    calibration.write_text("\n\n".join(lines[args.calibration_skip:args.calibration_skip + 3000]) + "\n",
                           encoding="utf-8")
    t0 = time.perf_counter()
    int8_path = export_int8(args.run_dir, fp32_path, workdir / "model.int8.onnx", calibration,
                            windows=args.calibration_windows, target=args.agreement_target)
    export_seconds = time.perf_counter() - t0
    quantization = json.loads({p.key: p.value for p in onnx.load(str(int8_path), load_external_data=False)
                               .metadata_props}[QUANTIZATION])
    int8_run = shutil.copytree(args.run_dir, workdir / "run")  # the export writes into the run; not into the bench's
    t0 = time.perf_counter()
    export_int8_torch(int8_run, calibration=calibration, target=args.agreement_target)
    export_torch_seconds = time.perf_counter() - t0
    dynamic_path = plain_dynamic(fp32_path, workdir / "model.dynamic.onnx")
    assert {p.key for p in onnx.load(str(dynamic_path), load_external_data=False).metadata_props} >= {WEIGHTS_HASH}

    systems = {
        "nerkit fp32": NerkitSystem(Predictor.from_run(args.run_dir, "cpu", precision="fp32")),
        "nerkit bf16": NerkitSystem(Predictor.from_run(args.run_dir, "cpu", precision="bf16")),
        "nerkit bf16 compiled": NerkitSystem(Predictor.from_run(args.run_dir, "cpu", precision="bf16", compile=True)),
        "nerkit int8": NerkitSystem(Predictor.from_run(int8_run, "cpu", precision="int8")),
        "onnx fp32": NerkitSystem(OnnxPredictor.from_run(args.run_dir, fp32_path, threads=1)),
        "onnx int8 dynamic (plain)": NerkitSystem(OnnxPredictor.from_run(args.run_dir, dynamic_path, threads=1)),
        "onnx int8 nerkit": NerkitSystem(OnnxPredictor.from_run(args.run_dir, int8_path, threads=1)),
    }
    text_encoder = systems["nerkit fp32"].predictor.text_encoder
    real_tokens = sum(len(enc.token_ids) for enc in text_encoder.encode(texts))  # no special tokens
    outputs = {name: system(texts) for name, system in systems.items()}  # untimed: caches, and the entities
    names, rounds = list(systems), []
    for r in range(args.rounds):
        seconds = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            systems[name](texts)
            seconds[name] = time.perf_counter() - t0
        rounds.append({"seconds": seconds, "tokens_per_s": {n: real_tokens / s for n, s in seconds.items()},
                       "speedup_over_bf16": {n: seconds[BF16] / s for n, s in seconds.items()},
                       "speedup_over_fp32": {n: seconds["nerkit fp32"] / s for n, s in seconds.items()}})
        log.info("round %d: %s", r, rounds[-1]["tokens_per_s"])

    f1 = {name: f1_against_gold(docs, out) for name, out in outputs.items()}
    summary = {name: {
        "tokens_per_s": statistics.median(r["tokens_per_s"][name] for r in rounds),
        "tokens_per_s_worst": min(r["tokens_per_s"][name] for r in rounds),
        "speedup_over_bf16": statistics.median(r["speedup_over_bf16"][name] for r in rounds),
        "speedup_over_bf16_worst": min(r["speedup_over_bf16"][name] for r in rounds),
        "speedup_over_fp32": statistics.median(r["speedup_over_fp32"][name] for r in rounds),
        "speedup_over_fp32_worst": min(r["speedup_over_fp32"][name] for r in rounds),
        "entity_agreement_with_fp32": entity_agreement(outputs["nerkit fp32"], outputs[name]),
        "f1": f1[name], "f1_difference_points": 100 * (f1[name] - f1["nerkit fp32"]),
        "entities": sum(map(len, outputs[name])),
    } for name in names}
    results = {"stamp": started, "machine": {**machine, "native_bf16": cpu_has_bf16()}, "run_dir": str(args.run_dir), "texts": len(texts), "real_tokens": real_tokens,
               "threads": 1, "rounds": rounds, "systems": summary, "goals": GOALS, "quantization": quantization,
               "export_int8_seconds": export_seconds, "quantization_torch": quantization_of(int8_run),
               "export_int8_torch_seconds": export_torch_seconds, "load_average_end": list(os.getloadavg())}
    save_results(args.name, results, table(results))


def table(results: dict) -> str:
    """bench/results/<name>.md from <name>.json (runs before the torch int8 path have no
    ``quantization_torch``: their yardstick was uncompiled bf16 and their int8 the ONNX graph)."""
    torch_int8 = "quantization_torch" in results
    yardstick, ours_name = (BF16, "nerkit int8") if torch_int8 else ("nerkit bf16", "onnx int8 nerkit")
    rows = [[name, s["tokens_per_s"], s["tokens_per_s_worst"],
             f"{s['speedup_over_bf16']:.2f}x (worst {s['speedup_over_bf16_worst']:.2f}x)",
             f"{s['speedup_over_fp32']:.2f}x (worst {s['speedup_over_fp32_worst']:.2f}x)",
             s["entity_agreement_with_fp32"], s["f1"], f"{s['f1_difference_points']:+.2f}"] for name, s in results["systems"].items()]
    ours, q = results["systems"][ours_name], results["quantization"]
    parts = [
        f"int8 vs fp32 on {results['texts']} CoNLL-2003 test sentences ({results['real_tokens']} real text tokens, no special tokens), "
        f"1 thread, {len(results['rounds'])} interleaved rounds (order rotated) on a shared machine (load average "
        f"{results['machine']['load_average'][0]:.1f} at start): timings are noisy, compare within a round; commit "
        f"{results['machine']['commit']}{' (dirty)' if results['machine']['dirty'] else ''}, {results['machine']['date']}, weights {results['run_dir']}",
        markdown_table(["system", "real tokens/s (median)", "worst round", f"speed vs {yardstick} (median, worst)",
                        "speed vs nerkit fp32 (median, worst)",
                        "entity agreement with nerkit fp32", "test F1", "F1 vs fp32 (points)"], rows),
        f"onnx int8 nerkit: {q['method']} int8 for {len(q['int8_layers'])} of {len(q['sensitivity'])} encoder linear layers, "
        f"SmoothQuant alpha {q['alpha']}, activation statistics from {q['calibration_windows']} training windows; kept fp32: "
        f"{', '.join(m.replace('encoder.model.encoder.layer.', 'layer ') for m in q['kept_fp32'])}. The export checked the entity agreement on {q['held_out_texts']} {q['held_out']} texts: "
        f"{q['held_out_entity_agreement']:.4f} (target {q['target']}); it took {results['export_int8_seconds']:.0f} s."]
    if torch_int8:
        t = results["quantization_torch"]
        parts.append(
            f"nerkit int8 (torch backend, `format=torch precision=int8`): {t['method']} int8 for {len(t['int8_layers'])} of "
            f"{len(t['sensitivity'])} encoder linear layers, SmoothQuant alpha {t['alpha']}, activation statistics from "
            f"{t['calibration_windows']} training windows, everything else in "
            f"{'bf16' if results['machine'].get('native_bf16', True) else 'fp32'}; kept out of int8: "
            f"{', '.join(m.replace('encoder.layer.', 'layer ') for m in t['kept']) or 'none'}. The export checked the entity "
            f"agreement on {t['held_out_texts']} {t['held_out']} texts: {t['held_out_entity_agreement']:.4f} (target "
            f"{t['target']}); it took {results['export_int8_torch_seconds']:.0f} s.")
    parts.append(
        f"Goals ({ours_name}): entity agreement >= {results['goals']['entity_agreement']} (got {ours['entity_agreement_with_fp32']:.4f}), "
        f"F1 within {results['goals']['f1_within_points']} points (got {ours['f1_difference_points']:+.2f}), >= "
        f"{results['goals']['speedup_over_bf16']}x {yardstick} (got {ours['speedup_over_bf16']:.2f}x median, "
        f"{ours['speedup_over_bf16_worst']:.2f}x worst)"
        + ("." if results["machine"].get("native_bf16", True) else
           f"; this CPU has no bf16 units (no AVX-512 BF16 or AMX), so bf16 is emulated and slow, and the yardstick that "
           f"means something here is fp32: int8 runs {ours['speedup_over_fp32']:.2f}x nerkit fp32 in the median round, "
           f"{ours['speedup_over_fp32_worst']:.2f}x in the worst."))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
