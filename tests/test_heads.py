"""Each head on tiny inputs: shapes, finite loss, valid decoding, and what makes it special."""
import itertools

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from nerkit.heads.crf import CRFHead
from nerkit.heads.global_pointer import EfficientGlobalPointerHead, GlobalPointerHead
from nerkit.model import NerModel
from tests.helpers import CONF_DIR, HEAD_NAMES, make_cfg

TYPES = ["LOC", "PER"]
# Every conf/head/*.yaml's class: a new head is tested as soon as its yaml exists.
HEADS = [get_class(OmegaConf.load(f"{CONF_DIR}/head/{name}.yaml")._target_) for name in HEAD_NAMES]


def batch(hidden=16, lengths=(5, 3)):
    torch.manual_seed(0)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), max(lengths), hidden), mask


@pytest.mark.parametrize("head_cls", HEADS)
def test_loss_is_finite_and_decoded_spans_are_valid(head_cls):
    head = head_cls(16, TYPES)
    hidden, mask = batch()
    scores = head(hidden, mask)
    loss = head.loss(scores, mask, [[(0, 2, 1), (3, 4, 0)], [(1, 2, 0)]])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for row, spans in zip(mask, head.eval().decode(head(hidden, mask), mask)):
        for start, end, label, score in spans:
            assert 0 <= start < end <= int(row.sum()) and label in TYPES and 0.0 <= score <= 1.0


def fit(head, hidden, mask, spans, steps=150, lr=0.05):
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        head.loss(head(hidden, mask), mask, spans).backward()
        optimizer.step()
    return head.eval()


@pytest.mark.parametrize("head_cls", HEADS)
def test_each_head_learns_a_tiny_example(head_cls):
    hidden, mask = batch(lengths=(6, 4))
    gold = [[(0, 2, 1), (4, 5, 0)], [(1, 4, 0)]]
    head = fit(head_cls(16, TYPES, dropout=0.0), hidden, mask, gold)
    decoded = head.decode(head(hidden, mask), mask)
    assert [[(s, e, TYPES.index(lab)) for s, e, lab, _ in row] for row in decoded] == gold


@pytest.mark.parametrize("head_cls", [GlobalPointerHead, EfficientGlobalPointerHead])
def test_span_threshold_trades_precision_for_recall(head_cls):
    """``threshold`` (conf/head) is the logit a span must exceed: every span found at a higher
    threshold is found at a lower one, and the decoder (also the exported spec) carries it."""
    torch.manual_seed(1)
    hidden, mask = batch(lengths=(7, 5))
    found = {}
    for threshold in (-2.0, 0.0, 2.0):
        torch.manual_seed(2)  # the same weights at every threshold
        head = head_cls(16, TYPES, threshold=threshold).eval()
        assert head.decoder().spec()["threshold"] == threshold
        found[threshold] = {(r, s, e, lab) for r, row in enumerate(head.decode(head(hidden, mask), mask))
                            for s, e, lab, _ in row}
    assert found[2.0] <= found[0.0] <= found[-2.0]
    assert len(found[-2.0]) > len(found[2.0])


@pytest.mark.parametrize("head_cls", [GlobalPointerHead, EfficientGlobalPointerHead])
def test_global_pointer_recovers_nested_entities(head_cls):
    hidden, mask = batch(lengths=(6,))
    gold = [[(0, 4, 0), (1, 3, 1), (1, 2, 0)]]  # a LOC containing a PER containing a LOC
    head = fit(head_cls(16, TYPES, dropout=0.0), hidden, mask, gold)
    decoded = head.decode(head(hidden, mask), mask)[0]
    assert sorted((s, e, TYPES.index(lab)) for s, e, lab, _ in decoded) == sorted(gold[0])


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_crf_never_decodes_a_forbidden_transition(scheme):
    head = CRFHead(16, TYPES, scheme=scheme).eval()
    # Emissions that prefer I-/E- tags everywhere: an unconstrained decoder would start with them.
    hidden, mask = batch(lengths=(7, 7, 2))
    with torch.no_grad():
        scores = head(hidden, mask)
        for i, tag in enumerate(head.tags):
            if tag[0] in "IE":
                scores[..., i] += 5.0
    lengths = mask.sum(1).numpy()
    for row, n in zip(head.decoder().best_paths(scores.numpy(), lengths), lengths):
        start, end, transition = head.scheme.allowed(head.tags)
        path = row[:n]
        assert start[path[0]] and end[path[-1]]
        assert all(transition[a, b] for a, b in itertools.pairwise(path))


def test_crf_forbidden_transitions_stay_pinned_during_training():
    head = CRFHead(16, TYPES)
    before = head.crf.transitions.detach().clone()
    hidden, mask = batch()
    fit(head, hidden, mask, [[(0, 2, 1)], [(0, 1, 0)]], steps=5)
    forbidden = before == -10000.0
    assert forbidden.any() and torch.equal(head.crf.transitions.detach()[forbidden], before[forbidden])


def test_global_pointer_without_rope_ignores_distance():
    head = GlobalPointerHead(8, TYPES, rope=False).eval()
    hidden = torch.randn(1, 1, 8).expand(1, 5, 8)  # the same vector at every position
    scores = head(hidden, torch.ones(1, 5, dtype=torch.bool))
    upper = scores[0, 0][torch.ones(5, 5, dtype=torch.bool).triu()]
    assert torch.allclose(upper, upper[0].expand_as(upper))
    head.rope = True
    scores = head(hidden, torch.ones(1, 5, dtype=torch.bool))
    assert not torch.allclose(scores[0, 0, 0, 1], scores[0, 0, 0, 4])


ENCODERS = ["bert", "bilstm"]


@pytest.mark.parametrize("encoder,head", itertools.product(ENCODERS, HEAD_NAMES))
def test_every_config_combination_instantiates(encoder, head, tiny_bert_dir):
    overrides = [f"encoder={encoder}", f"head={head}"]
    if encoder == "bert":
        overrides.append(f"encoder.pretrained={tiny_bert_dir}")
    model = NerModel.from_config(make_cfg(overrides), TYPES, train_texts=["John lives in Berlin"])
    ids = model.encoder.tokenizer(["John lives in Berlin"], return_tensors="pt")["input_ids"]
    scores = model(ids, torch.ones_like(ids), torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.bool))
    assert torch.isfinite(scores[scores > -1e11]).all()


def test_crf_parameter_group_gets_its_own_learning_rate(tiny_bert_dir):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "head=crf", "head.lr=0.003", "trainer.lr=2e-5"])
    model = NerModel.from_config(cfg, TYPES)
    optimizer = torch.optim.AdamW(model.param_groups(cfg.trainer.lr, cfg.trainer.weight_decay))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {lr_of[id(p)] for p in model.encoder.parameters()} == {2e-5}
    assert {lr_of[id(p)] for p in model.head.parameters()} == {0.003}
    assert len(lr_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_array_span_decoding_repairs_paths_exactly_like_the_scheme(scheme):
    head = CRFHead(16, TYPES, scheme=scheme)
    generator = torch.Generator().manual_seed(0)
    lengths = [7, 0, 1, 12, 5, 9]
    paths = torch.randint(0, len(head.tags), (sum(lengths),), generator=generator)
    scores = torch.randn(sum(lengths), len(head.tags), generator=generator)
    decoded = head.decoder().spans(scores.numpy(), paths.numpy(), lengths)
    probs = scores.softmax(-1).gather(1, paths[:, None])[:, 0]
    offset = 0
    for n, spans in zip(lengths, decoded):
        expected, _ = head.scheme.decode([head.tags[t] for t in paths[offset : offset + n].tolist()])
        assert [(s, e, lab) for s, e, lab, _ in spans] == [tuple(span) for span in expected]
        for s, e, _, score in spans:
            assert score == pytest.approx(probs[offset + s : offset + e].mean().item(), abs=1e-6)
        offset += n
    assert any(decoded)


def test_batched_viterbi_matches_pytorch_crf():
    """The head's numpy decoder (what PyTorch and ONNX Runtime both decode with) finds the paths
    pytorch-crf finds, also for documents laid end to end and decoded in chunks."""
    head = CRFHead(16, TYPES, scheme="BIOES").eval()
    hidden, mask = batch(lengths=(9, 1, 4, 9, 6))
    with torch.no_grad():
        head.crf.transitions.add_(torch.randn_like(head.crf.transitions))  # non-trivial transitions
        scores = head(hidden, mask) * 3
        expected = head.crf.decode(scores, mask=mask)
    decoder, lengths = head.decoder(), mask.sum(1).numpy()
    paths = decoder.best_paths(scores.numpy(), lengths)
    assert [row[:n].tolist() for row, n in zip(paths, lengths)] == expected
    laid_out = decoder.paths(scores.numpy()[mask.numpy()], lengths.tolist(), chunk_words=20)  # several chunks
    assert laid_out.tolist() == [t for row in expected for t in row]
