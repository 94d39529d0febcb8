#!/bin/sh
# Install the USDC payment watcher as systemd services on a clean machine, in order:
#   1. the system user and group usdc-watcher            (useradd; needs root)
#   2. the directories: /opt/usdc-watcher (code, root's), /etc/usdc-watcher (0750
#      root:usdc-watcher), /var/lib/usdc-watcher (0700 usdc-watcher: the data dir)
#   3. the code in /opt/usdc-watcher and its venv (.venv, `pip install -e`: the
#      migrations are read from /opt/usdc-watcher/migrations, next to the package)
#   4. the configuration: --env-file (default: .env of the checkout) as
#      /etc/usdc-watcher/watcher.env, mode 0640 root:usdc-watcher; an existing one is kept
#      (its content; write by the group and any access by others are taken away)
#   5. the units: deploy/watcher.service -> /etc/systemd/system/usdc-watcher.service,
#      deploy/watcher-api.service -> usdc-watcher-api.service (mode 0644)
#   6. systemctl daemon-reload && systemctl enable --now (needs root)
#
#   sudo deploy/install.sh                       # the whole of it, from a checkout
#   deploy/install.sh --root /tmp/r --no-root-steps --pip-args "--no-deps --no-build-isolation"
#
# --root DIR writes every file under DIR (as DESTDIR does: the paths inside the files
# stay /opt/..., /etc/...), and enables the units with `systemctl --root DIR enable`
# instead of starting them. --no-root-steps skips what needs root: useradd, chown/chgrp
# (files keep the caller's owner; the modes are still set), daemon-reload and --now.
# The tests run it that way in a scratch root (tests/integration/test_install.py), then
# `systemd-analyze verify --root`. docs/operations.md, "systemd", is the same steps.
set -eu

ROOT=""
NO_ROOT_STEPS=0
SOURCE=$(cd "$(dirname "$0")/.." && pwd -P)
ENV_FILE=""
PYTHON=python3
PIP_ARGS=""
USER_NAME=usdc-watcher

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --root DIR  --no-root-steps  --source DIR  --env-file FILE  --python PY  --pip-args ARGS"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2%/}; shift 2 ;;
        --no-root-steps) NO_ROOT_STEPS=1; shift ;;
        --source) SOURCE=$(cd "$2" && pwd -P); shift 2 ;;
        --env-file) ENV_FILE=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --pip-args) PIP_ARGS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$ENV_FILE" ] || ENV_FILE="$SOURCE/.env"

APP="$ROOT/opt/usdc-watcher"
ETC="$ROOT/etc/usdc-watcher"
DATA="$ROOT/var/lib/usdc-watcher"
UNITS="$ROOT/etc/systemd/system"

step() { echo "==> $*"; }
# install(1) with an owner only when we may set one.
own() {
    if [ "$NO_ROOT_STEPS" = 1 ]; then echo ""; else echo "-o $1 -g $2"; fi
}

if [ "$NO_ROOT_STEPS" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or pass --no-root-steps with --root DIR" >&2
    exit 2
fi
if [ ! -f "$ETC/watcher.env" ] && [ ! -f "$ENV_FILE" ]; then
    echo "install.sh: no configuration: $ENV_FILE does not exist." >&2
    echo "  cp $SOURCE/.env.example $SOURCE/.env, fill it in (WATCHER_ENV=production), and" >&2
    echo "  run again; or pass --env-file FILE" >&2
    exit 2
fi

step "1/6 user and group $USER_NAME"
if [ "$NO_ROOT_STEPS" = 1 ]; then
    echo "    skipped (--no-root-steps)"
elif getent passwd "$USER_NAME" >/dev/null; then
    echo "    exists"
else
    useradd --system --user-group --home-dir /var/lib/usdc-watcher \
        --shell /usr/sbin/nologin "$USER_NAME"
fi

step "2/6 directories"
install -d -m 0755 "$APP"
# shellcheck disable=SC2046 # own() is empty or two options, split on purpose
install -d -m 0750 $(own root "$USER_NAME") "$ETC"
# shellcheck disable=SC2046
install -d -m 0700 $(own "$USER_NAME" "$USER_NAME") "$DATA"
install -d -m 0755 "$UNITS"

step "3/6 code and venv in /opt/usdc-watcher"
if [ "$SOURCE" != "$(cd "$APP" && pwd -P)" ]; then
    # The checkout without its git history, local venv, node_modules or secrets: no
    # .env, nor .env.local, .env.production and the like (/opt is world-readable), only
    # the example.
    tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./node_modules \
        --exclude=./.env --exclude='./.env.*' --exclude='*/__pycache__' \
        --exclude=./.devnet -cf - . \
        | tar -C "$APP" --no-same-owner -xf -
    if [ -f "$SOURCE/.env.example" ]; then
        install -m 0644 "$SOURCE/.env.example" "$APP/.env.example"
    fi
fi
"$PYTHON" -m venv "$APP/.venv"
# shellcheck disable=SC2086 # PIP_ARGS is a list of options
"$APP/.venv/bin/pip" install --quiet --disable-pip-version-check $PIP_ARGS -e "$APP"

step "4/6 configuration /etc/usdc-watcher/watcher.env"
if [ -f "$ETC/watcher.env" ]; then
    # It holds the secrets: never readable by others, never writable by the service.
    chmod g-w,o-rwx "$ETC/watcher.env"
    echo "    kept the existing one (edit it, then: systemctl restart usdc-watcher usdc-watcher-api)"
else
    # shellcheck disable=SC2046
    install -m 0640 $(own root "$USER_NAME") "$ENV_FILE" "$ETC/watcher.env"
fi

step "5/6 units"
install -m 0644 "$SOURCE/deploy/watcher.service" "$UNITS/usdc-watcher.service"
install -m 0644 "$SOURCE/deploy/watcher-api.service" "$UNITS/usdc-watcher-api.service"

step "6/6 enable and start"
if [ -n "$ROOT" ]; then
    systemctl --root="$ROOT" enable usdc-watcher.service usdc-watcher-api.service
    echo "    enabled under $ROOT (nothing started: another root)"
elif [ "$NO_ROOT_STEPS" = 1 ]; then
    echo "    skipped (--no-root-steps)"
else
    systemctl daemon-reload
    systemctl enable --now usdc-watcher.service usdc-watcher-api.service
    systemctl --no-pager status usdc-watcher.service usdc-watcher-api.service || true
fi
echo "done. check it (as the service sees it):"
echo "  systemd-run --pty --wait --uid=$USER_NAME -p EnvironmentFile=/etc/usdc-watcher/watcher.env \\"
echo "    /opt/usdc-watcher/.venv/bin/watcher doctor"
echo "  journalctl -u usdc-watcher -u usdc-watcher-api -f"
