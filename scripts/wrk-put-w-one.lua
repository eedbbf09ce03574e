-- 100-byte PUTs at w=one, each to a new key; counts answers by status.
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = 0
  statuses = {}
end
function request()
  counter = counter + 1
  local path = "/v1/buckets/bench/keys/t" .. id .. "-" .. counter .. "?w=one"
  return wrk.format("PUT", path, nil, string.rep("x", 100))
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d: %d\n", k, v)) end
end
