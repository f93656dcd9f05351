#!/bin/sh
# redis-image.sh builds a Redis image without any registry, from the host's
# Debian redis-server package, and tags it for the tests.
#
# Usage: scripts/redis-image.sh [--force]
#
# Image name: $HERALD_REDIS_IMAGE, default redis:7-alpine (the official
# image the tests would use if a registry were reachable).
#   - If that image already exists locally, nothing is done (unless --force),
#     except when it is an older build of this script (its
#     org.herald-sse.redis-recipe label is not RECIPE below): then it is
#     rebuilt.
#   - Otherwise a pull is attempted; if it fails (no registry), a FROM scratch
#     image is built from /usr/bin/redis-server plus the libraries ldd lists
#     and tagged herald-redis:local AND $HERALD_REDIS_IMAGE, so that
#     testcontainers finds it under the official name and never pulls.
#     Like the official image it also has /usr/local/bin/redis-cli and a
#     shell (/bin/sh and the usual tools, from Debian's busybox-static):
#     deployments/compose.cluster.yaml creates its cluster with them.
# Requires: docker, and root (or sudo-free apt) to install redis-server or
# busybox-static if missing.
set -eu

# RECIPE versions what this script puts in the image; bump it when that
# changes, so that machines holding an older build rebuild it.
#   1  redis-server only
#   2  + redis-cli, busybox
RECIPE=2

IMAGE="${HERALD_REDIS_IMAGE:-redis:7-alpine}"
LOCAL_TAG="herald-redis:local"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

here="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
	have="$(docker image inspect -f '{{index .Config.Labels "org.herald-sse.redis-recipe"}}' "$IMAGE" 2>/dev/null || true)"
	id="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
	local_id="$(docker image inspect -f '{{.Id}}' "$LOCAL_TAG" 2>/dev/null || true)"
	# Another image (the official one) or a current build: keep it.
	if [ "$id" != "$local_id" ] || [ "$have" = "$RECIPE" ]; then
		echo "redis-image: $IMAGE is present"
		exit 0
	fi
	echo "redis-image: $IMAGE is an older local build (recipe ${have:-1}, now $RECIPE): rebuilding"
fi
if [ "$FORCE" = 0 ] && timeout 60 docker pull "$IMAGE" >/dev/null 2>&1; then
	echo "redis-image: pulled $IMAGE"
	exit 0
fi

command -v redis-server >/dev/null 2>&1 || (apt-get update && apt-get install -y redis-server)
if [ ! -x /bin/busybox ]; then
	echo "redis-image: installing busybox-static (apt-get)"
	apt-get install -y -q --no-install-recommends busybox-static >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends busybox-static >/dev/null; }
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/etc/redis" "$root/lib64" "$ctx/data"
touch "$ctx/data/.keep"

# /usr/bin/redis-server is a symlink to a multi-call binary that picks its
# mode from argv[0]: copy it dereferenced under the right name.
libs() {
	ldd "$1" | awk '/=> \//{print $3}' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
bin="$(readlink -f "$(command -v redis-server)")"
cp "$bin" "$root/redis-server"
libs "$bin"
# redis-cli where the official image has it (compose healthchecks and the
# cluster's init call it by name: the image's PATH has /usr/local/bin).
cli="$(readlink -f "$(command -v redis-cli)")"
mkdir -p "$root/usr/local/bin"
cp "$cli" "$root/usr/local/bin/redis-cli"
libs "$cli"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# A shell and the usual tools: a static busybox, one link per applet.
mkdir -p "$root/bin"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp "$here/deployments/redis/redis.conf" "$root/etc/redis/redis.conf"
cp "$here/deployments/redis/Dockerfile" "$ctx/Dockerfile"

docker build -q --label "org.herald-sse.redis-recipe=$RECIPE" -t "$LOCAL_TAG" "$ctx" >/dev/null
if [ "$IMAGE" != "$LOCAL_TAG" ]; then
	docker tag "$LOCAL_TAG" "$IMAGE"
fi
echo "redis-image: built $LOCAL_TAG from $(redis-server --version | cut -d' ' -f3) and tagged it $IMAGE"
