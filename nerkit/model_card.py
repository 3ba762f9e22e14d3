"""The model card (``README.md``) of a run directory: what was trained on what, how well, and how
to load it. The frame (encoder, training, windows, data) is shared here; what differs by task
(head, labels, scores, usage) is the task's ``model_card`` (``nerkit.tasks``). Written at every
save by the task, so it always describes the weights next to it. Every value from the config or
the data is escaped: a label name is text, never HTML or Markdown that a model hub would render."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from nerkit.runs import write_text_atomically

MODEL_CARD = "README.md"
_MARKDOWN = re.compile(r"([\\`*_\[\]|#!~{}])")


def escape(value: Any) -> str:
    """``value`` as Markdown text that renders as itself: HTML and Markdown syntax escaped."""
    return _MARKDOWN.sub(r"\\\1", html.escape(str(value), quote=False)).replace("\n", " ")


def fenced(text: str, language: str = "") -> list[str]:
    """``text`` in a code block whose fence no line of it can close."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [fence + language, text.rstrip(), fence]


def short_name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


@dataclass
class TaskCard:
    """What a task says in its model card (plain text; ``model_card`` escapes it)."""

    kind: str  # "NER", "document classification"
    tags: str  # the hub tags
    head: str  # the head, as a phrase
    labels_name: str  # "Entity types", "Labels"
    scores: list[str]  # Markdown lines (the task escapes names from the data)
    use: list[str]  # Python lines loading RUN_DIR and predicting
    notes: list[str] = field(default_factory=list)  # Markdown paragraphs after the code
    head_lr: float | None = None


def model_card(cfg: DictConfig, labels: Sequence[str], task: TaskCard) -> str:
    encoder = cfg.encoder
    transformer = short_name(encoder._target_) == "BertEncoder"
    base = escape(encoder.get("pretrained")) if transformer else f"BiLSTM (vocabulary: {escape(encoder.get('vocab'))})"
    t = cfg.trainer
    steps = f"{t.max_steps} steps" if t.get("max_steps") else f"{t.epochs} epochs"
    lines = [
        "---", "library_name: nerkit", f"tags: [{task.tags}]", "---",
        "", f"# nerkit {task.kind} model", "",
        f"- Encoder: {base}",
        f"- Head: {escape(task.head)}",
        f"- {task.labels_name}: {', '.join(map(escape, labels))}",
        f"- Training: {steps}, batch size {t.batch_size}, encoder learning rate {t.lr}"
        + (f", head learning rate {task.head_lr}" if task.head_lr else "")
        + f", weight decay {t.weight_decay}, warmup {t.warmup_ratio}, seed {cfg.seed}",
        f"- Windows: {cfg.max_length} tokens, stride {cfg.stride}"
        + (" (truncated to the first window)" if cfg.get("truncate") else ""),
        "", "## Data", "", *fenced(OmegaConf.to_yaml(cfg.data, resolve=True), "yaml"),
        "", "## Scores", "", *task.scores,
        "", "## Use", "", "`RUN_DIR` is this folder.", "", *fenced("\n".join(task.use), "python"), "",
    ]
    for note in task.notes:
        lines += [note, ""]
    if transformer:
        lines += ["The fine-tuned encoder alone is a transformers model: "
                  "`AutoModel.from_pretrained(\"RUN_DIR/encoder\")` (its pooler is not trained).", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, text: str) -> Path:
    """Write ``run_dir/README.md`` (whole or not at all)."""
    path = Path(run_dir) / MODEL_CARD
    write_text_atomically(path, text)
    return path
