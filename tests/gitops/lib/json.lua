-- A small JSON decoder and encoder for the Lua 5.1 test runner (test code, not sandboxed).
--
-- decode: JSON null becomes nil, as in Argo CD, which hands the object to Lua through
-- decodeValue (util/lua/lua.go), mapping nil to LNil; arrays become 1-based sequences.
-- encode: the rules of layeh.com/gopher-json, which Argo CD uses to read back what a script
-- returns: an empty table is an array ("[]"), a table with keys 1..n is an array, a table with
-- string keys is an object, anything else is an error.

local M = {}

local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8(code)
  if code < 0x80 then
    return string.char(code)
  elseif code < 0x800 then
    return string.char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
  elseif code < 0x10000 then
    return string.char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
  end
  return string.char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
    0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

function M.decode(text, source)
  local pos = 1
  source = source or "json"

  local function fail(what)
    error(string.format("%s: %s at byte %d", source, what, pos), 0)
  end
  local function skip()
    pos = string.find(text, "[^ \t\r\n]", pos) or (#text + 1)
  end

  local value

  local function parse_string()
    pos = pos + 1 -- opening quote
    local parts = {}
    while true do
      local c = string.sub(text, pos, pos)
      if c == "" then
        fail("unterminated string")
      elseif c == '"' then
        pos = pos + 1
        return table.concat(parts)
      elseif c == "\\" then
        local e = string.sub(text, pos + 1, pos + 1)
        if e == "u" then
          local hex = string.sub(text, pos + 2, pos + 5)
          if not string.match(hex, "^%x%x%x%x$") then
            fail("bad \\u escape")
          end
          local code = tonumber(hex, 16)
          pos = pos + 6
          if code >= 0xD800 and code <= 0xDBFF and string.sub(text, pos, pos + 1) == "\\u" then
            local low = tonumber(string.sub(text, pos + 2, pos + 5), 16)
            if low and low >= 0xDC00 and low <= 0xDFFF then
              code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
              pos = pos + 6
            end
          end
          parts[#parts + 1] = utf8(code)
        elseif escapes[e] then
          parts[#parts + 1] = escapes[e]
          pos = pos + 2
        else
          fail("bad escape")
        end
      else
        local stop = string.find(text, '["\\]', pos) or (#text + 1)
        parts[#parts + 1] = string.sub(text, pos, stop - 1)
        pos = stop
      end
    end
  end

  function value()
    skip()
    local c = string.sub(text, pos, pos)
    if c == "{" then
      pos = pos + 1
      local out = {}
      skip()
      if string.sub(text, pos, pos) == "}" then
        pos = pos + 1
        return out
      end
      while true do
        skip()
        if string.sub(text, pos, pos) ~= '"' then
          fail("expected a key")
        end
        local key = parse_string()
        skip()
        if string.sub(text, pos, pos) ~= ":" then
          fail("expected ':'")
        end
        pos = pos + 1
        out[key] = value() -- null: the key is absent, as in Argo CD
        skip()
        local d = string.sub(text, pos, pos)
        pos = pos + 1
        if d == "}" then
          return out
        elseif d ~= "," then
          fail("expected ',' or '}'")
        end
      end
    elseif c == "[" then
      pos = pos + 1
      local out, n = {}, 0
      skip()
      if string.sub(text, pos, pos) == "]" then
        pos = pos + 1
        return out
      end
      while true do
        n = n + 1
        out[n] = value()
        skip()
        local d = string.sub(text, pos, pos)
        pos = pos + 1
        if d == "]" then
          return out
        elseif d ~= "," then
          fail("expected ',' or ']'")
        end
      end
    elseif c == '"' then
      return parse_string()
    elseif string.sub(text, pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif string.sub(text, pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif string.sub(text, pos, pos + 3) == "null" then
      pos = pos + 4
      return nil
    else
      local num = string.match(text, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if num == nil or num == "" then
        fail("unexpected character " .. string.format("%q", c))
      end
      pos = pos + #num
      return tonumber(num)
    end
  end

  local result = value()
  skip()
  if pos <= #text then
    fail("trailing characters")
  end
  return result
end

function M.read_file(path)
  local fh, err = io.open(path, "r")
  if not fh then
    error(err, 0)
  end
  local text = fh:read("*a")
  fh:close()
  return M.decode(text, path)
end

local function encode_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

-- Sorted keys, so the output is stable (used in failure messages and diffs).
function M.encode(v, path)
  path = path or "$"
  local t = type(v)
  if t == "nil" then
    return "null"
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then
      return string.format("%d", v)
    end
    return string.format("%.17g", v)
  elseif t == "string" then
    return encode_string(v)
  elseif t ~= "table" then
    error(path .. ": cannot encode a " .. t, 0)
  end
  local n, strings, others = 0, {}, 0
  for k in pairs(v) do
    if type(k) == "number" then
      n = n + 1
    elseif type(k) == "string" then
      strings[#strings + 1] = k
    else
      others = others + 1
    end
  end
  if others > 0 or (n > 0 and #strings > 0) then
    error(path .. ": cannot encode a table with mixed or invalid key types", 0)
  end
  if #strings == 0 then
    local items = {}
    for i = 1, n do
      if v[i] == nil then
        error(path .. ": array with holes", 0)
      end
      items[i] = M.encode(v[i], path .. "[" .. i .. "]")
    end
    return "[" .. table.concat(items, ",") .. "]"
  end
  table.sort(strings)
  local items = {}
  for i, k in ipairs(strings) do
    items[i] = encode_string(k) .. ":" .. M.encode(v[k], path .. "." .. k)
  end
  return "{" .. table.concat(items, ",") .. "}"
end

return M
