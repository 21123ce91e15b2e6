#!/usr/bin/env bash
# Makes local stand-ins for the Dockerfile's base images where no registry is reachable:
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm, trimmed like Debian's slim image
#   node:24-slim          that + the Node 24 binary the project installs from npm + the host's npm
# An image that already exists is kept (a real pulled one is better than a stand-in), except a
# stand-in built for another Node version. Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/../.."

DEBIAN_IMAGE=localhost/debian:bookworm-slim
NODE_IMAGE=localhost/node:24-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NODE_BIN=node_modules/node/bin/node

log() { echo "container-base: $*" >&2; }

[ -x "$NODE_BIN" ] || { log "$NODE_BIN missing: run npm ci first"; exit 1; }
node_version=$("$NODE_BIN" --version)

image_label() { # image label -> value, empty when the image or label is absent
  podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/<no value>//'
}

if podman image exists "$NODE_IMAGE" && podman image exists "$DEBIAN_IMAGE"; then
  standin_node=$(image_label "$NODE_IMAGE" wasmhost.standin.node)
  if [ -z "$standin_node" ] || [ "$standin_node" = "$node_version" ]; then
    log "using existing $DEBIAN_IMAGE and $NODE_IMAGE"
    exit 0
  fi
  log "$NODE_IMAGE is a stand-in for Node $standin_node; rebuilding for $node_version"
fi

work=$(mktemp -d /var/tmp/wasmhost-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$DEBIAN_IMAGE"; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
  log "debootstrap --variant=minbase bookworm (about a minute)"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    log "debootstrap failed"
    exit 1
  }
  # What Debian's slim image leaves out too: docs, man pages, translations, apt caches and lists.
  rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian}/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -C "$rootfs" -cf "$work/rootfs.tar" .
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL wasmhost.standin=debootstrap-minbase-bookworm' \
    --change 'CMD ["bash"]' \
    "$work/rootfs.tar" "$DEBIAN_IMAGE" >/dev/null
  log "imported $DEBIAN_IMAGE ($(podman image inspect --format '{{.Size}}' "$DEBIAN_IMAGE") bytes)"
fi

# Same layout as the official image: node and npm under /usr/local, a `node` user with uid 1000.
ctx="$work/node-context"
mkdir -p "$ctx"
cp "$NODE_BIN" "$ctx/node"
cp -r "$(npm root -g)/npm" "$ctx/npm"
cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \\
 && node --version && npm --version
ENV NODE_VERSION=${node_version#v}
LABEL wasmhost.standin.node=$node_version
CMD ["node"]
EOF
podman build --quiet --pull=never --network=none -t "$NODE_IMAGE" "$ctx" >/dev/null
log "built $NODE_IMAGE ($(podman image inspect --format '{{.Size}}' "$NODE_IMAGE") bytes)"
