"""Prediction: raw texts in, entities with exact character offsets out.

Texts of any length are cut into windows, all windows of all texts are sorted by length and
run in dynamically padded batches, and each text's windows are merged back (maximal context).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from nerkit.data.encoding import EncodedText, Entity, TextEncoder, to_entities
from nerkit.heads.base import ScoredSpan
from nerkit.model import NerModel


class Predictor:
    def __init__(self, model: NerModel, max_length: int = 128, stride: int = 32, batch_size: int = 64,
                 device: str | torch.device = "cpu", truncate: bool = False, max_batch_tokens: int | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        # A batch holds at most batch_size windows and max_batch_tokens padded tokens. On CPU,
        # batches of ~2k tokens, whose activations stay in cache, run faster than bigger ones.
        self.max_batch_tokens = max_batch_tokens or (2048 if self.device.type == "cpu" else batch_size * max_length)
        self.text_encoder = TextEncoder(model.encoder.tokenizer, max_length, stride, truncate)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, batch_size: int = 64,
                 trust_remote_code: bool = False) -> "Predictor":
        """Load a trained run directory (weights, config, labels, tokenizer; no pickle). Nothing in
        it runs as code; ``trust_remote_code=True`` allows the encoder's own Python files in
        ``encoder/``, for a directory you trust."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, cfg = NerModel.load(run_dir, device, trust_remote_code)
        return cls(model, cfg.max_length, cfg.stride, batch_size, device, cfg.get("truncate", False))

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
        return self.model(input_ids, attention_mask, word_index, word_mask)

    def _token_batches(self, lengths: Sequence[int], order: Sequence[int]) -> list[list[int]]:
        """Cut ``order`` (ascending ``lengths``) into batches of at most ``batch_size`` windows and
        ``max_batch_tokens`` padded tokens (a window longer than the budget runs alone)."""
        batches: list[list[int]] = []
        for j, length in zip(order, lengths):
            if batches and len(batches[-1]) < self.batch_size and (len(batches[-1]) + 1) * length <= self.max_batch_tokens:
                batches[-1].append(j)
            else:
                batches.append([j])
        return batches

    @torch.inference_mode()
    def predict_encoded(self, encodings: Sequence[EncodedText]) -> list[list[ScoredSpan]]:
        """Word-level spans for already encoded texts (evaluation reuses the encodings)."""
        self.model.eval()  # dropout off, also when evaluating in the middle of training
        jobs = [(d, k) for d, enc in enumerate(encodings) for k in range(len(enc.windows))]
        inputs = [self.text_encoder.window_input(encodings[d], encodings[d].windows[k]) for d, k in jobs]
        order = sorted(range(len(jobs)), key=lambda j: len(inputs[j][0]))
        outputs: list = [None] * len(jobs)
        pad_id = self.model.encoder.tokenizer.pad_token_id
        for batch in self._token_batches([len(inputs[j][0]) for j in order], order):
            width = max(len(inputs[j][0]) for j in batch)
            words = max(len(inputs[j][1]) for j in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            word_index = torch.zeros((len(batch), words), dtype=torch.long)
            word_mask = torch.zeros((len(batch), words), dtype=torch.bool)
            for row, j in enumerate(batch):
                ids, index = inputs[j]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
                word_index[row, : len(index)] = torch.tensor(index)
                word_mask[row, : len(index)] = True
            tensors = [t.to(self.device) for t in (input_ids, attention_mask, word_index, word_mask)]
            scores = self.scores(*tensors)
            for j, out in zip(batch, self.model.head.window_outputs(scores, tensors[3])):
                outputs[j] = out
        per_doc: list[list] = [[] for _ in encodings]
        for (d, _), out in zip(jobs, outputs):
            per_doc[d].append(out)
        nonempty = [d for d, enc in enumerate(encodings) if enc.windows]
        # Decode the words the windows cover: all of them, unless the encoder truncates.
        decoded = self.model.head.decode_documents(
            [(encodings[d].windows, per_doc[d], encodings[d].windows[-1].word_end) for d in nonempty]
        )
        results: list[list[ScoredSpan]] = [[] for _ in encodings]
        for d, spans in zip(nonempty, decoded):
            results[d] = spans
        return results


if __name__ == "__main__":
    from nerkit.predict_cli import main

    raise SystemExit(main())
