-- Prints what health.lua, discovery.lua and every action.lua return for every sample, one line
-- each, as canonical JSON. tests/gitops/run.sh diffs this (PUC Lua 5.1 in the sandbox of
-- lib/argocd.lua) against the same listing from gopher-lua, the interpreter Argo CD embeds
-- (tests/gitops/argocdlua). Usage: lua5.1 dump.lua <repo root>
ROOT = arg[1] or "."
TESTS_DIR = ROOT .. "/tests/gitops"
local json = dofile(TESTS_DIR .. "/lib/json.lua")
local argocd = dofile(TESTS_DIR .. "/lib/argocd.lua")

local dir = ROOT .. "/gitops/argocd/"
local names = {}
for file in io.popen('ls "' .. TESTS_DIR .. '/samples"'):lines() do
  local name = string.match(file, "^(.*)%.json$")
  if name then
    names[#names + 1] = name
  end
end
table.sort(names)

for _, name in ipairs(names) do
  local obj = json.read_file(TESTS_DIR .. "/samples/" .. name .. ".json")
  print(name .. "\thealth\t" .. json.encode(argocd.run(dir .. "health.lua", obj)))
  print(name .. "\tdiscovery\t" .. json.encode(argocd.run(dir .. "actions/discovery.lua", obj)))
  for _, action in ipairs({ "abort", "approve", "pause", "resume" }) do
    print(name .. "\taction:" .. action .. "\t" .. json.encode(argocd.run(dir .. "actions/" .. action .. "/action.lua", obj)))
  end
end
