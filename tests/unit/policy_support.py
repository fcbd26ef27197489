"""A policy-enabled in-memory node for unit tests: keys, trust graph, default bundle, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger_core import SigningKey, TrustStore
from ledger_core.memory import MemoryObjectStore, MemoryRefStore
from policy import PolicyEngine, bootstrap

T0 = 1_700_000_000
KEYS = {name: SigningKey(bytes([i + 1]) * 32)
        for i, name in enumerate(["user:alice", "user:bob", "user:carol", "user:dave"])}


@dataclass
class Clock:
    now: int = T0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def make_engine() -> tuple[PolicyEngine, Clock]:
    """alice owns the node (holds `*`); bob, carol and dave have trusted keys and nothing else."""
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    trust = TrustStore(objects, refs)
    for actor, key in KEYS.items():
        trust.add_key(actor, key.public_key, by="user:alice", seconds=T0)
    clock = Clock()
    engine = PolicyEngine(objects, refs, clock=clock, sleep=clock.sleep)
    bootstrap(engine, "user:alice", T0)
    return engine, clock
