-- wrk script of the testbed: optional pipelining and `Connection: close`, and
-- one JSON line from done() with everything bench records (latencies in µs).
--   [SWISSKNIFE_WRK_HISTOGRAM=1] wrk ... -s report.lua URL -- DEPTH keep-alive|close
-- With SWISSKNIFE_WRK_HISTOGRAM=1 the line also holds wrk's latency histogram,
-- so that several wrk runs can be merged exactly (bench/wrk.py merge). An
-- environment variable, not an argument: init(args) runs in the threads' Lua
-- states, done() in the main one, which never sees the arguments.

local with_histogram = os.getenv("SWISSKNIFE_WRK_HISTOGRAM") == "1"

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

-- Every latency wrk recorded as [value µs, count] pairs, lowest first: wrk's
-- `latency(i)` gives the i-th non-empty bucket's value and count (#latency of
-- them). Each call scans the buckets from the minimum, which is why it is
-- asked for only when runs are merged.
local function histogram_json(latency)
  local buckets = {}
  for i = 1, #latency do
    local value, count = latency(i)
    buckets[i] = string.format("[%d,%d]", value, count)
  end
  return ',"histogram":[' .. table.concat(buckets, ",") .. "]"
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
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{%s}%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(figures, ","), with_histogram and histogram_json(latency) or ""))
end
