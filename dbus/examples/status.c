/* avsd from C with GLib: proxies generated from the shipped introspection
 * XML by gdbus-codegen, so the compiler checks every name.
 *
 * Debian: apt-get install libglib2.0-dev libglib2.0-dev-bin
 *
 *   gdbus-codegen --interface-prefix org.avsd.Avs1. --c-namespace Avs \
 *       --generate-c-code avs-dbus /usr/share/dbus-1/interfaces/org.avsd.Avs1.xml
 *   cc -o status status.c avs-dbus.c \
 *       $(pkg-config --cflags --libs gio-2.0 gio-unix-2.0)
 *   ./status [/usr/share/dbus-1/interfaces/org.avsd.Avs1.xml]
 *
 * Prints Dialog.State, Dialog.LastError and Dialog.LastErrorReason, checks
 * the reason against the org.avsd.Avs1.AllowedValues annotation of the XML
 * (the closed set programs branch on), then taps: `Tap: ok`, or
 * `Tap: refused ERROR-NAME: message` and exit status 1. The system bus is
 * DBUS_SYSTEM_BUS_ADDRESS when set. */

#include <stdio.h>
#include <string.h>

#include "avs-dbus.h"

/* Whether `value` is one of the property's allowed values in `xml`. */
static gboolean
allowed (const char *xml, const char *iface, const char *prop, const char *value)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDBusNodeInfo) node = g_dbus_node_info_new_for_xml (xml, &error);
  if (node == NULL)
    {
      fprintf (stderr, "cannot parse the introspection XML: %s\n", error->message);
      return FALSE;
    }
  GDBusInterfaceInfo *i = g_dbus_node_info_lookup_interface (node, iface);
  GDBusPropertyInfo *p = i ? g_dbus_interface_info_lookup_property (i, prop) : NULL;
  const char *values = p ? g_dbus_annotation_info_lookup (p->annotations,
                                                          "org.avsd.Avs1.AllowedValues")
                         : NULL;
  if (values == NULL)
    return FALSE;
  g_auto (GStrv) each = g_strsplit (values, " ", -1);
  return g_strv_contains ((const char *const *) each, value);
}

int
main (int argc, char **argv)
{
  const char *xml_path = argc > 1 ? argv[1] : "/usr/share/dbus-1/interfaces/org.avsd.Avs1.xml";
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = NULL;
  if (!g_file_get_contents (xml_path, &xml, NULL, &error))
    {
      fprintf (stderr, "cannot read %s: %s\n", xml_path, error->message);
      return 2;
    }
  /* A plain pointer: gdbus-codegen defines no g_autoptr for its types
   * unless told a newer GLib minimum. */
  AvsDialog *dialog = avs_dialog_proxy_new_for_bus_sync (
      G_BUS_TYPE_SYSTEM, G_DBUS_PROXY_FLAGS_NONE, "org.avsd.Avs1", "/org/avsd/Avs1",
      NULL, &error);
  if (dialog == NULL)
    {
      fprintf (stderr, "cannot reach avsd: %s\n", error->message);
      return 2;
    }
  const char *reason = avs_dialog_get_last_error_reason (dialog);
  if (reason == NULL)
    {
      fprintf (stderr, "avsd is not running (no Dialog properties)\n");
      g_object_unref (dialog);
      return 2;
    }
  printf ("Dialog.State=%s\n", avs_dialog_get_state (dialog));
  printf ("Dialog.LastError=%s\n", avs_dialog_get_last_error (dialog));
  printf ("Dialog.LastErrorReason=%s (%s)\n", reason,
          allowed (xml, "org.avsd.Avs1.Dialog", "LastErrorReason", reason)
              ? "a documented value"
              : "NOT in AllowedValues");

  if (!avs_dialog_call_tap_sync (dialog, NULL, &error))
    {
      g_autofree char *name = g_dbus_error_get_remote_error (error);
      g_dbus_error_strip_remote_error (error);
      printf ("Tap: refused %s: %s\n", name ? name : "(no name)", error->message);
      g_object_unref (dialog);
      return 1;
    }
  printf ("Tap: ok\n");
  g_object_unref (dialog);
  return 0;
}
