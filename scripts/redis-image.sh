#!/bin/sh
# redis-image.sh builds a Redis image without any registry, from the host's
# Debian redis-server package, and tags it for the tests.
#
# Usage: scripts/redis-image.sh [--force]
#
# Image name: $HERALD_REDIS_IMAGE, default redis:7-alpine (the official
# image the tests would use if a registry were reachable).
#   - If that image already exists locally, nothing is done (unless --force).
#   - Otherwise a pull is attempted; if it fails (no registry), a FROM scratch
#     image is built from /usr/bin/redis-server plus the libraries ldd lists
#     and tagged herald-redis:local AND $HERALD_REDIS_IMAGE, so that
#     testcontainers finds it under the official name and never pulls.
# Requires: docker, and root (or sudo-free apt) to install redis-server if
# it is missing.
set -eu

IMAGE="${HERALD_REDIS_IMAGE:-redis:7-alpine}"
LOCAL_TAG="herald-redis:local"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

here="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
	echo "redis-image: $IMAGE is present"
	exit 0
fi
if [ "$FORCE" = 0 ] && timeout 60 docker pull "$IMAGE" >/dev/null 2>&1; then
	echo "redis-image: pulled $IMAGE"
	exit 0
fi

command -v redis-server >/dev/null 2>&1 || (apt-get update && apt-get install -y redis-server)

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/etc/redis" "$root/lib64" "$ctx/data"
touch "$ctx/data/.keep"

# /usr/bin/redis-server is a symlink to a multi-call binary that picks its
# mode from argv[0]: copy it dereferenced under the right name.
bin="$(readlink -f "$(command -v redis-server)")"
cp "$bin" "$root/redis-server"
ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
cp "$here/deployments/redis/redis.conf" "$root/etc/redis/redis.conf"
cp "$here/deployments/redis/Dockerfile" "$ctx/Dockerfile"

docker build -q -t "$LOCAL_TAG" "$ctx" >/dev/null
if [ "$IMAGE" != "$LOCAL_TAG" ]; then
	docker tag "$LOCAL_TAG" "$IMAGE"
fi
echo "redis-image: built $LOCAL_TAG from $(redis-server --version | cut -d' ' -f3) and tagged it $IMAGE"
