#!/bin/bash
# Runs on the GPU benchmark machine (device tool; carry .device and .gl, see scripts/device/pack.mjs):
# checks the exported PEFT adapters with Hugging Face PEFT, then times the gpu bench case on WebGPU
# (Dawn → Vulkan) against PyTorch CUDA, with a per-kernel GPU time profile. Output under $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
T=$(mktemp -d)
xz -dc .device/node.xz > "$T/node" && chmod +x "$T/node"
xz -dc .device/dawn.node.xz > "$T/dawn.node"
export PEFT_LAB_DAWN_NODE="$T/dawn.node"
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && export VK_DRIVER_FILES="$icd" && break
done
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-none}"; ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>&1 | head -20
cat "${VK_DRIVER_FILES:-/dev/null}"; export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
"$T/node" --version
# 1. PEFT interop: every run's exported adapter on the unmodified base, logits vs the run's own.
[ -n "${SKIP_PEFT:-}" ] || for r in .device/runs/*/; do
  [ -d "$r" ] && python3 scripts/check_peft_export.py media/models/tiny-gpt "$r" 2>&1 | tail -1 | tee -a "$OUT/peft-check.jsonl"
done
# 2. The gpu case on WebGPU, PyTorch CUDA alternating, kernel profile on stderr.
export PEFT_LAB_DAWN_FLAGS=${PEFT_LAB_DAWN_FLAGS:-enable-dawn-features=allow_unsafe_apis}
"$T/node" .device/dist/cli.js bench --backend webgpu --cases "${CASES:-gpu}" --modes "${MODES:-lora,full}" \
  --steps "${STEPS:-20}" --warmup "${WARMUP:-10}" --kernels --anchor .device/torch_anchor.py --python python3 \
  > >(tee "$OUT/bench.jsonl") 2> >(tee "$OUT/bench.err" >&2)
wait
# 2b. Each matmul of those steps alone under every kernel choice (GPU time per call): which tile
# config and K split each shape wants, and the step's matmul time with the best choice per shape;
# the faster choices go to a plan file.
[ -n "${SKIP_MATMULS:-}" ] || "$T/node" .device/dist/cli.js bench --backend webgpu --matmuls --cases "${CASES:-gpu}" --modes "${MODES:-lora,full}" \
  --reps "${REPS:-10}" --plan-out "$OUT/matmul-plan.json" > "$OUT/matmuls.jsonl" 2> >(grep -v '^Warning' | tee "$OUT/matmuls.err" >&2)
wait
# 2c. The step with that plan (and PyTorch beside it), right after a baseline run without it ("pair" rows).
if [ -s "$OUT/matmul-plan.json" ]; then
  for e in "BASELINE=1" "PEFT_LAB_WEBGPU_MATMUL_PLAN=$OUT/matmul-plan.json"; do
    echo "plan $e:"
    env "$e" "$T/node" .device/dist/cli.js bench --backend webgpu --cases "${CASES:-gpu}" --modes "${MODES:-lora,full}" \
      --steps "${STEPS:-20}" --warmup "${WARMUP:-10}" --json $([ "$e" = BASELINE=1 ] || echo --anchor .device/torch_anchor.py --python python3) \
      | tee -a "$OUT/plan.jsonl" | grep -o '"mode":"[a-z]*"\|"step_ms":[0-9.]*\|"ratio":[0-9.]*\|"matmul_plan":[0-9]*' | paste -s -d ' '
  done
fi
# 3. The same LoRA steps on the CPU (wasm + native kernels, all cores): the loss trajectories must
# agree. (Full fine-tuning of this model does not fit the 4 GiB wasm heap.)
[ -n "${SKIP_CPU:-}" ] || PEFT_LAB_THREADS=$(nproc) "$T/node" .device/dist/cli.js bench --backend wasm --cases "${CASES:-gpu}" \
  --modes lora --steps 1 --warmup 2 --json | tee "$OUT/bench-cpu.jsonl" | grep -o '"mode":"[a-z]*"\|"step_ms":[0-9.]*\|"losses":[^]]*]'
# 4. Optional variants, each one environment assignment, e.g.
#    VARIANTS="PEFT_LAB_WEBGPU_SUBMIT_BATCH=128 PEFT_LAB_WEBGPU_TUNE=attn=32x16 PEFT_LAB_WEBGPU_TUNE=matmul=tfjs
#              PEFT_LAB_WEBGPU_DISPATCH=tfjs PEFT_LAB_SAVED_TENSORS=engine PEFT_LAB_WEBGPU_FIRST_SUBMIT=16
#              PEFT_LAB_WEBGPU_ROBUSTNESS=0"
# (Dawn's robustness off: 10–17% of the step on the H100, but TF.js's matmul needs it; see dawn.ts.)
# Each variant runs right after a baseline run, so that pairs share the machine's state. Wall times
# move ±15% between runs there; the per-kernel GPU times (--kernels, timestamps) of the kernels a
# knob touches (attention, matmuls) are the steadier comparison.
for v in ${VARIANTS:-}; do
  for e in "BASELINE=1" "$v"; do
    echo "variant $e:"
    env "$e" "$T/node" .device/dist/cli.js bench --backend webgpu --cases "${CASES:-gpu}" --modes "${MODES:-lora,full}" \
      --steps "${STEPS:-20}" --warmup "${WARMUP:-10}" --json --kernels | tee -a "$OUT/variants.jsonl" \
      | grep -o '"mode":"[a-z]*"\|"step_ms":[0-9.]*\|"host_ms":[0-9.]*\|"kernel":"\(PeftAttentionQkv\|PeftAttentionQkvGrad\|BatchMatMul\|PeftLinear\)","calls":[0-9]*,"ms":[0-9.]*' | paste -s -d ' '
  done
done
# 5. One table of what was measured (the files under $OUT hold every row).
"$T/node" -e '
const fs = require("fs"); const out = process.argv[1];
const rows = (f) => (fs.existsSync(`${out}/${f}`) ? fs.readFileSync(`${out}/${f}`, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)) : []);
console.log("== summary");
for (const [f, what] of [["bench.jsonl", "bench"], ["plan.jsonl", "pair"]])
  for (const r of rows(f)) if (r.step_ms) console.log([what, r.case, r.mode, `${r.step_ms} ms`, `ratio ${r.ratio ?? "-"}`, `host ${r.webgpu?.host_ms ?? "-"} ms`, `submit ${r.webgpu?.submit_ms ?? "-"} ms`, `read wait ${r.webgpu?.read_wait_ms ?? "-"} ms`, `plan ${r.webgpu?.matmul_plan ?? 0} shapes`].join("  "));
for (const r of rows("matmuls.jsonl")) if (r.summary) console.log(["matmuls", r.case, r.mode, `heuristic ${r.summary.auto_ms} ms`, `best per shape ${r.summary.best_ms} ms`, `${r.summary.gains.length} shapes faster off it`].join("  "));
' "$OUT"
