"""Plots of the latest results, ``python -m bench.plot`` -> bench/results/{quality,speed}.png (the
tables beside them in bench/README.md come from ``python -m bench.readme_figures``)."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from bench.common import RESULTS


def plot_quality(results: dict) -> None:
    systems = results["conll2003"]
    names = ["HF baseline" if s["system"] != "nerkit" else f"nerkit {s['head'].removesuffix('Head')}" for s in systems]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(systems))
    ax.bar([i - 0.2 for i in x], [s["sentences"]["f1"] for s in systems], 0.4, label="sentences")
    ax.bar([i + 0.2 for i in x], [s["documents"]["f1"] for s in systems], 0.4, label="whole documents")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("dev F1 (seqeval strict, CoNLL tokens)")
    ax.set_title(f"CoNLL-2003, MiniLM, {results['train_sentences']} train sentences, {results['settings']['epochs']} epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "quality.png", dpi=120)


def plot_speed(results: dict) -> None:
    panels = [k for k in ("predict", "train", "long") if k in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "long":
            for precision in (p for p in ("fp32", "bf16", "fp16") if p in results["long"]):
                docs = results["long"][precision]["documents"]
                ax.plot([d["tokens"] for d in docs], [d["us_per_token"] for d in docs], "o-", label=precision)
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("document length (tokens)")
            ax.set_ylabel("predict time per token (us)")
            ax.set_title("long documents (goal: flat)")
            ax.legend(fontsize=8)
            continue
        part = results[key]
        if "by_threads" in part:  # predict at every thread count: the most threads
            threads, part = max(part["by_threads"].items(), key=lambda item: int(item[0]))
            ax.set_title(f"predict, {threads} threads")
        systems = part["systems"]
        names = list(systems)
        values = [systems[n]["tokens_per_s" if key == "predict" else "real_tokens_per_s"] for n in names]
        ax.barh(names, values, color=["tab:blue" if n.startswith("nerkit") else "tab:gray" for n in names])
        if key == "predict":
            ax.axvline(results["goals"]["predict_bf16_tokens_per_s"], ls="--", c="tab:red", label="goal (nerkit bf16)")
            ax.legend(fontsize=8)
        ax.set_xlabel("text tokens/s" if "text_tokens" in part else "real tokens/s")
        if not ax.get_title():
            ax.set_title(key)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "speed.png", dpi=120)


def main() -> None:
    for name, plot in (("quality", plot_quality), ("speed", plot_speed)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            plot(json.loads(path.read_text()))
            print(f"wrote {RESULTS / name}.png")


if __name__ == "__main__":
    main()
