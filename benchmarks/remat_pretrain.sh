#!/usr/bin/env bash
# (c) Rematerialisation policies of configs/pretrain.py, compiled by libtpu on this host
# (synclipmae_jax/tools/remat_search.py): every policy on v5p:4x4x8 at 48 clips per chip, then the
# per-chip batch and policy for v6e:16x16 (256 chips, 32 GiB HBM). Needs the tpu venv:
#   SYNCLIPMAE_VENV=.venv-tpu bash scripts/setup_env.sh tpu
#   bash benchmarks/remat_pretrain.sh [v6e]  # writes benchmarks/results/remat_pretrain_*.{txt,json}
#                                            # (v6e: only the v6e:16x16 searches)
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
[ "${1:-all}" = v6e ] || search v5p_4x4x8 --topology=v5p:4x4x8 --clips_per_chip=48
# 256 chips with a third of the v5p's HBM, at the paper's per-device batch (48) and at its global
# batch (6144 = 24 x 256): the candidates in order of increasing FLOPs (remat.REMAT_POLICIES'
# order, which the v5p table confirms; offload left out), the first that fits. "none" is left out:
# the v5p table has it at 76.9 GiB per chip for 48 clips, about 39 GiB for 24 (activations scale
# with the batch), more than v6e's 32 GiB.
# fsdp=16: a logical axis must be a product of the 16 x 16 torus's axes (8 would split one).
for clips in 48 24; do
  search "v6e_16x16_${clips}" --topology=v6e:16x16 --clips_per_chip="$clips" --first_fit \
    --config.mesh.fsdp=16 --candidates=dots_no_batch,save_all_but_mlp,qkv_proj,full
done
