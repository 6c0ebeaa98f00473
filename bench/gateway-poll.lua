-- wrk script for bench/gateway.sh: an OpenClaw agent polling its gateway inbox.
-- Environment (read by every wrk thread):
--   BENCH_KEY         the agent's X-Api-Key
--   BENCH_MODE        poll:   GET the URL (path and query) for the whole run: the
--                             empty-inbox figure
--                     lease:  the same until the inbox is empty; messages are only leased
--                     report: the same, and every leased message is reported
--                             (POST /api/gateway/report) before that thread polls again
-- In the lease and report modes a thread stops once its inbox looks empty and nothing it sent can
-- still bring messages or be a report: at the first empty answer (with nothing left to
-- report) it notes the last request it has sent; once every request up to that one is
-- answered, none of them with messages, it stops and writes "BENCHSTOP" on stderr.
-- Requests are told apart by the X-Request-Id the ingress echoes (counting answers would
-- not do: a later empty poll can overtake an earlier slow report). Rows another thread's
-- poll held at that moment are that thread's to count. wrk itself runs until -d or
-- SIGINT, so bench/gateway.sh sends SIGINT once every thread has stopped.
-- BENCH_PER_THREAD (connections per thread) bounds the requests in flight: wrk asks the
-- first thread for one request it never sends (to check the script), and a reconnect
-- abandons one; the oldest numbers beyond the bound are forgotten.
-- Prints one machine-readable line at the end:
--   BENCHRESULT requests=.. duration_s=.. polls=.. reports=.. messages=.. empty=..
--               window_s=.. window_polls=.. other_status=.. non2xx=.. connect=.. read=..
--               write=.. timeout=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
-- window_s (lease, report) runs from the first thread's start to the last answer that
-- carried messages (lease) or was a report (report); window_polls counts the polls until
-- then, so the empty polls that only confirm the end are left out of the rates.
-- Messages are counted by their "conversation_id" key, which each message has once and
-- its history entries do not have.

local ffi = require("ffi") -- wrk embeds LuaJIT: a monotonic clock for the drain's window
ffi.cdef [[
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct bench_timespec *tp);
]]
local timespec = ffi.new("struct bench_timespec")
local function now_s()
    ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC: one clock for every thread
    return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) / 1e9
end

local key = os.getenv("BENCH_KEY") or error("BENCH_KEY is not set")
local mode = os.getenv("BENCH_MODE") or "poll"
local per_thread = tonumber(os.getenv("BENCH_PER_THREAD") or "1")
assert(mode == "poll" or mode == "lease" or mode == "report", "BENCH_MODE: poll, lease or report")

wrk.method = "GET"
wrk.headers["X-Api-Key"] = key

-- Per-thread state (each wrk thread has its own Lua state); the globals are read by done().
polls = 0
reports = 0
messages = 0
empty = 0
other_status = 0
t_start = 0
t_last = 0
window_polls = 0
thread_id = 0                -- set by setup()
local sent = 0               -- the last request number of this thread (lease, report)
local unanswered = {}        -- request number -> true while in flight
local in_flight = 0
local mark = nil             -- the last request sent when the inbox first looked empty
local stopped = false
local to_report = {}

function init(args)
    t_start = now_s()
end

if mode ~= "poll" then
    local poll_headers = { ["X-Api-Key"] = key }
    local report_headers = { ["X-Api-Key"] = key, ["Content-Type"] = "application/json" }
    function request()
        sent = sent + 1
        unanswered[sent] = true
        in_flight = in_flight + 1
        if in_flight > per_thread then
            local oldest = sent
            for n, _ in pairs(unanswered) do
                oldest = math.min(oldest, n)
            end
            unanswered[oldest] = nil
            in_flight = in_flight - 1
        end
        local rid = "bench-" .. thread_id .. "-" .. sent
        local id = table.remove(to_report)
        if id ~= nil then
            report_headers["X-Request-Id"] = rid
            return wrk.format("POST", "/api/gateway/report", report_headers,
                              '{"message_id":"' .. id .. '","result":"ok"}')
        end
        poll_headers["X-Request-Id"] = rid
        return wrk.format("GET", nil, poll_headers)
    end
end

local function note_unexpected(status, body)
    other_status = other_status + 1
    if other_status <= 3 then
        io.stderr:write(string.format("bench: unexpected HTTP %d: %s\n", status, body or ""))
    end
end

local function maybe_stop()
    if mark == nil or #to_report > 0 then
        return
    end
    for n, _ in pairs(unanswered) do
        if n <= mark then
            return
        end
    end
    stopped = true
    io.stderr:write("BENCHSTOP\n")
    wrk.thread:stop()
end

function response(status, headers, body)
    if stopped then
        return
    end
    if mode ~= "poll" then
        local n = tonumber(((headers["X-Request-Id"] or ""):match("%-(%d+)$")))
        if n == nil then
            error("the answer has no X-Request-Id of ours: cannot tell which request it answers")
        end
        if unanswered[n] then
            unanswered[n] = nil
            in_flight = in_flight - 1
        end
    end
    if status ~= 200 then
        note_unexpected(status, body)
        return
    end
    if not body:find('"messages"', 1, true) then -- a report's {"status":"ok"}
        reports = reports + 1
        t_last = now_s()
        window_polls = polls
        if mode ~= "poll" then
            maybe_stop()
        end
        return
    end
    polls = polls + 1
    local n = 0
    if mode == "report" then
        for id in body:gmatch('"id":%s*"([%x%-]+)"') do
            n = n + 1
            table.insert(to_report, id)
        end
    else
        local at = body:find('"conversation_id":', 1, true) -- plain search, no copies
        while at do
            n = n + 1
            at = body:find('"conversation_id":', at + 18, true)
        end
    end
    messages = messages + n
    if n == 0 then
        empty = empty + 1
        if mark == nil and #to_report == 0 then
            mark = sent
        end
    else
        mark = nil
        if mode == "lease" then
            t_last = now_s()
            window_polls = polls
        end
    end
    if mode ~= "poll" then
        maybe_stop()
    end
end

-- setup() and done() run in wrk's main Lua state; thread:get reads a thread's globals.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_id", #threads)
end

function done(summary, latency, requests)
    local sum = { polls = 0, reports = 0, messages = 0, empty = 0, other_status = 0,
                  window_polls = 0 }
    local first, last = math.huge, 0
    for _, t in ipairs(threads) do
        for name, _ in pairs(sum) do
            sum[name] = sum[name] + (t:get(name) or 0)
        end
        first = math.min(first, t:get("t_start") or math.huge)
        last = math.max(last, t:get("t_last") or 0)
    end
    local window = last > first and last - first or 0
    local e = summary.errors
    io.write(string.format(
        "BENCHRESULT requests=%d duration_s=%.3f polls=%d reports=%d messages=%d empty=%d " ..
        "window_s=%.3f window_polls=%d other_status=%d non2xx=%d connect=%d read=%d " ..
        "write=%d timeout=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
        summary.requests, summary.duration / 1e6, sum.polls, sum.reports, sum.messages,
        sum.empty, window, sum.window_polls, sum.other_status, e.status, e.connect, e.read,
        e.write, e.timeout, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
        latency:percentile(99) / 1e3, latency.max / 1e3))
end
