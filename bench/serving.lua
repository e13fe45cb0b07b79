-- wrk script of bench/serving.py: GET /recommend/{user}?n=10 for users read from USERS
-- (one id a line), picked at random; the summary line comes
-- from wrk_summary.lua.
-- With RATE set, each of the CONNECTIONS connections waits CONNECTIONS / RATE seconds on
-- average between its requests, so together they send about RATE requests a second: always
-- that long with ARRIVALS=paced, an exponentially distributed time with ARRIVALS=poisson (the
-- connections then send independently, as separate visitors do, instead of in step).
local rate = tonumber(os.getenv("RATE") or "0")
local connections = tonumber(os.getenv("CONNECTIONS") or "1")
local poisson = os.getenv("ARRIVALS") == "poisson"
local users = {}
for line in io.lines(os.getenv("USERS")) do users[#users + 1] = line end
math.randomseed(os.time())

request = function()
  return wrk.format("GET", "/recommend/" .. users[math.random(#users)] .. "?n=10")
end

if rate > 0 then
  delay = function()
    local mean = 1000 * connections / rate
    if poisson then
      return -math.log(1 - math.random()) * mean
    end
    return mean
  end
end

dofile(os.getenv("WRK_SUMMARY"))
