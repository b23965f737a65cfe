#!/bin/sh
# vendor-xterm.sh — re-fetch the xterm.js browser build that the web console
# embeds (web/static/vendor/). Run by hand when upgrading; the build itself
# needs no node: the files are committed.
#
# Each package is fetched with `npm pack NAME@VERSION`, its tarball is
# checked against the sha512 integrity pinned below (the registry's
# dist.integrity), and only the browser files and the licence are kept.
# The trailing sourceMappingURL comment is removed (no .map is shipped).
set -eu

XTERM=6.0.0
XTERM_SHA512=TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==
FIT=0.11.0
FIT_SHA512=jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g==
SEARCH=0.16.0
SEARCH_SHA512=9OeuBFu0/uZJPu+9AHKY6g/w0Czyb/Ut0A5t79I4ULoU4IfU5BEpPFVGQxP4zTTMdfZEYkVIRYbHBX1xWwjeSA==

cd "$(dirname "$0")/.."
dest=web/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # name version sha512 → extracted into $tmp/<name>/package
	dir="$tmp/$(echo "$1" | tr '/@' '__')"
	mkdir -p "$dir"
	(cd "$dir" && npm pack --silent "$1@$2" >/dev/null)
	tgz=$(ls "$dir"/*.tgz)
	got=$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)
	if [ "$got" != "$3" ]; then
		echo "vendor-xterm: $1@$2: sha512 $got, want $3" >&2
		exit 1
	fi
	tar -xzf "$tgz" -C "$dir"
	echo "$dir/package"
}

strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"; }

mkdir -p "$dest"
x=$(fetch @xterm/xterm "$XTERM" "$XTERM_SHA512")
strip_map "$x/lib/xterm.js" "$dest/xterm.js"
cp "$x/css/xterm.css" "$dest/xterm.css"
cp "$x/LICENSE" "$dest/LICENSE.xterm"
f=$(fetch @xterm/addon-fit "$FIT" "$FIT_SHA512")
strip_map "$f/lib/addon-fit.js" "$dest/addon-fit.js"
cp "$f/LICENSE" "$dest/LICENSE.addon-fit"
s=$(fetch @xterm/addon-search "$SEARCH" "$SEARCH_SHA512")
strip_map "$s/lib/addon-search.js" "$dest/addon-search.js"
cp "$s/LICENSE" "$dest/LICENSE.addon-search"
cat >"$dest/VERSIONS" <<EOF
@xterm/xterm $XTERM sha512-$XTERM_SHA512
@xterm/addon-fit $FIT sha512-$FIT_SHA512
@xterm/addon-search $SEARCH sha512-$SEARCH_SHA512
EOF
ls -l "$dest"
