#!/usr/bin/env bash
# bench/bench_pipeline.py on a GPU machine that has Python 3.12, torch (CUDA), numpy, pluggy, click, tqdm,
# huggingface-hub, safetensors, pillow, xarray and regex but no network: the missing runtime dependencies
# of the core and of the baseline, remoteclip, satmae and scalemae plugins travel as wheels in .whl/
# (git-ignored; how to fill it: CONTRIBUTING.md, "Working on this repository"), installed with --no-index
# --no-deps into /tmp/site.
# .whl/ also holds wheels of the core and those plugins, for their entry points (group rs_embed); the code
# that runs is the working tree's, which comes first on PYTHONPATH.
#
#   bash bench/device_bench.sh [bench_pipeline.py options]     # writes $OUT/bench.json and $OUT/bench.log
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "no wheels in .whl/: fill it first (CONTRIBUTING.md, Working on this repository)" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
tree=$PWD
for p in rs-embed-baseline rs-embed-remoteclip rs-embed-satmae rs-embed-scalemae; do
    tree=$tree:$PWD/plugins/$p
done
export PYTHONPATH=$tree:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
python3 - <<'EOF'
import rs_embed_core, rasterio, pyproj, cattrs, ftfy, torch
from rs_embed import list_models
assert rs_embed_core.__file__.startswith(__import__("os").getcwd()), rs_embed_core.__file__
missing = {"remoteclip", "satmaepp", "scalemae"} - set(list_models())
assert not missing, f"plugins not found through their entry points: {missing}"
print(f"python ok: rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}), pyproj {pyproj.__version__}, "
      f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
EOF
python3 bench/bench_pipeline.py --device cuda --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
