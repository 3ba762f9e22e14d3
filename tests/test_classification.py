"""Long-document classification: readers, strategies (truncation is explicit), pooling, a training run."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import open_dict
from transformers import AutoTokenizer

from nerkit.classifier import Classifier
from nerkit.classifier_model import DocClassifier
from nerkit.data.document_inputs import DocumentInputs, batch_tensors
from nerkit.data.encoding import TextEncoder
from nerkit.data.readers import DataError, read_hyperpartisan, read_jsonl_labels, split_documents
from nerkit.encoders.bert import BertEncoder
from nerkit.train import train
from tests.helpers import make_cfg, shared_data

ARTICLES = """<?xml version="1.0" encoding="UTF-8"?><articles>
<article id="1" title="A  title"> lead <p>First <a href="x">link</a> para.</p> between <p>Second &amp; last.</p></article>
<article id="2" title="Other"><p>Only one.</p></article>
</articles>"""
TRUTH = """<?xml version="1.0"?><articles>
<article id="1" hyperpartisan="true" labeled-by="article"/>
<article id="2" hyperpartisan="false" labeled-by="article"/>
</articles>"""


def test_read_hyperpartisan_strips_tags_and_joins_labels(tmp_path):
    (tmp_path / "a.xml").write_text(ARTICLES)
    (tmp_path / "t.xml").write_text(TRUTH)
    docs = read_hyperpartisan(tmp_path / "a.xml", tmp_path / "t.xml")
    assert [(d.id, d.label) for d in docs] == [("1", "true"), ("2", "false")]
    assert docs[0].text == "A title\nlead\nFirst link para.\nbetween\nSecond & last."
    assert docs[1].text == "Other\nOnly one."


def test_read_hyperpartisan_errors_name_the_file(tmp_path):
    (tmp_path / "a.xml").write_text(ARTICLES)
    (tmp_path / "t.xml").write_text(TRUTH.replace('<article id="2" hyperpartisan="false" labeled-by="article"/>', ""))
    with pytest.raises(DataError, match=r"a\.xml: article id='2' has no entry"):
        read_hyperpartisan(tmp_path / "a.xml", tmp_path / "t.xml")
    (tmp_path / "bad.xml").write_text("<articles><article id='1'>\n<p>unclosed</article></articles>")
    with pytest.raises(DataError, match=r"bad\.xml:2: invalid XML"):
        read_hyperpartisan(tmp_path / "bad.xml", tmp_path / "t.xml")


def test_read_jsonl_labels(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a b", "label": "pos"}\n{"id": "x", "text": "c", "label": true}\n{"text": "d", "label": 3}\n')
    assert [(d.id, d.text, d.label) for d in read_jsonl_labels(path)] == [
        ("d.jsonl:1", "a b", "pos"), ("x", "c", "true"), ("d.jsonl:3", "d", "3")]
    path.write_text('{"text": "a", "label": "pos"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a non-empty string"):
        read_jsonl_labels(path)


def test_split_documents_is_a_seeded_partition(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"text": "t{i}", "label": "l"}}\n' for i in range(50)))
    docs = read_jsonl_labels(path)
    held = split_documents(docs, 0.1, seed=3, part="held_out")
    rest = split_documents(docs, 0.1, seed=3, part="rest")
    assert len(held) == 5 and len(rest) == 45
    assert sorted(d.text for d in held + rest) == sorted(d.text for d in docs)
    assert held == split_documents(docs, 0.1, seed=3, part="held_out")
    assert held != split_documents(docs, 0.1, seed=4, part="held_out")
    with pytest.raises(ValueError, match="non-empty"):
        split_documents(docs, 50, seed=3, part="rest")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_strategies_truncate_explicitly(tokenizer, caplog):
    text = " ".join(f"w{i}" for i in range(300))  # every "wN" is several word pieces
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    enc = TextEncoder(tokenizer, max_length=64, stride=16)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    [[head]] = DocumentInputs(enc, "head")([text])
    assert head[0] == cls_id and head[-1] == sep_id and len(head) <= 64
    assert head[1:-1] == ids[: len(head) - 2]

    inputs = DocumentInputs(enc, "head_tail", head_tokens=20)
    [[head_tail]] = inputs([text])
    assert head_tail == [cls_id, *ids[:20], *ids[-42:], sep_id]
    with caplog.at_level(logging.WARNING):
        inputs.report("test")
    assert f"truncated 1 documents ({len(ids) - 62} tokens dropped)" in caplog.text

    [windows] = DocumentInputs(enc, "windows")([text])
    assert len(windows) > 1 and all(len(w) <= 64 for w in windows)
    covered = {tok for w in windows for tok in w[1:-1]}
    assert covered == set(ids)  # nothing dropped
    for strategy in ("head", "head_tail", "windows"):  # no tokens at all: [CLS] [SEP] alone
        assert DocumentInputs(enc, strategy, head_tokens=20)(["\u200b"]) == [[[cls_id, sep_id]]]
    with pytest.raises(ValueError, match="head_tokens"):
        DocumentInputs(enc, "head_tail", head_tokens=63)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_pooling_is_per_document(tiny_bert_dir, tokenizer, pooling):
    torch.manual_seed(0)
    model = DocClassifier(BertEncoder(str(tiny_bert_dir)), ["a", "b"], pooling).eval()
    enc = TextEncoder(tokenizer, max_length=24, stride=4)
    long_text, short_text = "alpha beta gamma " * 20, "delta epsilon"
    docs = DocumentInputs(enc, "windows")([long_text, short_text])
    assert len(docs[0]) > 1 and len(docs[1]) == 1
    pad = tokenizer.pad_token_id
    together = model(*batch_tensors(docs, pad, torch.device("cpu")))
    alone = [model(*batch_tensors([d], pad, torch.device("cpu")))[0] for d in docs]
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)
    # A document that fits one window gets the same logits under every strategy.
    [[head]] = DocumentInputs(enc, "head")([short_text])
    torch.testing.assert_close(model(*batch_tensors([[head]], pad, torch.device("cpu")))[0], alone[1])


@pytest.mark.parametrize("sentence_vector", ["cls", "mean", "first_token"])
def test_sentence_vector_is_taken_from_the_real_tokens(tiny_bert_dir, tokenizer, sentence_vector):
    torch.manual_seed(0)
    model = DocClassifier(BertEncoder(str(tiny_bert_dir)), ["a", "b"], sentence_vector=sentence_vector).eval()
    docs = [[tokenizer("alpha beta gamma delta")["input_ids"]], [tokenizer("x")["input_ids"]]]
    vectors = model.window_vectors(*batch_tensors(docs, tokenizer.pad_token_id, torch.device("cpu"))[:2])
    for row, [ids] in enumerate(docs):  # each alone, unpadded: padding must not change its vector
        hidden = model.encoder(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
        expected = {"cls": hidden[0], "first_token": hidden[1], "mean": hidden.mean(0)}[sentence_vector]
        torch.testing.assert_close(vectors[row], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="task.sentence_vector must be one of"):
        DocClassifier(model.encoder, ["a", "b"], sentence_vector="max")


@pytest.mark.parametrize("frozen", [False, True])
def test_train_classifier_saves_a_loadable_run(tiny_bert_dir, tmp_path, frozen):
    data = tmp_path / "d.jsonl"
    rows = [{"text": ("good news " if i % 2 else "bad news ") * (5 + i), "label": "pos" if i % 2 else "neg"} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg(["task=classify", "task.pooling=attention", "task.sentence_vector=mean",
                    f"encoder.pretrained={tiny_bert_dir}", "max_length=16",
                    "stride=4", "trainer.epochs=2", "trainer.batch_size=4", "trainer.device=cpu",
                    f"task.freeze_encoder={frozen}", "trainer.lr=1e-3"])
    reader = {"_target_": "nerkit.data.readers.read_jsonl_labels", "path": str(data)}
    with open_dict(cfg):
        cfg.data = {"train": reader, "dev": reader, "test": reader}
    best = train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert best == max(h["dev"]["accuracy"] for h in metrics["history"]) and metrics["finished"]
    assert metrics["train_inputs"] > len(rows)  # long documents became several windows
    loaded = Classifier.from_run(tmp_path / "run", precision="fp32")  # as it was trained and scored
    assert loaded.model.sentence_vector == "mean"
    predicted = loaded.predict([r["text"] for r in rows])
    accuracy = sum(p == r["label"] for (p, _), r in zip(predicted, rows)) / len(rows)
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy)
    assert all(label in ("neg", "pos") and 0.5 <= prob <= 1 for label, prob in predicted)
    bf16 = Classifier.from_run(tmp_path / "run", precision="bf16")
    assert {p.dtype for p in bf16.model.encoder.parameters()} == {torch.bfloat16}
    in_bf16 = bf16.predict([r["text"] for r in rows])
    assert [label for label, _ in in_bf16] == [label for label, _ in predicted]
    assert [prob for _, prob in in_bf16] == pytest.approx([prob for _, prob in predicted], abs=0.02)
    pretrained = BertEncoder(str(tiny_bert_dir)).model.embeddings.word_embeddings.weight
    trained = loaded.model.encoder.model.embeddings.word_embeddings.weight
    assert torch.equal(pretrained, trained) == frozen
    assert (metrics["trained_parameters"] < metrics["parameters"]) == frozen


def test_hyperpartisan_config_holds_out_a_seeded_dev_split():
    from hydra.utils import instantiate

    cfg = make_cfg(["task=classify", "data=hyperpartisan", f"data.root={shared_data('longtext/hyperpartisan')}"])
    train_docs, dev_docs, test_docs = (instantiate(cfg.data[split]) for split in ("train", "dev", "test"))
    assert (len(train_docs), len(dev_docs), len(test_docs)) == (581, 64, 628)
    assert not {d.id for d in train_docs} & {d.id for d in dev_docs}
    assert {d.label for d in test_docs} == {"true", "false"}
    assert all("<p>" not in d.text and "</a>" not in d.text for d in train_docs)
