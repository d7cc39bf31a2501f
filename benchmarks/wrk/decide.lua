-- POST /v1/decisions: the example body with a customer drawn from a large pool (so that
-- frequency caps rarely apply) and a request_id of its own for every request.
--
-- wrk -s benchmarks/wrk/decide.lua URL -- BODY_TEMPLATE API_KEY RUN_PREFIX CUSTOMERS [IDS_OUT]
--   BODY_TEMPLATE  a JSON file with the placeholders __CUSTOMER__ and __REQUEST__
--   API_KEY        sent as X-API-Key
--   RUN_PREFIX     makes request ids unique to this run
--   CUSTOMERS      size of the customer pool (customer ids bench-customer-1 .. N)
--   IDS_OUT        optional: write each answered decision_id to IDS_OUT.<thread number>

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local counter = 0
local template, prefix, customers, headers, ids_out

setup = common.setup
done = common.done

function init(args)
  template = common.read(args[1])
  prefix = args[3] .. "-" .. tostring(thread_id) .. "-"
  customers = tonumber(args[4])
  headers = {["Content-Type"] = "application/json", ["X-API-Key"] = args[2]}
  math.randomseed(os.time() * 100 + thread_id)
  if args[5] then
    ids_out = assert(io.open(args[5] .. "." .. tostring(thread_id), "w"))
    -- Defined only here: wrk reads response bodies only when a script asks for them.
    response = function(status, _, body)
      if status == 200 then
        local id = body:match('"decision_id"%s*:%s*"([^"]+)"')
        if id then
          ids_out:write(id, "\n")
          ids_out:flush()
        end
      end
    end
  end
end

function request()
  counter = counter + 1
  local body = template:gsub("__CUSTOMER__", "bench-customer-" .. math.random(1, customers), 1)
  body = body:gsub("__REQUEST__", prefix .. counter, 1)
  return wrk.format("POST", "/v1/decisions", headers, body)
end
