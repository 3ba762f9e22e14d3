"""Prediction: raw texts in, entities with exact character offsets out.

Texts of any length are cut into windows, all windows of all texts are sorted by length and
run in dynamically padded batches, and each text's windows are merged back (maximal context).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from nerkit.data.batching import pad
from nerkit.data.encoding import EncodedText, Entity, TextEncoder, to_entities
from nerkit.data.windowing import WindowTable, budget_batches
from nerkit.data.words import DEFAULT_WORDS, words_of
from nerkit.heads.base import ScoredSpan
from nerkit.model import NerModel
from nerkit.precision import autocast, check_precision, dtype_of
from nerkit.runs import CONFIG


class Predictor:
    def __init__(self, model: NerModel, max_length: int = 128, stride: int = 32, batch_size: int = 64,
                 device: str | torch.device = "cpu", truncate: bool = False, max_batch_tokens: int | None = None,
                 precision: str = "auto", cast_encoder: bool = False, compile: bool = False, words: str = DEFAULT_WORDS):
        """``precision``: "bf16"/"fp16" run the model under autocast, "auto" picks bf16 where the
        hardware has bf16 units (nerkit.precision). ``cast_encoder`` also holds the encoder's
        weights in that type (half the memory, no weight casts per batch): only for a model that
        nothing else trains or evaluates in fp32, as ``from_run`` loads it. ``compile`` runs the
        encoder through ``torch.compile`` (compiled here, tens of seconds; then faster batches). ``words``
        names the splitter that cuts raw text into words (``nerkit.data.words``; a run records its own)."""
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.precision = check_precision(precision, self.device)
        if cast_encoder:
            self.model.encoder.to(dtype_of(self.precision))
        self.batch_size = batch_size
        # A batch holds at most batch_size windows and max_batch_tokens padded tokens. On CPU,
        # batches of ~2k tokens, whose activations stay in cache, run faster than bigger ones.
        self.max_batch_tokens = max_batch_tokens or (2048 if self.device.type == "cpu" else batch_size * max_length)
        self.text_encoder = TextEncoder(model.encoder.tokenizer, max_length, stride, truncate, words)
        if compile:
            self.model.encoder.compile(dynamic=True)
            # Compiled here, not at the first request: one graph for single windows, one for batches.
            self.predict(["Compile the encoder ."])
            self.predict(["a", "Compile the encoder for batches of windows of any length ."])

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, batch_size: int = 64,
                 trust_remote_code: bool = False, precision: str = "auto", compile: bool = False) -> "Predictor":
        """Load a trained run directory (weights, config, labels, tokenizer; no pickle). Nothing in
        it runs as code; ``trust_remote_code=True`` allows the encoder's own Python files in
        ``encoder/``, for a directory you trust."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, cfg = NerModel.load(run_dir, device, trust_remote_code)
        return cls(model, cfg.max_length, cfg.stride, batch_size, device, cfg.get("truncate", False),
                   precision=precision, cast_encoder=True, compile=compile,
                   words=words_of(cfg, str(Path(run_dir) / CONFIG)))

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if not texts:
            return []
        encodings = self.text_encoder.encode(texts)
        return [to_entities(text, enc, spans) for text, enc, spans in zip(texts, encodings, self.predict_encoded(encodings))]

    @property
    def entity_types(self) -> list[str]:
        return self.model.head.entity_types

    @property
    def head_name(self) -> str:
        return type(self.model.head).__name__

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor,
               word_mask: torch.Tensor) -> torch.Tensor:
        """Window scores for one padded batch; another runtime (ONNX) overrides this."""
        with autocast(self.device, self.precision):
            return self.model(input_ids, attention_mask, word_index, word_mask)

    def window_batch(self, encodings: Sequence[EncodedText], table: WindowTable,
                     rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Padded model inputs (ids, attention mask, word index, word mask) for windows ``rows``."""
        prefix, suffix = self.text_encoder.prefix_ids, self.text_encoder.suffix_ids
        docs = [encodings[d] for d in table.doc[rows].tolist()]
        token_spans = zip(table.token_start[rows].tolist(), table.token_end[rows].tolist())
        word_spans = zip(table.word_start[rows].tolist(), table.word_end[rows].tolist())
        input_ids, attention = pad([prefix + enc.token_ids[t0:t1] + suffix for enc, (t0, t1) in zip(docs, token_spans)],
                                   self.model.encoder.tokenizer.pad_token_id)
        # Each word's first sub-token, from document positions to window positions.
        word_index, word_mask = pad([enc.word_token_starts[w0:w1] for enc, (w0, w1) in zip(docs, word_spans)])
        shift = torch.from_numpy(len(prefix) - table.token_start[rows])
        word_index = (word_index + shift[:, None]).masked_fill(~word_mask, 0)
        return tuple(t.to(self.device) for t in (input_ids, attention.long(), word_index, word_mask))

    @torch.inference_mode()
    def predict_encoded(self, encodings: Sequence[EncodedText]) -> list[list[ScoredSpan]]:
        """Word-level spans for already encoded texts (evaluation reuses the encodings)."""
        self.model.eval()  # dropout off, also when evaluating in the middle of training
        table = WindowTable.of([enc.windows for enc in encodings])
        lengths = table.token_end - table.token_start + len(self.text_encoder.prefix_ids) + len(self.text_encoder.suffix_ids)
        outputs: list = [None] * len(lengths)
        for batch in budget_batches(lengths.tolist(), self.batch_size, self.max_batch_tokens):
            tensors = self.window_batch(encodings, table, batch)
            for j, out in zip(batch, self.model.head.window_outputs(self.scores(*tensors), tensors[3])):
                outputs[j] = out
        return self.model.head.decode_documents(table, outputs)


if __name__ == "__main__":
    from nerkit.predict_cli import main

    raise SystemExit(main())
