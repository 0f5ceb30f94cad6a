#!/usr/bin/env bash
# Build the Debian package of this checkout and check it with lintian:
#
#   bash scripts/build-package.sh [OUTDIR]        (default OUTDIR: build/package)
#
# The build runs in a copy of the checkout's files (what git tracks plus new files it does not
# ignore), so it neither needs nor disturbs the checkout's own build products (.venv, the
# extension built in place). Leaves OUTDIR/ptcopy_<version>_<arch>.deb and
# cockpit-ptcopy_<version>_all.deb (the Cockpit page), the .buildinfo and
# .changes, build.log and lintian.txt. Exits non-zero when the build fails or lintian reports an
# error (warnings are listed, not fatal). Needs the build dependencies of debian/control, which
# scripts/setup.sh installs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$REPO/build/package}")

die() {
    echo "build-package.sh: ERROR: $*" >&2
    exit 1
}

work=$(mktemp -d -t ptcopy-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/ptcopy

mkdir -p "$src" "$OUT"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
    rsync -a --from0 --files-from=- ./ "$src/")
rm -f "$OUT"/ptcopy_* "$OUT"/ptcopy-dbgsym_* "$OUT"/cockpit-ptcopy_*

echo "build-package.sh: dpkg-buildpackage -us -uc -b (log: $OUT/build.log)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$OUT/build.log" 2>&1; then
    tail -n 40 "$OUT/build.log" >&2
    die "dpkg-buildpackage failed (log: $OUT/build.log)"
fi
mv "$work"/ptcopy_* "$work"/ptcopy-dbgsym_* "$work"/cockpit-ptcopy_* "$OUT/"
deb=$(ls "$OUT"/ptcopy_*.deb)
echo "build-package.sh: built $deb and $(ls "$OUT"/cockpit-ptcopy_*.deb)"

echo "build-package.sh: lintian"
changes=$(ls "$OUT"/ptcopy_*.changes)
lintian --display-info "$changes" >"$OUT/lintian.txt" 2>&1 || true
cat "$OUT/lintian.txt"
if grep -q '^E: ' "$OUT/lintian.txt"; then
    die "lintian reports errors (see above)"
fi
echo "build-package.sh: done: $deb"
