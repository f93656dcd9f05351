#!/bin/sh
# images.sh builds every local image that deployments/compose.yaml and the
# end-to-end tests (internal/e2e) need, without any registry:
#
#   herald    $HERALD_IMAGE          default herald:local
#             static binary built on the host + deployments/herald/Dockerfile;
#             rebuilt every run (Docker's layer cache keeps it fast and the
#             image ID unchanged when the binary is).
#   HAProxy   $HERALD_HAPROXY_IMAGE  default haproxy:2.6
#   nginx     $HERALD_NGINX_IMAGE    default nginx:1.22
#   Prometheus $HERALD_PROMETHEUS_IMAGE default prom/prometheus:v2.42.0
#             if the image is present, nothing is done; else a pull is tried;
#             else a FROM scratch image is assembled from the host's Debian
#             package (installed with apt-get when missing), tagged
#             herald-<lb>:local and under the official name, so compose and
#             testcontainers find it and never pull.
#   Redis     $HERALD_REDIS_IMAGE    default redis:7-alpine (scripts/redis-image.sh)
#   Sentinel  $HERALD_SENTINEL_IMAGE default herald-sentinel:local
#             a FROM scratch image of the host's Debian redis-sentinel
#             (installed with apt-get when missing) and
#             deployments/sentinel; built when absent (no official image
#             starts in Sentinel mode by itself).
#
# Usage: scripts/images.sh [--force] [herald|haproxy|nginx|redis|sentinel|prometheus ...]
#   (no names: all six; --force rebuilds the load balancer, Redis and
#   Sentinel images even when present)
# Needs: docker, go; root for apt-get when a package is missing.
set -eu

here="$(cd "$(dirname "$0")/.." && pwd)"
GO="${GO:-go}"
HERALD_IMAGE="${HERALD_IMAGE:-herald:local}"
HAPROXY_IMAGE="${HERALD_HAPROXY_IMAGE:-haproxy:2.6}"
NGINX_IMAGE="${HERALD_NGINX_IMAGE:-nginx:1.22}"
PROMETHEUS_IMAGE="${HERALD_PROMETHEUS_IMAGE:-prom/prometheus:v2.42.0}"
SENTINEL_IMAGE="${HERALD_SENTINEL_IMAGE:-herald-sentinel:local}"

FORCE=0
targets=""
for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	herald | haproxy | nginx | redis | sentinel | prometheus) targets="$targets $a" ;;
	*)
		echo "usage: $0 [--force] [herald|haproxy|nginx|redis|sentinel|prometheus ...]" >&2
		exit 2
		;;
	esac
done
[ -n "$targets" ] || targets="herald haproxy nginx redis sentinel prometheus"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# quiet runs a command, showing its output only if it fails (docker build
# prints a deprecation notice for the legacy builder on every run).
quiet() {
	if ! "$@" >"$tmp/out" 2>&1; then
		cat "$tmp/out" >&2
		return 1
	fi
}

present() { docker image inspect "$1" >/dev/null 2>&1; }

# apt_need PACKAGE COMMAND: install PACKAGE when COMMAND is missing.
apt_need() {
	if ! command -v "$2" >/dev/null 2>&1 && [ ! -x "$2" ]; then
		echo "images: installing $1 (apt-get)"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q --no-install-recommends "$1" >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$1" >/dev/null; }
	fi
}

# rootfs_for BINARY ROOT DEST: copy BINARY (dereferenced) to ROOT/DEST with
# every library ldd lists and the x86-64 loader.
rootfs_for() {
	bin="$(readlink -f "$1")"
	mkdir -p "$2$(dirname "$3")" "$2/lib64"
	cp "$bin" "$2$3"
	ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
		mkdir -p "$2$(dirname "$lib")"
		cp -L "$lib" "$2$lib"
	done
	cp -L /lib64/ld-linux-x86-64.so.2 "$2/lib64/"
}

build_herald() {
	ctx="$tmp/herald"
	mkdir -p "$ctx"
	(cd "$here" && CGO_ENABLED=0 "$GO" build -trimpath -o "$ctx/herald" ./cmd/server)
	quiet docker build -q -t "$HERALD_IMAGE" -f "$here/deployments/herald/Dockerfile" "$ctx"
	echo "images: $HERALD_IMAGE built ($(docker image inspect -f '{{.Id}}' "$HERALD_IMAGE" | cut -c8-19))"
}

# build_lb NAME IMAGE PACKAGE BINARY CONFIG-SRC CONFIG-DEST [BINARY-DEST]
build_lb() {
	name="$1" image="$2" pkg="$3" bin="$4" conf="$5" confdest="$6" bindest="${7:-$4}"
	local_tag="herald-$name:local"
	if [ "$FORCE" = 0 ] && present "$image"; then
		echo "images: $image is present"
		return
	fi
	if [ "$FORCE" = 0 ] && timeout 60 docker pull "$image" >/dev/null 2>&1; then
		echo "images: pulled $image"
		return
	fi
	apt_need "$pkg" "$bin"
	ctx="$tmp/$name"
	root="$ctx/rootfs"
	mkdir -p "$root/tmp" "$root$(dirname "$confdest")" "$ctx/data"
	chmod 1777 "$root/tmp"
	rootfs_for "$bin" "$root" "$bindest"
	cp "$conf" "$root$confdest"
	cp "$here/deployments/$name/Dockerfile" "$ctx/Dockerfile"
	quiet docker build -q -t "$local_tag" "$ctx"
	[ "$image" = "$local_tag" ] || docker tag "$local_tag" "$image"
	echo "images: built $local_tag from Debian's $pkg ($(dpkg-query -W -f '${Version}' "$pkg")) and tagged it $image"
}

# build_sentinel: the Sentinel image from Debian's redis-sentinel. Its
# /usr/bin/redis-sentinel is a symlink to the multi-call binary, which runs
# as Sentinel when its name says so: copied dereferenced as /redis-sentinel.
build_sentinel() {
	if [ "$FORCE" = 0 ] && present "$SENTINEL_IMAGE"; then
		echo "images: $SENTINEL_IMAGE is present"
		return
	fi
	apt_need redis-sentinel /usr/bin/redis-sentinel
	ctx="$tmp/sentinel"
	mkdir -p "$ctx/data"
	rootfs_for /usr/bin/redis-sentinel "$ctx/rootfs" /redis-sentinel
	cp "$here/deployments/sentinel/sentinel.conf" "$ctx/data/sentinel.conf"
	cp "$here/deployments/sentinel/Dockerfile" "$ctx/Dockerfile"
	quiet docker build -q -t "$SENTINEL_IMAGE" "$ctx"
	echo "images: built $SENTINEL_IMAGE from Debian's redis-sentinel ($(dpkg-query -W -f '${Version}' redis-sentinel))"
}

for t in $targets; do
	case "$t" in
	herald) build_herald ;;
	haproxy) build_lb haproxy "$HAPROXY_IMAGE" haproxy /usr/sbin/haproxy \
		"$here/deployments/haproxy/haproxy.cfg" /usr/local/etc/haproxy/haproxy.cfg ;;
	nginx) build_lb nginx "$NGINX_IMAGE" nginx /usr/sbin/nginx \
		"$here/deployments/nginx/nginx.conf" /etc/nginx/nginx.conf ;;
	prometheus) build_lb prometheus "$PROMETHEUS_IMAGE" prometheus /usr/bin/prometheus \
		"$here/deployments/prometheus/prometheus.yml" /etc/prometheus/prometheus.yml /bin/prometheus ;;
	redis)
		if [ "$FORCE" = 1 ]; then sh "$here/scripts/redis-image.sh" --force; else sh "$here/scripts/redis-image.sh"; fi ;;
	sentinel) build_sentinel ;;
	esac
done
