#!/usr/bin/env bash
# Submit a parameter sweep to a pueue host by hand, the safe way - what
# `inv submit-batch --playbook sweep` automates. Linted in CI (`inv lint -- examples`).
#
#   HOST=bigblack PROJECT=/home/ops/project ./examples/submit_sweep.sh
#
# What it does right, and which rule it would trip otherwise:
# * every job is generated locally and uploaded ONCE, then fed to pueue by one remote
#   script: one SSH session for the whole batch, not one per job (ssh-per-job, AP-12);
# * every `pueue add` gets `-w <absolute project dir>` (remote-add-without-workdir, AP-11);
# * every job runs under systemd-run with MemoryMax AND MemorySwapMax=0 (INV-7, G-10);
# * the label carries every parameter (INV-1), and post-processing is chained with
#   `--after` on ids captured with --print-task-id in the same session (AP-7); nothing
#   refers to a task id afterwards: watch by group and label (hardcoded-task-id, INV-8);
# * no `pueue restart` (failed labels are re-added fresh: `inv retry-failed`), no
#   `| head` under pipefail (pipefail-head, AP-13), deletes are `rm -f` (INV-3).
set -euo pipefail

host=${HOST:-bigblack}
project=${PROJECT:-/home/ops/project}   # absolute: pueue add -w needs it on the host
group=${GROUP:-p1}
batch=sweep-$(date +%Y%m%d)
memory_max=${MEMORY_MAX:-8G}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Generate every job locally: label <TAB> command, one line per job.
jobs="$work/$batch.tsv"
for symbol in BTCUSDT ETHUSDT; do
  for threshold in 250 500 750 1000; do
    printf '%s@%s\t%s\n' "$symbol" "$threshold" \
      "uv run python scripts/process.py --symbol $symbol --threshold $threshold" >> "$jobs"
  done
done
echo "$(wc -l < "$jobs") jobs; first ones:"
head -n 3 "$jobs"                       # head reads the file: no SIGPIPE under pipefail

# 2. One upload, then one SSH session that feeds pueue on the host.
scp -q "$jobs" "$host:/tmp/$batch.tsv"
ssh "$host" bash -s -- "$project" "$group" "$batch" "$memory_max" <<'REMOTE'
set -euo pipefail
project=$1 group=$2 batch=$3 memory_max=$4
pueue=~/.local/bin/pueue                # full path: a non-login SSH PATH lacks ~/.local/bin
ids=()
while IFS=$'\t' read -r label command; do
  # shellcheck disable=SC2086 # the job command is split into words on purpose
  ids+=("$("$pueue" add --print-task-id -w "$project" --group "$group" --label "$label" -- \
    systemd-run --user --scope -p "MemoryMax=$memory_max" -p MemorySwapMax=0 $command)")
done < "/tmp/$batch.tsv"
optimize=$("$pueue" add --print-task-id -w "$project" --group "$group" \
  --label "$batch:optimize" --after "${ids[@]}" -- uv run python scripts/optimize.py)
"$pueue" add -w "$project" --group "$group" --label "$batch:validate" --after "$optimize" \
  -- uv run python scripts/validate.py --expect "${#ids[@]}"
rm -f "/tmp/$batch.tsv"
echo "queued ${#ids[@]} jobs + optimize + validate in group $group"
REMOTE

# 3. Watch by group and label, never by task id.
echo "watch: inv monitor --host $host --group $group --until-done"
