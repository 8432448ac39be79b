#!/usr/bin/env bash
# test-deps.sh makes sure the programs the test suite talks to are installed:
# nginx (Debian package "nginx"), the PostgreSQL server binaries (Debian
# package "postgresql-15" or newer), openssl, which checks issued chains, and
# curl, which runs the line nxmesh demo prints.
# It installs what is missing with apt-get when running as root, and
# otherwise stops with a message naming the packages. With the argument
# "nginx" it sees to nginx only (make demo).
# Package installs never start a system service: tests start their own nginx
# and their own throwaway PostgreSQL cluster.
set -euo pipefail

missing=()

have_nginx() {
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

have_postgres() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && [ -x "$d/postgres" ] && return 0
	done
	command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

have_nginx || missing+=(nginx)
if [ "${1:-}" != "nginx" ]; then # `test-deps.sh nginx`: only nginx (make demo)
	have_postgres || missing+=(postgresql)
	command -v openssl >/dev/null 2>&1 || missing+=(openssl)
	command -v curl >/dev/null 2>&1 || missing+=(curl) # the demo test pastes its curl line
fi

if [ ${#missing[@]} -eq 0 ]; then
	echo "test-deps: ${1:-nginx, PostgreSQL server binaries, openssl and curl} present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "test-deps: missing Debian packages: ${missing[*]}" >&2
	echo "test-deps: install them as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "test-deps: installing ${missing[*]} with apt-get"
# Keep Debian's maintainer scripts from starting services (port 80, port 5432):
# policy-rc.d exit code 101 means "action forbidden".
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

have_nginx || { echo "test-deps: nginx still missing after apt-get install nginx" >&2; exit 1; }
if [ "${1:-}" != "nginx" ]; then
	have_postgres || { echo "test-deps: PostgreSQL server binaries still missing after apt-get install postgresql" >&2; exit 1; }
fi
echo "test-deps: installed ${missing[*]}"
