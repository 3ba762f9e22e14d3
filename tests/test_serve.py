"""The HTTP service, run as a real uvicorn server on 127.0.0.1."""
from __future__ import annotations

import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.helpers import save_tiny_run

from nerkit.predict import Predictor
from nerkit.serve import Limits, create_app, main

WORDS = "John Smith Maria Siemens Berlin Paris lives works for in hired yesterday and the . ,".split()
LIMITS = Limits(max_docs=4, max_chars=400, max_bytes=3000)


@pytest.fixture(scope="module")
def predictor(tiny_bert_dir, tmp_path_factory) -> Predictor:
    return Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run")), "cpu")


@pytest.fixture(scope="module")
def url(predictor):
    """Serve the app on a free port of 127.0.0.1 in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, LIMITS), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


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
    assert body["status"] == "ok"
    assert body["entity_types"] == predictor.model.head.entity_types
    assert body["limits"] == {"max_docs": 4, "max_chars": 400, "max_bytes": 3000}


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
