-- wrk script for bench/latency: POST a JSON body, count replies whose status
-- is not exactly 200, and print one parseable result line from done().
--
-- wrk's own "Non-2xx or 3xx responses" counter only counts statuses >= 400;
-- counting in response() catches every non-200 reply.

wrk.method = "POST"
wrk.body = os.getenv("NFBENCH_BODY") or '{"input": "hello"}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0 -- a global of this thread's Lua state, read back in done()
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
  end
  local e = summary.errors
  -- Latencies are in microseconds.
  io.write(string.format(
    'NFBENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "non200": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, bad,
    e.connect, e.read, e.write, e.timeout, e.status))
end
