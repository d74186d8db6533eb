-- wrk script of the side-by-side load harness (benches/side_by_side.rs):
-- POSTs a form to an OAuth endpoint over every connection and checks the
-- answers. The harness sets the environment; by hand, for example:
--
--   WRK_BODY='grant_type=client_credentials&scope=mcp%3Aread&resource=...' \
--   WRK_AUTH="Basic $(printf demo-service:demo-service-secret | base64)" \
--   wrk -t1 -c32 -d6s --latency -s benches/wrk/oauth.lua http://127.0.0.1:8080/token
--
-- Environment:
--   WRK_BODY    the form body; in refresh mode, the body up to and including
--               "refresh_token=" (the token is appended)
--   WRK_AUTH    value of an Authorization header (optional)
--   WRK_CHECK   "status" (default): wrk counts non-2xx/3xx answers itself and
--                 the body is not looked at (lightest for the load generator);
--               "active": an answer counts only when it is a 200 whose body
--                 says "active":true (introspection);
--               "refresh": refresh tokens rotate, see below
--   WRK_TOKENS  refresh mode: a file with one refresh token per line
--
-- Refresh mode: every request spends one refresh token and its answer
-- brings the next, so the file holds one token per connection (one chain
-- each) plus one: wrk 4 calls request() once before it connects, to check
-- the script, and that call spends a token too. The tokens wait in one
-- queue: wrk reads a connection's answer (response) before it writes that
-- connection's next request (request), so the queue never runs dry while
-- every answer brings a token. A chain whose answer is an error ends; a
-- request that finds the queue empty sends an invalid token, which the
-- server refuses and which is counted as failed.
--
-- At the end it prints one line, WRK_RESULT {json}, that the harness reads:
-- completed requests, duration, socket errors, non-2xx answers (status),
-- answers that failed the check (failed) and latency percentiles (µs).

local body = os.getenv("WRK_BODY") or ""
local auth = os.getenv("WRK_AUTH") or ""
local check = os.getenv("WRK_CHECK") or "status"

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
if auth ~= "" then
  wrk.headers["Authorization"] = auth
end

-- Per-thread (one Lua state per wrk thread); done() adds them up.
failed = 0

local threads = {}

-- The first answer that fails the check goes to stderr (the harness shows it).
local function fail(status, body)
  failed = failed + 1
  if failed == 1 then
    io.stderr:write(string.format("first failed answer: %d %s\n", status, body:sub(1, 300)))
  end
end

function setup(thread)
  table.insert(threads, thread)
end

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

if check == "active" then
  function response(status, headers, body)
    if status ~= 200 or not body:find('"active"%s*:%s*true') then
      fail(status, body)
    end
  end
elseif check == "refresh" then
  local file = os.getenv("WRK_TOKENS")
  local queue, head, tail = {}, 1, 0
  if file then
    for line in io.lines(file) do
      if line ~= "" then
        tail = tail + 1
        queue[tail] = line
      end
    end
  end

  function request()
    local token = "no-refresh-token-left"
    if head <= tail then
      token = queue[head]
      queue[head] = nil
      head = head + 1
    end
    return wrk.format(nil, nil, nil, body .. form_encode(token))
  end

  function response(status, headers, body)
    local token = status == 200 and body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      tail = tail + 1
      queue[tail] = token
    else
      fail(status, body)
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("failed") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"failed":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    e.status, bad, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
