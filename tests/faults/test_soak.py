"""The soak test, 30 seconds of it: bench/soak.py at 64 concurrent mixed requests.

The full ten-minute run is `python bench/soak.py` (see bench/README.md); this
short one runs in `make test`. soak.py fails on a missing row, a failed
request or descriptors not released; the RSS slope is printed, not judged,
since thirty seconds say little about it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import ROOT, free_port

SOAK = ROOT / "bench" / "soak.py"


def free_pair() -> int:
    """A port whose next one is free too (soak.py uses both)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and _is_free(port + 1):
            return port
    raise AssertionError("no two free ports in a row")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_thirty_second_soak_writes_every_row_and_leaks_no_descriptor(
    tmp_path: Path,
) -> None:
    pytest.importorskip("httptools", reason="bench/driver.py parses with httptools")
    command = [
        sys.executable,
        str(SOAK),
        "--seconds=30",
        "--every=3",
        "--settle=20",
        f"--base-port={free_pair()}",
        f"--results={tmp_path}",
    ]

    done = subprocess.run(
        command,
        cwd=SOAK.parent,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    [result] = tmp_path.glob("soak-*.json")
    summary = json.loads(result.read_text())["summary"]

    print(done.stdout.splitlines()[-2] if done.stdout else done.stderr[-2000:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["rows"] == summary["requests_sent"] > 0
    assert summary["errors"] == {}
    assert summary["proxy_exit_status"] == 0
