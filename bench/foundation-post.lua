-- wrk script for bench/foundation.sh: POST /api/admin/events with the admin token.
-- Environment (read by every wrk thread): BENCH_TOKEN (admin token), BENCH_TYPE (event type).
-- Counts 202 responses per thread and prints one machine-readable line at the end:
--   BENCHRESULT requests=.. duration_s=.. accepted=.. other_status=.. non2xx=.. connect=..
--               read=.. write=.. timeout=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..

local token = os.getenv("BENCH_TOKEN") or error("BENCH_TOKEN is not set")
local etype = os.getenv("BENCH_TYPE") or error("BENCH_TYPE is not set")

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"' .. etype .. '","data":{"i":1}}'

-- Per-thread counters (each wrk thread has its own Lua state).
accepted = 0
other_status = 0

function response(status, headers, body)
    if status == 202 then
        accepted = accepted + 1
    else
        other_status = other_status + 1
        if other_status <= 3 then
            io.stderr:write(string.format("bench: unexpected HTTP %d: %s\n", status, body or ""))
        end
    end
end

-- setup() and done() run in wrk's main Lua state; thread:get reads a thread's globals.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function done(summary, latency, requests)
    local acc, oth = 0, 0
    for _, t in ipairs(threads) do
        acc = acc + (t:get("accepted") or 0)
        oth = oth + (t:get("other_status") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        "BENCHRESULT requests=%d duration_s=%.3f accepted=%d other_status=%d non2xx=%d " ..
        "connect=%d read=%d write=%d timeout=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
        summary.requests, summary.duration / 1e6, acc, oth, e.status,
        e.connect, e.read, e.write, e.timeout,
        latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
        latency:percentile(99) / 1e3, latency.max / 1e3))
end
