"""Start, check and stop the servers a benchmark runs: stub and targets.

Every server is started in its own session, pinned to the server cores, with
its output in WORKDIR/NAME.log; stopping sends SIGTERM to that session only
(the group of a process we started), then SIGKILL after a grace period.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def split_cores() -> tuple[str | None, str | None]:
    """Return (load cores, server cores) for taskset, or Nones on one core."""
    count = os.cpu_count() or 1
    if count < 2 or not shutil.which("taskset"):
        return None, None
    return "0", ",".join(str(i) for i in range(1, count))


LOAD_CORES, SERVER_CORES = split_cores()


def pinned(argv: list[str], cores: str | None) -> list[str]:
    """Return argv run under `taskset -c cores` when cores is set."""
    return ["taskset", "-c", cores, *argv] if cores else argv


def port_free(port: int) -> bool:
    """Say whether nothing listens on 127.0.0.1:port."""
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=0.5).connect()
    except OSError:
        return True
    return False


def request(
    port: int, method: str, path: str, body: dict[str, object] | None = None
) -> tuple[int, bytes]:
    """Send one request to 127.0.0.1:port; return status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json", "X-Client-Name": "sanity"}
        connection.request(method, path, body=data, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@dataclass
class Server:
    """A server process we started (or, for `direct`, the stub itself)."""

    name: str
    port: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self, workdir: Path) -> None:
        """Start the process; wait_ready() says when it answers."""
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} for {self.name} is already in use")
        log = open(workdir / f"{self.name}.log", "ab")  # the child keeps it
        self.process = subprocess.Popen(
            pinned(self.argv, SERVER_CORES),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=workdir,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, workdir: Path, seconds: float = 60) -> None:
        """Wait until GET /v1/models answers 200 through this server."""
        deadline = time.monotonic() + seconds
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode}; "
                    f"see {workdir / (self.name + '.log')}"
                )
            try:
                status, _ = request(self.port, "GET", "/v1/models")
                if status == 200:
                    return
                last = f"status {status}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {seconds:.0f} s ({last})")

    def stop(self, grace: float = 30) -> int | None:
        """Stop the process group with SIGTERM, then SIGKILL; return its status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(
                f"{self.name} ignored SIGTERM for {grace:.0f} s: killed",
                file=sys.stderr,
            )
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)
        except ProcessLookupError:
            return self.process.wait(timeout=10)


def find_proxy() -> str | None:
    """Return the path of the lms-metrics-proxy command, if installed."""
    local = REPO / ".venv" / "bin" / "lms-metrics-proxy"
    return shutil.which("lms-metrics-proxy") or (str(local) if local.exists() else None)


def has_serve(command: str) -> bool:
    """Say whether `command serve --help` works (the CLI may not exist yet)."""
    try:
        done = subprocess.run(
            [command, "serve", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def stub(port: int) -> Server:
    """Return the upstream stub."""
    argv = [sys.executable, str(HERE / "stub.py"), "--port", str(port)]
    return Server("stub", port, argv, note="bench/stub.py")


def ours(
    port: int, upstream: str, database: Path, command: str, workers: int = 1
) -> Server:
    """Return our proxy, recording to SQLite."""
    argv = [
        command,
        "serve",
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--database-url",
        f"sqlite:{database}",
    ]
    note = "recording on, SQLite"
    if workers > 1:
        argv += ["--workers", str(workers)]
        note += f", {workers} workers"
    env = {"LOG_LEVEL": "warn"}
    return Server("ours", port, argv, env, note=note)


def bare(port: int, upstream: str) -> Server:
    """Return the bare aiohttp pass-through."""
    script = str(HERE / "passthrough.py")
    argv = [sys.executable, script, "--port", str(port), "--upstream", upstream]
    return Server("bare", port, argv, note="aiohttp in and out, no recording")


NGINX_CONF = """\
# Written by bench/servers.py for one benchmark run.
{user}worker_processes {workers};
worker_rlimit_nofile 16384;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    keepalive_requests 1000000;
    upstream stub {{
        server 127.0.0.1:{upstream};
        keepalive 512;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """Return the nginx binary, if installed."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def nginx(port: int, upstream_port: int, workdir: Path, binary: str) -> Server:
    """Return nginx as a plain reverse proxy: no buffering, pooled upstream."""
    root = workdir / "nginx"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    workers = len(SERVER_CORES.split(",")) if SERVER_CORES else 1
    conf = NGINX_CONF.format(
        # As root, nginx would drop its workers to "nobody", who cannot write here.
        user="user root;\n" if os.geteuid() == 0 else "",
        workers=workers,
        root=root,
        upstream=upstream_port,
        port=port,
    )
    (root / "nginx.conf").write_text(conf)
    argv = [binary, "-p", str(root), "-c", str(root / "nginx.conf")]
    argv += ["-e", str(root / "error.log")]
    note = f"{workers} worker(s), buffering off, keep-alive pool"
    return Server("nginx", port, argv, note=note)
