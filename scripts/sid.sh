#!/usr/bin/env bash
# Unpack packages from Debian's unstable suite (sid) into a directory of their own, without
# touching the system's apt state: an apt config of our own (its source list, lists and cache
# under the target's .apt), `apt-get download`, `dpkg -x`.
#
#   bash scripts/sid.sh DIR PACKAGE...     e.g. scripts/sid.sh /opt/pycni-sid/cni containernetworking-plugins
#
# The mirror is the one the system's apt already uses. Idempotent: a DIR holding a .done that
# names the same packages is left as it is.
set -euo pipefail

say() { echo "sid: $*"; }
die() { echo "sid: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 DIR PACKAGE..."
dir=$1; shift
want="$*"
if [ -f "$dir/.done" ] && [ "$(cat "$dir/.done")" = "$want" ]; then
    exit 0
fi

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "no Debian mirror found in the system's apt sources"

apt_dir="$dir.apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
echo "deb $mirror sid main" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
      -o "APT::Sandbox::User=root")
if [ -z "$(ls "$apt_dir/lists" 2>/dev/null | grep -v partial)" ]; then
    say "fetching sid's package list from $mirror"
    apt-get "${opts[@]}" update -qq || die "apt-get update of sid failed"
fi
say "downloading $want"
(cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${opts[@]}" download -q "$@" >/dev/null) \
    || die "apt-get download $want from sid failed"
rm -rf "$dir.new"
mkdir -p "$dir.new"
for deb in "$apt_dir/debs"/*.deb; do dpkg -x "$deb" "$dir.new"; done
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "$want" > "$dir/.done"
say "unpacked into $dir: $(cd "$apt_dir/debs" && ls *.deb | tr '\n' ' ')"
