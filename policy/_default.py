"""The bundle `gatos init` installs: the owner holds every capability, everyone else is denied."""

from __future__ import annotations

DEFAULT_FILE = "00-default.rules"
DEFAULT_RULES = """\
# GATOS default policy (installed by `gatos init`). Deny by default: a request is
# allowed only when a rule allows it, and this one allows a request only to an
# actor holding the request's own capability ($cap, e.g. `finance:append`).
# The node owner holds `*` in gatos/trust/graph.json; give others capabilities
# with `gatos grant --to ACTOR --caps CAP[,CAP...]`. Rule ids are <file>:<line>.
audit deny
require caps=$cap
"""

__all__ = ["DEFAULT_FILE", "DEFAULT_RULES"]
