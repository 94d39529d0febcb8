#!/usr/bin/env bash
# System tools the operations tests need, from Debian's archive:
#   prometheus      -> prometheus, promtool (real scrape test, alert rule unit tests)
#   docker-compose  -> docker-compose (validates docker-compose.yml; no engine needed)
#   systemd         -> systemd-analyze (verifies deploy/watcher.service)
# Idempotent: installs only what is missing, runs `apt-get update` at most once.
# Needs root (CI runs as root); without root or apt-get it says what to install and fails.
set -euo pipefail

declare -A want=(
    [prometheus]=prometheus
    [promtool]=prometheus
    [docker-compose]=docker-compose
    [systemd-analyze]=systemd
)
missing=()
for tool in "${!want[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${want[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# De-duplicate (prometheus provides two tools).
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: no apt-get; install these packages by hand: ${packages[*]}" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install_system_deps: run as root to install: ${packages[*]}" >&2
        exit 1
    }
    SUDO="sudo"
fi
echo "install_system_deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packaged prometheus service must not start on this machine: a policy-rc.d that
# answers 101 ("action forbidden") stops the package scripts from starting it.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
