#!/bin/sh
# install-test-peers.sh — install the real peers the device tests run
# against, from Debian packages, when they are missing. Idempotent: when
# everything is present it changes nothing and does not touch the network.
#
#   socat ser2net python3-serial sredird inetutils-telnet inetutils-telnetd
#   openssh-client tmux chromium fonts-dejavu-core conserver-server
#   conserver-client haproxy keepalived curl
#
# inetutils-telnetd is run by the tests under socat (devicetest.TelnetdEcho);
# it pulls in inetutils-inetd, whose telnet entry Debian installs disabled.
# chromium (with fonts-dejavu-core for the terminal's monospace font) runs
# the web console's browser tests, driven by chromedp. haproxy checks and
# runs configs/haproxy.cfg (the cluster's L4 balancer example); the tests
# start their own haproxy on loopback (Debian's service, where it starts,
# has its stock config and no frontend). keepalived checks
# configs/keepalived.conf (the VIP example) with `keepalived -t`; the
# VSPC_HEAVY test runs it in network namespaces of its own, with curl for
# the file's /readyz check (Debian's keepalived service does not start
# without an /etc/keepalived/keepalived.conf).
#
# Runs apt-get as root, or through sudo when not root and sudo is there.
# Prints what it did. Exits non-zero if a package could not be installed.
set -u

PACKAGES="socat ser2net python3-serial sredird inetutils-telnet inetutils-telnetd openssh-client tmux chromium fonts-dejavu-core conserver-server conserver-client haproxy keepalived curl"

log() { printf 'install-test-peers: %s\n' "$*"; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	log "dpkg-query/apt-get not found: this script installs Debian packages; install by hand: $PACKAGES"
	exit 1
fi

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=""
for p in $PACKAGES; do
	if installed "$p"; then
		log "$p: already installed"
	else
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	log "nothing to do"
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	log "missing:$missing — not root and no sudo; install them as root"
	exit 1
fi

log "missing:$missing — running apt-get update"
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q; then
	log "apt-get update failed; trying to install from the current package lists"
fi
# shellcheck disable=SC2086 # word splitting of $missing is intended
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; then
	log "apt-get install failed"
fi

status=0
for p in $missing; do
	if installed "$p"; then
		log "$p: installed"
	else
		log "$p: could not be installed"
		status=1
	fi
done
exit $status
