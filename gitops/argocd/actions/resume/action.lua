-- Resume a paused LangfuseUpgrade: spec.paused = false. Returns the modified object.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.paused = false
return obj
