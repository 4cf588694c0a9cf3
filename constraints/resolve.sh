#!/bin/sh
# resolve.sh STACK PYTHON EXTRAS [NO_DEPS...]: re-resolves constraints/STACK.txt from setup.cfg's
# ranges (`make constraints`). In a fresh virtual environment of PYTHON it installs what `make`
# installs for the stack (constraints/requirements.py EXTRAS, then the NO_DEPS packages without
# their dependencies), bound only by constraints/dev.txt and by the pins in the file's header,
# and writes that environment's `pip freeze` under the header.
#
# The header is every line of the file up to its last comment line, kept as it is; a pin in it
# (brainpy 2.6's, jax 0.4.33's, ...) is what the stack must hold and is not repeated below. The
# packages constraints/dev.txt pins (torch, dcls, pip) stay there and are left out too.
set -eu
stack=$1 python=$2 extras=$3
shift 3
file=constraints/$stack.txt
say() { echo "[$stack] $*"; }
test -f "$file" || { echo "no $file" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
last=$(grep -n '^#' "$file" | tail -n 1 | cut -d: -f1)
head -n "${last:-0}" "$file" > "$tmp/header"
grep -v '^#' "$tmp/header" | grep -v '^[[:space:]]*$' > "$tmp/held" || true
# Names as pip compares them (PEP 503), of the packages that are not written below the header.
names() { sed -n 's/^\([A-Za-z0-9._-]*\).*/\1/p' "$@" | tr 'A-Z_.' 'a-z--'; }
{ names "$tmp/held"; grep -v '^#' constraints/dev.txt | names; } | sort -u > "$tmp/skip"

# pip's log, less its notes on the package index's missing folders: shown when pip fails.
pip() {
    "$tmp/venv/bin/python" -m pip "$@" 2> "$tmp/log" && return
    grep -v 'is ignored' "$tmp/log" >&2
    echo "[$stack] pip $* failed" >&2
    exit 1
}
say "$python -m venv; held:" $(cat "$tmp/held")
"$python" -m venv "$tmp/venv"
pip install --quiet -c constraints/dev.txt --upgrade pip
"$tmp/venv/bin/python" constraints/requirements.py "$extras" > "$tmp/requirements.txt"
pip install --quiet -c constraints/dev.txt -c "$tmp/held" -r "$tmp/requirements.txt"
if [ $# -gt 0 ]; then
    pip install --quiet --no-deps -c constraints/dev.txt -c "$tmp/held" "$@"
fi

pip freeze --exclude-editable > "$tmp/freeze"
cp "$tmp/header" "$tmp/new"
while IFS= read -r line; do
    name=$(echo "$line" | names)
    grep -qx -- "$name" "$tmp/skip" || echo "$line"
done < "$tmp/freeze" >> "$tmp/new"
cp "$tmp/new" "$file"
say "wrote $file: $(grep -cv '^#' "$file") pins"
