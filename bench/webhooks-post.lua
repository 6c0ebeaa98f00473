-- wrk script for bench/webhooks.sh: POST /webhook/<hook-id> with the shared secret, or GET
-- the ops listener's /livez (the baseline: a bare ulfius route with a constant answer).
-- Environment (read by every wrk thread):
--   BENCH_MODE    "post" (the same webhook every time), "idem" (each request with its own
--                 Idempotency-Key: BENCH_KEY_PREFIX, the wrk thread's number and a counter)
--                 or "livez" (GET, no body, 200 expected)
--   BENCH_SECRET  the X-Webhook-Secret (post and idem)
--   BENCH_KEY_PREFIX  idem only: unique per run and phase
-- Counts the expected answers (202, or 200 for livez) per thread and prints one
-- machine-readable line at the end:
--   BENCHRESULT requests=.. duration_s=.. accepted=.. other_status=.. non2xx=.. connect=..
--               read=.. write=.. timeout=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..

local mode = os.getenv("BENCH_MODE") or error("BENCH_MODE is not set")
local expected = 202

if mode == "livez" then
    expected = 200
    wrk.method = "GET"
elseif mode == "post" or mode == "idem" then
    wrk.method = "POST"
    wrk.headers["X-Webhook-Secret"] = os.getenv("BENCH_SECRET") or error("BENCH_SECRET is not set")
    wrk.headers["Content-Type"] = "application/json"
    -- A small webhook, the kind a CI or an alerting system sends.
    wrk.body = '{"action":"opened","number":1,"repository":{"full_name":"bench/webhooks"},' ..
               '"sender":{"login":"wrk"}}'
else
    error("BENCH_MODE must be post, idem or livez, not " .. mode)
end

-- Per-thread state (each wrk thread has its own Lua state; tid is set by setup()).
accepted = 0
other_status = 0
local sent = 0
local key_prefix = mode == "idem" and (os.getenv("BENCH_KEY_PREFIX") or error("BENCH_KEY_PREFIX is not set"))

if mode == "idem" then
    -- wrk.format fills in Host and Content-Length; the other headers are ours.
    local headers = {}
    function init(args)
        for k, v in pairs(wrk.headers) do headers[k] = v end
    end
    function request()
        sent = sent + 1
        headers["Idempotency-Key"] = key_prefix .. "-" .. tid .. "-" .. sent
        return wrk.format(nil, nil, headers, wrk.body)
    end
end

function response(status, headers, body)
    if status == expected then
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
    thread:set("tid", #threads)
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
