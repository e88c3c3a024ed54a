# start_private_bus DIR: a dbus-daemon configured like the system bus, with
# the project's own policy from dbus/ included, listening in DIR. Its config
# comes from scripts/lib/private-bus.conf, which the tests use too. Exports
# DBUS_SYSTEM_BUS_ADDRESS and PRIVATE_BUS_PID. Source it; don't run it.
start_private_bus() {
  local dir=$1 me
  me=$(id -un)
  mkdir -p "$dir/system.d"
  cp dbus/*.conf "$dir/system.d/"
  # The demo's own rule: you stand in for the avsd service user.
  local extra="  <policy user=\"$me\">\n    <allow own=\"org.avsd.Avs1\"/>\n    <allow send_destination=\"org.avsd.Avs1\"/>\n  </policy>\n"
  sed -e "s|@SOCKET@|$dir/bus|" -e "s|@POLICY_DIR@|$dir/system.d|" \
      -e "s|@EXTRA_RULES@|$extra|" scripts/lib/private-bus.conf > "$dir/bus.conf"
  local addr_file="$dir/address"
  dbus-daemon --config-file="$dir/bus.conf" --nofork --print-address=3 3>"$addr_file" 2>"$dir/bus.log" &
  PRIVATE_BUS_PID=$!
  while [ ! -s "$addr_file" ]; do
    kill -0 "$PRIVATE_BUS_PID" 2>/dev/null || { cat "$dir/bus.log" >&2; return 1; }
    read -r -t 0.05 <> <(:) || true
  done
  DBUS_SYSTEM_BUS_ADDRESS=$(head -1 "$addr_file")
  export DBUS_SYSTEM_BUS_ADDRESS PRIVATE_BUS_PID
}
