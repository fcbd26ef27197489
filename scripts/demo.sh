#!/usr/bin/env bash
# The main job on the embedded default: make a local node, append signed events,
# read them back, verify every journal, and show that plain Git sees it all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
NODE=${GATOS_DEMO_NODE:-$PWD/demo-node}
rm -rf "$NODE"
export GATOS_REPO="$NODE"

echo "== gatos init (git init + owner key, public key committed on refs/gatos/trust)"
gatos init --actor user:demo
echo "== gatos key new / key list"
gatos key new --actor agent:ci >/dev/null
echo "== gatos grant (deny by default: a key alone allows nothing; the owner grants agent:ci one capability)"
gatos grant --to agent:ci --caps finance:append >/dev/null
gatos key list --json
echo "== gatos event add"
gatos event add --ns finance --type invoice.created --payload '{"id":"INV-1","amount_cents":120000}'
gatos event add --ns finance --type invoice.paid --payload '{"id":"INV-1"}' --ulid 01JBZ0000000000000000000AA
echo "== same ULID, same content: the original commit comes back (duplicate: true)"
gatos event add --ns finance --type invoice.paid --payload '{"id":"INV-1"}' --ulid 01JBZ0000000000000000000AA
gatos event add --ns finance --type job.seen --payload '{"by":"ci"}' --actor agent:ci
echo "== a float is refused, nothing is written"
if gatos event add --ns finance --type bad --payload '{"x":1.5}'; then exit 1; fi
echo "== gatos log --ns finance"
gatos log --ns finance
echo "== git gatos verify (git finds git-gatos on PATH)"
git -C "$NODE" gatos verify
echo "== plain git: the journal and one event, read with git alone"
git -C "$NODE" log --oneline refs/gatos/journal/finance/user/demo
git -C "$NODE" cat-file -p refs/gatos/journal/finance/user/demo^{tree}
git -C "$NODE" fsck --strict --no-dangling

echo "== gatos fold: the default fold of finance, checkpointed on refs/gatos/state/finance"
gatos fold --ns finance
gatos state show finance --channel summary
echo "== Proof-of-Fold: re-run the fold over the checkpoint's window and compare State-Root"
gatos fold verify refs/gatos/state/finance
git -C "$NODE" log -1 --format=%B refs/gatos/state/finance

echo "== indexes: a query answered from roaring bitmaps on refs/gatos/cache/finance-default"
gatos query --ns finance --type invoice.created --limit 2 | cut -c1-160
gatos query --ns finance --count
echo "== gatos doctor: every check, each failure with the command that fixes it"
gatos doctor

echo "== jobs: enqueue, one worker runs it sandboxed, the signed Proof-of-Execution, reproduce"
JOB=$(gatos jobs enqueue --ns build --command '["/bin/sh","-c"]' --args '["echo built > out/artifact.txt; uname -s"]' --timeout 30 \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
gatos worker --exit-when-idle
gatos jobs status "$JOB" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["state"], [h["state"] for h in s["history"]])'
gatos jobs result "$JOB" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["status"], "verified:", r["verified"], r["outputs"])'
gatos reproduce "$JOB"
git -C "$NODE" log -1 --format=%B "refs/gatos/jobs/${JOB#blake3:}/result"
gatos health | python3 -c 'import json,sys; h=json.load(sys.stdin); print("not enforced here:", h["not_enforced"] or "none")'

echo "== gatosd: the daemon on the same node (unix socket .git/gatos/gatosd.sock, mode 0600)"
gatosd --repo "$NODE" 2>"$NODE/.git/gatos/gatosd.log" &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$NODE/.git/gatos/gatosd.sock" ] && break; sleep 0.1; done
SOCK="$NODE/.git/gatos/gatosd.sock"
echo "-- raw JSONL (with socat: echo '<frame>' | socat - UNIX-CONNECT:$SOCK)"
python3 - "$SOCK" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
for line in (b'{"type":"append_event","id":"01A","ns":"finance","actor":"demo","event":{"type":"invoice.created","payload":{"id":"INV-2"}}}',
             b'{"type":"journal.head","id":"01B","ns":"finance","actor":"demo"}'):
    f.write(line + b"\n"); f.flush(); print(f.readline().decode().strip())
PY
echo "-- the Python client (gatosd.client)"
.venv/bin/python - "$NODE" <<'PY'
import sys
from gatosd.client import Client
with Client.for_repo(sys.argv[1]) as client:
    print(client.hello()["methods"])
    print(client.append_event("finance", "invoice.paid", {"id": "INV-2"}))
    print(len(client.journal_read("finance", "user:demo")), "events in user:demo's journal")
PY
echo "-- gatos uses the running daemon"
gatos status
kill -TERM $DAEMON; wait $DAEMON; trap - EXIT
echo "gatosd stopped cleanly (SIGTERM flushes and exits 0)"
echo "demo node: $NODE"
