#!/bin/sh
# e2e-prepare.sh prepares a fresh machine (Debian, Docker Engine, Go, no
# container registry) for the end-to-end tests in internal/e2e: Chromium for
# the browser test (Debian's chromium package, installed only when missing)
# and every local image (scripts/images.sh). Idempotent and quick when all
# is there. Needs root for apt-get when something is missing.
#
# Usage: scripts/e2e-prepare.sh [--force]   (--force is passed to images.sh)
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "${HERALD_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
	echo "e2e-prepare: installing chromium (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi
sh "$here/scripts/images.sh" "$@"
