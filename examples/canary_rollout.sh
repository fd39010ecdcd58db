#!/usr/bin/env bash
# A canary rollout from the operator's seat: create a migration, register tenants, move a 10%
# canary cohort one phase, inspect what blocks the next step, roll one tenant back, and check
# the audit log explains every phase.
#
#   FERRY=ferry FERRY_DATABASE_URL=sqlite://canary.db examples/canary_rollout.sh
#
# Tested by crates/ferry-cli/tests/it/examples.rs against a fresh store.
set -euo pipefail
ferry=${FERRY:-ferry}

$ferry migration create orders_move --kind tenant-move \
    --description "orders: shared table -> schema per tenant" \
    --config '{"source": {"schema": "public", "table": "orders"},
               "target": {"schema": "moved", "table": "orders"},
               "tenant_column": "tenant_id", "version_column": "version"}'

# Tenants and their row counts (row counts drive smallest-first cohorts).
printf 'acme,120000\nglobex,800\ninitech,5\n' > "${TMPDIR:-/tmp}/ferry-example-tenants.csv"
for i in $(seq 1 47); do echo "tenant-$i,$((i * 100))"; done >> "${TMPDIR:-/tmp}/ferry-example-tenants.csv"
$ferry tenant add orders_move --from-file "${TMPDIR:-/tmp}/ferry-example-tenants.csv"

# Look before leaping: which tenants would a 10% canary move?
$ferry rollout orders_move --percent 10 --reason "canary" --dry-run

# Move them. Exit code 0: every tenant moved and every live router acknowledged.
$ferry rollout orders_move --percent 10 --reason "canary"

# The next step needs a completed backfill; `tenant show` says what is missing. Advancing
# anyway is refused with exit code 3 and nothing changes.
canary=$($ferry tenant list orders_move --phase dual_write --limit 1 --json | sed -n 's/.*"tenant": "\(.*\)".*/\1/p')
$ferry tenant show orders_move "$canary"
if $ferry tenant advance orders_move "$canary"; then
    echo "advance should have been refused" >&2
    exit 1
fi

# Roll the canary tenant back to legacy, then read its history.
$ferry tenant rollback orders_move "$canary" --reason "example rollback"
$ferry tenant history orders_move "$canary"

$ferry status
$ferry migration verify orders_move
