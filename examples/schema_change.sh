#!/usr/bin/env bash
# An expand–contract schema change, tenant by tenant: orders.amount from text to
# numeric(12,2), orders.note renamed to comment, a NOT NULL currency column added, and an
# index on the new amount (the plan: examples/schema_change.json; the page:
# docs/schema-changes.md).
#
#   FERRY=ferry FERRY_DATABASE_URL=sqlite://schema.db FERRY_SOURCE_URL=postgres://… \
#       examples/schema_change.sh
#
# Expects a table public.orders (tenant_id bigint, id bigint, amount text, note text, primary
# key (tenant_id, id)) in the application's database (FERRY_SOURCE_URL) holding tenants 1 and
# 2. Tested by crates/ferry-cli/tests/it/examples.rs.
set -euo pipefail
ferry=${FERRY:-ferry}
plan="$(dirname "$0")/schema_change.json"

$ferry migration create orders_v2 --kind schema-change --config @"$plan"
$ferry tenant add orders_v2 1 2

# Check the plan against the live tables, and read the SQL it will run. Neither changes anything.
$ferry schema validate orders_v2
$ferry schema plan orders_v2

# Expand: the new shape beside the old, the version schema public_orders_v2, the triggers.
$ferry schema start orders_v2

# Each tenant: dual_write (both shapes written), backfilled, then shadow, then reads switch to
# the new shape at target_primary, and only the new shape is used from target_only.
$ferry rollout orders_v2 --all --from-phase legacy --reason "orders_v2 expanded"
$ferry schema backfill orders_v2
$ferry schema status orders_v2
$ferry rollout orders_v2 --all --from-phase dual_write
$ferry rollout orders_v2 --all --from-phase shadow
$ferry rollout orders_v2 --all --from-phase target_primary

# Contract: the old shape dropped; every tenant advanced to complete.
$ferry schema complete orders_v2
$ferry schema status orders_v2 --json
