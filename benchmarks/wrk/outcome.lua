-- POST /v1/outcomes for decisions made beforehand, each request with an idempotency key of
-- its own (so every request stores a new outcome); the decisions are used round robin.
--
-- wrk -s benchmarks/wrk/outcome.lua URL -- BODY_TEMPLATE API_KEY RUN_PREFIX IDS_FILE
--   BODY_TEMPLATE  a JSON file with the placeholders __DECISION__ and __KEY__
--   API_KEY        sent as X-API-Key
--   RUN_PREFIX     makes idempotency keys unique to this run
--   IDS_FILE       decision ids, one per line

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local counter = 0
local template, prefix, headers
local ids = {}

setup = common.setup
done = common.done

function init(args)
  template = common.read(args[1])
  prefix = args[3] .. "-" .. tostring(thread_id) .. "-"
  headers = {["Content-Type"] = "application/json", ["X-API-Key"] = args[2]}
  for line in io.lines(args[4]) do
    if #line > 0 then table.insert(ids, line) end
  end
  assert(#ids > 0, "no decision ids in " .. args[4])
  -- Threads start at different places in the list.
  counter = (thread_id - 1) * 7919
end

function request()
  counter = counter + 1
  local body = template:gsub("__DECISION__", ids[counter % #ids + 1], 1)
  body = body:gsub("__KEY__", prefix .. counter, 1)
  return wrk.format("POST", "/v1/outcomes", headers, body)
end
