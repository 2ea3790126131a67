-- Minimal test reporting for the Lua runners: check() records, finish() prints and exits.
local M = { passed = 0, failed = 0, failures = {} }

function M.check(name, ok, detail)
  if ok then
    M.passed = M.passed + 1
  else
    M.failed = M.failed + 1
    M.failures[#M.failures + 1] = name .. (detail and ("\n      " .. detail) or "")
  end
  return ok
end

function M.eq(name, got, want)
  return M.check(name, got == want, string.format("got  %q\n      want %q", tostring(got), tostring(want)))
end

-- Run fn; an error counts as a failure of `name` instead of stopping the run.
function M.guard(name, fn)
  local ok, err = pcall(fn)
  if not ok then
    M.check(name, false, "error: " .. tostring(err))
  end
end

function M.finish(title)
  for _, f in ipairs(M.failures) do
    io.stderr:write("FAIL " .. f .. "\n")
  end
  print(string.format("%s: %d passed, %d failed", title, M.passed, M.failed))
  os.exit(M.failed == 0 and M.passed > 0 and 0 or 1)
end

return M
