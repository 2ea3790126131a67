-- Turns a sample object (tests/gitops/samples/*.json) into what tests/gitops/apply-examples.sh
-- sends to the apiserver to check the sample against the real CRD:
--   lua5.1 sample-manifest.lua <repo root> <sample.json> <name> object   the object to create
--        (spec and annotations only; server-owned metadata dropped)
--   lua5.1 sample-manifest.lua <repo root> <sample.json> <name> status   {"status": ...} for a
--        merge patch of the status subresource (prints nothing when the sample has no status)
ROOT, path, name, what = arg[1], arg[2], arg[3], arg[4]
TESTS_DIR = ROOT .. "/tests/gitops"
local json = dofile(TESTS_DIR .. "/lib/json.lua")
local o = json.read_file(path)

if what == "object" then
  io.write(json.encode({
    apiVersion = o.apiVersion,
    kind = o.kind,
    metadata = { name = name, annotations = o.metadata.annotations },
    spec = o.spec,
  }), "\n")
elseif what == "status" then
  -- an empty status object is a valid sample ("{}"), but json.encode writes an empty table as []
  if o.status ~= nil and next(o.status) ~= nil then
    io.write(json.encode({ status = o.status }), "\n")
  end
else
  io.stderr:write("usage: sample-manifest.lua <root> <sample.json> <name> object|status\n")
  os.exit(2)
end
