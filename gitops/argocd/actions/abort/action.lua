-- Abort a LangfuseUpgrade: spec.abort = true. The operator rolls back to v2 (old Service
-- selector, v2 replicas, v3 Deployments deleted) and ends in RolledBack. Possible until v2 is
-- retired; after that the operator refuses (Blocked, reason AbortTooLate), which is why the
-- action is disabled then. Returns the modified object.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.abort = true
return obj
