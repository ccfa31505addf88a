#!/usr/bin/env bash
# Database outage (quality.md, Reliability): PostgreSQL down → ingest answers `503 U001` with
# `Retry-After`, readiness goes red; PostgreSQL back → service resumes by itself, without a
# restart of weiche, and what was stored before the outage is intact.
#
# Usage: conformance-tests/db-outage.sh [PATH_TO_WEICHE]   (default: target/debug/weiche)
#
# Builds nothing. Creates a throwaway PostgreSQL cluster (initdb) in a temporary directory on a
# free port — as the user `postgres` when run as root, since PostgreSQL refuses to run as root —
# runs `weiche serve` against it, stops the cluster with `pg_ctl stop -m immediate` and starts it
# again. Everything it starts is stopped and removed on exit. Exit status 0 only if every check
# passed. PostgreSQL binaries: $PG_BIN, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO/target/debug/weiche}"
case "$BIN" in
/*) ;;
*) BIN="$(pwd)/$BIN" ;;
esac
START_SECS=$SECONDS
# Records of the delivery in flight when PostgreSQL stops, and how long after its start.
INFLIGHT_RECORDS="${INFLIGHT_RECORDS:-5000}"
INFLIGHT_DELAY="${INFLIGHT_DELAY:-0.5}"

say() { printf '[db-outage %3ds] %s\n' "$((SECONDS - START_SECS))" "$*"; }

FAILURES=()
PASSES=0
pass() {
  PASSES=$((PASSES + 1))
  say "ok   $1"
}
fail() {
  FAILURES+=("$1")
  say "FAIL $1"
}
check() { # check NAME COMMAND...: records the outcome, never exits
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

WORK=""
WEICHE_PID=""
PGDATA=""
AS_PG=()
PG_BIN="${PG_BIN:-}"

summary() { # summary EXIT_STATUS
  local total=$((PASSES + ${#FAILURES[@]}))
  echo
  if [ "$1" -eq 0 ] && [ "${#FAILURES[@]}" -eq 0 ] && [ "$PASSES" -gt 0 ]; then
    echo "db-outage: PASS ($PASSES/$total checks, $((SECONDS - START_SECS)) s)"
  elif [ "${#FAILURES[@]}" -eq 0 ]; then
    echo "db-outage: FAIL (aborted with exit status $1 after $PASSES passed checks, $((SECONDS - START_SECS)) s)"
  else
    echo "db-outage: FAIL (${#FAILURES[@]} of $total checks failed, $((SECONDS - START_SECS)) s)"
    for f in "${FAILURES[@]}"; do echo "  - $f"; done
  fi
}

cleanup() {
  local status=$?
  set +e
  if [ -n "$WEICHE_PID" ] && kill -0 "$WEICHE_PID" 2>/dev/null; then
    kill -TERM "$WEICHE_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$WEICHE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$WEICHE_PID" 2>/dev/null
    wait "$WEICHE_PID" 2>/dev/null
  fi
  if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m immediate -w >/dev/null 2>&1
  fi
  if [ "$status" -ne 0 ] || [ "${#FAILURES[@]}" -ne 0 ]; then
    if [ -n "$WORK" ] && [ -f "$WORK/weiche.log" ]; then
      echo "--- last lines of the weiche log"
      tail -n 40 "$WORK/weiche.log"
    fi
    if [ -n "$WORK" ] && [ -f "$WORK/pg/postgres.log" ]; then
      echo "--- last lines of the PostgreSQL log"
      tail -n 20 "$WORK/pg/postgres.log"
    fi
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  if [ "$status" -eq 0 ] && [ "${#FAILURES[@]}" -ne 0 ]; then status=1; fi
  summary "$status"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  fail "$1"
  exit 1
}

# --- prerequisites -------------------------------------------------------------------------
[ -x "$BIN" ] || die "weiche binary not found or not executable: $BIN (build it first)"
command -v curl >/dev/null || die "curl is needed"
command -v sha256sum >/dev/null || die "sha256sum is needed"
if [ -n "${PG_BIN:-}" ]; then
  :
elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
  PG_BIN="$(pg_config --bindir)"
else
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] ||
  die "PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weiche-db-outage.XXXXXX")"
chmod 755 "$WORK"
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run PostgreSQL"
  mkdir -p "$WORK/pg"
  chown postgres "$WORK/pg"
  AS_PG=(runuser -u postgres --)
else
  mkdir -p "$WORK/pg"
  AS_PG=(env)
fi
PGDATA="$WORK/pg/data"

# --- a throwaway PostgreSQL cluster --------------------------------------------------------
say "initdb with $PG_BIN"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C \
  --no-sync >"$WORK/initdb.log" 2>&1 || {
  cat "$WORK/initdb.log"
  die "initdb failed"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_start() {
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" start -D "$PGDATA" -w -t 30 -l "$WORK/pg/postgres.log" \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
}

PG_PORT=""
for _ in 1 2 3 4 5; do
  candidate=$((20000 + RANDOM % 40000))
  port_in_use "$candidate" && continue
  PG_PORT="$candidate"
  if pg_start; then break; fi
  PG_PORT=""
done
[ -n "$PG_PORT" ] || die "could not start PostgreSQL on a free port"
say "PostgreSQL up on 127.0.0.1:$PG_PORT"
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE DATABASE weiche" || die "CREATE DATABASE failed"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/weiche"

# --- configuration (as conformance-tests/testkit.rs write_config) --------------------------
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
VENDOR_TOKEN="vendor-$(random_hex 24)"
STATS_TOKEN="statistik-$(random_hex 24)"
mkdir -p "$WORK/policies" "$WORK/data"
sed 's/^batch_max_age_secs = 2$/batch_max_age_secs = 0/' "$REPO/policies/statistik-nrw.toml" \
  >"$WORK/policies/statistik-nrw.toml"
grep -q '^batch_max_age_secs = 0$' "$WORK/policies/statistik-nrw.toml" ||
  die "the shipped policy no longer sets batch_max_age_secs = 2"
printf '%s' "$(random_hex 32)" >"$WORK/key1.hex"
cat >"$WORK/weiche.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
database_url = "$DATABASE_URL"
mappings_dir = "$REPO/mappings"
policies_dir = "$WORK/policies"
schemas_dir = "$REPO/schemas"

[[vendors]]
id = "demo-vendor"
token = { sha256 = "$(sha "$VENDOR_TOKEN")" }
formats = ["klidas-json"]
default_format = "klidas-json"

[[recipients]]
id = "statistik-nrw"
token = { sha256 = "$(sha "$STATS_TOKEN")" }
pseudonym_keys = [{ kid = "t1", secret = { file = "$WORK/key1.hex" } }]
EOF

# --- weiche ------------------------------------------------------------------------------
say "starting $BIN serve"
unset_weiche=()
for v in $(compgen -e | grep '^WEICHE_' || true); do unset_weiche+=(-u "$v"); done
: >"$WORK/weiche.log"
(
  cd "$WORK"
  exec env "${unset_weiche[@]}" RUST_LOG="${RUST_LOG:-info}" \
    "$BIN" serve --config "$WORK/weiche.toml"
) >>"$WORK/weiche.log" 2>&1 &
WEICHE_PID=$!
BASE=""
for _ in $(seq 1 200); do
  BASE="$(sed -n 's/.*weiche listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$WORK/weiche.log" | head -n1)"
  [ -n "$BASE" ] && break
  kill -0 "$WEICHE_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$BASE" ] || die "weiche did not start (see its log below)"
say "weiche (pid $WEICHE_PID) listening on $BASE"

# A klidas-json delivery of $2 valid records with message id $1.
delivery() {
  local id="$1" n="$2" i sep=""
  local fb=("SGB II" "Suchthilfe" "Suchthilfe") sex=(weiblich maennlich)
  printf '{"klidas":"1.0","uebermittlung":{"id":"%s","erstellt":"2026-11-02T16:20:05+01:00",' "$id"
  printf '"absender":"Outage test","lieferart":"ergaenzung","berichtsmonat":"2026-10"},"faelle":['
  for ((i = 0; i < n; i++)); do
    printf '%s{"fallId":"%s-%d","fachbereich":"%s","eroeffnet":"2026-01-05","abgeschlossen":null,' \
      "$sep" "$id" "$i" "${fb[i % 3]}"
    printf '"team":"Team Nord","klient":{"id":"KL-%s-%d","name":{"familienname":"Nowak",' "$id" "$i"
    printf '"vornamen":["Anna"]},"geburtsdatum":"19%02d-0%d-1%d","geschlecht":"%s",' \
      $((50 + i % 49)) $((1 + i % 9)) $((i % 10)) "${sex[i % 2]}"
    printf '"staatsangehoerigkeit":"DEU","adresse":{"strasse":"Hauptstraße","hausnummer":"1",'
    printf '"plz":"50667","ags":"05315000","sozialraum":"Altstadt"},"kontakt":{"telefon":null,'
    printf '"email":null},"bedarfsgemeinschaft":null,"schulabschluss":"Realschulabschluss",'
    printf '"erwerb":"arbeitslos"},"leistungen":[{"code":"BER","rechtsgrundlage":"SGB II § 16a",'
    printf '"von":"2026-02-01","bis":null,"stundenProWoche":2}],"schutzbedarf":null,"einwilligungen":[]}'
    sep=","
  done
  printf ']}'
}
delivery "outage-first" 200 >"$WORK/first.json"
delivery "outage-second" 200 >"$WORK/second.json"
delivery "outage-inflight" "$INFLIGHT_RECORDS" >"$WORK/inflight.json"

# request NAME METHOD PATH TOKEN [BODY_FILE]: response in $WORK/NAME.{body,headers}, status in
# $STATUS, seconds taken in $TOOK.
STATUS=""
TOOK=""
request() {
  local name="$1" method="$2" path="$3" token="$4" body="${5:-}"
  local args=(-sS -X "$method" -o "$WORK/$name.body" -D "$WORK/$name.headers"
    -w '%{http_code} %{time_total}' --max-time 30)
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "@$body")
  local out
  out="$(curl "${args[@]}" "$BASE$path" 2>"$WORK/$name.curl")" || out="000 0"
  STATUS="${out%% *}"
  TOOK="${out#* }"
  printf '%s %s\n' "$STATUS" "$TOOK" >"$WORK/$name.status"
}
# outcome NAME: $STATUS and $TOOK of a request run in the background.
outcome() { read -r STATUS TOOK <"$WORK/$1.status" || { STATUS=000; TOOK=0; }; }
# within NAME SECONDS: the request took less than SECONDS.
within() { awk -v t="$TOOK" -v m="$1" 'BEGIN { exit !(t < m) }'; }
one_of() { # one_of VALUE CHOICE...
  local v="$1" c
  shift
  for c in "$@"; do [ "$v" = "$c" ] && return 0; done
  return 1
}
body_has() { grep -q -- "$2" "$WORK/$1.body"; }
header_has() { grep -qi -- "^$2" "$WORK/$1.headers"; }
json_string() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$WORK/$1.body" | head -n1; }

# --- before the outage -------------------------------------------------------------------
request ready0 GET /health/ready ""
check "readiness 200 before the outage" [ "$STATUS" = 200 ]
request first POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/first.json"
check "first delivery answers 200 (was $STATUS)" [ "$STATUS" = 200 ]
check "first delivery is E1" body_has first '"status":"E1"'
check "first delivery accepted 200 records" body_has first '"accepted":200,'
FIRST_ID="$(json_string first delivery_id)"
[ -n "$FIRST_ID" ] || die "no delivery_id in the first receipt: $(head -c 300 "$WORK/first.body")"

# --- outage ------------------------------------------------------------------------------
# A large delivery is in flight when the database stops: it is stored whole (200) or not at all
# (503 U001), never answered with a 500.
request inflight POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/inflight.json" &
inflight_pid=$!
sleep "$INFLIGHT_DELAY"
say "stopping PostgreSQL (immediate) with a delivery of $INFLIGHT_RECORDS records in flight"
"${AS_PG[@]}" "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m immediate -w >/dev/null
# The three requests run at once: each may wait for the store's connection timeout.
request down POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/second.json" &
pids=($!)
request readydown GET /health/ready "" &
pids+=($!)
request receiptdown GET "/api/v1/deliveries/$FIRST_ID" "$VENDOR_TOKEN" &
pids+=($!)
wait "${pids[@]}" || true
outcome down
say "delivery during the outage: $STATUS in ${TOOK}s"
check "delivery during the outage answers 503 (was $STATUS)" [ "$STATUS" = 503 ]
check "delivery during the outage has code U001" body_has down '"code":"U001"'
check "delivery during the outage has Retry-After" header_has down 'Retry-After:'
check "delivery during the outage answers within 10 s" within 10
outcome readydown
say "readiness during the outage: $STATUS in ${TOOK}s"
check "readiness during the outage answers 503 (was $STATUS)" [ "$STATUS" = 503 ]
check "readiness during the outage reports the database unreachable" \
  body_has readydown '"database":"unreachable"'
check "readiness during the outage answers within 10 s" within 10
outcome receiptdown
say "reading a receipt during the outage: $STATUS in ${TOOK}s"
check "reading a receipt during the outage answers 503 (was $STATUS)" [ "$STATUS" = 503 ]
check "reading a receipt during the outage has code U001" body_has receiptdown '"code":"U001"'
wait "$inflight_pid" || true
outcome inflight
INFLIGHT_STATUS="$STATUS"
say "delivery in flight at the stop: $STATUS in ${TOOK}s"
check "the delivery in flight answers 200 or 503 (was $STATUS)" one_of "$STATUS" 200 503
if [ "$STATUS" = 503 ]; then
  check "the delivery in flight has code U001" body_has inflight '"code":"U001"'
  check "the delivery in flight has Retry-After" header_has inflight 'Retry-After:'
fi
request live GET /health/live ""
check "liveness stays 200 during the outage (was $STATUS)" [ "$STATUS" = 200 ]
check "weiche still runs during the outage" kill -0 "$WEICHE_PID"

# --- recovery ----------------------------------------------------------------------------
say "starting PostgreSQL again"
pg_start || die "PostgreSQL did not start again on port $PG_PORT"
BACK_AT=$SECONDS
RECOVERED=""
while [ $((SECONDS - BACK_AT)) -lt 20 ]; do
  request readyup GET /health/ready ""
  if [ "$STATUS" = 200 ]; then
    RECOVERED=yes
    break
  fi
  sleep 0.2
done
say "readiness after the restart of PostgreSQL: $STATUS after $((SECONDS - BACK_AT))s"
check "readiness is 200 again within 20 s" [ -n "$RECOVERED" ]
request second POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/second.json"
check "a delivery after the outage answers 200 (was $STATUS)" [ "$STATUS" = 200 ]
check "the delivery after the outage is E1" body_has second '"status":"E1"'
check "the delivery after the outage is not a duplicate" body_has second '"duplicate":false'
check "weiche was not restarted" kill -0 "$WEICHE_PID"
check "weiche started once" [ "$(grep -c 'weiche listening on' "$WORK/weiche.log")" = 1 ]

# --- what was stored before the outage is intact ------------------------------------------
request receipt GET "/api/v1/deliveries/$FIRST_ID" "$VENDOR_TOKEN"
check "the first receipt reads 200 (was $STATUS)" [ "$STATUS" = 200 ]
check "the first receipt is unchanged" cmp -s "$WORK/first.body" "$WORK/receipt.body"
request again POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/first.json"
check "the first delivery again is a duplicate of it" body_has again "\"delivery_id\":\"$FIRST_ID\""
check "the first delivery again answers duplicate" body_has again '"duplicate":true'
# The delivery in flight again: a duplicate if it was answered 200, else stored whole now (or a
# duplicate, if its commit reached the disk just before the stop and only the answer was lost).
request inflight2 POST "/api/v1/deliveries?format=klidas-json" "$VENDOR_TOKEN" "$WORK/inflight.json"
check "the delivery in flight, sent again, answers 200 (was $STATUS)" [ "$STATUS" = 200 ]
check "the delivery in flight, sent again, has all $INFLIGHT_RECORDS records" \
  body_has inflight2 "\"accepted\":$INFLIGHT_RECORDS,"
if [ "$INFLIGHT_STATUS" = 200 ]; then
  check "the delivery in flight, sent again, is a duplicate" body_has inflight2 '"duplicate":true'
fi
request batches GET "/api/v1/batches?state=ready" "$STATS_TOKEN"
check "batches list 200 (was $STATUS)" [ "$STATUS" = 200 ]
ITEMS="$(grep -o '"items":[0-9]*' "$WORK/batches.body" | cut -d: -f2 | awk '{s+=$1} END {print s+0}')"
EXPECTED=$((400 + INFLIGHT_RECORDS))
check "every accepted record is in the batches once: $EXPECTED (found ${ITEMS:-0})" \
  [ "${ITEMS:-0}" = "$EXPECTED" ]
