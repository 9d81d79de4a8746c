# Sourced by the scripts that need root. `as_root "$0" "$@"` returns when the
# script already runs as root; otherwise it re-runs the script through sudo,
# keeping the caller's Rust toolchain (PATH, CARGO_HOME, RUSTUP_HOME) and the
# variables named in KEEP_ENV, or stops with a clear message when sudo is absent.
as_root() {
  local script=$1
  shift
  [ "$(id -u)" -eq 0 ] && return 0
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: $(basename "$script") needs root (${ROOT_REASON:-network namespaces, TUN devices, packages}) and sudo is not installed: run it as root" >&2
    exit 1
  fi
  local keep=(PATH="$PATH" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}")
  local name
  for name in ${KEEP_ENV:-}; do
    [ -n "${!name+set}" ] && keep+=("$name=${!name}")
  done
  echo "$(basename "$script"): not root, re-running through sudo" >&2
  exec sudo env "${keep[@]}" bash "$script" "$@"
}
