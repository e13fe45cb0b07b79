-- wrk script of bench/ingest.py: POST /events batches of BATCH random views
-- (users w1..w100000, items i1..i10000); the summary line comes
-- from wrk_summary.lua.
local batch = tonumber(os.getenv("BATCH") or "100")
math.randomseed(os.time())

request = function()
  local parts = {}
  for i = 1, batch do
    parts[i] = string.format('{"user_id":"w%d","item_id":"i%d","action":"view"}',
      math.random(100000), math.random(10000))
  end
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"},
    '{"events":[' .. table.concat(parts, ",") .. ']}')
end

dofile(os.getenv("WRK_SUMMARY"))
