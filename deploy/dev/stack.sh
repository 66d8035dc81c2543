#!/usr/bin/env bash
# The local Airlock stack, without systemd: Temporal dev server, private
# PostgreSQL, libvirtd, the three workers and `airlock serve`.
#
#   deploy/dev/stack.sh start   start what is not running (idempotent)
#   deploy/dev/stack.sh stop    stop what `start` started, by recorded PID
#   deploy/dev/stack.sh status
#
# Every process started here records its PID in .data/pids/NAME.pid and
# logs to .data/logs/NAME.log. `stop` kills exactly those PIDs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${AIRLOCK_DATA:-$REPO/.data}"
PIDS="$DATA/pids"
LOGS="$DATA/logs"
CONFIG="$DATA/config.yaml"
BIN="$REPO/bin"
TEMPORAL_PORT="${AIRLOCK_TEMPORAL_PORT:-7233}"
TEMPORAL_UI_PORT="${AIRLOCK_TEMPORAL_UI_PORT:-8233}"
SERVE_ADDR="${AIRLOCK_SERVE_ADDR:-127.0.0.1:8080}"

log() { printf '[stack] %s\n' "$*" >&2; }

alive() { # name
  local f="$PIDS/$1.pid"
  [[ -s "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_port() { # host port what timeout-seconds
  local deadline=$((SECONDS + $4)) delay=0.05
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if ((SECONDS >= deadline)); then log "$3 did not open $1:$2 within $4 s; see $LOGS"; return 1; fi
    sleep "$delay"; delay=$(awk "BEGIN{d=$delay*2; print (d>1)?1:d}")
  done
}

start_proc() { # name cmd...
  local name="$1"; shift
  if alive "$name"; then log "$name already running (pid $(cat "$PIDS/$name.pid"))"; return 0; fi
  mkdir -p "$PIDS" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!)"
}

write_config() {
  mkdir -p "$DATA"
  if [[ ! -s "$DATA/codec.keys" ]]; then
    (umask 077; "$BIN/airlock" codec newkey dev1 >"$DATA/codec.keys")
    log "generated payload codec key in $DATA/codec.keys"
  fi
  if [[ ! -s "$DATA/demo-approver.password" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DATA/demo-approver.password")
  fi
  local demo_hash
  demo_hash="$("$BIN/airlock" hash-password <"$DATA/demo-approver.password")"
  local pg_url
  pg_url="$("$REPO/deploy/dev/postgres.sh" url)"
  local tmp="$CONFIG.tmp"
  sed -e "s|@REPO@|$REPO|g" -e "s|@DATA@|$DATA|g" -e "s|@PG_URL@|$pg_url|g" \
      -e "s|@TEMPORAL@|127.0.0.1:$TEMPORAL_PORT|g" -e "s|@SERVE@|$SERVE_ADDR|g" \
      -e "s|@DEMO_HASH@|$demo_hash|g" -e "s|@UI_ORIGIN@|http://127.0.0.1:$TEMPORAL_UI_PORT|g" \
      "$REPO/deploy/dev/config.yaml.in" >"$tmp"
  mv "$tmp" "$CONFIG"
}

start() {
  [[ -x "$BIN/airlock" ]] || { log "bin/airlock missing: run make build"; exit 1; }
  [[ -x "$BIN/temporal" ]] || { log "bin/temporal missing: run make temporal"; exit 1; }
  "$REPO/deploy/host/setup.sh"
  mkdir -p "$PIDS"
  if ! "$REPO/deploy/dev/postgres.sh" status >/dev/null 2>&1; then
    touch "$PIDS/postgres.started-by-stack"   # so `stop` stops only what `start` started
  fi
  "$REPO/deploy/dev/postgres.sh" start
  write_config
  start_proc temporal "$BIN/temporal" server start-dev \
    --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
    --db-filename "$DATA/temporal.db" --log-level warn \
    --ui-codec-endpoint "http://$SERVE_ADDR/codec" \
    --search-attribute AirlockPhase=Keyword --search-attribute AirlockSource=Keyword \
    --search-attribute AirlockTarget=Keyword --search-attribute AirlockApprover=KeywordList
  wait_port 127.0.0.1 "$TEMPORAL_PORT" temporal 60
  start_proc worker-control "$BIN/airlock" --config "$CONFIG" worker control
  start_proc worker-hv-local "$BIN/airlock" --config "$CONFIG" worker hypervisor --name local
  start_proc worker-apply-prod "$BIN/airlock" --config "$CONFIG" worker apply --env prod
  start_proc serve "$BIN/airlock" --config "$CONFIG" serve
  wait_port "${SERVE_ADDR%:*}" "${SERVE_ADDR##*:}" serve 30
  log "Temporal UI: http://127.0.0.1:$TEMPORAL_UI_PORT   Airlock: http://$SERVE_ADDR   config: $CONFIG"
}

stop() {
  local name pid
  for name in serve worker-apply-prod worker-hv-local worker-control temporal; do
    if alive "$name"; then
      pid="$(cat "$PIDS/$name.pid")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      log "stopped $name (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
  done
  if [[ -e "$PIDS/postgres.started-by-stack" ]]; then
    "$REPO/deploy/dev/postgres.sh" stop || true
    rm -f "$PIDS/postgres.started-by-stack"
  fi
  log "libvirtd and the VM prod-web-1 keep running (airlock prod down removes the VM)"
}

status() {
  local name
  for name in temporal worker-control worker-hv-local worker-apply-prod serve; do
    if alive "$name"; then echo "$name: running (pid $(cat "$PIDS/$name.pid"))"; else echo "$name: stopped"; fi
  done
  "$REPO/deploy/dev/postgres.sh" status || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
