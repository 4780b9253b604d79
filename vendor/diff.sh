#!/usr/bin/env bash
# Regenerates vendor/*/aiaas.patch: the whole diff of each vendored crate against the crate as
# published on crates.io (fetched into a temporary folder), with the files' timestamps left out
# of the headers, so that regenerating changes a patch only where the source changed.
#
#   vendor/diff.sh          # rewrites both patches; `git diff vendor/*/aiaas.patch` to review
#
# Environment: REGISTRY (a folder that already holds the extracted crates; fetched otherwise).
set -euo pipefail
cd "$(dirname "$0")"
CRATES=(candle-core-0.10.2 mistralrs-core-0.8.1)
if [ -z "${REGISTRY:-}" ]; then
  REGISTRY=$(mktemp -d)
  trap 'rm -rf "$REGISTRY"' EXIT
  for crate in "${CRATES[@]}"; do
    name=${crate%-*} version=${crate##*-}
    curl -sfL "https://static.crates.io/crates/$name/$name-$version.crate" | tar xz -C "$REGISTRY"
  done
fi
# diff exits 1 when the trees differ, which is the point here.
published() { diff "$@" || [ $? = 1 ]; }
for crate in "${CRATES[@]}"; do
  name=${crate%-*}
  {
    # mistral.rs's build script is patched too (item 4).
    [ "$name" = mistralrs-core ] && published -u "$REGISTRY/$crate/build.rs" "$name/build.rs"
    published -ruN "$REGISTRY/$crate/src" "$name/src"
  } | sed -E -e "s#$REGISTRY/#<registry>/#g" \
    -e 's#^((---|\+\+\+) [^\t]*)\t[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ [+-][0-9]{4}$#\1#' \
    >"$name/aiaas.patch"
  echo "$name/aiaas.patch: $(grep -c '^diff ' "$name/aiaas.patch") files, $(wc -l <"$name/aiaas.patch") lines"
done
