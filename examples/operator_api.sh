#!/usr/bin/env bash
# The admin API from an operator's script: create tokens, start `ferry serve`, read the
# status, advance a tenant through the API (audited under the token's name), scrape
# /metrics, read the operator log, and see a read-only token refused an action.
#
#   FERRY=ferry FERRY_DATABASE_URL=sqlite://ops.db examples/operator_api.sh
#
# Needs curl. Tested by crates/ferry-cli/tests/it/examples.rs against a fresh store.
set -euo pipefail
ferry=${FERRY:-ferry}
port=${FERRY_EXAMPLE_PORT:-7391}
api="http://127.0.0.1:$port"

$ferry migration create orders_move --kind tenant-move
$ferry tenant add orders_move acme=120000 globex=800 initech=5

# Tokens are printed once; the store keeps only their SHA-256.
oncall=$($ferry token create oncall --scope operator)
grafana=$($ferry token create grafana --scope read)
$ferry token list

$ferry serve --listen "127.0.0.1:$port" > "${TMPDIR:-/tmp}/ferry-serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null -H "Authorization: Bearer $grafana" "$api/api/v1/status" && break
    sleep 0.1
done

echo "== status (read token)"
curl -fsS -H "Authorization: Bearer $grafana" "$api/api/v1/status?migration=orders_move"
echo

echo "== advance initech (operator token)"
curl -fsS -X POST -H "Authorization: Bearer $oncall" -H 'Content-Type: application/json' \
    -d '{"reason": "first tenant through the API", "wait_s": 5}' \
    "$api/api/v1/migrations/orders_move/tenants/initech/advance"
echo

echo "== a read token may not act"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $grafana" \
    -H 'Content-Type: application/json' -d '{}' \
    "$api/api/v1/migrations/orders_move/tenants/acme/advance")
echo "HTTP $code"

echo "== metrics"
curl -fsS -H "Authorization: Bearer $grafana" "$api/metrics" | grep '^ferry_tenants{'

echo "== operator log"
curl -fsS -H "Authorization: Bearer $grafana" "$api/api/v1/operations?limit=5"
echo

# The CLI reads the same store: the change is in the tenant's history under the token's name.
$ferry tenant history orders_move initech
