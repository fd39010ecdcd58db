#!/usr/bin/env bash
# Proving Ferry on a staging database: the workload and its history checker.
#
#   FERRY=ferry FERRY_CHECK_DATA_URL=postgres://USER@HOST/staging examples/check.sh
#
# Runs a short check (10 tenants, 3 of them moving through every phase and back, 8 clients on
# 2 routers, 5 seconds), then the same as JSON for a script to read. Everything it creates
# (schemas ferry_check_<pid>*, an embedded control store) is removed at the end. Exit code 5
# means anomalies were found. Tested by crates/ferry-cli/tests/it/examples.rs.
set -euo pipefail
ferry=${FERRY:-ferry}

$ferry check --tenants 10 --moving 3 --duration 5
$ferry check --tenants 10 --moving 3 --duration 5 --json > check.json
grep -q '"passed": true' check.json && echo "check.json: passed"
