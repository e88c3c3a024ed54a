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

# need_rust: a Rust toolchain new enough for the crate, with fmt and clippy.
need_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: no Rust toolchain. Install rustup (https://rustup.rs), then run this again." >&2
    exit 1
  fi
  local want have
  want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
    echo "error: rustc $have is older than $want; run: rustup update stable" >&2
    exit 1
  fi
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      echo "==> adding rustup component $comp"
      rustup component add "$comp"
    fi
  done
}

# The packages every script needs: the private bus, busctl/systemd-analyze,
# setpriv, ALSA headers for cpal, pkg-config, and g++ for libFuzzer.
BASE_APT=(dbus-daemon dbus-bin systemd util-linux libasound2-dev pkg-config ca-certificates g++)
