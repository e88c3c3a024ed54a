# start_private_bus DIR: a dbus-daemon configured like the system bus, with
# the project's own policy from dbus/ included, listening in DIR. Exports
# DBUS_SYSTEM_BUS_ADDRESS and PRIVATE_BUS_PID. Source it; don't run it.
start_private_bus() {
  local dir=$1 me
  me=$(id -un)
  mkdir -p "$dir/system.d"
  cp dbus/*.conf "$dir/system.d/"
  cat > "$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>$dir/system.d</includedir>
  <!-- demo only: you stand in for the avsd service user -->
  <policy user="$me">
    <allow own="org.avsd.Avs1"/>
    <allow send_destination="org.avsd.Avs1"/>
  </policy>
</busconfig>
CONF
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
