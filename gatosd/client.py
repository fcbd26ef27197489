"""The Python client of `gatosd`: blocking (`Client`) and asyncio (`AsyncClient`).

Both connect by unix socket, loopback TCP (with the daemon's token) or by spawning
`gatosd --stdio`, or find a repository's running daemon with `for_repo`. Requests are
matched to replies by id (the async client pipelines any number on one connection),
keep-alive pings are answered by the client, streamed replies are joined for you
(`journal_read`) or handed over frame by frame (`stream`), events can be signed
locally (`signing_key=`) so private keys stay with the caller, and every error frame
is raised as the `GatosError` subclass of its wire code (`CODE_TO_ERROR`).

    with Client.for_repo(".") as client:
        client.append_event("finance", "invoice.created", {"id": 1})
"""

from __future__ import annotations

from gatosd._client_async import AsyncClient
from gatosd._client_errors import (
    CODE_TO_ERROR,
    BadEncoding,
    BadFrame,
    BadReply,
    BadSignature,
    Busy,
    Conflict,
    ConnectionClosed,
    Corrupt,
    DaemonNotRunning,
    FoldFailed,
    FoldFuelExhausted,
    FoldMemoryExhausted,
    FoldProgramFailed,
    FoldStateInvalid,
    GatosError,
    Internal,
    InvalidConfig,
    InvalidEvent,
    InvalidFoldSpec,
    InvalidGrant,
    InvalidName,
    InvalidNamespace,
    InvalidPolicy,
    Locked,
    NoActor,
    NotFastForward,
    NotFound,
    PolicyDenied,
    ProofMismatch,
    RefInTheWay,
    RequestTimeout,
    ShuttingDown,
    StorageFailed,
    Timeout,
    TooLarge,
    UlidReused,
    Unauthorized,
    UnknownActor,
    UnknownSigAlg,
    UnknownType,
    error_from_wire,
)
from gatosd._client_requests import DEFAULT_TIMEOUT, DaemonState, read_state
from gatosd._client_sync import Client

__all__ = [
    "CODE_TO_ERROR",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "BadEncoding",
    "BadFrame",
    "BadReply",
    "BadSignature",
    "Busy",
    "Client",
    "Conflict",
    "ConnectionClosed",
    "Corrupt",
    "DaemonNotRunning",
    "DaemonState",
    "GatosError",
    "ProofMismatch",
    "InvalidFoldSpec",
    "FoldStateInvalid",
    "FoldProgramFailed",
    "FoldMemoryExhausted",
    "FoldFuelExhausted",
    "FoldFailed",
    "Internal",
    "InvalidConfig",
    "InvalidEvent",
    "InvalidGrant",
    "InvalidName",
    "InvalidNamespace",
    "InvalidPolicy",
    "Locked",
    "NoActor",
    "NotFastForward",
    "NotFound",
    "PolicyDenied",
    "RefInTheWay",
    "RequestTimeout",
    "ShuttingDown",
    "StorageFailed",
    "Timeout",
    "TooLarge",
    "UlidReused",
    "Unauthorized",
    "UnknownActor",
    "UnknownSigAlg",
    "UnknownType",
    "error_from_wire",
    "read_state",
]
