-- wrk script of bench/ingest.py: POST /events batches of BATCH random views
-- (users w1..w100000, items i1..i10000); done() prints one JSON line for the script.
local batch = tonumber(os.getenv("BATCH") or "100")
math.randomseed(os.time())

request = function()
  local parts = {}
  for i = 1, batch do
    parts[i] = string.format('{"user_id":"w%d","item_id":"i%d","action":"view"}',
      math.random(100000), math.random(10000))
  end
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"},
    '{"events":[' .. table.concat(parts, ",") .. ']}')
end

done = function(summary, latency, requests)
  io.write(string.format(
    'JSON {"requests": %d, "seconds": %.3f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"latency_ms": {"p50": %.2f, "p99": %.2f, "max": %.2f}}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
