#!/usr/bin/env bash
# Run the benchmark (`make bench`): every target against one stub, then the
# statistics queries. Results: one table on stdout, JSON in bench/results/.
#
#   bench/run.sh              full run, about 6 minutes on 2 cores
#   bench/run.sh --smoke      one minute; fails only when the proxy errs
#   bench/run.sh --big        also 10M rows for the queries (about 10 more minutes)
#   bench/run.sh --help       every option
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

say() { echo "[run.sh] $*" >&2; }

# wrk drives the plain requests, nginx is a target: install them when we can.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    # Debian starts nginx as a service on port 80 after install; it is not ours
    # to stop, and idles without traffic.
  else
    say "not root or no apt-get: ${missing[*]} missing, those targets are skipped"
  fi
fi

# The project's venv has aiohttp, uvloop and orjson; the stub and the driver
# also want httptools (the lead adds it to the dev extra).
python="$repo/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
if ! "$python" -c 'import aiohttp, orjson, httptools' 2>/dev/null; then
  say "installing httptools (and aiohttp, orjson if missing) for $python"
  "$python" -m pip install --quiet httptools aiohttp orjson uvloop
fi
export PATH="$repo/.venv/bin:$PATH"

# 1,000 concurrent streams need about 2,000 descriptors in the proxy alone.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

exec "$python" "$here/bench.py" "$@"
