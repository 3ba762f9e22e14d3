"""The one prediction path, for every backend and every caller (the PyTorch and ONNX predictors,
evaluation, the error report, the CLI and the server):

    raw texts or token lists -> words (``TextEncoder``) -> windows -> padded batches sorted by
    length within a token budget -> a scores function (PyTorch or ONNX Runtime) -> merge the
    windows by the decoder's merge kind -> decode (the head's one decoder) -> document spans,
    with word indices and character offsets.

Words are the given tokens for token input (and for tokenized data, as in training), the
tokenizer's pre-tokenizer words for raw text. The scores function is the only backend-specific
step: numpy batches in, numpy scores out. Nothing here imports torch.
"""
from __future__ import annotations

import gc
import itertools
from typing import Callable, Sequence

import numpy as np

from nerkit.data.encoding import EncodedText, Entity, TextEncoder, to_entities
from nerkit.data.readers import Document
from nerkit.data.windowing import WindowTable, budget_batches
from nerkit.heads.decoding import SPANS, WORD_SCORES, Decoder, ScoredSpan

# (input_ids [batch, tokens] int64, attention_mask [batch, tokens] int64, word_index [batch, words]
# int64, word_mask [batch, words] bool) -> the head's scores for the batch, float32.
ScoresFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def freeze_loaded_objects() -> None:
    """Take every object alive now (the loaded model, its tokenizer, compiled graphs, the libraries)
    out of the cyclic garbage collector's view, after collecting what is garbage already
    (``gc.freeze``; vLLM does the same after its warm-up). A full collection walks every tracked
    object: with torch, transformers and a compiled encoder loaded, 850k of them, which stalled a
    ``predict`` call for 0.4-0.6 s every few calls (0.23 s with nothing but the imports). Frozen
    objects are still freed when their last reference goes; only cycles among them stay until
    ``gc.unfreeze()``."""
    gc.collect()
    gc.freeze()


def _pad(rows: Sequence[Sequence[int]], value: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths -> [rows, longest] int64 padded with ``value``, and the mask of real positions."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    mask = np.arange(lengths.max(initial=0)) < lengths[:, None]
    padded = np.full(mask.shape, value, dtype=np.int64)
    padded[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return padded, mask


def check_token_lists(tokens: Sequence[Sequence[str]]) -> list[list[str]]:
    """Token input as lists of str; a clear error naming the list and the token otherwise."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise TypeError(f"predict_tokens takes a list of token lists (one list of str per document), "
                        f"got a {type(tokens).__name__}")
    checked = []
    for i, doc in enumerate(tokens):
        if isinstance(doc, (str, bytes)) or not isinstance(doc, Sequence):
            raise TypeError(f"tokens[{i}] is a {type(doc).__name__}, not a list of str tokens")
        for j, token in enumerate(doc):
            if not isinstance(token, str):
                raise TypeError(f"tokens[{i}][{j}] is a {type(token).__name__}, not a str")
            if token.split() != [token]:  # str.split() cuts at every Unicode whitespace
                what = "is empty" if not token else f"{token!r} contains whitespace"
                raise ValueError(f"tokens[{i}][{j}] {what}: a token is one or more characters without whitespace "
                                 "(entity offsets are into the tokens joined by single spaces)")
        checked.append(list(doc))
    return checked


class Inference:
    """Predicts with one scores function and one decoder; the predictors are faces over it.

    ``decoder`` is called once per prediction (a CRF's transitions change while it trains).
    Batches hold at most ``batch_size`` windows and ``max_batch_tokens`` padded tokens, cut where
    padding plus ``batch_cost_tokens`` per batch is least (``budget_batches``).
    """

    def __init__(self, text_encoder: TextEncoder, scores: ScoresFn, decoder: Callable[[], Decoder],
                 batch_size: int = 64, max_batch_tokens: int = 2048, batch_cost_tokens: int = 128):
        self.text_encoder = text_encoder
        self._scores, self.decoder = scores, decoder
        self.batch_size, self.max_batch_tokens, self.batch_cost_tokens = batch_size, max_batch_tokens, batch_cost_tokens
        first = decoder()
        self.entity_types: list[str] = list(first.entity_types)
        self.scheme: str = first.scheme  # the tag scheme predictions are scored in by default
        self.nested: bool = first.nested  # whether predictions may nest (scored with nesting kept)

    def scores(self, *arrays: np.ndarray) -> np.ndarray:
        """Window scores for one padded batch (the server wraps this to stop between batches)."""
        return self._scores(*arrays)

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Raw texts -> entities with character offsets into each text."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        encodings = self.text_encoder.encode(texts)
        return [to_entities(text, enc, spans) for text, enc, spans in zip(texts, encodings, self.predict_encoded(encodings))]

    def predict_tokens(self, tokens: Sequence[Sequence[str]]) -> list[list[Entity]]:
        """Token lists -> entities with token indices (``token_start``, ``token_end`` exclusive)
        and character offsets into the tokens joined by single spaces."""
        tokens = check_token_lists(tokens)
        texts = [" ".join(doc) for doc in tokens]
        spans = []
        for doc in tokens:
            ends = np.cumsum([len(t) + 1 for t in doc], dtype=np.int64) - 1
            spans.append(list(zip((ends - [len(t) for t in doc]).tolist(), ends.tolist())))
        encodings = self.text_encoder.encode(texts, spans)
        return [to_entities(text, enc, found, tokens=True)
                for text, enc, found in zip(texts, encodings, self.predict_encoded(encodings))]

    def predict_documents(self, documents: Sequence[Document]) -> tuple[list[EncodedText], list[list[Entity]]]:
        """Labelled documents predicted as evaluation scores them: a tokenized document's words
        are its tokens (its entities carry token indices too), other documents' are raw text's."""
        encodings = self.text_encoder.encode([d.text for d in documents], [d.tokens for d in documents])
        entities = [to_entities(doc.text, enc, spans, tokens=doc.tokens is not None)
                    for doc, enc, spans in zip(documents, encodings, self.predict_encoded(encodings))]
        return encodings, entities

    def window_batch(self, encodings: Sequence[EncodedText], table: WindowTable,
                     rows: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Padded model inputs (ids, attention mask, word index, word mask) for windows ``rows``."""
        prefix, suffix = self.text_encoder.prefix_ids, self.text_encoder.suffix_ids
        docs = [encodings[d] for d in table.doc[rows].tolist()]
        token_spans = zip(table.token_start[rows].tolist(), table.token_end[rows].tolist())
        word_spans = zip(table.word_start[rows].tolist(), table.word_end[rows].tolist())
        input_ids, attention = _pad([prefix + enc.token_ids[t0:t1] + suffix for enc, (t0, t1) in zip(docs, token_spans)],
                                    self.text_encoder.tokenizer.pad_token_id or 0)
        # Each word's first sub-token, from document positions to window positions.
        word_index, word_mask = _pad([enc.word_token_starts[w0:w1] for enc, (w0, w1) in zip(docs, word_spans)], 0)
        shift = len(prefix) - table.token_start[rows]
        word_index = np.where(word_mask, word_index + shift[:, None], 0)
        return input_ids, attention.astype(np.int64), word_index, word_mask

    def predict_encoded(self, encodings: Sequence[EncodedText]) -> list[list[ScoredSpan]]:
        """Word-level spans for already encoded texts."""
        decoder = self.decoder()
        table = WindowTable.of([enc.windows for enc in encodings])
        specials = len(self.text_encoder.prefix_ids) + len(self.text_encoder.suffix_ids)
        lengths = table.token_end - table.token_start + specials
        collect, merge = MERGES[decoder.merge]
        outputs: list = [None] * len(lengths)
        for batch in budget_batches(lengths.tolist(), self.batch_size, self.max_batch_tokens, self.batch_cost_tokens):
            arrays = self.window_batch(encodings, table, batch)
            n_words = arrays[3].sum(1)
            for j, out in zip(batch, collect(decoder, np.asarray(self.scores(*arrays)), n_words)):
                outputs[j] = out
        return merge(decoder, table, outputs)


# --- merging windows back into documents, by the decoder's merge kind ----------------------------

def collect_word_scores(decoder: Decoder, scores: np.ndarray, n_words: np.ndarray) -> list[np.ndarray]:
    return [np.array(row[:n], dtype=np.float32) for row, n in zip(scores, n_words.tolist())]


def merge_word_scores(decoder: Decoder, table: WindowTable, outputs: Sequence[np.ndarray]) -> list[list[ScoredSpan]]:
    """Each word's scores from its most central window, then whole documents decoded at once
    (one Viterbi / one BIO repair over the full length)."""
    if not outputs:
        return [[] for _ in table.doc_words]
    stitched = np.concatenate(outputs)[table.word_rows()]
    return decoder.decode(stitched, table.doc_words.tolist())


def collect_spans(decoder: Decoder, scores: np.ndarray, n_words: np.ndarray) -> list[list[ScoredSpan]]:
    return decoder.decode_batch(scores, n_words)  # each window decoded on its own: kept small


def merge_spans(decoder: Decoder, table: WindowTable, outputs: Sequence[Sequence[ScoredSpan]]) -> list[list[ScoredSpan]]:
    """Keep a span only from the window that holds it fully and most centrally; spans found by
    several windows are thereby kept once."""
    results: list[list[ScoredSpan]] = [[] for _ in table.doc_words]
    spans = [span for window_spans in outputs for span in window_spans]
    if not spans:
        return results
    window = np.repeat(np.arange(len(outputs)), [len(window_spans) for window_spans in outputs])
    offset = table.word_start[window]
    start = np.fromiter((s for s, _, _, _ in spans), dtype=np.int64, count=len(spans)) + offset
    end = np.fromiter((e for _, e, _, _ in spans), dtype=np.int64, count=len(spans)) + offset
    doc = table.doc[window]
    kept = np.flatnonzero(table.span_owners(doc, start, end) == window)
    for i, d, s, e in zip(kept.tolist(), doc[kept].tolist(), start[kept].tolist(), end[kept].tolist()):
        results[d].append(ScoredSpan(s, e, spans[i][2], spans[i][3]))
    return [sorted(doc_spans) for doc_spans in results]


MERGES = {WORD_SCORES: (collect_word_scores, merge_word_scores), SPANS: (collect_spans, merge_spans)}
