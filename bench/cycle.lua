-- wrk script: cycles through the tokens of $TOKENS_FILE (one a line), one per request.
--   TOKEN_MODE=bearer (default): Authorization: Bearer <token>
--   TOKEN_MODE=query:            GET /?token=<token>
local file = os.getenv("TOKENS_FILE")
local mode = os.getenv("TOKEN_MODE") or "bearer"
local tokens = {}
for line in io.lines(file) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
if #tokens == 0 then error("no tokens in " .. tostring(file)) end

local i = 0
request = function()
  i = i % #tokens + 1
  if mode == "query" then
    return wrk.format("GET", "/?token=" .. tokens[i])
  end
  return wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. tokens[i] })
end
