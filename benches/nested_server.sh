#!/bin/bash
# The 1 GB streaming bound for the nested JSON and JSON Lines syntaxes (BENCHMARKS.md): starts a
# fresh release `weiche serve` (SQLite, one pull recipient) under /usr/bin/time -v, streams FILE
# from disk as one chunked delivery, waits 5 s after the receipt, stops the server and prints its
# peak RSS. Generate FILE with benches/gen_nested.py.
#
# usage: benches/nested_server.sh FORMAT FILE CONTENT_TYPE [PORT]
#   e.g. benches/nested_server.sh klientplus-json /tmp/kp-1g.json application/json
set -e
F=$1; FILE=$2; CT=$3; P=${4:-18181}
REPO=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d)
mkdir -p "$D/policies" "$D/data"
cp "$REPO/policies/statistik-nrw.toml" "$D/policies/"
printf 'weiche-large-key' | sha256sum | cut -c1-64 | tr -d '\n' > "$D/statistik.key"
sha() { printf '%s' "$1" | sha256sum | cut -c1-64; }
cat > "$D/weiche.toml" <<EOT
listen = "127.0.0.1:$P"
data_dir = "$D/data"
database_url = "sqlite://$D/data/weiche.db"
mappings_dir = "$REPO/mappings"
policies_dir = "$D/policies"
schemas_dir = "$REPO/schemas"

[limits]
max_body_bytes = 2000000000
max_records = 1000000000

[[vendors]]
id = "demo-vendor"
token = { sha256 = "$(sha vendor-token-bench)" }
formats = ["$F"]
default_format = "$F"

[[recipients]]
id = "statistik-nrw"
token = { sha256 = "$(sha stats-token-bench)" }
pseudonym_keys = [{ kid = "l1", secret = { file = "$D/statistik.key" } }]
EOT
/usr/bin/time -v "$REPO/target/release/weiche" serve --config "$D/weiche.toml" > "$D/server.log" 2> "$D/time.err" &
TP=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$P/health/ready" && break; sleep 0.5; done
echo "start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
S=$(date +%s)
curl -s -X POST -T "$FILE" -H "Content-Type: $CT" -H "Authorization: Bearer vendor-token-bench" \
    -H "Transfer-Encoding: chunked" "http://127.0.0.1:$P/api/v1/deliveries?format=$F&mode=partial" > "$D/receipt.json"
echo "receipt after $(( $(date +%s) - S )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 -c "import json,sys;r=json.load(open(sys.argv[1]));print({k:r.get(k) for k in ['status','received','accepted','rejected','routed']})" "$D/receipt.json"
sleep 5
kill -INT "$(pgrep -P $TP)"
wait $TP || true
grep -E "Maximum resident" "$D/time.err"
rm -rf "$D"
