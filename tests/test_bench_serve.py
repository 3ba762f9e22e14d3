"""bench/serve.py's ceiling: what the server could reach against the CLI with no core idle, from
the CPU seconds the server and its clients spent on the same texts."""
from __future__ import annotations

import pytest

from bench.serve import ceiling_vs_cli


def test_the_ceiling_spreads_server_and_client_cpu_over_the_cores():
    # 100 texts; the CLI at 50 texts/s takes 2 s; the server (1.5 s) and clients (0.5 s) need 2 CPU
    # seconds, 1 s of wall time on 2 cores at best: twice the CLI's throughput, 1 s on one core: the CLI's
    srv = {"texts": 100, "cli_texts_per_s_same_texts": 50.0, "cpu_s_per_round": {"server": 1.5, "clients": 0.5, "cli": 1.9}}
    assert ceiling_vs_cli(srv, cores=2) == pytest.approx(2.0)
    assert ceiling_vs_cli(srv, cores=1) == pytest.approx(1.0)
    srv["cpu_s_per_round"]["clients"] = 2.5  # costly clients lower it
    assert ceiling_vs_cli(srv, cores=2) == pytest.approx(1.0)
