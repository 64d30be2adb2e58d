#!/usr/bin/env bash
# Install the system tools the tests need when they are missing: promtool (and the prometheus
# server, for the end-to-end alert test) from Debian's `prometheus` package, and docker-compose to
# validate docker-compose.yml without a Docker engine. Needs root (apt-get).
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v docker-compose >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-tools: promtool is missing; run as root or: sudo apt-get install prometheus" >&2
    exit 1
fi
echo "install-tools: installing Debian's prometheus package (promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the package's service from starting: tests start their own server.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null
command -v promtool >/dev/null
