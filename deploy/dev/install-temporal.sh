#!/usr/bin/env bash
# Install the Temporal CLI (dev server + UI) into ./bin/temporal.
# The build takes ~5 min on 2 cores, so the binary is cached outside the repo
# and copied from there when present. Newer tags fail `go install` (replace
# directive), so the version is pinned.
set -euo pipefail

VERSION=v1.5.1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${AIRLOCK_TEMPORAL_CACHE:-/var/cache/airlock/temporal-$VERSION}
BIN="$REPO/bin/temporal"

log() { printf '[temporal %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$REPO/bin"
if [ -x "$CACHE/temporal" ]; then
	if ! cmp -s "$CACHE/temporal" "$BIN"; then
		log "copying from cache $CACHE"
		cp "$CACHE/temporal" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
	fi
	log "$BIN ($("$BIN" --version))"
	exit 0
fi

command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
log "building temporal CLI $VERSION (takes ~5 min)"
GOBIN="$REPO/bin" go install "github.com/temporalio/cli/cmd/temporal@$VERSION"
"$BIN" --version >/dev/null || { log "ERROR: $BIN does not run"; exit 1; }

mkdir -p "$CACHE"
cp "$BIN" "$CACHE/temporal.tmp" && mv "$CACHE/temporal.tmp" "$CACHE/temporal"
log "built $BIN and cached it in $CACHE"
