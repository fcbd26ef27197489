"""`gatos bus publish` and `gatos bus subscribe`.

Both go through the repository's running daemon when there is one (publishes join its
batches; subscriptions follow live and share consumer groups). Without a daemon,
`publish` writes in-process (the same `BusLog` code, gated the same way) and
`subscribe` prints the stored messages from `--from` on and exits; consumer groups need
the daemon (their delivery state lives there).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gatosd._bus_writer import ConfigLoader, bus_flock
from gatosd._cli_common import print_json as _out
from gatosd._cli_common import repo_path as _repo
from gatosd._clock import new_ulid
from gatosd.node import Node
from ledger_core import normalize_actor, validate_ulid
from ledger_core.errors import LedgerError
from mind_bus import BusLog, PublishRequest, parse_from, start_positions, validate_topic


def _local_log(node: Node) -> BusLog:
    def gate(actor: str, action: str, topic: str) -> None:
        node.policy.check_now(actor, action, topic)

    return BusLog(node.repo.objects, node.repo.refs, sign=node.sign, clock=time.time,
                  sleep=time.sleep, config_for=ConfigLoader(node.repo.repo.workdir or node.repo.git_dir),
                  gate=gate, policy_root=lambda: node.policy_root,
                  exclusive=lambda _topic: bus_flock(node.repo.git_dir))


def cmd_publish(args: argparse.Namespace) -> int:
    from gatosd.cli import _daemon, _read_payload

    payload = _read_payload(args.payload)
    client = _daemon(args)
    if client is not None:
        fields: dict[str, Any] = {"topic": args.topic, "payload": payload}
        for name in ("key", "ulid", "actor"):
            if getattr(args, name):
                fields[name] = getattr(args, name)
        with client:
            _out(client.request("bus.publish", **fields))
        return 0
    node = Node.open(_repo(args))
    actor = normalize_actor(args.actor) if args.actor else node.default_actor
    ulid = validate_ulid(args.ulid) if args.ulid else new_ulid()
    result = _local_log(node).publish(PublishRequest(validate_topic(args.topic), payload, ulid, actor,
                                                     key=args.key))
    _out(result.to_dict())
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    from gatosd.cli import _daemon

    start: str | int = int(args.from_) if args.from_.isdigit() else args.from_
    spec = parse_from(start)
    client = _daemon(args)
    if client is None:
        if args.group:
            raise LedgerError("consumer groups need the repository's running daemon (gatosd)")
        node = Node.open(_repo(args))
        log = _local_log(node)
        topic = validate_topic(args.topic)
        heads = log.shard_heads(topic)
        starts = start_positions(spec, heads, lambda s, u: log.first_at_or_after(topic, s, u))
        count = 0
        for shard in sorted(heads):
            for msg in log.read(topic, shard, starts[shard]):
                _out({"type": "bus.message", **msg.frame(), "delivery": 1})
                count += 1
                if args.limit and count >= args.limit:
                    return 0
        return 0
    fields: dict[str, Any] = {"topic": args.topic, "from": start}
    if args.group:
        fields["group"] = args.group
    seen = 0
    with client:
        stream = client.stream("bus.subscribe", timeout=None, **fields)
        try:
            for frame in stream:
                if frame.get("type") != "bus.message":
                    continue
                _out(frame)
                if args.group:
                    client.request("bus.ack", topic=frame["topic"], group=args.group, ulid=frame["ulid"],
                                   shard=frame["shard"], position=frame["position"])
                seen += 1
                if args.limit and seen >= args.limit:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            stream.close()
    return 0


def add_parsers(sub: Any) -> None:
    bus = sub.add_parser("bus", help="the message bus").add_subparsers(dest="bus_cmd", required=True)
    p = bus.add_parser("publish", help="publish one message (JSON on stdout)")
    p.add_argument("--topic", required=True)
    p.add_argument("--payload", required=True, help="JSON, @FILE or - for stdin")
    p.add_argument("--key")
    p.add_argument("--ulid")
    p.add_argument("--actor")
    p.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_publish)
    p = bus.add_parser("subscribe", help="print messages as JSON lines (acked when in a --group)")
    p.add_argument("--topic", required=True)
    p.add_argument("--from", dest="from_", default="earliest",
                   help='"earliest" (default), "HEAD", "HEAD-<n>", a position or a ULID')
    p.add_argument("--group")
    p.add_argument("--limit", type=int, help="stop after this many messages")
    p.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_subscribe)


__all__ = ["add_parsers"]
