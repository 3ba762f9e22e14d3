"""Prediction with an exported ONNX graph in a process that never imports torch.

Tokenizing and windowing are nerkit's own (``TextEncoder``, pure Python over the fast
tokenizer); ONNX Runtime gives each window's scores; decoding is numpy, mirroring the heads:
softmax argmax or CRF Viterbi over each word's scores taken from its most central window, then
the tag scheme; GlobalPointer spans above zero, each kept from the window that holds it most
centrally. What decoding needs (tags, scheme, CRF transitions) is stored in the graph's metadata
at export time, beside the hash of the weights it was exported from.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime
from omegaconf import OmegaConf
from safetensors import safe_open
from transformers import PreTrainedTokenizerFast

from nerkit.data.encoding import EncodedText, Entity, TextEncoder, to_entities
from nerkit.data.schemes import get_scheme
from nerkit.data.windowing import Window, WindowTable, budget_batches

ONNX_FILE = "model.onnx"
# precision=int8: the quantized graph nerkit.quantize writes, calibrated at export.
INT8_FILE = "model.int8.onnx"
GRAPH_FILES = {"fp32": ONNX_FILE, "int8": INT8_FILE}
INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")
WEIGHTS_HASH, DECODER, QUANTIZATION = "nerkit.weights_sha256", "nerkit.decoder", "nerkit.quantization"
# The run directory's layout (nerkit.model), spelt out here: importing it would import torch.
WEIGHTS, CONFIG, LABELS, ENCODER_DIR = "model.safetensors", "config.yaml", "labels.json", "encoder"
ScoredSpan = tuple[int, int, str, float]  # start word, end word (exclusive), label, score


def weights_hash(run_dir: str | Path) -> str:
    """SHA-256 over every weight file of a run directory (model.safetensors and encoder/'s)."""
    run_dir = Path(run_dir)
    digest = hashlib.sha256()
    for path in [run_dir / WEIGHTS, *sorted((run_dir / ENCODER_DIR).glob("*.safetensors"))]:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def viterbi(emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray) -> list[int]:
    """The best tag path of one sequence [words, tags] (pytorch-crf's algorithm, in float32)."""
    score = start + emissions[0]
    history = []
    for emission in emissions[1:]:
        candidates = score[:, None] + transitions + emission[None, :]
        history.append(candidates.argmax(0))
        score = candidates.max(0)
    best = [int((score + end).argmax())]
    for back in reversed(history):
        best.append(int(back[best[-1]]))
    return best[::-1]


class OnnxPredictor:
    """Texts in, ``Entity`` lists out, like ``nerkit.predict.Predictor``, without torch."""

    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: PreTrainedTokenizerFast, entity_types: list[str],
                 decoder: dict, max_length: int = 128, stride: int = 32, batch_size: int = 64, truncate: bool = False,
                 max_batch_tokens: int = 2048):
        self.session, self.entity_types, self.decoder = session, entity_types, decoder
        self.head_name = decoder["head"]
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.precision = "fp32"  # the graph's: from_run sets "int8" for a quantized one
        self.pad_id = tokenizer.pad_token_id
        self.text_encoder = TextEncoder(tokenizer, max_length, stride, truncate)
        if decoder["kind"] == "tags":
            self.tags, self.scheme = decoder["tags"], get_scheme(decoder["scheme"])
            crf = decoder.get("crf")
            self.crf = tuple(np.asarray(crf[k], dtype=np.float32) for k in ("start", "end", "transitions")) if crf else None

    @classmethod
    def from_run(cls, run_dir: str | Path, onnx_path: str | Path | None = None, batch_size: int = 64,
                 providers: list[str] | None = None, threads: int | None = None,
                 precision: str = "fp32") -> "OnnxPredictor":
        """``threads``: ONNX Runtime's intra-op threads (default: one per physical core).
        ``precision``: "fp32" runs RUN/model.onnx, "int8" the quantized RUN/model.int8.onnx."""
        run_dir = Path(run_dir)
        if precision not in GRAPH_FILES:
            raise ValueError(f"precision must be one of {tuple(GRAPH_FILES)} for ONNX graphs, got {precision!r}")
        onnx_path = Path(onnx_path or run_dir / GRAPH_FILES[precision])
        if not onnx_path.is_file():
            option = " precision=int8" if precision == "int8" else ""
            raise FileNotFoundError(f"{onnx_path} not found; create it with: python -m nerkit.export run_dir={run_dir}{option}")
        for name in (WEIGHTS, CONFIG, LABELS, ENCODER_DIR):
            if not (run_dir / name).exists():
                raise FileNotFoundError(f"{run_dir} is not a complete nerkit run directory: {name} is missing")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers or ["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get(WEIGHTS_HASH) != weights_hash(run_dir):
            raise ValueError(f"{onnx_path} was not exported from the weights in {run_dir}; export it again")
        if DECODER not in meta:
            raise ValueError(f"{onnx_path} has no decoding data (exported by an older nerkit); export it again")
        entity_types = json.loads((run_dir / LABELS).read_text(encoding="utf-8"))["entity_types"]
        with safe_open(run_dir / WEIGHTS, "numpy") as weights:
            trained = (weights.metadata() or {}).get("entity_types")
        if trained is not None and json.loads(trained) != entity_types:
            raise ValueError(f"{run_dir / LABELS} lists entity types {entity_types}, but {run_dir / WEIGHTS} was "
                             f"trained with {json.loads(trained)}; restore the original labels.json")
        cfg = OmegaConf.load(run_dir / CONFIG)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(run_dir / ENCODER_DIR))
        predictor = cls(session, tokenizer, entity_types, json.loads(meta[DECODER]), cfg.max_length, cfg.stride,
                        batch_size, cfg.get("truncate", False))
        predictor.precision = "int8" if QUANTIZATION in meta else "fp32"
        return predictor

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        encodings = self.text_encoder.encode(texts)
        return [to_entities(text, enc, spans) for text, enc, spans in zip(texts, encodings, self.predict_encoded(encodings))]

    def scores(self, *arrays: np.ndarray) -> np.ndarray:
        """Window scores for one padded batch (the server wraps this to stop between batches)."""
        return self.session.run(None, dict(zip(INPUTS, arrays)))[0]

    def predict_encoded(self, encodings: Sequence[EncodedText]) -> list[list[ScoredSpan]]:
        """Word-level spans ``(start, end, label, score)`` for already encoded texts."""
        jobs = [(d, k) for d, enc in enumerate(encodings) for k in range(len(enc.windows))]
        inputs = [self.text_encoder.window_input(encodings[d], encodings[d].windows[k]) for d, k in jobs]
        window_scores: list = [None] * len(jobs)
        for batch in budget_batches([len(ids) for ids, _ in inputs], self.batch_size, self.max_batch_tokens):
            width, words = max(len(inputs[j][0]) for j in batch), max(len(inputs[j][1]) for j in batch)
            arrays = (np.full((len(batch), width), self.pad_id, np.int64), np.zeros((len(batch), width), np.int64),
                      np.zeros((len(batch), words), np.int64), np.zeros((len(batch), words), bool))
            for row, j in enumerate(batch):
                ids, index = inputs[j]
                arrays[0][row, : len(ids)] = ids
                arrays[1][row, : len(ids)] = 1
                arrays[2][row, : len(index)] = index
                arrays[3][row, : len(index)] = True
            scores = self.scores(*arrays)
            for row, j in enumerate(batch):
                n = len(inputs[j][1])
                # Token heads: [words, tags]; span heads: [types, words, words].
                window_scores[j] = scores[row, :n] if self.decoder["kind"] == "tags" else scores[row, :, :n, :n]
        per_doc: list[list] = [[] for _ in encodings]
        for (d, _), out in zip(jobs, window_scores):
            per_doc[d].append(out)
        decode = self._decode_tags if self.decoder["kind"] == "tags" else self._decode_spans
        return [decode(enc.windows, per_doc[d], enc.windows[-1].word_end) if enc.windows else []
                for d, enc in enumerate(encodings)]

    def _decode_tags(self, windows: Sequence[Window], window_scores: Sequence[np.ndarray], n_words: int) -> list[ScoredSpan]:
        """Each word's scores from its most central window, then one argmax / Viterbi over the text."""
        scores = np.concatenate(window_scores)[WindowTable.of([windows]).word_rows()].astype(np.float32)
        tag_ids = viterbi(scores, *self.crf) if self.crf else scores.argmax(-1).tolist()
        chosen = _softmax(scores)[np.arange(n_words), tag_ids]
        spans, _ = self.scheme.decode([self.tags[t] for t in tag_ids])
        return [(s, e, label, float(chosen[s:e].mean())) for s, e, label in spans]

    def _decode_spans(self, windows: Sequence[Window], window_scores: Sequence[np.ndarray], n_words: int) -> list[ScoredSpan]:
        """Spans scoring above zero, each kept from the window holding it fully and most centrally."""
        kept, table = [], WindowTable.of([windows])
        for k, (window, scores) in enumerate(zip(windows, window_scores)):
            for label, s, e in zip(*np.nonzero(scores > 0)):
                start, end = int(s) + window.word_start, int(e) + 1 + window.word_start
                if table.span_owner(0, start, end) == k:
                    kept.append((start, end, self.entity_types[label], float(1 / (1 + np.exp(-scores[label, s, e])))))
        return sorted(kept)
