"""Errors of the message bus: one root (`BusError`), one subclass per cause, each with its wire `code`."""

from __future__ import annotations

from ledger_core.errors import LedgerError


class BusError(LedgerError):
    """Root of every error raised by `mind_bus`."""

    code = "BUS_ERROR"


class InvalidTopic(BusError):
    """A topic or consumer-group name cannot become part of a ref name."""

    code = "INVALID_NAME"


class InvalidMessage(BusError):
    """A payload, key or headers value is not a canonical value (floats, bad types, too big)."""

    code = "INVALID_MESSAGE"


class InvalidPosition(BusError):
    """A `from` value or a position does not name a place in the topic."""

    code = "INVALID_POSITION"


class InvalidBusConfig(BusError):
    """`gatos/mbus-config/<topic>.json` is not a valid topic configuration."""

    code = "INVALID_CONFIG"


class UnknownGroup(BusError):
    """An ack, nack or commit names a consumer group that has no subscriber and no acks."""

    code = "UNKNOWN_GROUP"


class NotPending(BusError):
    """An ack or nack names a message the group has not been delivered (or already finished)."""

    code = "NOT_PENDING"


class UlidConflict(BusError):
    """A ULID already published on the topic came again with a different message."""

    code = "ULID_REUSED"


__all__ = ["BusError", "InvalidBusConfig", "InvalidMessage", "InvalidPosition", "InvalidTopic",
           "NotPending", "UlidConflict", "UnknownGroup"]
