"""Entity-level evaluation on the units the data itself defines, with a bootstrap interval.

- Tokenized data (``Document.tokens``, e.g. CoNLL columns): seqeval in strict mode (an entity
  counts when its type and exact token boundaries match, as in conlleval) over the dataset's
  own tokens, so the F1 is comparable with published CoNLL numbers. The tag scheme is named
  explicitly (seqeval silently scores leniently without one). Tags are built from spans, so
  IOB2-strict and IOBES-strict count the same entities; the scheme only names the convention.
- Character-span data (JSON): exact character-span match of predicted and gold entities.

Every score carries ``ci95``: a 95% percentile bootstrap interval of F1 over documents.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from nerkit.data.batching import remove_overlaps
from nerkit.data.encoding import AlignmentStats, char_to_unit_spans
from nerkit.data.readers import Document
from nerkit.data.schemes import Span, get_scheme
from nerkit.inference import Inference


def evaluate(inference: Inference, documents: Sequence[Document], scheme: str | None = None) -> dict:
    """Predict ``documents`` (``Inference.predict_documents``: on their own tokens when they have
    them) and score them (see ``score``). ``scheme`` names the data's tag scheme; by default the
    decoder's own (IOB2 for span heads)."""
    tokenized = scored_on_tokens(documents)
    encodings, entities = inference.predict_documents(documents)
    if tokenized:  # the words the model labelled are the dataset's tokens
        units = [[(e.token_start, e.token_end, e.label) for e in found] for found in entities]
    else:
        units = [[(e.start, e.end, e.label) for e in found] for found in entities]
    metrics = score(documents, units, scheme or inference.scheme)
    if tokenized:
        metrics["tokens_without_subtokens"] = sum(e.unk_tokens for e in encodings)
    return metrics


def scored_on_tokens(documents: Sequence[Document]) -> bool:
    """Whether ``documents`` are scored on dataset tokens (all tokenized) or on characters (none)."""
    tokenized = {d.tokens is not None for d in documents}
    if len(tokenized) > 1:
        raise ValueError("cannot score a mix of tokenized documents and character-span documents together")
    return tokenized == {True}


def gold_token_spans(doc: Document, stats: AlignmentStats) -> list[Span]:
    """A tokenized document's gold entities as token spans (widened to whole tokens)."""
    return char_to_unit_spans([s for s, _ in doc.tokens], [e for _, e in doc.tokens], doc.spans, stats)


def score(documents: Sequence[Document], predicted: Sequence[Sequence[tuple[int, int, str]]], scheme: str = "BIO",
          resamples: int = 1000, seed: int = 0) -> dict:
    """Score predictions given per document in its scoring units: token indices
    ``[start, end)`` for tokenized documents, character offsets otherwise."""
    if len(predicted) != len(documents):
        raise ValueError(f"got predictions for {len(predicted)} of {len(documents)} documents")
    if scored_on_tokens(documents):
        return _score_tokens(documents, predicted, get_scheme(scheme), resamples, seed)
    return _score_chars(documents, predicted, resamples, seed)


def _score_tokens(documents, predicted, scheme, resamples: int, seed: int) -> dict:
    stats = AlignmentStats()
    gold_tags, pred_tags, per_doc = [], [], []
    dropped = Counter()
    for doc, pred in zip(documents, predicted):
        n = len(doc.tokens)
        if any(not 0 <= s < e <= n for s, e, _ in pred):
            raise ValueError(f"{doc.id}: a predicted span falls outside its {n} tokens")
        gold, gold_dropped = remove_overlaps(gold_token_spans(doc, stats))
        pred, pred_dropped = remove_overlaps(set(pred))  # a tag sequence holds no nested entities
        dropped["gold"] += gold_dropped
        dropped["predicted"] += pred_dropped
        gold_tags.append(scheme.encode(gold, n))
        pred_tags.append(scheme.encode(pred, n))
        per_doc.append((len(set(gold) & set(pred)), len(pred), len(gold)))
    strict = {"mode": "strict", "scheme": scheme.seqeval_scheme, "zero_division": 0}
    report = classification_report(gold_tags, pred_tags, output_dict=True, **strict)
    return {
        "precision": float(precision_score(gold_tags, pred_tags, **strict)),
        "recall": float(recall_score(gold_tags, pred_tags, **strict)),
        "f1": float(f1_score(gold_tags, pred_tags, **strict)),
        "ci95": bootstrap_f1_ci(per_doc, resamples, seed),
        "scored_on": f"dataset tokens, seqeval strict {scheme.seqeval_scheme.__name__}",
        "scored_units": sum(len(t) for t in gold_tags),
        "documents": len(documents),
        "per_type": {k: {m: float(v) for m, v in row.items()} for k, row in report.items() if not k.endswith(" avg")},
        "gold_entities": sum(g for _, _, g in per_doc),
        "gold_entities_widened_to_tokens": stats.widened,
        "lost_gold_entities": stats.lost,
        "overlapping_entities_dropped": dict(dropped),
    }


def _score_chars(documents, predicted, resamples: int, seed: int) -> dict:
    per_doc, by_type = [], Counter()
    for doc, pred in zip(documents, predicted):
        gold, pred = set(doc.spans), set(pred)
        hit = gold & pred
        per_doc.append((len(hit), len(pred), len(gold)))
        for key, spans in (("tp", hit), ("pred", pred), ("gold", gold)):
            by_type.update((label, key) for _, _, label in spans)
    tp, n_pred, n_gold = np.sum(per_doc, axis=0) if per_doc else (0, 0, 0)
    types = sorted({label for label, _ in by_type})
    return {
        **_prf(tp, n_pred, n_gold),
        "ci95": bootstrap_f1_ci(per_doc, resamples, seed),
        "scored_on": "characters, exact span match",
        "scored_units": sum(len(d.text) for d in documents),
        "documents": len(documents),
        "per_type": {t: {"precision": (p := _prf(by_type[t, "tp"], by_type[t, "pred"], by_type[t, "gold"]))["precision"],
                         "recall": p["recall"], "f1-score": p["f1"], "support": by_type[t, "gold"]} for t in types},
        "gold_entities": int(n_gold),
    }


def _prf(tp: int, n_pred: int, n_gold: int) -> dict:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return {"precision": float(precision), "recall": float(recall),
            "f1": float(2 * tp / (n_pred + n_gold)) if n_pred + n_gold else 0.0}


def bootstrap_mean_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of a mean over documents (e.g. accuracy: 1 per correct document)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return [0.0, 0.0]
    means = values[np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_f1_ci(per_doc: Sequence[tuple[int, int, int]], resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of micro F1, resampling documents with replacement.

    ``per_doc`` holds (true positives, predicted, gold) entity counts per document; seeded, so
    the same predictions always give the same interval."""
    counts = np.asarray(per_doc, dtype=np.int64).reshape(-1, 3)
    n = len(counts)
    if n == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    f1s = []
    for chunk in range(0, resamples, 100):  # 100 resamples at a time bounds the memory
        idx = rng.integers(0, n, size=(min(100, resamples - chunk), n))
        tp, pred, gold = counts[idx].sum(axis=1).T
        f1s.append(np.divide(2 * tp, pred + gold, out=np.zeros(len(tp)), where=pred + gold > 0))
    lo, hi = np.quantile(np.concatenate(f1s), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]
