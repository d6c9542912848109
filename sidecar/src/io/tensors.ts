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
 * What a model accepts, checked on the host before the compute: past a table's end a gather reads
 * garbage or fails with a bare kernel message, and the loss one-hots an unknown label to zeros.
 */
export interface InputLimits {
  /** `input_ids` in [0, vocab). */
  vocab?: number;
  /** The longest sequence, and the config.json field that sets it (for the message). */
  positions?: { max: number; key: string };
  /** `token_type_ids` in [0, n) (BERT's type_vocab_size). */
  tokenTypes?: number;
  /** `labels` in [0, max) or IGNORE_INDEX; `what` names the range ("the vocabulary", "the classes"). */
  labels?: { max: number; what: string };
  /** A regression's (or multi-label) targets: values of any numeric dtype, not class ids. */
  valueLabels?: boolean;
  /**
   * Causal LMs: `attention_mask` rows must be right-padded (1…1 0…0). Their causal attention never
   * lets a real token see a later pad, so the real tokens get transformers' outputs; a 0 before a 1
   * (left padding, gaps) would need the mask inside the attention and position ids from it.
   */
  rightPaddedMask?: boolean;
}

/** The label the cross-entropy losses skip (PyTorch's ignore_index). */
export const IGNORE_INDEX = -100;

/**
 * Reads `input_ids` (I64/I32) or `pixel_values` (F32), and optional `attention_mask`,
 * `token_type_ids`, `labels`, from a safetensors file, checked against `limits` when given. The
 * caller disposes the tensors.
 */
export async function readInputBatch(file: string, kind: 'tokens' | 'pixels', limits: InputLimits = {}): Promise<InputBatch> {
  const host = await readSafetensors(file);
  const need = kind === 'tokens' ? 'input_ids' : 'pixel_values';
  const main = host.get(need);
  if (!main) throw new InputError(file, need, `tensor missing (found: ${[...host.keys()].join(', ') || 'none'})`);
  const expectRank = kind === 'tokens' ? 2 : 4;
  if (main.shape.length !== expectRank) throw new InputError(file, need, `expected rank ${expectRank}, got shape [${main.shape.join(', ')}]`);
  if (kind === 'tokens' && !INT_TYPES.has(main.dtype)) throw new InputError(file, need, `expected an integer dtype, got ${main.dtype}`);
  if (kind === 'tokens') checkTokens(file, main, host.get('token_type_ids'), limits);
  const mask = host.get('attention_mask');
  if (mask && limits.rightPaddedMask) checkRightPadded(file, mask);
  const opt = (name: string) => {
    const t = host.get(name);
    if (!t) return undefined;
    if (name !== 'labels' && (t.shape.length !== 2 || t.shape[0] !== main.shape[0] || t.shape[1] !== main.shape[1]))
      throw new InputError(file, name, `shape [${t.shape.join(', ')}] does not match input_ids [${main.shape.join(', ')}]`);
    return hostToTf(file, name, t);
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
        ? { inputIds: keep(hostToTf(file, need, main)) as tf.Tensor2D, attentionMask: keep(opt('attention_mask')) as tf.Tensor2D | undefined, tokenTypeIds: keep(opt('token_type_ids')) as tf.Tensor2D | undefined }
        : { pixelValues: keep(hostToTf(file, need, main)) as tf.Tensor4D };
    const lab = host.get('labels');
    if (lab) {
      // [B] (a class per row) or, for token inputs, [B, T] like input_ids (a token per position).
      const B = main.shape[0];
      const ok = (lab.shape.length === 1 && lab.shape[0] === B) || (kind === 'tokens' && lab.shape.length === 2 && lab.shape[0] === B && lab.shape[1] === main.shape[1]);
      if (!ok) throw new InputError(file, 'labels', `shape [${lab.shape.join(', ')}] fits neither [${B}] (classes) nor${kind === 'tokens' ? ` [${main.shape.join(', ')}] (tokens, like input_ids)` : ' anything else'}`);
      if (!limits.valueLabels && !INT_TYPES.has(lab.dtype)) throw new InputError(file, 'labels', `expected an integer dtype, got ${lab.dtype}`);
      if (limits.labels) {
        const { max, what } = limits.labels;
        const bad = firstOutside(lab, max, IGNORE_INDEX);
        if (bad) throw new InputError(file, at('labels', lab.shape, bad.index), `label ${bad.value} is outside ${what} [0, ${max}) (${IGNORE_INDEX} marks a label the loss ignores)`);
      }
    }
    const labels = keep(opt('labels'));
    return labels ? { inputs, labels } : { inputs };
  } catch (e) {
    tf.dispose(made);
    throw e;
  }
}

/** Sequence length, token ids and token types against the model's tables. */
function checkTokens(file: string, ids: HostTensor, types: HostTensor | undefined, limits: InputLimits): void {
  const t = ids.shape[1]!;
  if (limits.positions && t > limits.positions.max) throw new InputError(file, 'input_ids', `sequence length ${t} exceeds ${limits.positions.key}=${limits.positions.max}, the longest the model takes`);
  if (limits.vocab !== undefined) {
    const bad = firstOutside(ids, limits.vocab);
    if (bad) throw new InputError(file, at('input_ids', ids.shape, bad.index), `token id ${bad.value} is outside the vocabulary [0, ${limits.vocab})`);
  }
  if (types && limits.tokenTypes !== undefined) {
    if (!INT_TYPES.has(types.dtype)) throw new InputError(file, 'token_type_ids', `expected an integer dtype, got ${types.dtype}`);
    const bad = firstOutside(types, limits.tokenTypes);
    if (bad) throw new InputError(file, at('token_type_ids', types.shape, bad.index), `token type ${bad.value} is outside [0, ${limits.tokenTypes}) (type_vocab_size=${limits.tokenTypes})`);
  }
}

/** Each row of a 0/1 mask is 1…1 0…0 (see InputLimits.rightPaddedMask). */
function checkRightPadded(file: string, mask: HostTensor): void {
  const [rows, cols] = mask.shape as [number, number];
  if (mask.shape.length !== 2) return; // the shape check that follows names it
  for (let r = 0; r < rows; r++) {
    let padded = false;
    for (let c = 0; c < cols; c++) {
      const v = Number(mask.data[r * cols + c]!);
      if (v !== 0 && v !== 1) throw new InputError(file, `attention_mask[${r}, ${c}]`, `expected 0 or 1, got ${v}`);
      if (v === 0) padded = true;
      else if (padded) throw new InputError(file, `attention_mask[${r}, ${c}]`, 'a 1 after a 0: causal LMs here take right-padded rows (1…1 then 0…0), not left padding or gaps');
    }
  }
}

/** The first element (of an integer tensor) outside [0, end) other than `allowed`. */
function firstOutside(t: HostTensor, end: number, allowed?: number): { index: number; value: string } | undefined {
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    const v = Number(d[i]!);
    if ((v < 0 || v >= end) && v !== allowed) return { index: i, value: String(d[i]) };
  }
  return undefined;
}

/** `name[b, t]`: a flat index as the element's position in `shape`. */
function at(name: string, shape: readonly number[], flat: number): string {
  const idx: number[] = [];
  for (let k = shape.length - 1; k >= 0; k--) {
    const n = shape[k]!;
    idx.unshift(flat % n);
    flat = Math.floor(flat / n);
  }
  return `${name}[${idx.join(', ')}]`;
}

/** toTf, with an I64 value past int32 named by file and tensor (toInt32 throws a bare RangeError). */
function hostToTf(file: string, name: string, t: HostTensor): tf.Tensor {
  try {
    return toTf(t);
  } catch (e) {
    if (e instanceof RangeError) throw new InputError(file, name, e.message.replace(/^toInt32: /, ''));
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
