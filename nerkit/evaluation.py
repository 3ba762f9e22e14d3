"""Entity-level evaluation on the units the data itself defines, with a bootstrap interval.

- Tokenized data (``Document.tokens``, e.g. CoNLL columns): seqeval in strict mode (an entity
  counts when its type and exact token boundaries match, as in conlleval) over the dataset's
  own tokens, so the F1 is comparable with published CoNLL numbers. The tag scheme is named
  explicitly (seqeval silently scores leniently without one). Tags are built from spans, so
  IOB2-strict and IOBES-strict count the same entities; the scheme only names the convention.
  A span head (``supports_nested``: GlobalPointer) is scored instead by exact token-span match
  against every gold entity, nested ones included: a tag sequence would drop them.
- Character-span data (JSON): exact character-span match of predicted and gold entities.

On tokenized data every score also carries ``nesting``: the exact-span scores against all gold
entities (the same for span heads; what a tag head achieves on the nested truth) and the recall
of inner entities (gold entities inside another gold entity's span).

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
from nerkit.data.schemes import Span, get_scheme, inner_spans
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
    metrics = score(documents, units, scheme or inference.scheme, nested=inference.nested)
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
          resamples: int = 1000, seed: int = 0, nested: bool = False) -> dict:
    """Score predictions given per document in its scoring units: token indices
    ``[start, end)`` for tokenized documents, character offsets otherwise. ``nested``: the
    predictions come from a span head and tokenized data is scored with nesting kept."""
    if len(predicted) != len(documents):
        raise ValueError(f"got predictions for {len(predicted)} of {len(documents)} documents")
    if scored_on_tokens(documents):
        for doc, pred in zip(documents, predicted):
            if any(not 0 <= s < e <= len(doc.tokens) for s, e, _ in pred):
                raise ValueError(f"{doc.id}: a predicted span falls outside its {len(doc.tokens)} tokens")
        stats = AlignmentStats()
        gold = [set(gold_token_spans(doc, stats)) for doc in documents]
        predicted = [set(map(Span._make, pred)) for pred in predicted]
        nesting = {**_score_nesting(gold, predicted, resamples, seed), "gold_entities_widened_to_tokens": stats.widened,
                   "lost_gold_entities": stats.lost}
        if nested:
            return {**_exact_match(gold, predicted, resamples, seed),
                    "scored_on": "dataset tokens, exact span match, nested entities kept",
                    "scored_units": sum(len(d.tokens) for d in documents), "documents": len(documents), **nesting}
        return _score_tokens(documents, gold, predicted, get_scheme(scheme), resamples, seed) | nesting
    return _score_chars(documents, predicted, resamples, seed)


def _score_nesting(gold: Sequence[set[Span]], predicted: Sequence[set[Span]], resamples: int, seed: int) -> dict:
    """Exact-span scores against every gold entity, nested ones included, and the recall of inner
    gold entities: what a model finds of the nesting, whatever its head."""
    inner = [inner_spans(g) for g in gold]
    n_inner = sum(map(len, inner))
    found = sum(len(i & p) for i, p in zip(inner, predicted))
    exact = _exact_match(gold, predicted, resamples, seed)
    return {"nesting": {**{k: exact[k] for k in ("precision", "recall", "f1", "ci95")}, "gold_inner_entities": n_inner,
                        "inner_recall": found / n_inner if n_inner else None,
                        "predicted_inner_entities": sum(map(len, map(inner_spans, predicted)))}}


def _score_tokens(documents, gold_spans, predicted, scheme, resamples: int, seed: int) -> dict:
    """seqeval strict over tag sequences, which hold no nested entities: the overlapping spans
    of gold and predictions are dropped first (longest kept) and counted."""
    gold_tags, pred_tags, per_doc = [], [], []
    dropped = Counter()
    for doc, gold, pred in zip(documents, gold_spans, predicted):
        n = len(doc.tokens)
        gold, gold_dropped = remove_overlaps(gold)
        pred, pred_dropped = remove_overlaps(pred)
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
        "overlapping_entities_dropped": {"gold": dropped["gold"], "predicted": dropped["predicted"]},
    }


def _score_chars(documents, predicted, resamples: int, seed: int) -> dict:
    return {**_exact_match([set(d.spans) for d in documents], [set(p) for p in predicted], resamples, seed),
            "scored_on": "characters, exact span match",
            "scored_units": sum(len(d.text) for d in documents), "documents": len(documents)}


def _exact_match(gold: Sequence[set], predicted: Sequence[set], resamples: int, seed: int) -> dict:
    """Micro and per-type scores of exact span match ``(start, end, label)``, per document sets."""
    per_doc, by_type = [], Counter()
    for g, p in zip(gold, predicted):
        hit = g & p
        per_doc.append((len(hit), len(p), len(g)))
        for key, spans in (("tp", hit), ("pred", p), ("gold", g)):
            by_type.update((label, key) for _, _, label in spans)
    tp, n_pred, n_gold = np.sum(per_doc, axis=0) if per_doc else (0, 0, 0)
    types = sorted({label for label, _ in by_type})
    return {
        **_prf(tp, n_pred, n_gold),
        "ci95": bootstrap_f1_ci(per_doc, resamples, seed),
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


def entity_agreement(reference: Sequence[set], other: Sequence[set]) -> float:
    """Entities two systems share over their union, document by document (1.0 when neither finds any):
    how far a faster path (int8, bf16, another runtime) changes what the reference predicts."""
    union = sum(len(a | b) for a, b in zip(reference, other, strict=True))
    return sum(len(a & b) for a, b in zip(reference, other, strict=True)) / union if union else 1.0
