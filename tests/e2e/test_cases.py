"""The recorded cases: check_cases.py plays the server and reads our rows back."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import FIXTURES, ROOT

CHECKER = ROOT / "tests" / "support" / "check_cases.py"
CASES = FIXTURES / "cases" / "cases.jsonl"


@pytest.mark.slow
def test_every_case_passes(tmp_path: Path) -> None:
    command = f"{shlex.quote(sys.executable)} -m lms_metrics_proxy serve"

    result = subprocess.run(
        [sys.executable, str(CHECKER), "--cases", str(CASES), "--proxy-cmd", command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    summary = result.stdout.strip().splitlines()[-1:] if result.stdout else []
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0, "\n".join(failures + summary) + result.stderr[-3000:]
