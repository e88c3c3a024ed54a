#!/usr/bin/python3
"""avsd from Python: read the dialog's and the login's state, then tap.

Uses jeepney (Debian: apt-get install python3-jeepney), a pure-Python
D-Bus library with no main loop. Reading needs no privileges; Tap needs
root, group avsd, or (with polkitd) the user of the active local session.

    python3 dbus/examples/status.py

Prints one `Interface.Property=value` line per property read, then
`Tap: ok`, or `Tap: refused ERROR-NAME: message` and exits 1. Programs
should branch on LastErrorReason (a closed set, listed in the
org.avsd.Avs1.AllowedValues annotation of the introspection), never on
the words of LastError. The system bus is DBUS_SYSTEM_BUS_ADDRESS when set.
"""

import sys

from jeepney import DBusAddress, DBusErrorResponse, Properties, new_method_call
from jeepney.io.blocking import open_dbus_connection

SERVICE = "org.avsd.Avs1"
PATH = "/org/avsd/Avs1"


def interface(name):
    return DBusAddress(PATH, bus_name=SERVICE, interface=f"org.avsd.Avs1.{name}")


def get(conn, iface, prop):
    # Properties.Get answers a variant: (signature, value).
    _signature, value = conn.send_and_get_reply(
        Properties(interface(iface)).get(prop), unwrap=True
    )[0]
    return value


def main():
    with open_dbus_connection(bus="SYSTEM") as conn:
        for iface, prop in [
            ("Authorization", "State"),
            ("Authorization", "LastError"),
            ("Authorization", "LastErrorReason"),
            ("Dialog", "State"),
            ("Dialog", "Connection"),
            ("Dialog", "LastError"),
            ("Dialog", "LastErrorReason"),
        ]:
            print(f"{iface}.{prop}={get(conn, iface, prop)}")
        try:
            conn.send_and_get_reply(new_method_call(interface("Dialog"), "Tap"), unwrap=True)
        except DBusErrorResponse as e:
            message = e.data[0] if e.data else ""
            print(f"Tap: refused {e.name}: {message}")
            return 1
        print("Tap: ok")
        return 0


if __name__ == "__main__":
    sys.exit(main())
