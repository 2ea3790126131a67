-- Pause a LangfuseUpgrade: spec.paused = true. The operator then changes nothing (phase Paused,
-- Argo CD health Suspended) until it is false again. Returns the modified object.
-- spec.paused is usually in Git: see gitops/README.md for keeping self-heal from undoing it.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.paused = true
return obj
