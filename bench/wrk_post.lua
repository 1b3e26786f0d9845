-- wrk script used by bench/run.py: POST one JSON body and print a machine-readable summary line
-- ("BENCHJSON {...}"). bench/run.py fills the @BODY@ placeholder into a copy of this file per test.
-- No response() function: wrk then skips parsing headers and bodies, the cheapest way to load.

wrk.method = "POST"
wrk.body = [==[@BODY@]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
-- @HEADERS@ (bench/run.py adds the Messages door's anthropic-version and x-api-key here)

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "err_connect": %d, "err_read": %d, '
      .. '"err_write": %d, "err_status": %d, "err_timeout": %d, "lat_p50_us": %d, "lat_p90_us": %d, '
      .. '"lat_p99_us": %d, "lat_mean_us": %.1f, "lat_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
