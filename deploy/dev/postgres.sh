#!/usr/bin/env bash
# deploy/dev/postgres.sh — a private PostgreSQL cluster for development and
# tests. Never touches the system cluster (/var/lib/postgresql, port 5432).
#
#   deploy/dev/postgres.sh start    initdb on first use, start, create db "airlock" (idempotent)
#   deploy/dev/postgres.sh stop     pg_ctl stop on this data dir only
#   deploy/dev/postgres.sh status   exit 0 running, 3 stopped
#   deploy/dev/postgres.sh url      print the DSN
#
# Environment:
#   AIRLOCK_PG_DIR   data directory        (default: <repo>/.data/pg)
#   AIRLOCK_PG_PORT  TCP port on 127.0.0.1 (default: 55432)
#   AIRLOCK_PG_BIN   directory with initdb/pg_ctl (default: found on PATH,
#                    else the newest /usr/lib/postgresql/*/bin)
#
# Files next to the data dir (<dir> = AIRLOCK_PG_DIR):
#   <dir>.sock/  unix socket directory (not /var/run/postgresql)
#   <dir>.log    server log            <dir>.lock  flock for start/stop
#
# SECURITY (dev only): authentication is "trust" — any local OS user and any
# connection from 127.0.0.1 may log in as any role without a password. The
# server listens on 127.0.0.1 only; pg_hba.conf has no other host lines.
# Do not use this cluster for anything but development and tests.
#
# Postgres refuses to run as root: when run as root, initdb/pg_ctl run as the
# "postgres" system user (created if missing) via runuser, and the data dir is
# owned by postgres. That user must be able to traverse the parent dirs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_DIR=${AIRLOCK_PG_DIR:-$repo/.data/pg}
PG_PORT=${AIRLOCK_PG_PORT:-55432}
DB=airlock
SOCK_DIR="$PG_DIR.sock"
LOG_FILE="$PG_DIR.log"
LOCK_FILE="$PG_DIR.lock"

die() { echo "postgres.sh: $*" >&2; exit 1; }

url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable"; }

find_bin() {
	if [[ -n ${AIRLOCK_PG_BIN:-} ]]; then
		[[ -x $AIRLOCK_PG_BIN/pg_ctl ]] || die "AIRLOCK_PG_BIN=$AIRLOCK_PG_BIN has no pg_ctl"
		echo "$AIRLOCK_PG_BIN"; return
	fi
	local p
	if p=$(command -v pg_ctl 2>/dev/null) && [[ -x $(dirname "$(readlink -f "$p")")/initdb ]]; then
		dirname "$(readlink -f "$p")"; return
	fi
	p=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
	[[ -n $p && -x $p/pg_ctl && -x $p/initdb ]] ||
		die "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, or set AIRLOCK_PG_BIN"
	echo "$p"
}

# as_pg runs a command as the cluster owner: "postgres" when we are root.
as_pg() {
	if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_user() {
	[[ $EUID -eq 0 ]] || return 0
	id -u postgres >/dev/null 2>&1 && return 0
	useradd --system --home-dir /var/lib/postgresql --shell /bin/bash --user-group postgres ||
		die "cannot create the postgres system user"
}

owner() { if [[ $EUID -eq 0 ]]; then echo postgres:postgres; else echo "$(id -un):$(id -gn)"; fi; }

is_running() { [[ -f $PG_DIR/PG_VERSION ]] && as_pg "$BIN/pg_ctl" status -D "$PG_DIR" >/dev/null 2>&1; }

init_cluster() {
	local parent; parent=$(dirname "$PG_DIR")
	install -d -m 0700 -o "${1%%:*}" -g "${1##*:}" "$PG_DIR"
	install -d -m 0755 -o "${1%%:*}" -g "${1##*:}" "$SOCK_DIR"
	as_pg test -x "$parent" -a -w "$PG_DIR" ||
		die "user $(as_pg id -un) cannot reach $PG_DIR: grant o+x on its parent directories"
	[[ -f $PG_DIR/PG_VERSION ]] && return 0
	[[ -z $(ls -A "$PG_DIR") ]] || die "$PG_DIR is not empty and not a cluster"
	echo "postgres.sh: initdb $PG_DIR" >&2
	as_pg "$BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
	# Loopback-only trust (see SECURITY above).
	as_pg tee "$PG_DIR/pg_hba.conf" >/dev/null <<-HBA
		# Airlock dev cluster: trust on the unix socket and 127.0.0.1 only.
		local all all              trust
		host  all all 127.0.0.1/32 trust
	HBA
	echo "include_if_exists = 'airlock.conf'" | as_pg tee -a "$PG_DIR/postgresql.conf" >/dev/null
}

write_conf() {
	# Regenerated on every start so AIRLOCK_PG_PORT and the socket dir follow
	# the environment; quoted, so paths with spaces work.
	as_pg tee "$PG_DIR/airlock.conf" >/dev/null <<-CONF
		listen_addresses = '127.0.0.1'
		port = $PG_PORT
		unix_socket_directories = '${SOCK_DIR//\'/\'\'}'
		max_connections = 200
	CONF
}

ensure_db() {
	local psql=("$BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA)
	if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
		# A concurrent start may win the race; "already exists" is fine.
		"${psql[@]}" -c "CREATE DATABASE $DB" 2>/dev/null ||
			[[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") == 1 ]] ||
			die "cannot create database $DB"
	fi
}

cmd_start() {
	ensure_user
	local own; own=$(owner)
	mkdir -p "$(dirname "$PG_DIR")"
	exec 9>>"$LOCK_FILE"
	flock 9
	if is_running; then
		echo "postgres.sh: already running ($PG_DIR)" >&2
	else
		init_cluster "$own"
		write_conf
		touch "$LOG_FILE" && chown "$own" "$LOG_FILE"
		as_pg "$BIN/pg_ctl" start -D "$PG_DIR" -l "$LOG_FILE" -w -t 60 >/dev/null 9>&- ||
			die "pg_ctl start failed; see $LOG_FILE"
	fi
	# pg_ctl -w waits for readiness; pg_isready confirms the TCP listener.
	local i
	for i in $(seq 1 50); do
		"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
		[[ $i -lt 50 ]] || die "not accepting connections on 127.0.0.1:$PG_PORT (another cluster on this port?); see $LOG_FILE"
		sleep 0.1
	done
	ensure_db
	echo "postgres.sh: ready at $(url)" >&2
}

cmd_stop() {
	[[ -f $PG_DIR/PG_VERSION ]] || { echo "postgres.sh: no cluster at $PG_DIR" >&2; return 0; }
	exec 9>>"$LOCK_FILE"
	flock 9
	if is_running; then
		as_pg "$BIN/pg_ctl" stop -D "$PG_DIR" -m fast -w -t 60 >/dev/null
		echo "postgres.sh: stopped ($PG_DIR)" >&2
	else
		echo "postgres.sh: not running ($PG_DIR)" >&2
	fi
}

cmd_status() {
	if is_running; then
		echo "running: $PG_DIR on 127.0.0.1:$PG_PORT"
	else
		echo "stopped: $PG_DIR"; exit 3
	fi
}

case ${1:-} in
url) url ;;
start) BIN=$(find_bin); cmd_start ;;
stop) BIN=$(find_bin); cmd_stop ;;
status) BIN=$(find_bin); cmd_status ;;
*) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
