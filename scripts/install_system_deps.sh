#!/usr/bin/env bash
# System tools the operations and gateway tests need, from Debian's archive:
#   prometheus      -> prometheus, promtool (real scrape test, alert rule unit tests)
#   docker-compose  -> docker-compose (validates docker-compose.yml; no engine needed)
#   systemd         -> systemd-analyze (verifies deploy/watcher.service)
#   nginx           -> /usr/sbin/nginx (gateway recipes: proxy_pass, auth_request)
#   caddy           -> caddy (gateway recipes: reverse_proxy, forward_auth)
# Idempotent: installs only what is missing, runs `apt-get update` at most once; a machine
# that has every tool is a no-op. The packaged services (prometheus, nginx, caddy) are not
# started: the tests run their own instances on free loopback ports, and nothing may be
# left listening on port 80.
# Needs root (CI runs as root); without root or apt-get it says what to install and fails.
set -euo pipefail

declare -A want=(
    [prometheus]=prometheus
    [promtool]=prometheus
    [docker-compose]=docker-compose
    [systemd-analyze]=systemd
    [nginx]=nginx
    [caddy]=caddy
)

# A non-root PATH often lacks /usr/sbin, where nginx lives: look there too, so an installed
# machine is never "missing" a tool and the script stays a no-op.
have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

# True when some socket listens on TCP port 80 (IPv4 or IPv6). Reads /proc so it needs no
# ss/netstat; port 80 is 0050 in hex and state 0A is LISTEN.
port80_busy() {
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
        | awk 'NR > 1 && $4 == "0A" && $2 ~ /:0050$/ { found = 1 } END { exit !found }'
}

missing=()
for tool in "${!want[@]}"; do
    have "$tool" || missing+=("${want[$tool]}")
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
port80_before=free
port80_busy && port80_before=busy

echo "install_system_deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packaged services must not start on this machine (nginx and caddy would take port
# 80): a policy-rc.d that answers 101 ("action forbidden") stops the package scripts from
# starting them.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# Under systemd the units are still enabled for the next boot: disable the ones we just
# installed (a machine that had them before keeps its own choice).
if [ -d /run/systemd/system ]; then
    for unit in nginx caddy prometheus; do
        if printf '%s\n' "${packages[@]}" | grep -qx "$unit"; then
            $SUDO systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
        fi
    done
fi

# A pre-existing policy-rc.d that allows starts would have let a packaged server onto
# port 80: stop it (the init scripts themselves ignore policy-rc.d), and fail if that
# did not free the port.
if [ "$port80_before" = free ] && port80_busy; then
    for unit in nginx caddy; do
        [ -x "/etc/init.d/$unit" ] && $SUDO "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
    done
    if port80_busy; then
        echo "install_system_deps: something listens on port 80 after installing" \
            "${packages[*]}; stop the packaged service (nginx or caddy)" >&2
        exit 1
    fi
fi
