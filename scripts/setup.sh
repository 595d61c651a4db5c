#!/usr/bin/env bash
# Installs what building Flotilla needs on a fresh Debian machine, only where
# it is missing: libclang for RocksDB's bindings. protoc comes vendored.
set -euo pipefail

need_apt=()
# bindgen loads libclang itself (libclang.so); libclang-cpp, which some
# images carry, does not do.
if command -v dpkg >/dev/null; then
  dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
elif ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1; then
  echo "setup: libclang is required to build RocksDB's bindings; install it (libclang-dev)" >&2
  exit 1
fi
command -v cc >/dev/null || need_apt+=(build-essential)
# scripts/image.sh strips the binary it puts in the image.
command -v objcopy >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (install Rust with rustup)" >&2; exit 1; }
