"""The trusted Lua half of the sandbox, kept as a string so it ships inside the package.

Read it as Lua: it builds the program environment and the runner `_sandbox.py` drives.
"""

from __future__ import annotations

PRELUDE = r"""-- The trusted half of the fold sandbox (EchoLua profile, Lua 5.4).
--
-- This chunk runs once per runtime with the full standard library, keeps what it
-- needs as locals (debug.sethook, load, next), builds the program's environment
-- from a whitelist, then strips the dangerous libraries from the global table.
-- The fold program never sees this chunk's locals: it is loaded as text with the
-- sandbox table as its only environment.
--
-- Arguments: fuel ticks per event (one tick = HOOK_EVERY instructions) and the
-- Python callback that derives the pcg32 seed of event i (two integers).
local fuel_ticks, seed_for = ...

local HOOK_EVERY = 1000
local sethook = debug.sethook
local raw_load, raw_next, raw_type, raw_error = load, next, type, error
local raw_tostring, raw_setmetatable, raw_getmetatable = tostring, setmetatable, getmetatable
local raw_select, raw_rawlen = select, rawlen
local mtype, tsort, tconcat = math.type, table.sort, table.concat
local sformat, sgsub, sbyte, ufind = string.format, string.gsub, string.byte, string.find
local ulen = utf8.len

-- Deterministic string order needs byte-wise comparison ("C" collation).
if ("a" < "B") then
  raw_error("gatos:collation: string comparison is locale dependent here; run with LC_COLLATE=C", 0)
end

---------------------------------------------------------------------------------
-- Fuel: a count hook every HOOK_EVERY instructions; `ticks` is reset per event.
local ticks, exhausted = 0, false
local function hook()
  ticks = ticks + 1
  if ticks > fuel_ticks then
    exhausted = true
    raw_error("gatos:fuel: the fold ran out of fuel (instruction limit)", 0)
  end
end

---------------------------------------------------------------------------------
-- Deterministic iteration: keys sorted (numbers ascending, then strings by bytes).
local function key_rank(k)
  local t = raw_type(k)
  if t == "number" then return 0 end
  if t == "string" then return 1 end
  raw_error("pairs: a key of type " .. t .. " has no deterministic order", 2)
end

local function key_less(a, b)
  local ra, rb = key_rank(a), key_rank(b)
  if ra ~= rb then return ra < rb end
  return a < b
end

local function sorted_keys(t)
  local keys, n = {}, 0
  for k in raw_next, t do
    key_rank(k)
    n = n + 1
    keys[n] = k
  end
  tsort(keys, key_less)
  return keys, n
end

local function dpairs(t)
  if raw_type(t) ~= "table" then raw_error("pairs: expected a table", 2) end
  local keys, n = sorted_keys(t)
  local i = 0
  return function()
    i = i + 1
    while i <= n do
      local k = keys[i]
      local v = t[k]
      if v ~= nil then return k, v end
      i = i + 1
    end
    return nil
  end, t, nil
end

-- `next` in sorted order. O(n log n) per call: prefer `pairs`.
local function dnext(t, k)
  local keys, n = sorted_keys(t)
  local i = 1
  if k ~= nil then
    while i <= n and keys[i] ~= k do i = i + 1 end
    if i > n then raw_error("next: invalid key to 'next'", 2) end
    i = i + 1
  end
  if i > n then return nil end
  return keys[i], t[keys[i]]
end

local function dkeys(t)
  local keys = sorted_keys(t)
  return keys
end

---------------------------------------------------------------------------------
-- Safe replacements for functions that leak addresses or enable GC tricks.
local function safe_tostring(v)
  local t = raw_type(v)
  if t == "table" or t == "function" or t == "userdata" or t == "thread" then
    local mt = raw_getmetatable(v)
    if t == "table" and mt ~= nil and rawget(mt, "__tostring") then return raw_tostring(v) end
    return t
  end
  return raw_tostring(v)
end

local function safe_format(fmt, ...)
  if raw_type(fmt) == "string" and ufind(fmt, "%%[-+ #0]*%d*%.?%d*p") then
    raw_error("string.format: %p prints addresses and is not allowed in folds", 2)
  end
  for i = 1, raw_select("#", ...) do
    local t = raw_type((raw_select(i, ...)))
    if t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "nil" then
      raw_error("string.format: argument " .. i .. " is a " .. t .. " (only strings, numbers, booleans)", 2)
    end
  end
  return sformat(fmt, ...)
end

local ALLOWED_META = {
  __index = true, __newindex = true, __call = true, __tostring = true, __name = true,
  __add = true, __sub = true, __mul = true, __div = true, __mod = true, __pow = true,
  __unm = true, __idiv = true, __band = true, __bor = true, __bxor = true, __shl = true,
  __shr = true, __bnot = true, __concat = true, __len = true, __eq = true, __lt = true,
  __le = true,
}

local function safe_setmetatable(t, mt)
  if raw_type(t) ~= "table" then raw_error("setmetatable: expected a table", 2) end
  if mt ~= nil then
    if raw_type(mt) ~= "table" then raw_error("setmetatable: metatable must be a table", 2) end
    for k in raw_next, mt do
      if not ALLOWED_META[k] then
        raw_error("setmetatable: metamethod " .. raw_tostring(k) .. " is not allowed in folds", 2)
      end
    end
  end
  return raw_setmetatable(t, mt)
end

local function safe_getmetatable(v)
  if raw_type(v) ~= "table" then return nil end
  return raw_getmetatable(v)
end

---------------------------------------------------------------------------------
-- Q32.32 fixed point on 64-bit integers (see _numeric.py for the reference).
local Q_ONE = 1 << 32
local LOW32 = 0xFFFFFFFF
local I64_MIN = math.mininteger

local function qint(v, what)
  if mtype(v) ~= "integer" then raw_error("q32." .. what .. ": expected an integer", 3) end
  return v
end

local q32 = {ONE = Q_ONE}

function q32.from_int(n)
  qint(n, "from_int")
  if n >= (1 << 31) or n < -(1 << 31) then raw_error("q32.from_int: out of range", 2) end
  return n << 32
end

function q32.to_int(a)
  qint(a, "to_int")
  if a >= 0 then return a >> 32 end
  return -((-a) >> 32)
end

function q32.add(a, b)
  qint(a, "add"); qint(b, "add")
  local r = a + b
  if (a >= 0) == (b >= 0) and (r >= 0) ~= (a >= 0) then raw_error("q32.add: overflow", 2) end
  return r
end

function q32.sub(a, b)
  qint(a, "sub"); qint(b, "sub")
  local r = a - b
  if (a >= 0) ~= (b >= 0) and (r >= 0) ~= (a >= 0) then raw_error("q32.sub: overflow", 2) end
  return r
end

-- |a| and |b| as unsigned 64-bit magnitudes (mininteger is refused).
local function magnitude(v, what)
  if v == I64_MIN then raw_error("q32." .. what .. ": operand out of range", 3) end
  if v < 0 then return -v, true end
  return v, false
end

function q32.mul(a, b)
  qint(a, "mul"); qint(b, "mul")
  local ma, na = magnitude(a, "mul")
  local mb, nb = magnitude(b, "mul")
  local ah, al = ma >> 32, ma & LOW32
  local bh, bl = mb >> 32, mb & LOW32
  -- (ma*mb) >> 32 = ah*bh<<32 + ah*bl + al*bh + (al*bl)>>32, every term non-negative.
  if ah ~= 0 and bh ~= 0 and ah * bh >= (1 << 31) then raw_error("q32.mul: overflow", 2) end
  local r = ((ah * bh) << 32)
  local terms = {ah * bl, al * bh, (al * bl) >> 32}
  for i = 1, 3 do
    local t = terms[i]
    if t < 0 or r > math.maxinteger - t then raw_error("q32.mul: overflow", 2) end
    r = r + t
  end
  if na ~= nb then return -r end
  return r
end

function q32.div(a, b)
  qint(a, "div"); qint(b, "div")
  if b == 0 then raw_error("q32.div: division by zero", 2) end
  local ma, na = magnitude(a, "div")
  local mb, nb = magnitude(b, "div")
  local ip, r = ma // mb, ma % mb
  if ip >= (1 << 31) then raw_error("q32.div: overflow", 2) end
  -- 32 steps of binary long division give the fraction bits, truncated.
  local frac = 0
  for _ = 1, 32 do
    local r2 = r << 1
    frac = frac << 1
    if not math.ult(r2, mb) then
      r2 = r2 - mb
      frac = frac | 1
    end
    r = r2
  end
  local q = (ip << 32) | frac
  if na ~= nb then return -q end
  return q
end

function q32.from_ratio(n, d)
  return q32.div(q32.from_int(n), q32.from_int(d))
end

---------------------------------------------------------------------------------
-- pcg32 (PCG-XSH-RR 64/32), seeded per event from blake3(inputs_root ‖ policy_root ‖ fold_root).
local PCG_MULT = 6364136223846793005

local function pcg32(initstate, initseq)
  local state, inc = 0, (initseq << 1) | 1
  local function step()
    local old = state
    state = old * PCG_MULT + inc
    local xorshifted = (((old >> 18) ~ old) >> 27) & LOW32
    local rot = old >> 59
    return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & LOW32
  end
  step()
  state = state + initstate
  step()
  local gen = {}
  gen.next = step
  -- Unbiased integer in [0, n) by rejection (as pcg32_boundedrand).
  function gen.below(n)
    if mtype(n) ~= "integer" or n <= 0 or n > LOW32 + 1 then
      raw_error("rng.below: n must be an integer in 1..2^32", 2)
    end
    local threshold = ((LOW32 + 1) - n) % n
    while true do
      local x = step()
      if x >= threshold then return x % n end
    end
  end
  function gen.range(lo, hi)
    if mtype(lo) ~= "integer" or mtype(hi) ~= "integer" or hi < lo then
      raw_error("rng.range: expected integers lo <= hi", 2)
    end
    return lo + gen.below(hi - lo + 1)
  end
  return gen
end

local current, current_rng = 0, nil
local function rng()
  if current_rng == nil then
    local s, q = seed_for(current)
    current_rng = pcg32(s, q)
  end
  return current_rng
end

---------------------------------------------------------------------------------
-- The environment the program sees.
local function copy(lib, drop)
  local out = {}
  for k, v in raw_next, lib do
    if not (drop and drop[k]) then out[k] = v end
  end
  return out
end

string.dump = nil
string.format = safe_format

local env = {
  assert = assert, error = raw_error, ipairs = ipairs, next = dnext, pairs = dpairs,
  rawequal = rawequal, rawget = rawget, rawlen = rawlen, rawset = rawset, select = select,
  tonumber = tonumber, tostring = safe_tostring, type = raw_type,
  setmetatable = safe_setmetatable, getmetatable = safe_getmetatable,
  string = copy(string), table = copy(table), utf8 = copy(utf8),
  math = {
    abs = math.abs, max = math.max, min = math.min, floor = math.floor, ceil = math.ceil,
    fmod = math.fmod, tointeger = math.tointeger, type = math.type, ult = math.ult,
    maxinteger = math.maxinteger, mininteger = math.mininteger,
  },
  q32 = q32, rng = rng, dkeys = dkeys, dpairs = dpairs,
}
env._G = env

-- Clear errors for what a fold may not touch (instead of "attempt to index a nil value").
local FORBIDDEN = {
  os = "os is not available in a fold (no clock, no environment)",
  io = "io is not available in a fold (folds are pure)",
  debug = "debug is not available in a fold", package = "package is not available in a fold",
  require = "require is not available in a fold", load = "load is not available in a fold",
  loadfile = "loadfile is not available in a fold", dofile = "dofile is not available in a fold",
  loadstring = "loadstring is not available in a fold",
  collectgarbage = "collectgarbage is not available in a fold (GC timing is not deterministic)",
  coroutine = "coroutines are not available in a fold",
  pcall = "pcall is not available in a fold (an error ends the fold)",
  xpcall = "xpcall is not available in a fold (an error ends the fold)",
  print = "print is not available in a fold", python = "python is not available in a fold",
}
raw_setmetatable(env, {__metatable = false, __index = function(_, k)
  local why = FORBIDDEN[k]
  if why then raw_error(why, 2) end
  return nil
end})
local MATH_FORBIDDEN = {
  random = "math.random is not available in a fold: use rng() (pcg32, seeded from the inputs)",
  randomseed = "math.randomseed is not available in a fold: use rng()",
}
raw_setmetatable(env.math, {__metatable = false, __index = function(_, k)
  if MATH_FORBIDDEN[k] then raw_error(MATH_FORBIDDEN[k], 2) end
  if raw_type(k) == "string" and math[k] ~= nil then
    raw_error("math." .. k .. " is not available in a fold (floats; use integers or q32)", 2)
  end
  return nil
end})

---------------------------------------------------------------------------------
-- Canonical-enough JSON of the state, with every rule that makes a reload exact:
-- integers only, UTF-8 strings, tables either a sequence 1..n or string-keyed,
-- no metatables, no table reachable twice.
local ESC = {['"'] = '\\"', ['\\'] = '\\\\'}
local function esc(c)
  return ESC[c] or sformat("\\u%04x", sbyte(c))
end

local encode
local function fail(path, why)
  raw_error("gatos:state: " .. path .. ": " .. why, 0)
end

encode = function(v, path, seen, out)
  local t = raw_type(v)
  if t == "string" then
    if not ulen(v) then fail(path, "string is not valid UTF-8") end
    out[#out + 1] = '"' .. sgsub(v, '[%c"\\]', esc) .. '"'
  elseif t == "number" then
    if mtype(v) ~= "integer" then fail(path, "float " .. raw_tostring(v) .. " (use integers or q32)") end
    out[#out + 1] = sformat("%d", v)
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "table" then
    if seen[v] then fail(path, "the same table is also at " .. seen[v] .. " (copy it)") end
    seen[v] = path
    if raw_getmetatable(v) ~= nil then fail(path, "a table with a metatable") end
    local n, ints, strs = 0, 0, 0
    for k in raw_next, v do
      n = n + 1
      if mtype(k) == "integer" then ints = ints + 1
      elseif raw_type(k) == "string" then strs = strs + 1
      else fail(path, "a key of type " .. raw_type(k)) end
    end
    if n == 0 then
      out[#out + 1] = "{}"
    elseif ints == n then
      if raw_rawlen(v) ~= n or v[n] == nil then
        fail(path, "integer keys that are not a sequence 1..n (use string keys)")
      end
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], path .. "[" .. i .. "]", seen, out)
      end
      out[#out + 1] = "]"
    elseif strs == n then
      local keys = sorted_keys(v)
      out[#out + 1] = "{"
      for i = 1, n do
        local k = keys[i]
        if i > 1 then out[#out + 1] = "," end
        encode(k, path, seen, out)
        out[#out + 1] = ":"
        encode(v[k], path .. "." .. k, seen, out)
      end
      out[#out + 1] = "}"
    else
      fail(path, "a table mixing integer and string keys")
    end
  else
    fail(path, "a value of type " .. t)
  end
end

---------------------------------------------------------------------------------
-- The runner: what the Python side calls.
local runner = {}
local program_step, state

function runner.load(source, name, channels)
  local chunk, err = raw_load(source, "=" .. name, "t", env)
  if not chunk then raw_error("gatos:syntax: " .. err, 0) end
  ticks, exhausted = 0, false
  sethook(hook, "", HOOK_EVERY)
  chunk()
  program_step = rawget(env, "step")
  if raw_type(program_step) ~= "function" then
    raw_error("gatos:program: the program must define a global function step(state, event)", 0)
  end
  local init = rawget(env, "init")
  ticks = 0
  if init ~= nil then
    if raw_type(init) ~= "function" then raw_error("gatos:program: init must be a function", 0) end
    state = init()
  else
    state = {}
  end
  sethook()
  if raw_type(state) ~= "table" then raw_error("gatos:program: init() must return a table", 0) end
  for i = 1, #channels do
    if state[channels[i]] == nil then state[channels[i]] = {} end
  end
end

function runner.restore(channels_table)
  state = channels_table
end

-- Fold events[1..n]; `base` is the global index of events[0] (for the RNG seed).
function runner.run(events, n, base)
  local step = program_step
  sethook(hook, "", HOOK_EVERY)
  for i = 1, n do
    current, current_rng, ticks = base + i, nil, 0
    local new = step(state, events[i])
    if new ~= nil then
      if raw_type(new) ~= "table" then
        sethook()
        raw_error("gatos:program: step() returned a " .. raw_type(new) .. ", not a table", 0)
      end
      state = new
    end
  end
  sethook()
end

-- The same over flat event fields, built here with constant keys (cheaper than one
-- converted dict per event); `run` then folds them in the same hooked loop. With
-- `packed` nil, flat[9i-8..9i] = type, ulid, cid, actor, commit, policy_root, payload,
-- ts, caps of event i (nil where absent). With `packed` (ulid ‖ cid ‖ commit of every
-- event, 26 + 59 + 40 ASCII bytes each), flat[6i-5..6i] = type, actor, policy_root,
-- payload, ts, caps: one string instead of three per event to convert.
local ssub = string.sub
function runner.run_flat(flat, n, base, packed)
  local events = {}
  if packed == nil then
    for i = 1, n do
      local k = (i - 1) * 9
      events[i] = {type = flat[k + 1], ulid = flat[k + 2], cid = flat[k + 3], actor = flat[k + 4],
                   seq = base + i, commit = flat[k + 5], policy_root = flat[k + 6],
                   payload = flat[k + 7], ts = flat[k + 8], caps = flat[k + 9]}
    end
  else
    for i = 1, n do
      local k, o = (i - 1) * 6, (i - 1) * 125
      events[i] = {type = flat[k + 1], ulid = ssub(packed, o + 1, o + 26),
                   cid = ssub(packed, o + 27, o + 85), actor = flat[k + 2], seq = base + i,
                   commit = ssub(packed, o + 86, o + 125), policy_root = flat[k + 3],
                   payload = flat[k + 4], ts = flat[k + 5], caps = flat[k + 6]}
    end
  end
  runner.run(events, n, base)
end

-- The same with the flat fields given as Lua text (`return{...}`, written by the native
-- reader from the event bytes, see native/src/luatext.rs): loaded as text only, in a
-- fresh empty environment, outside the hook. It only builds tables of constants.
function runner.run_chunk(chunk, n, base, packed)
  local make, err = raw_load(chunk, "=events", "t", {})
  if make == nil then raw_error("gatos:internal: an event chunk did not load: " .. raw_tostring(err), 0) end
  runner.run_flat(make(), n, base, packed)
end

function runner.encode(channels)
  local seen = {}
  local out = {}
  for k, v in raw_next, state do
    local known = false
    for i = 1, #channels do if channels[i] == k then known = true end end
    if not known then fail("$", "state key " .. raw_tostring(k) .. " is not a declared channel") end
  end
  local parts = {}
  for i = 1, #channels do
    local ch = channels[i]
    out = {}
    encode(state[ch], "$." .. ch, seen, out)
    parts[i] = tconcat(out)
  end
  return parts
end

function runner.exhausted() return exhausted end
function runner.current() return current end
function runner.stop_hook() sethook() end

-- Nothing dangerous stays reachable from the global table either.
for _, name in ipairs({"debug", "io", "os", "package", "require", "load", "loadfile", "dofile",
                        "collectgarbage", "coroutine", "python", "print", "warn"}) do
  _G[name] = nil
end

return runner
"""
