-- gitops/argocd/health.lua against every sample in tests/gitops/samples (one per phase, plus
-- edge cases). Run by tests/gitops/run.sh: lua5.1 test_health.lua <repo root>
ROOT = arg[1] or "."
TESTS_DIR = ROOT .. "/tests/gitops"
local json = dofile(TESTS_DIR .. "/lib/json.lua")
local argocd = dofile(TESTS_DIR .. "/lib/argocd.lua")
local t = dofile(TESTS_DIR .. "/lib/testing.lua")

local HEALTH = ROOT .. "/gitops/argocd/health.lua"
local SAMPLES = TESTS_DIR .. "/samples/"

local function load(name)
  return json.read_file(SAMPLES .. name .. ".json")
end

-- "<phase>: <Ready message>", the format of every message with a phase and a Ready condition.
local function from_ready(name)
  local o = load(name)
  for _, c in ipairs(o.status.conditions) do
    if c.type == "Ready" then
      return (o.status.phase and (o.status.phase .. ": ") or "") .. c.message
    end
  end
  error(name .. ": no Ready condition")
end

local AWAIT = "AwaitingPromotion: v3 is Available; set spec.strategy.approved: true (or annotate "
  .. "upgrades.lfu-operator.dev/approve=true) to shift traffic"
local PAUSED = "Paused: spec.paused is true: nothing is changed until it is false"

local cases = {
  -- one per phase
  { "pending-invalid-spec", "Degraded", "Pending: invalid spec: spec.target.finalVersion: 3.28.0 is older than spec.target.version 3.29.0; downgrades are not supported" },
  { "provisioning", "Progressing", "Provisioning: v3 web prod-langfuse-web: 1/2 available; see `kubectl logs deploy/prod-langfuse-web`" },
  { "awaiting-promotion", "Suspended", AWAIT },
  { "shifting-traffic", "Progressing", "ShiftingTraffic: waiting for the Service endpoints: 2 ready v3 web, 1 other" },
  { "draining", "Progressing", from_ready("draining") },
  { "migrating", "Progressing", "Migrating: background migrations running: 2/4 (63%)" },
  { "verifying", "Progressing", "Verifying: ClickHouse counts not read yet" },
  { "retiring-source", "Progressing", "RetiringSource: verified; v2 is kept until 2026-11-21T11:16:00Z (retireSourceAfter 1h)" },
  { "finalizing", "Progressing", "Finalizing: rolling v3 to 3.40.0" },
  { "handing-off", "Progressing", "HandingOff: moving the Service prod-langfuse to the chart's web pods" },
  { "migrating-data-model", "Progressing", "MigratingDataModel: historic backfill: M1 finished; M2 backfill 3/10 chunks; M3 waiting; M4 waiting" },
  { "completed", "Healthy", "Completed: to-v3 is complete: v3 3.29.0 serves prod-langfuse, v2 prod-langfuse kept at 0 replicas" },
  { "paused", "Suspended", PAUSED },
  { "blocked-selector-reverted", "Degraded", from_ready("blocked-selector-reverted") },
  { "degraded-counts-mismatch", "Degraded", "Degraded: ClickHouse lacks rows Postgres has up to the cut-off (traces: 2000 in Postgres, 1990 in ClickHouse); v2 is kept" },
  { "rolling-back", "Progressing", "RollingBack: restoring the Service selector to v2" },
  { "rolled-back", "Degraded", "RolledBack: rolled back to v2: spec.abort is true; delete this object, or create a new one to try again" },
  { "failed", "Degraded", from_ready("failed") },
  -- edge cases
  { "no-status", "Progressing", "waiting for the operator to report status" },
  { "empty-status", "Progressing", "waiting for the operator to report status" },
  { "stale-generation", "Progressing", "waiting for the operator to observe generation 3 (status is from generation 2)" },
  { "ready-condition-stale", "Progressing", "waiting for the operator to observe generation 2 (the Ready condition is from generation 1)" },
  { "awaiting-promotion-annotated", "Suspended", AWAIT },
  { "awaiting-promotion-spec-approved", "Suspended", AWAIT },
  { "manual-provisioning", "Progressing", "Provisioning: v3 worker prod-langfuse-worker: 0/1 available; see `kubectl logs deploy/prod-langfuse-worker`" },
  { "manual-draining-approved", "Progressing", from_ready("manual-draining-approved") },
  { "paused-awaiting", "Suspended", PAUSED },
  { "blocked-source-scaled-up", "Degraded", from_ready("blocked-source-scaled-up") },
  { "blocked-abort-too-late", "Degraded", from_ready("blocked-abort-too-late") },
  { "being-deleted", "Progressing", "being deleted: the operator rolls an unfinished upgrade back, or only releases the v3 Deployments of a finished one" },
  { "phase-missing-stalled", "Degraded", "preflight failed, nothing was changed: postgres: server 11.22 is older than 12 (waivable: PostgresVersion)" },
}

local covered = {}
for _, c in ipairs(cases) do
  local name, want_status, want_message = c[1], c[2], c[3]
  covered[name] = true
  t.guard(name, function()
    local hs = argocd.health(HEALTH, load(name))
    t.eq(name .. ": status", hs.status, want_status)
    t.eq(name .. ": message", hs.message, want_message)
  end)
end

-- Variants built from the samples: the phase alone decides when the kstatus conditions are
-- missing (a status written by an older operator, or by hand).
for _, phase in ipairs({ "Blocked", "Degraded", "Failed", "RolledBack" }) do
  local name = "phase " .. phase .. " without Stalled"
  t.guard(name, function()
    local o = load("blocked-selector-reverted")
    o.status.phase = phase
    local kept = {}
    for _, c in ipairs(o.status.conditions) do
      if c.type ~= "Stalled" then
        kept[#kept + 1] = c
      end
    end
    o.status.conditions = kept
    local hs = argocd.health(HEALTH, o)
    t.eq(name .. ": status", hs.status, "Degraded")
  end)
end
t.guard("phase only, no conditions", function()
  local o = load("migrating")
  o.status.conditions = nil
  local hs = argocd.health(HEALTH, o)
  t.eq("phase only: status", hs.status, "Progressing")
  t.eq("phase only: message", hs.message, "Migrating")
end)

-- Every sample has a case, and every phase of the CRD's status.phase enum has a sample.
for file in io.popen('ls "' .. SAMPLES .. '"'):lines() do
  local name = string.match(file, "^(.*)%.json$")
  if name then
    t.check("sample " .. file .. " has a health case", covered[name])
  end
end

local phases_in_samples = {}
for name in pairs(covered) do
  local o = load(name)
  if o.status and o.status.phase then
    phases_in_samples[o.status.phase] = true
  end
end
local crd = argocd.read(ROOT .. "/crds/langfuseupgrades.yaml")
local enum = string.match(crd, "\n%s+phase:\n%s+enum:\n(.-)\n%s+nullable:")
t.check("status.phase enum found in the CRD", enum ~= nil)
local n = 0
for phase in string.gmatch(enum or "", "%- (%a+)") do
  if phase ~= "null" then
    n = n + 1
    t.check("phase " .. phase .. " has a sample", phases_in_samples[phase])
  end
end
t.eq("phases in the CRD enum", n, 18)

-- The health of an object is a function of the object: running twice gives the same answer and
-- the script does not modify what it was given.
t.guard("health.lua is pure", function()
  local o = load("migrating")
  local before = json.encode(o)
  local a = argocd.health(HEALTH, o)
  local b = argocd.health(HEALTH, o)
  t.check("same result twice", a.status == b.status and a.message == b.message)
  t.eq("input unchanged", json.encode(o), before)
end)

-- The sandbox is real: a script using string.* fails here as it would in Argo CD.
t.guard("sandbox rejects string library", function()
  local tmp = os.tmpname()
  local fh = io.open(tmp, "w")
  fh:write('return { status = string.upper("healthy"), message = ("x"):rep(2) }')
  fh:close()
  local ok = pcall(argocd.health, tmp, load("completed"))
  os.remove(tmp)
  t.check("string.upper is unavailable in the sandbox", not ok)
end)

t.finish("health.lua")
