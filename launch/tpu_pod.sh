#!/usr/bin/env bash
# Cloud TPU pods: create (TPU VM or queued resource), install on every worker, train on all
# workers with the same command, tail logs, stop, fetch metrics, delete. See launch/README.md.
#
#   bash launch/tpu_pod.sh COMMAND --name=POD --zone=ZONE [options] [-- main.py flags]
#
# Commands: create | install | train | logs | stop | fetch | status | delete
# Options:
#   --name=POD --zone=ZONE [--project=PROJECT]
#   --accelerator_type=v5p-256     (create; v5p-256 = 128 chips = topology v5p:4x4x8)
#   --version=RUNTIME              (create; default from the accelerator type)
#   --queued                       (create/status/delete through queued resources)
#   --spot                         (create: spot capacity)
#   --config=configs/pretrain.py   (train)
#   --workdir=DIR                  (train, fetch: on a filesystem every worker shares)
#   --wait                         (train: block until training ends on every worker)
#   --worker=0                     (logs: which worker's log)
#   --to=PATH                      (fetch: local destination of metrics.json)
#   --dry_run                      (print every command instead of running it)
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
cmd="$1"; shift
name="" zone="" project="" accelerator="" version="" queued=0 spot=0
config="configs/pretrain.py" workdir="" wait=0 worker=0 to="" dry_run=0
train_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator_type=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --queued) queued=1 ;;
    --spot) spot=1 ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --wait) wait=1 ;;
    --worker=*) worker="${1#*=}" ;;
    --to=*) to="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; train_flags=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
[ -n "$name" ] || { echo "--name=POD is required" >&2; exit 2; }
[ -n "$zone" ] || { echo "--zone=ZONE is required" >&2; exit 2; }

remote_dir='~/synclipmae'  # expanded by the worker's shell
log='~/synclipmae-train.log'
pidfile='~/synclipmae-train.pid'
where=(--zone="$zone")
[ -z "$project" ] || where+=(--project="$project")

# Prints a command (arguments with spaces or shell characters single-quoted) or runs it.
run() {
  if [ "$dry_run" = 1 ]; then
    local out="" a
    for a in "$@"; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
    done
    echo "${out% }"
  else
    "$@"
  fi
}

ssh_all() { run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$1"; }
squote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }  # one shell word, single-quoted

default_version() {
  case "$1" in
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
    *) echo "unknown accelerator type $1: pass --version" >&2; exit 2 ;;
  esac
}

case "$cmd" in
  create)
    [ -n "$accelerator" ] || { echo "create needs --accelerator_type (e.g. v5p-256)" >&2; exit 2; }
    version="${version:-$(default_version "$accelerator")}"
    extra=()
    [ "$spot" = 0 ] || extra+=(--spot)
    if [ "$queued" = 1 ]; then
      run gcloud compute tpus queued-resources create "$name" --node-id="$name" "${where[@]}" \
        --accelerator-type="$accelerator" --runtime-version="$version" "${extra[@]}"
      if [ "$dry_run" = 1 ]; then
        echo "# until ACTIVE:"
        run gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)'
      else
        until [ "$(gcloud compute tpus queued-resources describe "$name" "${where[@]}" \
                   --format='value(state.state)')" = ACTIVE ]; do sleep 60; done
      fi
    else
      run gcloud compute tpus tpu-vm create "$name" "${where[@]}" \
        --accelerator-type="$accelerator" --version="$version" "${extra[@]}"
    fi
    ;;
  install)
    # The committed tree (HEAD) goes to every worker; Python 3.11 venv with the tpu extra.
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    archive="${TMPDIR:-/tmp}/synclipmae-src.tar.gz"
    run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$name:synclipmae-src.tar.gz" "${where[@]}" --worker=all
    ssh_all "set -e; sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv; \
mkdir -p $remote_dir && tar -xzf ~/synclipmae-src.tar.gz -C $remote_dir && cd $remote_dir; \
[ -x .venv/bin/python ] || python3.11 -m venv .venv; bash scripts/setup_env.sh tpu"
    ;;
  train)
    [ -n "$workdir" ] || { echo "train needs --workdir (shared by all workers)" >&2; exit 2; }
    main="cd $remote_dir && echo \$\$ > $pidfile && exec .venv/bin/python -m synclipmae_jax.main"
    main+=" $(printf '%q ' "--config=$config" "--workdir=$workdir" --jax_distributed "${train_flags[@]}")"
    main="${main% } > $log 2>&1"
    if [ "$wait" = 1 ]; then
      ssh_all "bash -c $(squote "$main")"
    else
      ssh_all "setsid nohup bash -c $(squote "$main") > /dev/null 2>&1 < /dev/null &"
    fi
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker="$worker" \
      --command="tail -n 200 -f $log"
    ;;
  stop)
    # SIGTERM: train.py finishes the step, saves a checkpoint and exits.
    ssh_all "[ -f $pidfile ] && kill -TERM \$(cat $pidfile) 2>/dev/null || true"
    ;;
  fetch)
    [ -n "$workdir" ] && [ -n "$to" ] || { echo "fetch needs --workdir and --to" >&2; exit 2; }
    run mkdir -p "$(dirname "$to")"
    run gcloud compute tpus tpu-vm scp "$name:$workdir/metrics.json" "$to" "${where[@]}" --worker=0
    ;;
  status)
    if [ "$queued" = 1 ]; then
      run gcloud compute tpus queued-resources describe "$name" "${where[@]}"
    else
      run gcloud compute tpus tpu-vm describe "$name" "${where[@]}"
    fi
    ;;
  delete)
    if [ "$queued" = 1 ]; then
      run gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet
    fi
    ;;
  *) echo "unknown command: $cmd" >&2; usage ;;
esac
