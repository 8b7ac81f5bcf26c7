"""Issue 7, offline: with every socket connect and DNS lookup blocked, the offline pipeline runs
to completion (stage 1 → 2 → 3, two LRs) at tiny scale, and never even tries the network."""
from __future__ import annotations

import subprocess
import sys


def test_the_socket_block_is_in_force(tmp_path):
    from conftest import offline_env
    env = offline_env(tmp_path)
    probe = ("import socket\n"
             "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
             "except OSError as e:\n    print(e)\n"
             "try:\n    socket.socket().connect(('127.0.0.1', 9))\n"
             "except OSError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.count("network blocked by the eelib offline test") == 2, p.stdout + p.stderr


def test_offline_pipeline_completes_without_network(offline_run):
    p = offline_run["proc"]
    assert p.returncode == 0, p.stderr[-3000:]
    rows = offline_run["rows"]
    assert [r["stage3_lr"] for r in rows] == [1e-3, 3e-3]
    for r in rows:
        for k in ("L_im", "L_ret", "L_ft", "L_pre"):
            assert isinstance(r[k], float) and 0 < r[k] < 10
    log = offline_run["dir"] / "net.log"
    assert not log.exists(), f"the offline run tried the network: {log.read_text()}"
