-- wrk script of the testbed: optional pipelining and `Connection: close`, and
-- one JSON line from done() with everything bench records (latencies in µs).
--   wrk ... -s report.lua URL -- DEPTH keep-alive|close

function init(args)
  local depth = tonumber(args[1]) or 1
  if args[2] == "close" then
    wrk.headers["Connection"] = "close"
  end
  if depth > 1 then
    -- Defining request() here makes wrk send DEPTH requests per write and
    -- count DEPTH responses per batch; without it wrk keeps its faster
    -- static single request.
    local batch = string.rep(wrk.format(), depth)
    request = function() return batch end
  end
end

-- A latency figure as JSON. Statistics are NaN when nothing completed, and
-- percentiles come back 0 when wrk's coordinated-omission correction added
-- samples below the minimum (it happens with pipelining): both become null.
local function latency_json(value)
  if value ~= value or value == 0 then return "null" end
  return string.format("%.1f", value)
end

function done(summary, latency, requests)
  local figures = {}
  for _, name in ipairs({"mean", "stdev", "max"}) do
    table.insert(figures, string.format('"%s":%s', name, latency_json(latency[name])))
  end
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    local key = "p" .. string.gsub(tostring(p), "%.", "_")
    table.insert(figures, string.format('"%s":%s', key, latency_json(latency:percentile(p))))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(figures, ",")))
end
