"""The edge of a GATOS node: the `gatos` CLI, the node composition root and (soon) the daemon."""

from __future__ import annotations

from gatosd.node import InitResult, NoActor, Node

__all__ = ["InitResult", "NoActor", "Node"]
