# Shared by scripts/test and scripts/demo: install what they need, once.
# Idempotent and quick when everything is present. Source it; don't run it.

# Run as root directly, or through sudo when it is there.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# need_apt PACKAGE...: install the Debian packages that are missing.
need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# rust_new_enough: whether rustc is at least Cargo.toml's rust-version.
rust_new_enough() {
  local want have
  want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ]
}

# need_rust: a Rust toolchain new enough for the crate, with fmt and clippy.
# Without one (a fresh Debian 12 has no cargo, and Debian's own is too old)
# it installs rustup for this user, non-interactively, minimal profile.
need_rust() {
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1 || { ! rust_new_enough && ! command -v rustup >/dev/null 2>&1; }; then
    echo "==> installing Rust with rustup (https://rustup.rs) into $HOME/.cargo"
    need_apt curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! rust_new_enough; then
    echo "error: rustc $(rustc --version | awk '{print $2}') is older than this crate's rust-version; run: rustup update stable" >&2
    exit 1
  fi
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      echo "==> adding rustup component $comp"
      rustup component add "$comp"
    fi
  done
}

# need_nextest: cargo-nextest, which scripts/test runs the tests with (each
# test in its own process, several at once: most black-box tests wait on
# the programs they start, not on the CPU). Machines that already have it
# (CI's) skip the build; elsewhere it is built once from crates.io.
need_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest (a few minutes, once)"
    cargo install cargo-nextest --locked
  fi
}

# The packages every script needs: the private bus, busctl/systemd-analyze,
# setpriv, ALSA headers for cpal, pkg-config, g++ for libFuzzer, and zbarimg
# (zbar-tools) that reads back the QR code avsctl login prints, haproxy
# (the load balancer the multi-instance companion tests start in front of
# it), the PostgreSQL server and psql the companion's store tests start as
# `nobody`, and python3-jeepney, libglib2.0-dev, libglib2.0-dev-bin: the
# D-Bus client examples in dbus/examples/ that tests/dbus_examples.rs builds
# and runs.
BASE_APT=(dbus-daemon dbus-bin systemd util-linux libasound2-dev pkg-config ca-certificates g++ zbar-tools haproxy postgresql python3-jeepney libglib2.0-dev libglib2.0-dev-bin)
