#!/usr/bin/env bash
# Cloud TPU pods: create (TPU VM, queued resource, or N slices of a multislice queued resource),
# install on every worker, train on all workers with the same command, tail logs, stop, fetch
# metrics, delete. See launch/README.md.
#
#   bash launch/tpu_pod.sh COMMAND --name=POD --zone=ZONE [options] [-- main.py flags]
#
# Commands: create | install | train | logs | stop | fetch | status | delete
# Options:
#   --name=POD --zone=ZONE [--project=PROJECT]
#   --accelerator_type=v5p-256     (create; v5p-256 = 128 chips = topology v5p:4x4x8; per slice)
#   --version=RUNTIME              (create; default from the accelerator type)
#   --queued                       (every command: a queued resource; its nodes via --node=all)
#   --num_slices=N                 (every command: N slices joined over DCN; implies --queued)
#   --spot                         (create: spot capacity)
#   --config=configs/pretrain.py   (train)
#   --workdir=DIR                  (train, fetch: gs://BUCKET/... or a filesystem all workers share)
#   --env=NAME=VALUE               (train, repeatable: exported on every worker, e.g. XLA_FLAGS)
#   --restart                      (train: relaunch while the run exits with status 75, preempted)
#   --wait                         (train: block until training ends on every worker)
#   --worker=0 --node=0            (logs: which worker's log, of which slice)
#   --to=PATH                      (fetch: local destination of metrics.json)
#   --dry_run                      (print every command instead of running it)
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

PREEMPTED=75  # synclipmae_jax.checkpointing.PREEMPTED_EXIT_STATUS

[ $# -ge 1 ] || usage
cmd="$1"; shift
name="" zone="" project="" accelerator="" version="" queued=0 spot=0 num_slices=1
config="configs/pretrain.py" workdir="" wait=0 restart=0 worker=0 node=0 to="" dry_run=0
train_flags=() envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator_type=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --queued) queued=1 ;;
    --num_slices=*) num_slices="${1#*=}" ;;
    --spot) spot=1 ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --env=*) envs+=("${1#--env=}") ;;
    --restart) restart=1 ;;
    --wait) wait=1 ;;
    --worker=*) worker="${1#*=}" ;;
    --node=*) node="${1#*=}" ;;
    --to=*) to="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; train_flags=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
[ -n "$name" ] || { echo "--name=POD is required" >&2; exit 2; }
[ -n "$zone" ] || { echo "--zone=ZONE is required" >&2; exit 2; }
[[ "$num_slices" =~ ^[1-9][0-9]*$ ]] || { echo "--num_slices=$num_slices must be >= 1" >&2; exit 2; }
[ "$num_slices" = 1 ] || queued=1  # multislice exists only as a queued resource
for e in ${envs[@]+"${envs[@]}"}; do
  [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "--env=$e: expected NAME=VALUE" >&2; exit 2; }
  case "${e%%=*}" in MEGASCALE_*)
    echo "--env=$e: the TPU runtime sets MEGASCALE_* on multislice resources" >&2; exit 2 ;;
  esac
done

remote_dir='~/synclipmae'  # expanded by the worker's shell
log='~/synclipmae-train.log'
pidfile='~/synclipmae-train.pid'  # the python process (SIGTERM: save and exit)
loopfile='~/synclipmae-train.loop.pid'  # the shell that runs (and with --restart relaunches) it
where=(--zone="$zone")
[ -z "$project" ] || where+=(--project="$project")
if [ "$queued" = 1 ]; then  # every node of the queued resource (one per slice), every worker
  tpus=(gcloud compute tpus queued-resources) all=(--node=all --worker=all)
else
  tpus=(gcloud compute tpus tpu-vm) all=(--worker=all)
fi

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

ssh_all() { run "${tpus[@]}" ssh "$name" "${where[@]}" "${all[@]}" --command="$1"; }
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

# Worker-side shell: ends a previous run (its relaunch loop, then the python process with SIGTERM,
# which saves a checkpoint, SIGKILL after 120 s) and any process still holding the TPU devices.
stop_previous="[ ! -f $loopfile ] || kill -TERM \$(cat $loopfile) 2>/dev/null || true; rm -f $loopfile; \
if [ -f $pidfile ] && kill -TERM \$(cat $pidfile) 2>/dev/null; then \
for _ in \$(seq 120); do kill -0 \$(cat $pidfile) 2>/dev/null || break; sleep 1; done; \
kill -KILL \$(cat $pidfile) 2>/dev/null || true; fi; rm -f $pidfile; \
holders=\$(echo \$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u)); \
[ -z \"\$holders\" ] || { echo \"killing processes holding the TPU: \$holders\" >&2; sudo kill -KILL \$holders; }"

# The workdir's bucket gets the compilation cache beside the runs and each worker's log.
gs_workdir=0
[[ "$workdir" != gs://* ]] || gs_workdir=1

case "$cmd" in
  create)
    [ -n "$accelerator" ] || { echo "create needs --accelerator_type (e.g. v5p-256)" >&2; exit 2; }
    version="${version:-$(default_version "$accelerator")}"
    extra=()
    [ "$spot" = 0 ] || extra+=(--spot)
    if [ "$queued" = 1 ]; then
      if [ "$num_slices" = 1 ]; then
        nodes=(--node-id="$name")
      else  # the nodes (slices) are named after the prefix
        nodes=(--node-count="$num_slices" --node-prefix="$name")
      fi
      run gcloud compute tpus queued-resources create "$name" "${nodes[@]}" "${where[@]}" \
        --accelerator-type="$accelerator" --runtime-version="$version" ${extra[@]+"${extra[@]}"}
      if [ "$dry_run" = 1 ]; then
        echo "# until ACTIVE:"
        run gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)'
      else
        until [ "$(gcloud compute tpus queued-resources describe "$name" "${where[@]}" \
                   --format='value(state.state)')" = ACTIVE ]; do sleep 60; done
      fi
    else
      run gcloud compute tpus tpu-vm create "$name" "${where[@]}" \
        --accelerator-type="$accelerator" --version="$version" ${extra[@]+"${extra[@]}"}
    fi
    ;;
  install)
    # The committed tree (HEAD) goes to every worker; Python 3.11 venv with the tpu extra.
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    archive="${TMPDIR:-/tmp}/synclipmae-src.tar.gz"
    run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
    run "${tpus[@]}" scp "$archive" "$name:synclipmae-src.tar.gz" "${where[@]}" "${all[@]}"
    ssh_all "set -e; sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv; \
mkdir -p $remote_dir && tar -xzf ~/synclipmae-src.tar.gz -C $remote_dir && cd $remote_dir; \
[ -x .venv/bin/python ] || python3.11 -m venv .venv; bash scripts/setup_env.sh tpu"
    ;;
  train)
    [ -n "$workdir" ] || { echo "train needs --workdir (gs:// or shared by all workers)" >&2; exit 2; }
    flags=("--config=$config" "--workdir=$workdir" --jax_distributed)
    cache_set=0
    for f in ${train_flags[@]+"${train_flags[@]}"}; do
      [[ "$f" != --config.compilation_cache_dir=* ]] || cache_set=1
    done
    if [ "$gs_workdir" = 1 ] && [ "$cache_set" = 0 ]; then  # shared by the runs beside it
      flags+=("--config.compilation_cache_dir=${workdir%/*}/compilation_cache")
    fi
    flags+=(${train_flags[@]+"${train_flags[@]}"})
    script="$stop_previous; cd $remote_dir; rm -f $log; echo \$\$ > $loopfile"
    for e in ${envs[@]+"${envs[@]}"}; do
      script+="; export $(printf '%q' "$e")"
    done
    script+="; while :; do .venv/bin/python -m synclipmae_jax.main $(printf '%q ' "${flags[@]}")"
    script="${script% } >> $log 2>&1 & echo \$! > $pidfile; wait \$!; status=\$?"
    if [ "$gs_workdir" = 1 ]; then
      script+="; gcloud storage cp $log $(printf '%q' "$workdir/logs")/\$(hostname).log >/dev/null 2>&1 \
|| echo \"could not copy the log to $workdir/logs\" >&2"
    fi
    if [ "$restart" = 1 ]; then
      script+="; [ \$status = $PREEMPTED ] || break; echo \"preempted (exit $PREEMPTED): relaunching\" >> $log"
    else
      script+="; break"
    fi
    script+="; done; rm -f $loopfile; exit \$status"
    if [ "$wait" = 1 ]; then
      ssh_all "bash -c $(squote "$script")"
    else
      ssh_all "setsid nohup bash -c $(squote "$script") > /dev/null 2>&1 < /dev/null &"
    fi
    ;;
  logs)
    node_flag=()
    [ "$queued" = 0 ] || node_flag=(--node="$node")
    run "${tpus[@]}" ssh "$name" "${where[@]}" ${node_flag[@]+"${node_flag[@]}"} --worker="$worker" \
      --command="tail -n 200 -f $log"
    ;;
  stop)
    # The relaunch loop ends, then SIGTERM: train.py saves a checkpoint and exits (75).
    ssh_all "[ ! -f $loopfile ] || kill -TERM \$(cat $loopfile) 2>/dev/null; rm -f $loopfile; \
[ -f $pidfile ] && kill -TERM \$(cat $pidfile) 2>/dev/null || true"
    ;;
  fetch)
    [ -n "$workdir" ] && [ -n "$to" ] || { echo "fetch needs --workdir and --to" >&2; exit 2; }
    [[ "$to" == gs://* ]] || run mkdir -p "$(dirname "$to")"
    if [ "$gs_workdir" = 1 ]; then  # process 0 wrote it to the bucket
      if [ "$to" = "$workdir/metrics.json" ]; then
        echo "# $to: already there"
      else
        run gcloud storage cp "$workdir/metrics.json" "$to"
      fi
    else
      node_flag=()
      [ "$queued" = 0 ] || node_flag=(--node=0)
      run "${tpus[@]}" scp "$name:$workdir/metrics.json" "$to" "${where[@]}" \
        ${node_flag[@]+"${node_flag[@]}"} --worker=0
    fi
    ;;
  status)
    run "${tpus[@]}" describe "$name" "${where[@]}"
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
