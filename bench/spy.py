"""Sample the proxy with py-spy during a point, and say where its time goes.

py-spy attaches to the running process (root, or ptrace allowed) and writes
collapsed stacks ("frame;frame;frame count" lines). `summarize` turns them
into the functions that hold the CPU themselves (self time) and the ones
under which it is spent (total time), which is what a report needs.

    python bench/spy.py bench/results/spy-ours-plain-64.txt   # re-summarize
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from servers import LOAD_CORES, pinned

# Frames from these are the libraries' and Python's, not the proxy's.
LIBRARIES = (
    "aiohttp/", "asyncio/", "aiosqlite/", "sqlalchemy/", "threading.py", "click/",
    "uvloop/", "multidict/", "yarl/", "concurrent/", "aiohappyeyeballs/",
    "greenlet", "lms-metrics-proxy)", "selectors.py", "runpy.py",
)  # fmt: skip
# Frames in more than this share of samples are entry points (main, run).
ENTRY_SHARE = 50.0
# "handle (aiohttp/web_protocol.py:512)" -> "handle (aiohttp/web_protocol.py)"
LINE = re.compile(r":\d+\)$")


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on pid for `seconds`; None when py-spy is not installed."""
    binary = shutil.which("py-spy")
    if binary is None:
        return None
    argv = [binary, "record", "--pid", str(pid), "--duration", str(round(seconds))]
    argv += ["--rate", "250", "--format", "raw", "--subprocesses", "--nonblocking"]
    argv += ["--output", str(output)]
    return subprocess.Popen(
        pinned(argv, LOAD_CORES),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def frame_name(frame: str) -> str:
    """Return a frame without its line number, and with a shorter path."""
    frame = LINE.sub(")", frame)
    return frame.replace("site-packages/", "").replace("lib/python3.11/", "")


def summarize(path: Path, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Return the top functions by self and by total share of samples (%)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            under[frame] += weight
    if not samples:
        return {"self": [], "total": []}
    share = 100 / samples
    return {
        "self": [(f, round(n * share, 1)) for f, n in own.most_common(top)],
        "total": [(f, round(n * share, 1)) for f, n in under.most_common(top * 10)],
    }


def is_ours(frame: str) -> bool:
    """Say whether a frame is the proxy's code (py-spy shortens some paths)."""
    return not any(part in frame for part in LIBRARIES)


def render(name: str, found: dict[str, list[tuple[str, float]]]) -> str:
    """Return a summary as text."""
    lines = [f"profile of {name}: where the samples were (self %, function)"]
    lines += [f"  {share:5.1f}%  {frame}" for frame, share in found["self"]]
    lines.append(
        "  the proxy's own functions (total %: themselves and what they call):"
    )
    ours = [(f, s) for f, s in found["total"] if is_ours(f) and s < ENTRY_SHARE]
    lines += [f"  {share:5.1f}%  {frame}" for frame, share in ours[:15]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy --format raw output")
    args = parser.parse_args()
    print(render(args.raw.name, summarize(args.raw)))


if __name__ == "__main__":
    main()
