-- gitops/argocd/actions: which actions discovery.lua enables for each sample, and what each
-- action.lua changes (exactly one field, nothing else). Run by tests/gitops/run.sh:
--   lua5.1 test_actions.lua <repo root>
ROOT = arg[1] or "."
TESTS_DIR = ROOT .. "/tests/gitops"
local json = dofile(TESTS_DIR .. "/lib/json.lua")
local argocd = dofile(TESTS_DIR .. "/lib/argocd.lua")
local t = dofile(TESTS_DIR .. "/lib/testing.lua")

local ACTIONS = ROOT .. "/gitops/argocd/actions/"
local DISCOVERY = ACTIONS .. "discovery.lua"
local SAMPLES = TESTS_DIR .. "/samples/"
local NAMES = { "approve", "pause", "resume", "abort" }
local APPROVE = "upgrades.lfu-operator.dev/approve"

local function load(name)
  return json.read_file(SAMPLES .. name .. ".json")
end

local function enabled_set(actions)
  local on = {}
  for _, name in ipairs(NAMES) do
    if actions[name] and not actions[name].disabled then
      on[#on + 1] = name
    end
  end
  return table.concat(on, ",")
end

-- sample -> the actions enabled, in the order approve,pause,resume,abort
local cases = {
  { "pending-invalid-spec", "pause,abort" },
  { "provisioning", "pause,abort" },
  { "awaiting-promotion", "approve,pause,abort" },
  { "shifting-traffic", "pause,abort" },
  { "draining", "pause,abort" },
  { "migrating", "pause,abort" },
  { "verifying", "pause,abort" },
  { "retiring-source", "pause,abort" },
  { "finalizing", "pause" }, -- v2 retired: the operator would refuse an abort
  { "completed", "" },
  { "handing-off", "pause" }, -- v2 retired: no abort; the handoff honours pause
  { "migrating-data-model", "pause" }, -- completed: no abort; the data-model road honours pause
  { "paused", "resume,abort" },
  { "blocked-selector-reverted", "pause,abort" },
  { "degraded-counts-mismatch", "pause,abort" },
  { "rolling-back", "" }, -- spec.abort is true: the rollback ignores pause
  { "rolled-back", "" },
  { "failed", "pause,abort" },
  { "no-status", "pause,abort" },
  { "empty-status", "pause,abort" },
  { "stale-generation", "" },
  { "ready-condition-stale", "" },
  { "awaiting-promotion-annotated", "pause,abort" }, -- already approved by the annotation
  { "awaiting-promotion-spec-approved", "pause,abort" },
  { "manual-provisioning", "approve,pause,abort" }, -- Manual: may be approved ahead of time
  { "manual-draining-approved", "pause,abort" },
  { "paused-awaiting", "approve,resume,abort" },
  { "blocked-source-scaled-up", "pause" },
  { "blocked-abort-too-late", "" },
  { "being-deleted", "" },
  { "phase-missing-stalled", "pause,abort" },
}

local covered = {}
for _, c in ipairs(cases) do
  local name, want = c[1], c[2]
  covered[name] = true
  t.guard(name, function()
    local actions = argocd.discover(DISCOVERY, load(name))
    local offered = 0
    for _ in pairs(actions) do
      offered = offered + 1
    end
    t.eq(name .. ": four actions offered", offered, #NAMES)
    for _, a in ipairs(NAMES) do
      t.check(name .. ": offers " .. a, actions[a] ~= nil)
      t.check(name .. ": " .. a .. " has a display name", actions[a] and actions[a].displayName ~= nil)
    end
    t.eq(name .. ": enabled", enabled_set(actions), want)
  end)
end

for file in io.popen('ls "' .. SAMPLES .. '"'):lines() do
  local name = string.match(file, "^(.*)%.json$")
  if name then
    t.check("sample " .. file .. " has an actions case", covered[name])
  end
end

-- Every offered action has its action.lua, and there is no other.
for _, a in ipairs(NAMES) do
  local fh = io.open(ACTIONS .. a .. "/action.lua", "r")
  t.check("actions/" .. a .. "/action.lua exists", fh ~= nil)
  if fh then
    fh:close()
  end
end
for dir in io.popen('ls "' .. ACTIONS .. '"'):lines() do
  if not string.match(dir, "%.lua$") then
    local known = false
    for _, a in ipairs(NAMES) do
      known = known or a == dir
    end
    t.check("actions/" .. dir .. " is offered by discovery.lua", known)
  end
end

-- run an action; check exactly `path` changed to `want`; return the new object
local function apply(label, action, obj, path, want)
  local out = argocd.action(ACTIONS .. action .. "/action.lua", obj)
  local changed = argocd.diff(obj, out)
  t.eq(label .. ": changed fields", table.concat(changed, " "), path)
  local v
  if string.find(path, "^metadata%.annotations%.") then
    -- annotation keys contain dots: look them up directly
    v = out.metadata.annotations[string.sub(path, #"metadata.annotations." + 1)]
  else
    v = out
    for part in string.gmatch(path, "[^.]+") do
      if type(v) == "table" then
        v = v[part]
      else
        v = nil
      end
    end
  end
  t.eq(label .. ": new value", v, want)
  t.eq(label .. ": kind kept", out.kind, "LangfuseUpgrade")
  t.eq(label .. ": name kept", out.metadata.name, obj.metadata.name)
  return out
end

local function enabled_after(obj)
  return enabled_set(argocd.discover(DISCOVERY, obj))
end

t.guard("approve", function()
  local before = load("awaiting-promotion")
  t.check("sample has no annotations", before.metadata.annotations == nil)
  local after = apply("approve", "approve", before, "metadata.annotations." .. APPROVE, "true")
  t.eq("approve: spec untouched (no drift against Git)", json.encode(after.spec), json.encode(before.spec))
  t.eq("approve: then approve is disabled", enabled_after(after), "pause,abort")
  -- still AwaitingPromotion until the operator reconciles; then health moves on
  t.eq("approve: health before the operator acts", argocd.health(ROOT .. "/gitops/argocd/health.lua", after).status, "Suspended")

  local annotated = load("awaiting-promotion")
  annotated.metadata.annotations = { ["example.com/owner"] = "team-a" }
  local out = apply("approve with other annotations", "approve", annotated, "metadata.annotations." .. APPROVE, "true")
  t.eq("approve: other annotations kept", out.metadata.annotations["example.com/owner"], "team-a")

  local early = apply("approve ahead of time", "approve", load("manual-provisioning"), "metadata.annotations." .. APPROVE, "true")
  t.eq("approve ahead of time: then disabled", enabled_after(early), "pause,abort")
end)

t.guard("pause and resume", function()
  local running = load("migrating")
  local paused = apply("pause", "pause", running, "spec.paused", true)
  t.eq("pause: then resume and abort", enabled_after(paused), "resume,abort")
  local resumed = apply("resume", "resume", paused, "spec.paused", false)
  t.eq("resume: back to the same actions", enabled_after(resumed), enabled_after(running))
  apply("resume a paused sample", "resume", load("paused"), "spec.paused", false)
  -- pausing while awaiting approval keeps approve available
  local paused_waiting = apply("pause while awaiting", "pause", load("awaiting-promotion"), "spec.paused", true)
  t.eq("pause while awaiting: approve stays", enabled_after(paused_waiting), "approve,resume,abort")
end)

t.guard("abort", function()
  local aborted = apply("abort", "abort", load("draining"), "spec.abort", true)
  t.eq("abort: nothing else to do while rolling back", enabled_after(aborted), "")
  local before_approval = apply("abort while awaiting", "abort", load("awaiting-promotion"), "spec.abort", true)
  t.eq("abort while awaiting: approve disabled too", enabled_after(before_approval), "")
end)

-- Variants: nothing is offered while the object is being deleted, even when it is paused
-- (deletion rolls back or releases regardless of spec.paused).
t.guard("being deleted and paused", function()
  local o = load("being-deleted")
  o.spec.paused = true
  t.eq("being deleted and paused: enabled", enabled_after(o), "")
end)

-- Actions are plain spec/metadata edits: status, conditions and every other field come back
-- exactly as they went in, for every sample and action (the diff in apply() covers this too).
for _, c in ipairs(cases) do
  local name = c[1]
  t.guard(name .. ": actions touch only their field", function()
    local o = load(name)
    for _, a in ipairs(NAMES) do
      local out = argocd.action(ACTIONS .. a .. "/action.lua", o)
      local changed = argocd.diff(o, out)
      t.check(name .. ": " .. a .. " changes at most one field", #changed <= 1, table.concat(changed, " "))
      t.eq(name .. ": " .. a .. " keeps status", json.encode(out.status), json.encode(o.status))
    end
  end)
end

t.finish("actions")
