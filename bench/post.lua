-- wrk script: POST one non-streaming chat completion per request, and print
-- the run's figures as one JSON line (prefixed WRKJSON) for bench.py.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["X-Client-Name"] = "wrk"
wrk.body = '{"model":"bench-model","max_tokens":16,' ..
           '"messages":[{"role":"user","content":"Say hello"}]}'

-- No response() hook: defining one makes wrk hand every body to Lua, which
-- would make the load generator, not the target, the bottleneck. wrk counts
-- statuses above 399 in summary.errors.status.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,' ..
    '"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
