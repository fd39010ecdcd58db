#!/usr/bin/env bash
# Tiering old rows of a live table to Parquet segments, one tenant at a time.
#
#   FERRY=ferry FERRY_DATABASE_URL=sqlite://tier.db FERRY_HOT_URL=postgres://… \
#       COLD_DIR=/var/lib/ferry/cold examples/tiering.sh
#
# Expects a table public.events (tenant_id text, id bigint, …, at timestamptz, primary key
# (tenant_id, id)) in the hot database holding a tenant "acme" with rows older than 2021.
# Tested by crates/ferry-cli/tests/it/examples.rs.
set -euo pipefail
ferry=${FERRY:-ferry}
cold=${COLD_DIR:?set COLD_DIR to the directory segments go to}

$ferry migration create events_tier --kind tiering --config "{
  \"table\": \"events\", \"tenant_column\": \"tenant_id\", \"age_column\": \"at\",
  \"cold_url\": \"file://$cold\"
}"
$ferry tenant add events_tier acme=5000

# dual_write: the application reads and writes hot; the archiver copies old rows to cold.
$ferry tenant advance events_tier acme --reason "start tiering"
$ferry tier run events_tier --tenant acme --cutoff 2021-01-01T00:00:00Z
$ferry tier status events_tier

# shadow compares cold reads with hot; target_primary serves archived rows from cold.
$ferry tenant advance events_tier acme --from-phase dual_write
$ferry tenant advance events_tier acme --from-phase shadow
# target_only: the hot copies of archived rows go.
$ferry tenant advance events_tier acme --from-phase target_primary
$ferry tier run events_tier --tenant acme
$ferry buffer list events_tier
$ferry tier status events_tier --json
