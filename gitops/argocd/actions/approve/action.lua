-- Approve the promotion of a LangfuseUpgrade with strategy.promotion: Manual.
-- Sets the annotation upgrades.lfu-operator.dev/approve: "true", which the operator treats like
-- spec.strategy.approved: true. The annotation, unlike the spec field, is not in Git, so the
-- Application does not go OutOfSync and a self-heal sync does not take the approval back.
-- Returns the modified object (Argo CD patches it).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["upgrades.lfu-operator.dev/approve"] = "true"
return obj
