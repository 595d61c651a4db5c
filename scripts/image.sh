#!/usr/bin/env bash
# Builds the `flotilla:local` image with no registry: FROM scratch, holding
# the flotilla binary, the shared libraries it loads, and a few of this
# machine's programs (a shell, sleep, cat, ...) for the Pods the process
# runtime runs inside the container.
#
#   scripts/image.sh [path/to/flotilla]   (default: the dev build)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-$target/debug/flotilla}"
[[ -x "$bin" ]] || { echo "image: no flotilla binary at $bin: build it first (cargo build --bin flotilla)" >&2; exit 1; }
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
root="$context/root"
mkdir -p "$root/usr/local/bin" "$root/etc/flotilla" "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
# Debug information is most of a dev binary's size and useless in the image.
objcopy --strip-debug "$bin" "$root/usr/local/bin/flotilla"

# Copies a file with the path it has here, following symlinks.
copy() {
  local dest="$root$1"
  mkdir -p "$(dirname "$dest")"
  cp -L "$1" "$dest"
}
# Copies the shared libraries a program loads, and the dynamic loader.
copy_libraries() {
  ldd "$1" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do copy "$lib"; done
}
copy_libraries "$bin"
programs=(sh dash sleep cat echo env ls mkdir mv rm touch date true false test head tail tr wc hostname flock)
for name in "${programs[@]}"; do
  # type -P: the program on disk, never the shell builtin of that name.
  path="$(type -P "$name" || true)"
  [[ "$path" == /* ]] || continue
  copy "$path"
  copy_libraries "$path"
done
# Where the process runtime and most scripts look for them.
[[ -e "$root/bin/sh" ]] || { mkdir -p "$root/bin"; ln -s "$(command -v dash)" "$root/bin/sh"; }
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
echo "hosts: files dns" > "$root/etc/nsswitch.conf"

cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
ENTRYPOINT ["/usr/local/bin/flotilla"]
DOCKERFILE
# The legacy builder warns that it is deprecated: show its output only on
# failure.
if ! docker build --quiet -t flotilla:local "$context" >"$context/build.log" 2>&1; then
  cat "$context/build.log" >&2
  exit 1
fi
echo "image: built flotilla:local from $bin ($(du -sh "$root" | cut -f1))"
