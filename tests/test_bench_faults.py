"""bench/bench_faults.py at tiny scale: the accounting adds up, and the rows that must be
lossless today (a worker SIGKILLed, Redis with `appendonly yes` SIGKILLed) lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import require_redis_server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_bench_faults_tiny_run_accounts_for_every_job(tmp_path):
    require_redis_server()
    out = tmp_path / "faults.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_faults.py"), "--users", "4",
           "--seconds", "8", "--workers", "1", "--rows", "worker-kill,redis-aof",
           "--drain", "90", "--poll", "1", "--env", "STYLEJAX_QUEUE_VISIBILITY_S=5",
           "--out-dir", str(tmp_path / "rows"), "--json", str(out), "--strict"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"worker-kill", "redis-aof"}
    for name, r in rows.items():
        assert r["accepted"] > 0, r
        assert r["accepted"] == r["done"] + r["failed"] + r["cancelled"] + r["lost"], r
        assert r["lost"] == 0 and r["duplicated"] == 0, r
        assert r["done_log_lines"] == r["done"], r  # one recording per done job, from the logs
        assert r["p50_s"] is not None and r["p50_s"] <= r["p95_s"], r
        assert r["notes"]["fault_at_s"] > 0, (name, r)
    assert rows["worker-kill"]["notes"]["worker_restarted"] is True
    assert rows["redis-aof"]["notes"]["redis_persistence"] == "aof"
    assert "| worker-kill |" in run.stdout and "| redis-aof |" in run.stdout
