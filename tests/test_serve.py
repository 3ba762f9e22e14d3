"""The HTTP service, run as a real uvicorn server on 127.0.0.1. Its predictors run in fp32, also
where the CPU has bf16 units: responses are compared with ``predict`` on each request alone, and
only fp32 is batch-invariant (docs/serving.md)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from nerkit import serve
from nerkit.export import export_onnx
from nerkit.onnx_predict import OnnxPredictor
from nerkit.predict import Predictor
from nerkit.data.encoding import Entity
from nerkit.serve import Batcher, Limits, create_app, http_protocol, main
from tests.helpers import ROOT, save_tiny_run, serving

WORDS = "John Smith Maria Siemens Berlin Paris lives works for in hired yesterday and the . ,".split()
LIMITS = Limits(max_docs=4, max_chars=400, max_bytes=3000)


def tiny_predictor(tiny_bert_dir: Path, directory: Path) -> Predictor:
    """The tiny run's predictor, in fp32 (the module's docstring says why)."""
    return Predictor.from_run(save_tiny_run(tiny_bert_dir, directory), "cpu", precision="fp32")


@pytest.fixture(scope="module")
def predictor(tiny_bert_dir, tmp_path_factory) -> Predictor:
    return tiny_predictor(tiny_bert_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def url(predictor):
    with serving(create_app(predictor, LIMITS)) as address:
        yield address


def request_texts(i: int, max_docs: int = LIMITS.max_docs) -> list[str]:
    """Request i's texts: 1 to ``max_docs`` texts of 0 to 40 words (up to several windows each)."""
    rng = random.Random(i)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for _ in range(rng.randint(1, max_docs))]


def assert_same_as_predict(got: list[list[dict]], expected) -> None:
    """A response's entities are ``Predictor.predict``'s for the same texts."""
    assert [[(e["start"], e["end"], e["label"], e["text"]) for e in doc] for doc in got] == [
        [(e.start, e.end, e.label, e.text) for e in doc] for doc in expected
    ]
    scores = [e.score for doc in expected for e in doc]
    assert [e["score"] for doc in got for e in doc] == pytest.approx(scores, abs=1e-6)


def test_concurrent_load_matches_the_python_api(url, predictor):
    def call(i: int) -> tuple[int, int, dict]:
        with httpx.Client(base_url=url, timeout=60) as client:
            response = client.post("/predict", json={"texts": request_texts(i)})
            return i, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(200)))

    assert [status for _, status, _ in results] == [200] * 200
    for i, _, body in results:
        assert_same_as_predict(body["entities"], predictor.predict(request_texts(i)))
    assert sum(len(doc) for _, _, body in results for doc in body["entities"]) > 0


def test_health(url, predictor):
    response = httpx.get(f"{url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["state"] == "idle" and body["current_batch_seconds"] is None
    assert body["waiting_requests"] == body["waiting_texts"] == body["current_batch_requests"] == 0
    assert body["entity_types"] == predictor.model.head.entity_types
    assert body["limits"] == {"max_docs": 4, "max_chars": 400, "max_bytes": 3000, "request_timeout": 60.0,
                              "read_timeout": 30.0}


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


def test_token_lists_are_predicted_on_their_tokens_as_predict_tokens_does(url, predictor):
    token_lists = [text.split() for text in request_texts(7)] + [["John", "Smith", "lives", "in", "Berlin", "."]]
    token_lists = [tokens for tokens in token_lists if tokens][: LIMITS.max_docs]
    response = httpx.post(f"{url}/predict", json={"tokens": token_lists})
    assert response.status_code == 200
    expected = predictor.predict_tokens(token_lists)
    assert_same_as_predict(response.json()["entities"], expected)
    assert [[(e["token_start"], e["token_end"]) for e in doc] for doc in response.json()["entities"]] == [
        [(e.token_start, e.token_end) for e in doc] for doc in expected]
    # Text requests carry no token indices.
    texts = httpx.post(f"{url}/predict", json={"texts": [" ".join(t) for t in token_lists]}).json()["entities"]
    assert all("token_start" not in e for doc in texts for e in doc)


@pytest.mark.parametrize("body, problem", [
    ({"texts": ["a b"], "tokens": [["a", "b"]]}, 'either "texts"'),
    ({}, 'either "texts"'),
    ({"tokens": [["New York"]]}, "should match pattern"),
    ({"tokens": [["ok", ""]]}, "at least 1 character"),
    ({"tokens": [["x" * 200, "y" * 200]]}, "longer than max_chars=400"),
    ({"tokens": [["a"]] * 5}, "at most 4 items"),
])
def test_bad_token_requests_get_a_clear_422(url, body, problem):
    response = httpx.post(f"{url}/predict", json=body)
    assert response.status_code == 422
    assert problem in " ".join(detail["msg"] for detail in response.json()["detail"])


def test_the_model_cannot_be_chosen_by_a_request(url, tmp_path):
    response = httpx.post(f"{url}/predict", json={"texts": ["Berlin"], "run_dir": str(tmp_path)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"


def test_command_line_requires_a_run_dir():
    with pytest.raises(SystemExit, match=r"missing required argument\(s\): run_dir=\.\.\."):
        main(["port=9000"])
    with pytest.raises(FileNotFoundError, match="not a complete nerkit run directory"):
        main([f"run_dir={Path(__file__).parent}"])
    with pytest.raises(SystemExit, match="bad argument: batch_size=0: must be at least 1"):
        main([f"run_dir={Path(__file__).parent}", "batch_size=0"])


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
    predictor = _slowed(tiny_predictor(tiny_bert_dir, tmp_path), 0.2)  # > 28 s in all
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
        assert health["state"] == "busy" and health["current_batch_seconds"] >= 1
        assert health["current_batch_requests"] == 1 and health["waiting_requests"] == 0
        abandoned.join()
        started = time.monotonic()
        response = client.post("/predict", json={"texts": ["John Smith lives in Berlin ."]})
        waited = time.monotonic() - started
        assert response.status_code == 200 and len(response.json()["entities"]) == 1
        assert waited < 8, f"the next request waited {waited:.1f}s: the abandoned one was not stopped"
        assert client.get("/health").json()["state"] == "idle"


def test_a_request_over_its_deadline_gets_504_and_frees_the_model(tiny_bert_dir, tmp_path):
    predictor = _slowed(tiny_predictor(tiny_bert_dir, tmp_path), 0.2)
    limits = Limits(max_docs=5, max_chars=100_000, max_bytes=1_000_000, request_timeout=1.5)
    with serving(create_app(predictor, limits)) as url, httpx.Client(base_url=url, timeout=60) as client:
        started = time.monotonic()
        response = client.post("/predict", json={"texts": BIG_TEXTS})
        assert response.status_code == 504 and time.monotonic() - started < 8
        assert response.json()["detail"] == ("prediction did not finish within request_timeout=1.5s; "
                                             "send fewer or shorter texts")
        answered = time.monotonic()
        wait_for_health(client, state="idle")  # the model stops at its next batch
        assert time.monotonic() - answered < 3
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


def test_the_bearer_scheme_is_matched_case_insensitively(predictor):
    with serving(create_app(predictor, LIMITS, auth_token="s3cret")) as url, httpx.Client(base_url=url) as client:
        texts = {"texts": ["John lives in Berlin"]}
        for header in ("bearer s3cret", "BEARER s3cret", "Bearer s3cret"):
            assert client.post("/predict", json=texts, headers={"Authorization": header}).status_code == 200
        for header in ("bearer wrong", "Basic s3cret", "bearers3cret", "s3cret s3cret"):
            assert client.post("/predict", json=texts, headers={"Authorization": header}).status_code == 401


def recorded(predictor: Predictor, gates: list[threading.Event] = ()) -> list[list[str]]:
    """The texts of each ``predict`` call of ``predictor`` (each round of the server), in order. The
    batches of round k (from 1) wait until ``gates[k - 1]`` is set, so that a test can hold a round."""
    rounds: list[list[str]] = []
    predict, scores = predictor.predict, predictor.scores

    def recording_predict(texts):
        rounds.append(list(texts))
        return predict(texts)

    def gated_scores(*batch):
        if len(rounds) <= len(gates):
            assert gates[len(rounds) - 1].wait(timeout=60), "the test never opened the gate"
        return scores(*batch)

    predictor.predict, predictor.scores = recording_predict, gated_scores
    return rounds


BATCH_LIMITS = Limits(max_docs=8, max_chars=400, max_bytes=20_000)


def test_concurrent_clients_share_batches_and_each_gets_its_own_result(tiny_bert_dir, tmp_path):
    predictor = tiny_predictor(tiny_bert_dir, tmp_path)
    requests = [request_texts(i, BATCH_LIMITS.max_docs) for i in range(32)]
    start = threading.Event()  # the first round waits until every client has sent its request
    rounds = recorded(predictor, [start])
    with serving(create_app(predictor, BATCH_LIMITS)) as url, httpx.Client(base_url=url) as monitor:
        def call(texts: list[str]) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=60) as client:
                return client.post("/predict", json={"texts": texts})

        with ThreadPoolExecutor(max_workers=32) as pool:
            responses = [pool.submit(call, texts) for texts in requests]
            deadline = time.monotonic() + 60
            while sum((health := monitor.get("/health").json())[k] for k in ("current_batch_requests",
                                                                              "waiting_requests")) < 32:
                assert time.monotonic() < deadline, f"the requests never all arrived: {health}"
                time.sleep(0.02)
            start.set()
            responses = [r.result() for r in responses]
    del predictor.predict, predictor.scores

    assert [r.status_code for r in responses] == [200] * 32
    for texts, response in zip(requests, responses):
        assert_same_as_predict(response.json()["entities"], predictor.predict(texts))
    assert sum(len(doc) for r in responses for doc in r.json()["entities"]) > 0
    # Every text was predicted once, in two rounds: the request(s) that found the model idle, then
    # all those that queued behind them, together.
    assert sorted(t for r in rounds for t in r) == sorted(t for texts in requests for t in texts)
    assert len(rounds) <= 2 and max(map(len, rounds)) > BATCH_LIMITS.max_docs


class EchoPredictor:
    """Records the texts of each round it is given; finds no entities."""

    def __init__(self):
        self.rounds: list[list[str]] = []

    def scores(self, *batch):
        raise AssertionError("only predict is called here")

    def predict(self, texts: list[str]) -> list[list]:
        self.rounds.append(list(texts))
        return [[] for _ in texts]

    predict_tokens = scores


@pytest.mark.parametrize("batch_wait", [1.0, 0.0])
def test_clients_answered_together_are_predicted_together_again(batch_wait):
    async def rounds_of_three_clients() -> tuple[list[list[str]], float]:
        predictor = EchoPredictor()
        batcher = Batcher(predictor, round_chars=100_000, batch_wait=batch_wait)

        async def answered(text: str, delay: float = 0.0) -> None:
            await asyncio.sleep(delay)
            await batcher.submit([text]).result

        await asyncio.gather(*(answered(t) for t in ("a1", "a2", "a3")))  # one round of three
        # They come back one by one: the first at once, the other two 0.2 s later.
        await asyncio.gather(answered("b1"), answered("b2", 0.2), answered("b3", 0.2))
        await answered("c")  # alone after a round of three: waits batch_wait for the other two
        lone = time.monotonic()
        await answered("d")  # alone after a round of one: no wait
        lone = time.monotonic() - lone
        await asyncio.gather(*(answered(t) for t in ("e1", "e2")))
        await asyncio.sleep(1.2 * batch_wait)  # the server falls idle
        idle = time.monotonic()
        await answered("f")  # the first request to an idle server: no wait
        return predictor.rounds, lone, time.monotonic() - idle

    rounds, lone_seconds, idle_seconds = asyncio.run(rounds_of_three_clients())
    second = [["b1", "b2", "b3"]] if batch_wait else [["b1"], ["b2", "b3"]]
    assert rounds == [["a1", "a2", "a3"], *second, ["c"], ["d"], ["e1", "e2"], ["f"]]
    assert lone_seconds < 0.5 and idle_seconds < 0.5  # far under batch_wait=1.0


def test_a_negative_batch_wait_is_refused(tiny_bert_dir, tmp_path):
    with pytest.raises(SystemExit, match="batch_wait=-1.0: must be 0"):
        main([f"run_dir={save_tiny_run(tiny_bert_dir, tmp_path)}", "batch_wait=-1"])


def test_the_response_schema_has_the_fields_an_entity_has():
    # The endpoint writes the entities' JSON without going through EntityOut, which only documents it.
    assert list(serve.EntityOut.model_fields) == [f.name for f in dataclasses.fields(Entity)]


def open_request(url: str, texts: list[str]) -> socket.socket:
    """A POST /predict sent on a raw connection, whose client can then vanish (``close``)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"texts": texts}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def wait_for_health(client: httpx.Client, **expected) -> None:
    deadline = time.monotonic() + 60
    while {k: (health := client.get("/health").json())[k] for k in expected} != expected:
        assert time.monotonic() < deadline, f"/health never showed {expected}: {health}"
        time.sleep(0.02)


def test_clients_leaving_before_and_during_their_batch_leave_the_others_intact(tiny_bert_dir, tmp_path, caplog):
    predictor = tiny_predictor(tiny_bert_dir, tmp_path)
    first_round, second_round = threading.Event(), threading.Event()
    rounds = recorded(predictor, [first_round, second_round])
    others = [request_texts(i, BATCH_LIMITS.max_docs) for i in range(6)]
    with caplog.at_level(logging.INFO, logger="nerkit.serve"), serving(create_app(predictor, BATCH_LIMITS)) as url, \
            httpx.Client(base_url=url) as monitor, ThreadPoolExecutor(max_workers=7) as pool:
        def call(texts: list[str]) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=60) as client:
                return client.post("/predict", json={"texts": texts})

        first = pool.submit(call, ["John Smith lives in Berlin ."])
        wait_for_health(monitor, state="busy", current_batch_requests=1)  # held in its first batch
        leaves_queued = open_request(url, ["Zyzzyva left while queued"])
        leaves_mid_batch = open_request(url, ["Quokka left mid-batch", "Siemens hired John Smith"])
        wait_for_health(monitor, waiting_requests=2)
        responses = [pool.submit(call, texts) for texts in others]
        wait_for_health(monitor, waiting_requests=8)

        leaves_queued.close()
        wait_for_health(monitor, waiting_requests=7)
        first_round.set()  # the next round takes the 7 requests still waiting, and is held
        wait_for_health(monitor, state="busy", current_batch_requests=7, waiting_requests=0)
        leaves_mid_batch.close()
        wait_for_health(monitor, state="busy", current_batch_requests=6)
        second_round.set()
        assert first.result().status_code == 200
        responses = [r.result() for r in responses]
        wait_for_health(monitor, state="idle")
    del predictor.predict, predictor.scores

    assert [r.status_code for r in responses] == [200] * 6
    for texts, response in zip(others, responses):
        assert_same_as_predict(response.json()["entities"], predictor.predict(texts))
    assert rounds[0] == ["John Smith lives in Berlin ."]
    # The request that left while queued was never predicted; the one that left mid-batch was, with
    # the others, and its result was discarded.
    assert len(rounds) == 2 and "Zyzzyva left while queued" not in rounds[1]
    assert sorted(rounds[1]) == sorted(["Quokka left mid-batch", "Siemens hired John Smith", *sum(others, [])])
    assert caplog.text.count("client closed its request") == 2


def test_a_body_shorter_than_its_content_length_gets_408_within_the_timeout(predictor):
    for timeouts in ({"read_timeout": 1.0}, {"read_timeout": None, "request_timeout": 1.0}):
        limits = Limits(max_docs=4, max_chars=400, max_bytes=3000, **timeouts)
        with serving(create_app(predictor, limits)) as url:
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"texts\": [")
                reply = b""
                while chunk := sock.recv(4096):  # the server answers, then closes the connection
                    reply += chunk
                waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), (timeouts, reply)
        assert b"within 1s (read_timeout, request_timeout): 11 bytes of the 100 announced arrived" in reply
        assert 0.9 < waited < 6, (timeouts, waited)


def test_a_connection_sending_its_request_head_too_slowly_is_closed(predictor):
    with serving(create_app(predictor, LIMITS), http=http_protocol(1.0)) as url:
        host, port = url.removeprefix("http://").split(":")
        started = time.monotonic()
        with socket.create_connection((host, int(port))) as silent, socket.create_connection((host, int(port))) as slow:
            slow.settimeout(0.2)
            head = b"POST /predict HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: yes\r\n" * 100
            for byte in head:  # a byte every 0.2 s: each one restarts uvicorn's own keep-alive timer
                try:
                    slow.send(bytes([byte]))
                    if slow.recv(1) == b"":
                        break
                except socket.timeout:
                    continue
                except ConnectionError:
                    break
            slow_closed = time.monotonic() - started
            silent.settimeout(10)
            assert silent.recv(1) == b""  # a connection that sends nothing is closed too
            silent_closed = time.monotonic() - started
        assert 0.9 < slow_closed < 5 and silent_closed < 5, (slow_closed, silent_closed)
        # A request whose head comes in time is served, twice on one kept-alive connection.
        with httpx.Client(base_url=url) as client:
            assert [client.post("/predict", json={"texts": ["Berlin"]}).status_code for _ in range(2)] == [200, 200]


def test_serving_an_onnx_run_imports_no_torch(tiny_bert_dir, tmp_path):
    run_dir = save_tiny_run(tiny_bert_dir, tmp_path / "run")
    export_onnx(run_dir)
    texts = ["John Smith lives in Berlin .", " ".join(["Maria works for Siemens in Paris ."] * 5)]
    script = f"""
import json, sys
from starlette.testclient import TestClient
from nerkit.cli import Backend
from nerkit.serve import ServeConfig, build_app

app = build_app(ServeConfig(run_dir={str(run_dir)!r}, backend=Backend.onnx, threads=1))
with TestClient(app) as client:
    response = client.post("/predict", json={{"texts": {texts!r}}})
torch = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
print(json.dumps({{"status": response.status_code, "entities": response.json()["entities"], "torch": torch}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["torch"] == [] and result["status"] == 200
    assert_same_as_predict(result["entities"], OnnxPredictor.from_run(run_dir, threads=1).predict(texts))


def test_a_failing_batch_is_retried_request_by_request_so_only_the_culprit_fails(tiny_bert_dir, tmp_path):
    predictor = tiny_predictor(tiny_bert_dir, tmp_path)
    predict = predictor.predict

    def predict_refusing_poison(texts):
        if "poison" in texts:
            raise RuntimeError("the model cannot take this text")
        return predict(texts)

    predictor.predict = predict_refusing_poison
    first_round = threading.Event()
    rounds = recorded(predictor, [first_round])
    with serving(create_app(predictor, BATCH_LIMITS)) as url, httpx.Client(base_url=url) as monitor, \
            ThreadPoolExecutor(max_workers=3) as pool:
        def call(texts: list[str]) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=60) as client:
                return client.post("/predict", json={"texts": texts})

        first = pool.submit(call, ["John Smith lives in Berlin ."])
        wait_for_health(monitor, state="busy", current_batch_requests=1)
        poisoned = pool.submit(call, ["Paris", "poison"])
        wait_for_health(monitor, waiting_requests=1)
        healthy = pool.submit(call, request_texts(1, BATCH_LIMITS.max_docs))
        wait_for_health(monitor, waiting_requests=2)
        first_round.set()
        assert first.result().status_code == 200 and poisoned.result().status_code == 500
        assert_same_as_predict(healthy.result().json()["entities"], predict(request_texts(1, BATCH_LIMITS.max_docs)))
    # The round of both requests failed; each was then predicted alone.
    assert rounds[1:] == [["Paris", "poison", *request_texts(1, BATCH_LIMITS.max_docs)], ["Paris", "poison"],
                          request_texts(1, BATCH_LIMITS.max_docs)]
