"""bench/serve.py's ceiling (what the server could reach against the CLI with no core idle, from
the CPU seconds the server and its clients spent on the same texts) and its load generator's HTTP."""
from __future__ import annotations

import asyncio
import json

import pytest

from bench.serve import ceiling_vs_cli, post_json


def test_the_ceiling_spreads_server_and_client_cpu_over_the_cores():
    # 100 texts; the CLI at 50 texts/s takes 2 s; the server (1.5 s) and clients (0.5 s) need 2 CPU
    # seconds, 1 s of wall time on 2 cores at best: twice the CLI's throughput, 1 s on one core: the CLI's
    srv = {"texts": 100, "cli_texts_per_s_same_texts": 50.0, "cpu_s_per_round": {"server": 1.5, "clients": 0.5, "cli": 1.9}}
    assert ceiling_vs_cli(srv, cores=2) == pytest.approx(2.0)
    assert ceiling_vs_cli(srv, cores=1) == pytest.approx(1.0)
    srv["cpu_s_per_round"]["clients"] = 2.5  # costly clients lower it
    assert ceiling_vs_cli(srv, cores=2) == pytest.approx(1.0)


def test_the_load_generator_reads_each_answer_whole_on_a_kept_alive_connection():
    async def scenario():
        requests = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for status in (200, 422):
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                length = next(int(line.split(": ")[1]) for line in head.split("\r\n") if line.startswith("Content-Length"))
                requests.append((head.split("\r\n")[0], json.loads(await reader.readexactly(length))))
                body = json.dumps({"n": len(requests)}).encode()
                # head and body in two writes, as a server may send them
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)))
                await writer.drain()
                writer.write(body)
            await reader.readuntil(b"\r\n\r\n")  # the third request: answered without Content-Length
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        first = await post_json(reader, writer, "/predict", {"texts": ["a b", "c"]})
        second = await post_json(reader, writer, "/predict", {"texts": ["d"]})
        with pytest.raises(RuntimeError, match="without Content-Length"):
            await post_json(reader, writer, "/predict", {"texts": []})
        writer.close()
        server.close()
        return first, second, requests

    first, second, requests = asyncio.run(scenario())
    assert first == (200, {"n": 1}) and second == (422, {"n": 2})
    assert requests == [("POST /predict HTTP/1.1", {"texts": ["a b", "c"]}),
                        ("POST /predict HTTP/1.1", {"texts": ["d"]})]
