-- wrk script: "a reader's 20 newest conversations", a random seeded reader per request,
-- the same page asked of Lectern or of PostGraphile (bench/peer.sh):
--
--   WRK_TARGET=lectern|postgraphile WRK_READERS=FILE wrk -s bench/wrk/history.lua URL
--
-- FILE holds one "user id<TAB>access token" line per reader (`lectern-bench tokens`).
-- Lectern is asked as the reader (bearer token, session checked); PostGraphile, which has
-- no authentication here, by the reader's id. Every answer is checked: HTTP 200, no
-- `errors`, and exactly 20 conversations; anything else counts as a failure.

local target = os.getenv("WRK_TARGET") or "lectern"
local readers = {}
for line in io.lines(os.getenv("WRK_READERS")) do
  local id, token = line:match("^([^\t]+)\t([^\t]+)$")
  readers[#readers + 1] = { id = id, token = token }
end

local LECTERN = '{"query":"{ conversations(first: 20) { edges { cursor node { id title updatedAt } } pageInfo { hasNextPage endCursor } } }"}'
local POSTGRAPHILE = '{"query":"query($u: String!) { allConversations(condition: {userId: $u}, first: 20, orderBy: UPDATED_AT_DESC) { edges { cursor node { id title updatedAt } } pageInfo { hasNextPage endCursor } } }","variables":{"u":"%s"}}'

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  checked = 0
  failures = 0
end

function request()
  local reader = readers[math.random(#readers)]
  if target == "lectern" then
    return wrk.format("POST", "/graphql", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. reader.token,
    }, LECTERN)
  end
  return wrk.format("POST", "/graphql", { ["Content-Type"] = "application/json" },
    string.format(POSTGRAPHILE, reader.id))
end

function response(status, headers, body)
  checked = checked + 1
  local _, conversations = body:gsub('"cursor"', "")
  if status ~= 200 or conversations ~= 20 or body:find('"errors"', 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local checked_all, failed_all = 0, 0
  for _, thread in ipairs(threads) do
    checked_all = checked_all + thread:get("checked")
    failed_all = failed_all + thread:get("failures")
  end
  -- One machine-readable line for bench/peer.sh.
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f checked=%d failures=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    checked_all, failed_all,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
