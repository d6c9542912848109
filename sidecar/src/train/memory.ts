/**
 * A rough memory estimate for a training run, checked before it starts: float32 base weights,
 * adapter tensors, their gradients and AdamW's two moments, plus the activations the backward pass
 * keeps for one micro-batch (per transformer block: ~12·B·T·d for norms, projections and
 * residuals, 2·B·T·inner for the MLP, 3·B·H·T² for attention scores and probabilities; and the
 * logits with their log-softmax and one-hot, 4·B·T·V for language models).
 */
import * as tf from '@tensorflow/tfjs-core';
import { totalmem } from 'node:os';
import { isEncoder, type ModelConfig } from '../models/config';
import { attentionSpan } from '../models/deberta';
import { CHUNK_LOGITS, CHUNKED_LOSS_LOGITS } from '../models/model';

export interface MemoryEstimate {
  weightsMb: number;
  adapterMb: number;
  gradientsMb: number;
  optimizerMb: number;
  activationsMb: number;
  totalMb: number;
}

const MB = 1024 * 1024;
const round = (x: number) => Math.round(x * 10) / 10;

export function estimateMemory(o: { config: ModelConfig; baseParams: number; trainableParams: number; batchSize: number; seqLen: number }): MemoryEstimate {
  const c = o.config;
  const B = o.batchSize;
  const inner = c.modelType === 'gpt2' ? c.innerSize : c.modelType === 'bloom' ? 4 * c.hiddenSize : c.intermediateSize;
  const T = c.modelType === 'vit' ? (c.imageSize / c.patchSize) ** 2 + 1 : o.seqLen;
  const d = c.hiddenSize;
  // The tensors a block keeps for its backward pass. Llama-layout blocks keep more: RMSNorm's and
  // RoPE's intermediates, the key/value heads repeated for grouped-query attention, SwiGLU's three
  // [T, inner] products (a Qwen2.5-0.5B step of 1 × 250 tokens aborts the 3.6 GiB wasm heap that the
  // GPT-2 count would have let it try).
  const llamaLike = 'normOffset' in c;
  // DeBERTa's disentangled attention keeps each head's scores against every relative position (c2p, p2c:
  // [T, 2·span]), what it gathers from them ([T, T] each), and the projected positions ([2·span, d] per row).
  const span2 = c.modelType === 'deberta-v2' && c.relativeAttention ? 2 * attentionSpan(c) : 0;
  const relative = span2 ? 2 * B * c.numHeads * T * span2 + 2 * B * c.numHeads * T * T + 2 * B * span2 * d : 0;
  const perLayer = llamaLike
    ? 20 * B * T * d + 6 * B * T * inner + 4 * B * c.numHeads * T * T
    : 12 * B * T * d + 2 * B * T * inner + 3 * B * c.numHeads * T * T + relative;
  // A causal LM's logits: all of them, or one slice at a time when the loss goes by slices (model.ts).
  const logits = B * T * c.vocabSize;
  const head = isEncoder(c) || c.modelType === 'vit' ? 4 * B * d : 4 * (logits > CHUNKED_LOSS_LOGITS ? CHUNK_LOGITS : logits);
  const input = c.modelType === 'vit' ? B * c.numChannels * c.imageSize * c.imageSize : 0;
  const weightsMb = (o.baseParams * 4) / MB;
  const adapterMb = (o.trainableParams * 4) / MB;
  const gradientsMb = adapterMb;
  const optimizerMb = 2 * adapterMb;
  const activationsMb = (((c.numLayers * perLayer + head + input) * 4) / MB) * 1.2;
  const totalMb = weightsMb + adapterMb + gradientsMb + optimizerMb + activationsMb;
  return { weightsMb: round(weightsMb), adapterMb: round(adapterMb), gradientsMb: round(gradientsMb), optimizerMb: round(optimizerMb), activationsMb: round(activationsMb), totalMb: round(totalMb) };
}

/** What the wasm backend's heap (32-bit, at most 4 GiB) can hold for a run. */
export const WASM_HEAP_LIMIT_MB = 3500;

/** The default limit for the current backend: the wasm heap's, 80% of RAM on CPU backends, none on GPUs. */
export function defaultMemoryLimit(backend = tf.getBackend()): { limitMb: number; why: string } | undefined {
  if (backend === 'wasm') return { limitMb: WASM_HEAP_LIMIT_MB, why: 'the default for the wasm backend, whose heap fails near 3.6 GiB' };
  if (backend === 'cpu' || backend === 'tensorflow') return { limitMb: Math.round((totalmem() / MB) * 0.8), why: '80% of this machine\'s memory' };
  return undefined;
}

/**
 * The limit a run is checked against: the spec's `memoryLimitMb`, else the backend's default. On
 * wasm the heap bound holds whatever the spec says: a larger `memoryLimitMb` cannot make it fit.
 */
export function memoryLimitFor(specLimitMb: number | undefined, backend = tf.getBackend()): { limitMb: number; why: string } | undefined {
  if (specLimitMb === undefined) {
    // The extension's peftLab.sidecar.memoryLimitMb setting reaches the sidecar as this variable.
    const fromSetting = Number(process.env.PEFT_LAB_MEMORY_LIMIT_MB);
    if (!(fromSetting > 0)) return defaultMemoryLimit(backend);
    const limit = memoryLimitFor(fromSetting, backend)!;
    return limit.limitMb === fromSetting ? { limitMb: fromSetting, why: 'the peftLab.sidecar.memoryLimitMb setting' } : limit;
  }
  if (backend === 'wasm' && specLimitMb > WASM_HEAP_LIMIT_MB)
    return { limitMb: WASM_HEAP_LIMIT_MB, why: `the wasm backend's heap, which fails near 3.6 GiB whatever memoryLimitMb (${specLimitMb}) says; use a native backend for more` };
  return { limitMb: specLimitMb, why: 'memoryLimitMb in the spec' };
}

export function describeEstimate(e: MemoryEstimate): string {
  return `weights ${e.weightsMb} MB, adapter ${e.adapterMb} MB, gradients ${e.gradientsMb} MB, optimizer state ${e.optimizerMb} MB, activations ${e.activationsMb} MB`;
}
