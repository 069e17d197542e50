#!/usr/bin/env bash
# (c) AOT report of configs/pretrain.py for v5p:4x4x8 (128 chips, 48 clips per chip), and the
# variants that explain its FLOP count and memory: with and without nn.scan (XLA counts a scanned
# stack's body once), full remat or none (benchmarks/remat_pretrain.sh compares all the remat
# policies). Needs the tpu venv:
#   SYNCLIPMAE_VENV=.venv-tpu bash scripts/setup_env.sh tpu
#   bash benchmarks/aot_pretrain.sh            # writes benchmarks/results/aot_pretrain_*.{txt,json}
set -euo pipefail
cd "$(dirname "$0")/.."
python="${SYNCLIPMAE_VENV:-.venv-tpu}/bin/python"
out=benchmarks/results
mkdir -p "$out"
full="--config.model.remat_policy.encoder=full --config.model.remat_policy.decoder=full"
none="--config.model.remat_policy.encoder=none --config.model.remat_policy.decoder=none"
variants=(
  "config||"
  "scan_remat|--config.model.scan_layers=True $full|"
  "noscan_noremat|--config.model.scan_layers=False $none|--eval=False"
  "scan_noremat|--config.model.scan_layers=True $none|--eval=False"
  "noscan_remat|--config.model.scan_layers=False $full|--eval=False"
)
for v in "${variants[@]}"; do
  name="${v%%|*}"; rest="${v#*|}"; overrides="${rest%%|*}"; eval_flag="${rest#*|}"
  echo "== $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  # shellcheck disable=SC2086
  "$python" -m synclipmae_jax.tools.aot --config=configs/pretrain.py --topology=v5p:4x4x8 \
    --clips_per_chip=48 --min_headroom=0.15 $overrides $eval_flag \
    --json_out="$out/aot_pretrain_v5p_4x4x8_$name.json" 2>"${TMPDIR:-/tmp}/aot_$name.err" | tee "$out/aot_pretrain_v5p_4x4x8_$name.txt" \
    || echo "$name: exit $? (see the report)"
done
