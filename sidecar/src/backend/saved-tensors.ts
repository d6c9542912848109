/**
 * Cheaper saved tensors for the backward pass. TF.js's engine clones every tensor a kernel saves for
 * its gradient by running the Identity kernel: a whole kernel invocation (kernel lookup, scopes,
 * profiling and leak-check hooks) for what is, on a backend whose Identity shares the input's data,
 * one more reference on that data in a new tensor. A GPT-2 LoRA step saves about 400 tensors.
 *
 * Where Identity shares data (checked once per backend by running it: cpu and webgpu do, and wasm
 * with wasm-kernels.ts's fix), this takes that reference directly; elsewhere (tfjs-node's native
 * backends copy) the engine's own path stays. PEFT_LAB_SAVED_TENSORS=engine keeps the engine's path
 * everywhere (for side-by-side timing).
 *
 * Dawn's null backend (no GPU work), gpu-host case, one process, median of 6 × 30 steps: host time
 * per WebGPU step LoRA 21.5 → 14.4 ms, full 23.0 → 18.8 ms.
 */
import * as tf from '@tensorflow/tfjs-core';

interface EngineInternals {
  backendName: string;
  backend: tf.KernelBackend;
  saveTensorsForBackwardMode(tensors: tf.Tensor[]): tf.Tensor[];
  makeTensorFromTensorInfo(info: tf.TensorInfo, backend?: tf.KernelBackend): tf.Tensor;
  keep<T extends tf.Tensor>(t: T): T;
}

const sharing = new Map<string, boolean>();
let installed = false;

/** Whether the current backend's Identity returns its input's data (probed once per backend). */
function identityShares(engine: EngineInternals): boolean {
  let shares = sharing.get(engine.backendName);
  if (shares === undefined) {
    shares = tf.tidy(() => {
      const x = tf.zeros([2], 'float32');
      return (tf.engine().runKernel(tf.Identity, { x }) as tf.Tensor).dataId === x.dataId;
    });
    sharing.set(engine.backendName, shares);
  }
  return shares;
}

export function installSavedTensorShortcut(): void {
  if (installed || process.env.PEFT_LAB_SAVED_TENSORS === 'engine') return;
  installed = true;
  const engine = tf.engine() as unknown as EngineInternals;
  const original = engine.saveTensorsForBackwardMode.bind(engine);
  engine.saveTensorsForBackwardMode = (tensors) => {
    if (!identityShares(engine) || tensors.some((t) => t.dtype === 'string' || t.dtype === 'complex64')) return original(tensors);
    const backend = engine.backend as tf.KernelBackend & { incRef(dataId: object): void };
    return tensors.map((t) => {
      backend.incRef(t.dataId);
      return engine.keep(engine.makeTensorFromTensorInfo({ dataId: t.dataId, shape: t.shape, dtype: t.dtype }, backend));
    });
  };
}
