#!/usr/bin/env bash
# `make demo`: one real task end to end on the running dev stack.
#   1. boot (or reuse) the production VM prod-web-1
#   2. start the demo runbook task: a sandbox is cloned and configured
#   3. show the diff and the verified playbook, then wait for approval
#   4. apply to prod-web-1 and check it over HTTP from this host
# AUTO_APPROVE=1 approves through the CLI as the demo approver.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="$REPO/.data/config.yaml"
AIRLOCK=("$REPO/bin/airlock" --config "$CONFIG")
TASK_FILE="$REPO/deploy/demo/nginx-status-site.yaml"
APPROVER=demo-approver

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "production VM prod-web-1"
"${AIRLOCK[@]}" prod up

say "starting the demo task ($TASK_FILE)"
out="$("${AIRLOCK[@]}" task start -f "$TASK_FILE" --as "${SUDO_USER:-${USER:-$(id -un)}}")"
echo "$out"
ID="$(awk '/^started/{print $2}' <<<"$out")"

say "watching $ID until it needs a human"
"${AIRLOCK[@]}" task watch "$ID"

say "diff and playbook"
"${AIRLOCK[@]}" task show "$ID" --playbook
PLAN="$("${AIRLOCK[@]}" task show "$ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["plan"]["plan_hash"])')"

cat <<MSG

The task is waiting for approval of plan $PLAN.
Approve it with any one of:
  bin/airlock --config .data/config.yaml task approve $ID --as $APPROVER --comment "looks good"
  bin/temporal workflow signal --workflow-id $ID --name approval \\
      --input '{"decision":"approve","by":"$APPROVER","plan_hash":"$PLAN"}'
  the web page: http://127.0.0.1:8080/tasks/$ID
      (log in as $APPROVER, password in .data/demo-approver.password)
Reject with: bin/airlock --config .data/config.yaml task reject $ID --as $APPROVER --comment "why"
MSG

if [[ "${AUTO_APPROVE:-0}" == 1 ]]; then
  say "AUTO_APPROVE=1: approving through the CLI as '$APPROVER' (no human looked at this plan)"
  "${AIRLOCK[@]}" task approve "$ID" --as "$APPROVER" --plan-hash "$PLAN" --comment "auto-approved by make demo (AUTO_APPROVE=1)"
else
  say "waiting for your approval (Ctrl-C leaves the task waiting; it keeps for 72h)"
fi
"${AIRLOCK[@]}" task watch --until-done "$ID"

say "checking prod-web-1 from this host"
curl -fsS -i http://10.78.0.10:8080/
say "audit trail: bin/airlock --config .data/config.yaml task audit $ID"
