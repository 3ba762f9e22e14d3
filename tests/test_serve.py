"""The HTTP service, run as a real uvicorn server on 127.0.0.1."""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from nerkit import serve
from nerkit.predict import Predictor
from nerkit.serve import Limits, create_app, main
from tests.helpers import save_tiny_run, serving

WORDS = "John Smith Maria Siemens Berlin Paris lives works for in hired yesterday and the . ,".split()
LIMITS = Limits(max_docs=4, max_chars=400, max_bytes=3000)


@pytest.fixture(scope="module")
def predictor(tiny_bert_dir, tmp_path_factory) -> Predictor:
    return Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run")), "cpu")




@pytest.fixture(scope="module")
def url(predictor):
    with serving(create_app(predictor, LIMITS)) as address:
        yield address


def request_texts(i: int) -> list[str]:
    """Request i's texts: 1 to 4 texts of 0 to 40 words (up to several windows each)."""
    rng = random.Random(i)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for _ in range(rng.randint(1, LIMITS.max_docs))]


def test_concurrent_load_matches_the_python_api(url, predictor):
    def call(i: int) -> tuple[int, int, dict]:
        with httpx.Client(base_url=url, timeout=60) as client:
            response = client.post("/predict", json={"texts": request_texts(i)})
            return i, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(200)))

    assert [status for _, status, _ in results] == [200] * 200
    n_entities = 0
    for i, _, body in results:
        expected = predictor.predict(request_texts(i))
        assert len(body["entities"]) == len(expected)
        for got, want in zip(body["entities"], expected):
            assert [(e["start"], e["end"], e["label"], e["text"]) for e in got] == [
                (e.start, e.end, e.label, e.text) for e in want
            ]
            assert [e["score"] for e in got] == pytest.approx([e.score for e in want], abs=1e-6)
            n_entities += len(got)
    assert n_entities > 0


def test_health(url, predictor):
    response = httpx.get(f"{url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["state"] == "idle" and body["current_request_seconds"] is None
    assert body["entity_types"] == predictor.model.head.entity_types
    assert body["limits"] == {"max_docs": 4, "max_chars": 400, "max_bytes": 3000, "request_timeout": 60.0}


def test_limits_give_clear_errors(url):
    with httpx.Client(base_url=url) as client:
        too_many = client.post("/predict", json={"texts": ["a"] * 5})
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["loc"] == ["body", "texts"]
        assert "at most 4 items" in too_many.json()["detail"][0]["msg"]

        too_long = client.post("/predict", json={"texts": ["fine", "x" * 401]})
        assert too_long.status_code == 422
        assert too_long.json()["detail"][0]["loc"] == ["body", "texts", 1]
        assert "at most 400 characters" in too_long.json()["detail"][0]["msg"]

        assert client.post("/predict", json={"texts": []}).status_code == 422
        assert client.post("/predict", content=b'{"texts": [', headers={"content-type": "application/json"}).status_code == 422

        # The body limit holds for a declared length and for a chunked body of unknown length.
        big = {"texts": ["x" * 390] * 4, "padding": "y" * 2000}
        for response in (client.post("/predict", json=big),
                         client.post("/predict", content=iter([b'{"texts": ["', b"x" * 3000, b'"]}']))):
            assert response.status_code == 413
            assert "limit of 3000 bytes" in response.json()["detail"]


def test_the_model_cannot_be_chosen_by_a_request(url, tmp_path):
    response = httpx.post(f"{url}/predict", json={"texts": ["Berlin"], "run_dir": str(tmp_path)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"


def test_command_line_requires_a_run_dir():
    with pytest.raises(SystemExit, match=r"missing required argument\(s\): run_dir=\.\.\."):
        main(["port=9000"])
    with pytest.raises(FileNotFoundError, match="not a complete nerkit run directory"):
        main([f"run_dir={Path(__file__).parent}"])


def test_invalid_unicode_gets_a_clean_422_that_echoes_nothing(url):
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url) as client:
        for body in (b'{"texts": ["\\ud800"]}', b'{"texts": ["fine", "a \\udfff b"]}'):
            response = client.post("/predict", content=body, headers=headers)
            assert response.status_code == 422
            (error,) = response.json()["detail"]
            assert error["loc"][:2] == ["body", "texts"] and "lone surrogate" in error["msg"]
            assert "input" not in error
        too_long = client.post("/predict", json={"texts": ["secret " * 60]})
        assert too_long.status_code == 422 and "secret" not in too_long.text  # no echo of the input
        assert client.post("/predict", content=b'{"texts": ["\xff"]}', headers=headers).status_code == 400


def _slowed(predictor: Predictor, seconds: float) -> Predictor:
    """``predictor`` taking at least ``seconds`` per batch, so that a long request is long on any machine."""
    scores = predictor.scores

    def slow_scores(*tensors):
        time.sleep(seconds)
        return scores(*tensors)

    predictor.scores = slow_scores
    return predictor


BIG_LIMITS = Limits(max_docs=5, max_chars=100_000, max_bytes=1_000_000, request_timeout=None)
BIG_TEXTS = [("Maria Schmidt from Siemens visited Paris and Berlin in May. " * 1700)[:100_000]] * 5  # > 140 batches


def test_an_abandoned_request_stops_and_health_tells_busy_from_idle(tiny_bert_dir, tmp_path):
    predictor = _slowed(Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path), "cpu"), 0.2)  # > 28 s in all
    with serving(create_app(predictor, BIG_LIMITS)) as url, httpx.Client(base_url=url, timeout=60) as client:
        def abandon():
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/predict", json={"texts": BIG_TEXTS}, timeout=4)

        abandoned = threading.Thread(target=abandon)
        abandoned.start()
        deadline = time.monotonic() + 30
        while (health := client.get("/health").json())["state"] != "busy":
            assert time.monotonic() < deadline, "the big request never started"
            time.sleep(0.05)
        time.sleep(1)
        health = client.get("/health").json()  # answered at once, while the model is busy
        assert health["state"] == "busy" and health["current_request_seconds"] >= 1
        abandoned.join()
        started = time.monotonic()
        response = client.post("/predict", json={"texts": ["John Smith lives in Berlin ."]})
        waited = time.monotonic() - started
        assert response.status_code == 200 and len(response.json()["entities"]) == 1
        assert waited < 8, f"the next request waited {waited:.1f}s: the abandoned one was not stopped"
        assert client.get("/health").json()["state"] == "idle"


def test_a_request_over_its_deadline_gets_504_and_frees_the_model(tiny_bert_dir, tmp_path):
    predictor = _slowed(Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path), "cpu"), 0.2)
    limits = Limits(max_docs=5, max_chars=100_000, max_bytes=1_000_000, request_timeout=1.5)
    with serving(create_app(predictor, limits)) as url, httpx.Client(base_url=url, timeout=60) as client:
        started = time.monotonic()
        response = client.post("/predict", json={"texts": BIG_TEXTS})
        assert response.status_code == 504 and time.monotonic() - started < 8
        assert response.json()["detail"] == ("prediction did not finish within request_timeout=1.5s; "
                                             "send fewer or shorter texts")
        assert client.get("/health").json()["state"] == "idle"
        assert client.post("/predict", json={"texts": ["Berlin"]}).status_code == 200


def test_a_bearer_token_guards_everything_but_health(predictor):
    with serving(create_app(predictor, LIMITS, auth_token="s3cret")) as url, httpx.Client(base_url=url) as client:
        texts = {"texts": ["John lives in Berlin"]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.post("/predict", json=texts, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer <token>" in response.json()["detail"]
        assert client.get("/docs").status_code == 401
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200  # the demo page holds no data; its own requests send the token
        assert client.post("/predict", json=texts, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serving_beyond_localhost_without_a_token_warns(predictor, monkeypatch, caplog, tmp_path):
    started = []
    monkeypatch.setattr(serve, "load_predictor", lambda *args: predictor)
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kwargs: started.append((app, kwargs)))
    monkeypatch.delenv("NERKIT_AUTH_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="nerkit.serve"):
        main([f"run_dir={tmp_path}", "host=127.0.0.1"])
        assert not caplog.records
        main([f"run_dir={tmp_path}", "host=0.0.0.0"])
        assert "serving on 0.0.0.0 without a token" in caplog.text
        caplog.clear()
        monkeypatch.setenv("NERKIT_AUTH_TOKEN", "from-env")
        main([f"run_dir={tmp_path}", "host=0.0.0.0"])
        assert not caplog.records
    with serving(started[-1][0]) as url:  # the token from the environment is the one required
        assert httpx.post(f"{url}/predict", json={"texts": ["x"]}).status_code == 401
        ok = httpx.post(f"{url}/predict", json={"texts": ["x"]}, headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200 and len(ok.json()["entities"]) == 1
