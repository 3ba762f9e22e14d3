"""The model card (``README.md``) of a run directory: what was trained on what, how well, and how
to load it in nerkit and in transformers. Written at every save, so it always describes the
weights next to it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

MODEL_CARD = "README.md"


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def _scores(metrics: dict) -> list[str]:
    """Markdown lines for the dev scores of a NER run (seqeval) or a classification run."""
    dev = metrics.get("dev", metrics)
    if "f1" in dev and not math.isnan(dev["f1"]):
        lines = [f"Dev (seqeval strict, entity level) after epoch {metrics.get('epoch', '?')}, step "
                 f"{metrics.get('step', '?')}: precision {dev['precision']:.4f}, recall {dev['recall']:.4f}, "
                 f"**F1 {dev['f1']:.4f}**.", ""]
        if dev.get("per_type"):
            lines += ["| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            lines += [f"| {t} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1-score']:.4f} | {int(r['support'])} |"
                      for t, r in sorted(dev["per_type"].items())]
        return lines
    if "accuracy" in dev and not math.isnan(dev["accuracy"]):
        return [f"Dev accuracy {dev['accuracy']:.4f}, macro F1 {dev.get('macro_f1', float('nan')):.4f} "
                f"(epoch {metrics.get('epoch', '?')})."]
    return ["No dev set: no scores."]


def model_card(cfg: DictConfig, labels: Sequence[str], metrics: dict | None = None) -> str:
    task = cfg.task.name if "task" in cfg else "ner"
    encoder = cfg.encoder
    transformer = _short(encoder._target_) == "BertEncoder"
    base = encoder.get("pretrained") if transformer else f"BiLSTM (vocabulary: {encoder.get('vocab')})"
    head = _short(cfg.head._target_) if task == "ner" else f"document classifier ({cfg.task.strategy}, {cfg.task.pooling} pooling)"
    softmax = task == "ner" and head == "SoftmaxHead"
    t = cfg.trainer
    head_lr = cfg.head.get("lr") if task == "ner" else None
    steps = f"{t.max_steps} steps" if t.get("max_steps") else f"{t.epochs} epochs"
    lines = [
        "---", "library_name: nerkit", f"tags: [{'token-classification, ner' if task == 'ner' else 'text-classification'}]", "---",
        "", f"# nerkit {'NER' if task == 'ner' else 'document classification'} model", "",
        f"- Encoder: {'`' + str(base) + '`' if transformer else base}",
        f"- Head: {head}" + (f", tags {cfg.head.scheme}" if task == "ner" and "scheme" in cfg.head else ""),
        f"- {'Entity types' if task == 'ner' else 'Labels'}: {', '.join(labels)}",
        f"- Training: {steps}, batch size {t.batch_size}, encoder learning rate {t.lr}"
        + (f", head learning rate {head_lr}" if head_lr else "")
        + f", weight decay {t.weight_decay}, warmup {t.warmup_ratio}, seed {cfg.seed}",
        f"- Windows: {cfg.max_length} tokens, stride {cfg.stride}" + (" (truncated to the first window)" if cfg.get("truncate") else ""),
        "", "## Data", "", "```yaml", OmegaConf.to_yaml(cfg.data, resolve=True).rstrip(), "```",
        "", "## Scores", "", *(_scores(metrics) if metrics else ["Not evaluated at save time."]),
        "", "## Use", "", "`RUN_DIR` is this folder.", "", "```python",
    ]
    if task == "ner":
        lines += ["from nerkit.predict import Predictor", "", "predictor = Predictor.from_run(\"RUN_DIR\")",
                  "predictor.predict([\"John Smith lives in Berlin.\"])  # entities with character offsets"]
    else:
        lines += ["from nerkit.classifier import Classifier", "", "Classifier.from_run(\"RUN_DIR\").predict([\"Some text\"])"]
    lines += ["```", ""]
    if task == "ner":
        lines += ["Files of documents: `python -m nerkit.predict run_dir=RUN_DIR input=in.txt output=out.jsonl`.", ""]
    if transformer:
        lines += ["The fine-tuned encoder alone is a transformers model: "
                  "`AutoModel.from_pretrained(\"RUN_DIR/encoder\")` (its pooler is not trained).", ""]
    if softmax:
        lines += ["In transformers, after `python -m nerkit.export run_dir=RUN_DIR format=hf output=RUN_DIR/hf`:", "",
                  "```python", "from transformers import pipeline", "",
                  "ner = pipeline(\"token-classification\", model=\"RUN_DIR/hf\", aggregation_strategy=\"first\")",
                  "ner(\"John Smith lives in Berlin.\")", "```", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, cfg: DictConfig, labels: Sequence[str], metrics: dict | None = None) -> Path:
    """Write ``run_dir/README.md``; ``metrics``: the dev scores of the saved weights, if known."""
    path = Path(run_dir) / MODEL_CARD
    path.write_text(model_card(cfg, labels, metrics), encoding="utf-8")
    return path
