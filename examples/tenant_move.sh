#!/usr/bin/env bash
# Moving one tenant's rows of a shared table to another schema, with the copier.
#
#   FERRY=ferry FERRY_DATABASE_URL=sqlite://move.db FERRY_SOURCE_URL=postgres://… \
#       examples/tenant_move.sh
#
# Expects a table public.orders (tenant_id text, id bigint, …, version bigint, primary key
# (tenant_id, id)) in the source database holding a tenant "acme". The target table
# moved.orders is created LIKE it. Tested by crates/ferry-cli/tests/it/examples.rs.
set -euo pipefail
ferry=${FERRY:-ferry}

$ferry migration create orders_move --kind tenant-move --config '{
  "source": {"schema": "public", "table": "orders"},
  "target": {"schema": "moved", "table": "orders"},
  "tenant_column": "tenant_id",
  "version_column": "version",
  "copy": {"target_batch_ms": 200, "min_batch": 200, "max_batch": 2000}
}'
$ferry tenant add orders_move acme=5000

# dual_write: the application now writes both sides; the copier backfills history.
$ferry tenant advance orders_move acme --reason "start the move"
$ferry copy run orders_move --tenant acme --create-target
$ferry copy status orders_move

# Everything matches: on to shadow reads, then the target takes over.
$ferry verify orders_move acme
$ferry tenant advance orders_move acme --from-phase dual_write
$ferry tenant advance orders_move acme --from-phase shadow
$ferry tenant advance orders_move acme --from-phase target_primary
$ferry tenant advance orders_move acme --from-phase target_only

# complete: the copier retires acme's rows from the source.
$ferry copy run orders_move --tenant acme
$ferry tenant history orders_move acme
