/** Moving tensors between safetensors host arrays and TF.js, and reading model inputs from a file. */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelInputs } from '../models/architecture';
import { InputError } from '../errors';
import { readSafetensors, toFloat32, toInt32, type HostTensor } from './safetensors';

const INT_TYPES = new Set(['I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);

/** A TF.js tensor from a host tensor: integers become int32 (range-checked), floats float32. */
export function toTf(t: HostTensor): tf.Tensor {
  return INT_TYPES.has(t.dtype) ? tf.tensor(toInt32(t), t.shape, 'int32') : tf.tensor(toFloat32(t), t.shape, 'float32');
}

/** Host copy of a TF.js tensor (async, so it works on GPU backends too). */
export async function fromTf(t: tf.Tensor): Promise<HostTensor> {
  const data = await t.data();
  if (t.dtype === 'int32' || t.dtype === 'bool') return { dtype: 'I32', shape: [...t.shape], data: Int32Array.from(data as Int32Array) };
  return { dtype: 'F32', shape: [...t.shape], data: data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>) };
}

export interface InputBatch {
  inputs: ModelInputs;
  labels?: tf.Tensor;
}

/**
 * Reads `input_ids` (I64/I32) or `pixel_values` (F32), and optional `attention_mask`,
 * `token_type_ids`, `labels`, from a safetensors file. The caller disposes the tensors.
 */
export async function readInputBatch(file: string, kind: 'tokens' | 'pixels'): Promise<InputBatch> {
  const host = await readSafetensors(file);
  const need = kind === 'tokens' ? 'input_ids' : 'pixel_values';
  const main = host.get(need);
  if (!main) throw new InputError(file, need, `tensor missing (found: ${[...host.keys()].join(', ') || 'none'})`);
  const expectRank = kind === 'tokens' ? 2 : 4;
  if (main.shape.length !== expectRank) throw new InputError(file, need, `expected rank ${expectRank}, got shape [${main.shape.join(', ')}]`);
  if (kind === 'tokens' && !INT_TYPES.has(main.dtype)) throw new InputError(file, need, `expected an integer dtype, got ${main.dtype}`);
  const opt = (name: string) => {
    const t = host.get(name);
    if (!t) return undefined;
    if (name !== 'labels' && (t.shape.length !== 2 || t.shape[0] !== main.shape[0] || t.shape[1] !== main.shape[1]))
      throw new InputError(file, name, `shape [${t.shape.join(', ')}] does not match input_ids [${main.shape.join(', ')}]`);
    return toTf(t);
  };
  // Tensors made before a later one is refused are freed here: the caller never sees them.
  const made: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor | undefined>(t: T): T => {
    if (t) made.push(t);
    return t;
  };
  try {
    const inputs: ModelInputs =
      kind === 'tokens'
        ? { inputIds: keep(toTf(main)) as tf.Tensor2D, attentionMask: keep(opt('attention_mask')) as tf.Tensor2D | undefined, tokenTypeIds: keep(opt('token_type_ids')) as tf.Tensor2D | undefined }
        : { pixelValues: keep(toTf(main)) as tf.Tensor4D };
    const lab = host.get('labels');
    if (lab) {
      // [B] (a class per row) or, for token inputs, [B, T] like input_ids (a token per position).
      const B = main.shape[0];
      const ok = (lab.shape.length === 1 && lab.shape[0] === B) || (kind === 'tokens' && lab.shape.length === 2 && lab.shape[0] === B && lab.shape[1] === main.shape[1]);
      if (!ok) throw new InputError(file, 'labels', `shape [${lab.shape.join(', ')}] fits neither [${B}] (classes) nor${kind === 'tokens' ? ` [${main.shape.join(', ')}] (tokens, like input_ids)` : ' anything else'}`);
      if (!INT_TYPES.has(lab.dtype)) throw new InputError(file, 'labels', `expected an integer dtype, got ${lab.dtype}`);
    }
    const labels = keep(opt('labels'));
    return labels ? { inputs, labels } : { inputs };
  } catch (e) {
    tf.dispose(made);
    throw e;
  }
}

export function disposeBatch(b: InputBatch): void {
  const { inputIds, attentionMask, tokenTypeIds, pixelValues } = b.inputs;
  tf.dispose([inputIds, attentionMask, tokenTypeIds, pixelValues, b.labels].filter((t): t is tf.Tensor => t !== undefined));
}

/** Checks token ids are inside the vocabulary before a gather silently reads garbage. */
export async function checkTokenRange(file: string, ids: tf.Tensor, vocab: number): Promise<void> {
  const data = await ids.data();
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < 0 || v >= vocab) throw new InputError(file, `input_ids[${i}]`, `token id ${v} is outside the vocabulary [0, ${vocab})`);
  }
}
