#!/usr/bin/env bash
# (c) Rematerialisation policies of configs/pretrain.py, compiled by libtpu on this host
# (synclipmae_jax/tools/remat_search.py): every policy on v5p:4x4x8 at 48 clips per chip, then the
# per-chip batch and policy for v6e:16x16 (256 chips, 32 GiB HBM). Needs the tpu venv:
#   SYNCLIPMAE_VENV=.venv-tpu bash scripts/setup_env.sh tpu
#   bash benchmarks/remat_pretrain.sh        # writes benchmarks/results/remat_pretrain_*.{txt,json}
set -euo pipefail
cd "$(dirname "$0")/.."
python="${SYNCLIPMAE_VENV:-.venv-tpu}/bin/python"
out=benchmarks/results
mkdir -p "$out"
search() {  # name, flags...
  local name="$1"; shift
  echo "== $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$python" -m synclipmae_jax.tools.remat_search --config=configs/pretrain.py --min_headroom=0.15 \
    --json_out="$out/remat_pretrain_$name.json" "$@" 2>"${TMPDIR:-/tmp}/remat_$name.err" \
    | tee "$out/remat_pretrain_$name.txt" || echo "$name: exit $? (see the table)"
}
# Every policy (models/remat.py), both stacks alike.
search v5p_4x4x8 --topology=v5p:4x4x8 --clips_per_chip=48
# 256 chips with a third of the v5p's HBM: the candidates in order of increasing FLOPs (the order
# of remat.REMAT_POLICIES without offload, which the v5p table confirms), the first that fits; at the
# paper's per-device batch (48) and at its global batch (6144 = 24 x 256).
for clips in 48 24; do
  search "v6e_16x16_${clips}" --topology=v6e:16x16 --clips_per_chip="$clips" --first_fit \
    --candidates=none,dots_no_batch,save_all_but_mlp,qkv_proj,full
done
