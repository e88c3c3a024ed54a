# Sourced by scripts/bench: fleet_figures, the companion as a fleet.
# haproxy in TCP mode (as the README's fleet section sets it up; TLS passes
# through) in front of 1, then FLEET_INSTANCES companion instances that
# share the bench companion's store (its SQLite file today, with
# STATE_DIRECTORY): token requests/s and latency percentiles with $CLIENTS
# h2load clients, each a connection of its own (haproxy balances
# connections), polling a linked session for $LOAD_SECS s.
#
# Needs from scripts/bench: BIN, work, RES, CLIENTS, LOAD_SECS, BENCH,
# pids, free_port, pause, wait_for_line, step, and $work/poll.json naming a
# linked session. Writes $RES/fleet_N.json per instance count.

FLEET_INSTANCES=${BENCH_FLEET_INSTANCES:-3}
# Debian puts it in /usr/sbin, which is not on an unprivileged user's PATH.
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}

# Start haproxy on 127.0.0.1:$1 in front of the ports $2…; its pid in
# FLEET_HAPROXY_PID once it accepts connections.
fleet_haproxy() {
  local lb=$1 cfg=$work/haproxy-$1.cfg i=0 port
  shift
  {
    printf 'global\n    maxconn 8192\ndefaults\n    mode tcp\n'
    printf '    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n'
    printf 'frontend fleet\n    bind 127.0.0.1:%s\n    default_backend companions\n' "$lb"
    printf 'backend companions\n    balance roundrobin\n'
    for port in "$@"; do
      i=$((i + 1))
      printf '    server s%s 127.0.0.1:%s\n' "$i" "$port"
    done
  } > "$cfg"
  "$HAPROXY" -db -f "$cfg" > "$work/haproxy-$lb.log" 2>&1 &
  FLEET_HAPROXY_PID=$!
  pids+=("$FLEET_HAPROXY_PID")
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$lb") 2>/dev/null; then
      return 0
    fi
    pause 0.05
  done
  echo "haproxy did not listen on $lb:" >&2
  cat "$work/haproxy-$lb.log" >&2
  exit 1
}

fleet_figures() {
  local ports=() i n lb rps
  for i in $(seq "$FLEET_INSTANCES"); do
    ports+=("$(free_port)")
    sed "s/^listen = .*/listen = \"127.0.0.1:${ports[-1]}\"/" "$work/companion.toml" \
      > "$work/fleet-$i.toml"
    STATE_DIRECTORY=$work/companion-state RUST_LOG=warn "$BIN/avs-companion" \
      --config "$work/fleet-$i.toml" > "$work/fleet-$i.out" 2> "$work/fleet-$i.log" &
    pids+=("$!")
    wait_for_line "$work/fleet-$i.out" "listening on"
  done
  for n in 1 "$FLEET_INSTANCES"; do
    step "companion fleet: $CLIENTS clients through haproxy (TCP mode) to $n instance(s) on one SQLite file, ${LOAD_SECS} s (h2load)"
    lb=$(free_port)
    fleet_haproxy "$lb" "${ports[@]:0:$n}"
    h2load -c "$CLIENTS" -m 1 -t 1 -D "$LOAD_SECS" --warm-up-time=2 -d "$work/poll.json" \
      -H 'content-type: application/json' --log-file="$work/fleet-load-$n.log" \
      "https://127.0.0.1:$lb/provision/accessToken" > "$work/fleet-load-$n.out" 2>&1 \
      || cat "$work/fleet-load-$n.out" >&2
    grep -E '^(finished|requests|status codes|time for request)' "$work/fleet-load-$n.out" || true
    rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$work/fleet-load-$n.out")
    "${BENCH[@]}" h2log "$work/fleet-load-$n.log" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d.update(instances=int(sys.argv[1]), clients=int(sys.argv[2]), rps=float(sys.argv[3] or 0), store="SQLite")
print(json.dumps(d))' "$n" "$CLIENTS" "$rps" > "$RES/fleet_$n.json"
    kill "$FLEET_HAPROXY_PID" 2>/dev/null || true
    wait "$FLEET_HAPROXY_PID" 2>/dev/null || true
  done
}

# The table of fleet_figures, for results.md.
fleet_table() {
  python3 - "$RES" "$FLEET_INSTANCES" <<'PY'
import json, os, sys
rows = []
for n in sorted({1, int(sys.argv[2])}):
    path = os.path.join(sys.argv[1], "fleet_%d.json" % n)
    if os.path.exists(path) and os.path.getsize(path):
        rows.append(json.load(open(path)))
if rows:
    print("\nCompanion fleet: POST /provision/accessToken through haproxy (TCP mode), one connection per client\n")
    print("| instances | store | clients | requests/s | median | p99 | statuses |\n|---|---|---|---|---|---|---|")
    for d in rows:
        lat = d.get("latency_ms") or {}
        print("| %d | %s | %d | %.0f | %.1f ms | %.1f ms | %s |" % (
            d["instances"], d["store"], d["clients"], d["rps"], lat.get("median", 0), lat.get("p99", 0),
            ", ".join("%s: %s" % kv for kv in sorted(d.get("status", {}).items()))))
    one = rows[0]["rps"]
    if len(rows) > 1 and one:
        print("\n%d instances answer %.2f× the requests of one (%d cores here)." % (
            rows[-1]["instances"], rows[-1]["rps"] / one, len(os.sched_getaffinity(0))))
PY
}
