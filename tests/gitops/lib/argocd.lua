-- Runs the Argo CD scripts under gitops/argocd/ the way Argo CD runs them (util/lua/lua.go,
-- v3.5): a fresh state per call, the object in the global `obj`, and for scripts from argocd-cm
-- only the base, table and a "safe" os library (os.time, os.date) open: no string, math or io.
-- Here: a fresh environment table per call (setfenv), the same libraries, and string methods
-- switched off while the script runs (in gopher-lua they exist only once the string library is
-- opened, which Argo CD does not do for argocd-cm scripts). What a script returns goes through
-- the JSON encoding Argo CD uses (gopher-json rules) and back, and action results through
-- Argo CD's cleanReturnedObj, so the tests see what Argo CD would see.

local json = dofile(TESTS_DIR .. "/lib/json.lua")

local M = {}

local BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawset",
  "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
  "_VERSION",
}

local function copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = copy(x)
  end
  return out
end
M.copy = copy

local function read(path)
  local fh, err = io.open(path, "r")
  if not fh then
    error(err, 0)
  end
  local text = fh:read("*a")
  fh:close()
  return text
end
M.read = read

local function sandbox(obj)
  local env = {}
  for _, name in ipairs(BASE) do
    env[name] = _G[name]
  end
  env.table = copy(table)
  env.os = { time = os.time, date = os.date }
  env.obj = obj
  env._G = env
  return env
end

-- Run one script file against a copy of obj; returns the decoded JSON value of what it returned.
function M.run(path, obj)
  local chunk, err = loadstring(read(path), "@" .. path)
  if not chunk then
    error(err, 0)
  end
  setfenv(chunk, sandbox(json.decode(json.encode(obj))))
  local string_mt = getmetatable("")
  local saved_index = string_mt.__index
  string_mt.__index = nil -- no ("x"):sub() either
  local ok, result = pcall(chunk)
  string_mt.__index = saved_index
  if not ok then
    error(path .. ": " .. tostring(result), 0)
  end
  if type(result) ~= "table" then
    error(path .. ": expect table output from Lua script, not " .. type(result), 0)
  end
  return json.decode(json.encode(result), path .. " output")
end

local VALID_HEALTH = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

-- ExecuteHealthLua: {status, message}; an invalid status would become Unknown in Argo CD,
-- which the tests treat as a failure.
function M.health(path, obj)
  local hs = M.run(path, obj)
  if not VALID_HEALTH[hs.status] then
    error(path .. ": invalid health status " .. tostring(hs.status), 0)
  end
  if hs.message ~= nil and type(hs.message) ~= "string" then
    error(path .. ": message is not a string", 0)
  end
  return hs
end

-- ExecuteResourceActionDiscovery: name -> {disabled = bool, ...}; actions are enabled by default.
function M.discover(path, obj)
  local raw = M.run(path, obj)
  local out = {}
  for name, spec in pairs(raw) do
    if type(name) ~= "string" then
      error(path .. ": action names must be strings", 0)
    end
    local disabled = false
    if type(spec) == "table" and type(spec.disabled) == "boolean" then
      disabled = spec.disabled
    end
    out[name] = { disabled = disabled, displayName = type(spec) == "table" and spec.displayName or nil }
  end
  return out
end

-- cleanReturnedObj: an empty table comes back from gopher-json as [], so where the original had
-- an object Argo CD puts the original back.
local function clean(new, old)
  for k, v in pairs(new) do
    local was = old[k]
    if type(v) == "table" and type(was) == "table" then
      if next(v) == nil and next(was) ~= nil and was[1] == nil then
        new[k] = was
      else
        clean(v, was)
      end
    end
  end
  return new
end

-- ExecuteResourceAction, old style: the script returns the modified object, Argo CD patches it.
function M.action(path, obj)
  local out = M.run(path, obj)
  if out[1] ~= nil then
    error(path .. ": returned a list (new-style action); these actions return the object", 0)
  end
  return clean(out, obj)
end

-- Paths where two JSON values differ, as "a.b.c" strings, sorted.
function M.diff(a, b, prefix, out)
  out = out or {}
  prefix = prefix or ""
  -- a missing table on one side counts as empty, so added or removed leaves are listed one by one
  if type(a) == "table" and b == nil then
    b = {}
  elseif type(b) == "table" and a == nil then
    a = {}
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then
      out[#out + 1] = prefix
    end
    return out
  end
  local keys = {}
  for k in pairs(a) do
    keys[k] = true
  end
  for k in pairs(b) do
    keys[k] = true
  end
  local sorted = {}
  for k in pairs(keys) do
    sorted[#sorted + 1] = k
  end
  table.sort(sorted, function(x, y)
    return tostring(x) < tostring(y)
  end)
  for _, k in ipairs(sorted) do
    local p = prefix == "" and tostring(k) or (prefix .. "." .. tostring(k))
    M.diff(a[k], b[k], p, out)
  end
  return out
end

return M
