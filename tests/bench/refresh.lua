-- wrk script: chained refresh_token rotations. Each answer's refresh token
-- is the next request's, so no token is ever sent twice (a reuse would
-- revoke its grant; one inside the grace window would be answered by the
-- cheaper replay path). setup() deals the seed tokens (RT_FILE, one per
-- line) out to the RT_THREADS threads, disjoint: wrk runs each thread's
-- init() before the next thread's setup(). Each connection needs a seed,
-- plus one for thread 1, whose first request() wrk only inspects.
local threads = {}
local queue = {}
local seen = {}   -- every token queued so far: none goes out twice
dups = 0          -- answers naming a token already seen (a grace-window replay)
local client_id = os.getenv("RT_CLIENT")

function setup(thread)
  table.insert(threads, thread)
  local k, n = #threads, tonumber(os.getenv("RT_THREADS"))
  local mine, i = {}, 0
  for line in io.lines(os.getenv("RT_FILE")) do
    if i % n == k - 1 then table.insert(mine, line) end
    i = i + 1
  end
  thread:set("seed", table.concat(mine, ","))
end

function init(args)
  for t in string.gmatch(seed, "[^,]+") do table.insert(queue, t); seen[t] = true end
end

request = function()
  local t = table.remove(queue, 1) or "exhausted"
  return wrk.format("POST", "/token", { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "grant_type=refresh_token&client_id=" .. client_id .. "&refresh_token=" .. t)
end

response = function(status, headers, body)
  local t = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if t and seen[t] then dups = dups + 1 elseif t then table.insert(queue, t); seen[t] = true end
end

function done(summary, latency, requests)
  local d = 0
  for _, th in ipairs(threads) do d = d + (th:get("dups") or 0) end
  io.write(string.format("REFRESH_DUPS %d\n", d))
end
