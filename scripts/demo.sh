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
echo "demo node: $NODE"
