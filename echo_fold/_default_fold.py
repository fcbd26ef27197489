"""The fold a namespace gets when no spec names it.

Channels:

* `summary` (main): `{"total": n, "by_type": {type: n}, "by_actor": {actor: n},
  "last": {"ulid": …, "cid": …}}`;
* `latest`: the latest payload per key, where the key is the payload's `id` (a string,
  or an integer written in decimal) when it has one, else the event type.

It is an ordinary program run in the same sandbox, so its `Fold-Root` is the sha256
of the bytes below and changing them is a new fold.
"""

from __future__ import annotations

DEFAULT_FOLD_ID = "gatos.default"
DEFAULT_VERSION = 1

DEFAULT_PROGRAM = b"""-- gatos.default@1: counts by type and actor, latest payload per key.
function init()
  return {summary = {total = 0, by_type = {}, by_actor = {}}, latest = {}}
end

function step(state, ev)
  local s = state.summary
  s.total = s.total + 1
  s.by_type[ev.type] = (s.by_type[ev.type] or 0) + 1
  s.by_actor[ev.actor] = (s.by_actor[ev.actor] or 0) + 1
  s.last = {ulid = ev.ulid, cid = ev.cid}
  local key = ev.type
  local p = ev.payload
  if type(p) == "table" then
    local id = p.id
    if type(id) == "string" then
      key = id
    elseif math.type(id) == "integer" then
      key = string.format("%d", id)
    end
  end
  if p ~= nil then
    state.latest[key] = p
  end
end
"""
