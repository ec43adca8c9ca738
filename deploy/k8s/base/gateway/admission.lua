-- Admission control for the SONIC gateway: poll a Prometheus query, compare with a threshold.
--
-- A task asks Prometheus (PROMETHEUS_URL, query ADMISSION_QUERY) every ADMISSION_INTERVAL_MS and
-- keeps the answer; the fetch `lua.sonic_overloaded` is true while it is above
-- ADMISSION_THRESHOLD.  If Prometheus cannot be read the gateway admits (fails open): refusing
-- every new job because monitoring is down would be worse than an overloaded site.

local DEFAULT_QUERY = "sum(rate(nv_inference_queue_duration_us[30s])) / " ..
    "sum(rate(nv_inference_exec_count[30s]) * 1000 + 0.001)"

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return v
end

-- host:port (http), or a whole URL: the NRP's and Purdue's Prometheus servers are https.
local prometheus = env("PROMETHEUS_URL", "")
if prometheus ~= "" and not prometheus:match("^https?://") then
    prometheus = "http://" .. prometheus
end
prometheus = prometheus:gsub("/+$", "")
local query = env("ADMISSION_QUERY", DEFAULT_QUERY)
local threshold = tonumber(env("ADMISSION_THRESHOLD", "0"))
local interval = tonumber(env("ADMISSION_INTERVAL_MS", "1000"))
local value = 0.0

local function urlencode(s)
    return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function poll()
    while true do
        if prometheus ~= "" and threshold > 0 then
            local ok, err = pcall(function()
                local hc = core.httpclient()
                local res = hc:get{url = prometheus .. "/api/v1/query?query=" ..
                    urlencode(query), timeout = 2000}
                if res and res.status == 200 and res.body then
                    -- {"status":"success","data":{"resultType":"vector","result":[{..."value":[t,"x"]}]}}
                    local v = res.body:match('"value":%[[^,]+,"([^"]+)"%]')
                    value = tonumber(v) or 0.0
                else
                    value = 0.0
                end
            end)
            if not ok then
                core.Warning("sonic admission: cannot read Prometheus: " .. tostring(err))
                value = 0.0
            end
        end
        core.msleep(interval)
    end
end

core.register_task(poll)

core.register_fetches("sonic_overloaded", function(txn)
    return threshold > 0 and value > threshold
end)

core.register_fetches("sonic_load", function(txn)
    return tostring(value)
end)
