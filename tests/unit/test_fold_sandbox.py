"""The deterministic Lua sandbox: what a fold program may and may not do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo_fold import (
    FuelExhausted,
    MemoryExhausted,
    Pcg32,
    ProgramError,
    Sandbox,
    StateError,
    q_div,
    q_from_int,
    q_mul,
    q_to_int,
)


def run(program: str, events: list[dict] | None = None, *, channels: tuple[str, ...] = ("main",),
        fuel: int = 1_000_000, memory: int = 64 << 20) -> dict:
    sandbox = Sandbox(program.encode(), "p.lua", channels, lambda i: (42, 54), fuel=fuel, memory=memory)
    sandbox.run(events if events is not None else [{"type": "t", "payload": {"x": 1}}], 0)
    return sandbox.encode()


POISON = [
    ("os.time", "function step(s, e) s.main.t = os.time() end", ProgramError, "os is not available"),
    ("io", "function step(s, e) io.write('x') end", ProgramError, "io is not available"),
    ("math.random", "function step(s, e) s.main.r = math.random(10) end", ProgramError,
     "math.random is not available"),
    ("math.sin", "function step(s, e) s.main.r = math.sin(1) end", ProgramError, "math.sin"),
    ("float", "function step(s, e) s.main.x = 1 / 3 end", StateError, "float"),
    ("endless loop", "function step(s, e) while true do end end", FuelExhausted, "fuel"),
    ("endless recursion", "local function f() return 1 + f() end function step(s, e) f() end",
     ProgramError, "p.lua"),
    ("memory bomb", "function step(s, e) local t = {} for i = 1, 1e9 do t[i] = {i} end end",
     (MemoryExhausted, FuelExhausted), ""),
    ("string.rep bomb", "function step(s, e) local x = string.rep('x', 1 << 26) "
     "s.main.x = x .. x .. x .. x end", MemoryExhausted, "memory"),
    ("string.rep huge", "function step(s, e) s.main.x = string.rep('x', 1 << 50) end", ProgramError,
     "too large"),
    ("load", "function step(s, e) load('return 1')() end", ProgramError, "load is not available"),
    ("require", "function step(s, e) require('os') end", ProgramError, "require is not available"),
    ("debug", "function step(s, e) debug.sethook() end", ProgramError, "debug is not available"),
    ("collectgarbage", "function step(s, e) collectgarbage() end", ProgramError, "collectgarbage"),
    ("coroutine", "function step(s, e) coroutine.wrap(print)() end", ProgramError, "coroutines"),
    ("pcall", "function step(s, e) pcall(error) end", ProgramError, "pcall is not available"),
    ("package", "function step(s, e) s.main.p = package.path end", ProgramError, "package"),
    ("__gc", "function step(s, e) setmetatable({}, {__gc = function() end}) end", ProgramError, "__gc"),
    ("__mode", "function step(s, e) setmetatable({}, {__mode = 'k'}) end", ProgramError, "__mode"),
    ("pairs on table keys", "function step(s, e) for k in pairs({[{}] = 1}) do end end", ProgramError,
     "no deterministic order"),
    ("%p", "function step(s, e) s.main.p = string.format('%p', {}) end", ProgramError, "%p"),
    ("string.dump", "function step(s, e) s.main.d = string.dump(step) end", ProgramError, ""),
    ("shared table", "function step(s, e) local t = {} s.main.a = t s.main.b = t end", StateError,
     "same table"),
    ("sparse keys", "function step(s, e) s.main[7] = 1 end", StateError, "sequence"),
    ("undeclared channel", "function step(s, e) s.other = {} end", StateError, "not a declared channel"),
    ("no step", "x = 1", ProgramError, "step"),
    ("syntax", "function step(s, e) end end", ProgramError, "p.lua:1"),
    ("error()", "function step(s, e) error('refused') end", ProgramError, "refused"),
]


@pytest.mark.parametrize(("name", "program", "error", "text"), POISON, ids=[p[0] for p in POISON])
def test_poison_programs_are_rejected_with_a_clear_error(name: str, program: str, error: type,
                                                          text: str) -> None:
    """Each forbidden or runaway program ends the fold with an error that names the cause."""
    with pytest.raises(error) as info:
        run(program)
    assert text in info.value.reason


def test_pairs_iterates_in_sorted_order_whatever_the_insertion_order() -> None:
    """`pairs` visits numbers ascending, then strings by bytes, however the table was built."""
    program = """
    function step(s, e)
      local a, b = {}, {}
      for _, k in ipairs({"zeta", "alpha", "Mid", "b", "aa"}) do a[k] = true end
      for _, k in ipairs({"aa", "b", "Mid", "alpha", "zeta"}) do b[k] = true end
      a[3] = true a[1] = true b[1] = true b[3] = true
      local ka, kb = {}, {}
      for k in pairs(a) do ka[#ka + 1] = tostring(k) end
      for k in pairs(b) do kb[#kb + 1] = tostring(k) end
      s.main.a, s.main.b = table.concat(ka, ","), table.concat(kb, ",")
      s.main.first = next({q = 1, c = 2, m = 3})
    end"""
    out = run(program)["main"]
    assert out["a"] == out["b"] == "1,3,Mid,aa,alpha,b,zeta"
    assert out["first"] == "c"


def test_tostring_of_a_table_shows_no_address() -> None:
    """Addresses would differ between processes, so `tostring({})` is just "table"."""
    assert run("function step(s, e) s.main.t = tostring({}) end")["main"]["t"] == "table"


def test_fuel_is_per_event_and_a_modest_program_fits() -> None:
    """A bounded loop well under the limit runs; the same loop over the limit is stopped."""
    loop = "function step(s, e) local n = 0 for i = 1, 100000 do n = n + i end s.main.n = n end"
    assert run(loop, fuel=5_000_000)["main"]["n"] == 5000050000
    with pytest.raises(FuelExhausted):
        run(loop, fuel=10_000)


def test_a_failed_sandbox_cannot_be_reused() -> None:
    sandbox = Sandbox(b"function step(s, e) error('x') end", "p.lua", ["main"], lambda i: (1, 1))
    with pytest.raises(ProgramError):
        sandbox.run([{"type": "t"}], 0)
    with pytest.raises(ProgramError, match="cannot be reused"):
        sandbox.encode()


def test_bytecode_is_refused() -> None:
    with pytest.raises(ProgramError, match="bytecode"):
        Sandbox(b"\x1bLua\x54\x00", "p.lua", ["main"], lambda i: (1, 1))


def test_pcg32_matches_the_reference_vectors() -> None:
    """pcg32_srandom(42, 54) gives the published first outputs, in Python and in Lua."""
    expected = [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E]
    gen = Pcg32(42, 54)
    assert [gen.next_u32() for _ in expected] == expected
    program = "function step(s, e) local r = rng() for i = 1, 6 do s.main[i] = r.next() end end"
    assert run(program)["main"] == expected


def test_rng_below_is_in_range_and_repeatable() -> None:
    program = "function step(s, e) local r = rng() for i = 1, 50 do s.main[i] = r.below(7) end end"
    first, second = run(program)["main"], run(program)["main"]
    assert first == second and all(0 <= v < 7 for v in first)


Q = st.integers(min_value=-(1 << 40), max_value=1 << 40)


@given(Q, Q)
def test_q32_mul_and_div_match_the_python_reference(a: int, b: int) -> None:
    """Lua's Q32.32 helpers round exactly as the reference (toward zero)."""
    program = f"""function step(s, e)
      s.main.mul = q32.mul({a}, {b})
      if {b} ~= 0 then s.main.div = q32.div({a}, {b}) end
    end"""
    try:
        expected_mul = q_mul(a, b)
    except OverflowError:
        with pytest.raises(ProgramError, match="overflow"):
            run(program)
        return
    try:
        expected_div = q_div(a, b) if b else None
    except OverflowError:
        with pytest.raises(ProgramError, match="overflow"):
            run(program)
        return
    out = run(program)["main"]
    assert out["mul"] == expected_mul
    if b:
        assert out["div"] == expected_div


def test_q32_helpers_known_values() -> None:
    program = """function step(s, e)
      s.main.half = q32.from_ratio(1, 2)
      s.main.third = q32.from_ratio(1, 3)
      s.main.neg = q32.to_int(q32.from_ratio(-7, 2))
      s.main.prod = q32.to_int(q32.mul(q32.from_int(6), q32.from_ratio(3, 2)))
    end"""
    out = run(program)["main"]
    assert out == {"half": 1 << 31, "third": q_div(q_from_int(1), q_from_int(3)), "neg": -3, "prod": 9}
    assert q_to_int(q_from_int(-7) // 2) == -3


def test_restored_state_continues_exactly() -> None:
    """A state stored as JSON and loaded back behaves as the live one."""
    program = """function step(s, e)
      s.main.list = s.main.list or {}
      s.main.list[#s.main.list + 1] = e.payload.x
      s.main.map = s.main.map or {}
      s.main.map["k" .. e.payload.x] = #s.main.list
    end"""
    events = [{"type": "t", "payload": {"x": i}} for i in range(1, 6)]
    live = Sandbox(program.encode(), "p.lua", ["main"], lambda i: (1, 1))
    live.run(events, 0)
    half = Sandbox(program.encode(), "p.lua", ["main"], lambda i: (1, 1))
    half.run(events[:2], 0)
    again = Sandbox(program.encode(), "p.lua", ["main"], lambda i: (1, 1))
    again.restore(half.encode())
    again.run(events[2:], 2)
    assert again.encode() == live.encode()
