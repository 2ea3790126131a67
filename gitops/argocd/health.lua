-- Argo CD health check for upgrades.lfu-operator.dev/LangfuseUpgrade.
-- Install: argocd-cm key resource.customizations.health.upgrades.lfu-operator.dev_LangfuseUpgrade
-- (gitops/argocd/argocd-cm.yaml is this file, rendered by gitops/argocd/render-argocd-cm.sh).
--
-- Argo CD runs it in gopher-lua (Lua 5.1) with the object in the global `obj` and, for a
-- script from argocd-cm, only the base, table and a safe os library open: no string.* or
-- math.* here (tests/gitops/run.sh runs it in the same sandbox). It returns {status, message}.
--
--   Progressing  no status yet, a generation the operator has not observed yet, being deleted,
--                or any phase that is moving (Provisioning ... Finalizing, RollingBack)
--   Healthy      Ready=True (phase Completed)
--   Suspended    Paused (spec.paused), or AwaitingPromotion (waits for a person to approve)
--   Degraded     Stalled=True, or phase Blocked / Degraded / Failed / RolledBack
--                (message: the Ready condition's, which says what to do)

local hs = { status = "Progressing", message = "" }

local function find(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

-- "Phase: message", or whichever of the two exists.
local function describe(phase, c)
  local text = ""
  if c ~= nil and c.message ~= nil then
    text = tostring(c.message)
  end
  if phase == nil then
    return text
  end
  if text == "" then
    return phase
  end
  return phase .. ": " .. text
end

local metadata = obj.metadata or {}
if metadata.deletionTimestamp ~= nil then
  hs.message = "being deleted: the operator rolls an unfinished upgrade back, or only releases the v3 Deployments of a finished one"
  return hs
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.message = "waiting for the operator to report status"
  return hs
end

-- kstatus rule: a status computed from an older spec says nothing about the current one.
local generation = tonumber(metadata.generation)
if generation ~= nil then
  local observed = tonumber(status.observedGeneration)
  if observed == nil or observed < generation then
    hs.message = "waiting for the operator to observe generation " .. generation
    if observed ~= nil then
      hs.message = hs.message .. " (status is from generation " .. observed .. ")"
    end
    return hs
  end
end

local phase = status.phase
local ready = find(status.conditions, "Ready")
local stalled = find(status.conditions, "Stalled")
local reconciling = find(status.conditions, "Reconciling")

-- The same rule for the Ready condition itself (each condition records its observedGeneration).
if generation ~= nil and ready ~= nil then
  local ready_observed = tonumber(ready.observedGeneration)
  if ready_observed ~= nil and ready_observed < generation then
    hs.message = "waiting for the operator to observe generation " .. generation
      .. " (the Ready condition is from generation " .. ready_observed .. ")"
    return hs
  end
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(phase, ready)
  return hs
end

if phase == "Paused" or (ready ~= nil and ready.reason == "Paused") then
  hs.status = "Suspended"
  hs.message = describe(phase or "Paused", ready)
  return hs
end

if phase == "AwaitingPromotion" then
  hs.status = "Suspended"
  hs.message = describe(phase, ready)
  return hs
end

local degraded_phases = { Blocked = true, Degraded = true, Failed = true, RolledBack = true }
if (stalled ~= nil and stalled.status == "True") or (phase ~= nil and degraded_phases[phase]) then
  hs.status = "Degraded"
  if ready ~= nil then
    hs.message = describe(phase, ready)
  else
    hs.message = describe(phase, stalled)
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(phase, ready)
else
  hs.message = describe(phase, reconciling)
end
return hs
