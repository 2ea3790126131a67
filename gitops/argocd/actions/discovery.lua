-- Argo CD resource actions for upgrades.lfu-operator.dev/LangfuseUpgrade: which are offered,
-- and which are enabled for this object. Install: argocd-cm key
-- resource.customizations.actions.upgrades.lfu-operator.dev_LangfuseUpgrade (discovery.lua plus
-- one definition per action; see gitops/argocd/argocd-cm.yaml).
-- Same sandbox as health.lua: gopher-lua, base + table + safe os only, object in `obj`.
--
--   approve  Manual promotion, traffic not shifted yet, not approved yet (spec.strategy.approved
--            or the annotation upgrades.lfu-operator.dev/approve: "true"), or phase AwaitingPromotion
--   pause    not paused, not finished (Completed, RolledBack), not aborting, not being deleted
--   resume   spec.paused is true
--   abort    not finished, not already aborting, not being deleted, v2 not retired yet and the
--            road not completed (after that the operator refuses to roll back: Blocked, reason
--            AbortTooLate; the handoff and the data-model road come after completion)

local APPROVE_ANNOTATION = "upgrades.lfu-operator.dev/approve"

local actions = {}
actions["approve"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-check", ["displayName"] = "Approve promotion" }
actions["pause"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-pause", ["displayName"] = "Pause" }
actions["resume"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-play", ["displayName"] = "Resume" }
actions["abort"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-undo", ["displayName"] = "Abort (roll back to v2)" }

local metadata = obj.metadata or {}
local spec = obj.spec or {}
local strategy = spec.strategy or {}
local status = obj.status or {}
local annotations = metadata.annotations or {}
local phase = status.phase

local function condition_true(type_)
  if status.conditions == nil then
    return false
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c.status == "True"
    end
  end
  return false
end

local deleting = metadata.deletionTimestamp ~= nil
local finished = phase == "Completed" or phase == "RolledBack"
local paused = spec.paused == true
local aborting = spec.abort == true
local approved = strategy.approved == true or annotations[APPROVE_ANNOTATION] == "true"
local shifted = status.trafficShiftedAt ~= nil or condition_true("TrafficShifted")
local retired = status.sourceRetiredAt ~= nil or condition_true("SourceRetired")
local completed = status.completedAt ~= nil

local active = not deleting and not finished and not aborting

if active and not approved then
  if phase == "AwaitingPromotion" or (strategy.promotion == "Manual" and not shifted) then
    actions["approve"]["disabled"] = false
  end
end

if active and not paused then
  actions["pause"]["disabled"] = false
end

if paused and not deleting then
  actions["resume"]["disabled"] = false
end

if active and not retired and not completed then
  actions["abort"]["disabled"] = false
end

return actions
