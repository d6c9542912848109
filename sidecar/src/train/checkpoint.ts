/**
 * Resumable checkpoints, `checkpoints/step-N/`:
 *   adapter.safetensors    the adapter's trainable tensors, by name
 *   optimizer.safetensors  AdamW moments `m.<name>` / `v.<name>`
 *   base.safetensors       residual base weights, when the adapter's init replaced base weights
 *   procedure.safetensors  the adapter kind's own training state (AdaLoRA's smoothed scores), if any
 *   state.json             step, optimizer step, data-order RNG state, loss window, early stopping
 *                          (and the kind's procedure state as JSON: AdaLoRA's fixed rank pattern)
 * Written into a temp folder and renamed into place, so a folder named step-N is always complete.
 */
import * as tf from '@tensorflow/tfjs-core';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { readSafetensors, writeSafetensors, type HostTensor } from '../io/safetensors';
import { fromTf, toTf } from '../io/tensors';
import { CHECKPOINTS_DIR, writeJsonAtomic } from './run-folder';

export interface DataOrderState {
  epoch: number;
  /** Position inside the epoch's permutation. */
  pos: number;
  /** RNG state from which the current epoch's permutation was drawn. */
  epochRngState: number;
}

export interface TrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  optimizerStep: number;
  /** Updates per trainable tensor where that differs from optimizerStep (IST); absent: all equal it. */
  optimizerSteps?: Record<string, number>;
  data: DataOrderState;
  /** Loss window since the last logged step. */
  lossSum: number;
  lossCount: number;
  tokensSinceLog: number;
  tokensTotal: number;
  /** Training seconds so far (all sessions). */
  elapsedS: number;
  best: number | null;
  bad: number;
  /** Set when training ended (last step or early stopping): a resume only finalises. */
  finished: boolean;
  stopReason?: string;
  /** The adapter kind's training procedure's JSON state (TrainingProcedure.state). */
  procedure?: unknown;
}

export interface CheckpointData {
  state: TrainerState;
  trainable: Map<string, HostTensor>;
  m: Map<string, HostTensor>;
  v: Map<string, HostTensor>;
  base: Map<string, HostTensor>;
  procedure: Map<string, HostTensor>;
}

export const stepDirName = (step: number) => `step-${step}`;

/** Completed checkpoints (folders with a state.json), oldest first. */
export function listCheckpoints(runDir: string): { step: number; dir: string; name: string }[] {
  const root = join(runDir, CHECKPOINTS_DIR);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ name, m: /^step-(\d+)$/.exec(name) }))
    .filter((x): x is { name: string; m: RegExpExecArray } => !!x.m && existsSync(join(root, x.name, 'state.json')))
    .map(({ name, m }) => ({ step: Number(m[1]), dir: join(root, name), name }))
    .sort((a, b) => a.step - b.step);
}

async function hostMap(tensors: ReadonlyMap<string, tf.Tensor>, prefix = ''): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  for (const [name, t] of tensors) out.set(prefix + name, await fromTf(t));
  return out;
}

export async function writeCheckpoint(
  runDir: string,
  parts: {
    state: TrainerState;
    trainable: ReadonlyMap<string, tf.Tensor>;
    m: ReadonlyMap<string, tf.Tensor>;
    v: ReadonlyMap<string, tf.Tensor>;
    base: ReadonlyMap<string, tf.Tensor>;
    procedure?: ReadonlyMap<string, tf.Tensor>;
  },
  keep: number,
): Promise<string> {
  const root = join(runDir, CHECKPOINTS_DIR);
  await fsp.mkdir(root, { recursive: true });
  const name = stepDirName(parts.state.step);
  const tmp = join(root, `.${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await fsp.mkdir(tmp);
  try {
    await writeSafetensors(join(tmp, 'adapter.safetensors'), await hostMap(parts.trainable));
    const opt = await hostMap(parts.m, 'm.');
    for (const [k, t] of await hostMap(parts.v, 'v.')) opt.set(k, t);
    await writeSafetensors(join(tmp, 'optimizer.safetensors'), opt);
    if (parts.base.size > 0) await writeSafetensors(join(tmp, 'base.safetensors'), await hostMap(parts.base));
    if (parts.procedure?.size) await writeSafetensors(join(tmp, 'procedure.safetensors'), await hostMap(parts.procedure));
    await writeJsonAtomic(join(tmp, 'state.json'), parts.state);
    const final = join(root, name);
    if (existsSync(final)) await fsp.rm(final, { recursive: true, force: true });
    await fsp.rename(tmp, final);
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
  // Keep the newest `keep` complete checkpoints; drop older ones and stale temp folders.
  const all = listCheckpoints(runDir);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) await fsp.rm(c.dir, { recursive: true, force: true });
  for (const f of readdirSync(root)) if (f.startsWith('.step-') && f.includes('.tmp-')) await fsp.rm(join(root, f), { recursive: true, force: true }).catch(() => undefined);
  return name;
}

export async function readCheckpoint(dir: string): Promise<CheckpointData> {
  let state: TrainerState;
  try {
    state = JSON.parse(await fsp.readFile(join(dir, 'state.json'), 'utf8')) as TrainerState;
  } catch (e) {
    throw new InputError(join(dir, 'state.json'), '', `cannot read the checkpoint state (${(e as Error).message})`);
  }
  if (state.version !== 1) throw new InputError(join(dir, 'state.json'), 'version', `unsupported checkpoint version ${String(state.version)}`);
  const trainable = await readSafetensors(join(dir, 'adapter.safetensors'));
  const opt = await readSafetensors(join(dir, 'optimizer.safetensors'));
  const m = new Map<string, HostTensor>();
  const v = new Map<string, HostTensor>();
  for (const [k, t] of opt) {
    if (k.startsWith('m.')) m.set(k.slice(2), t);
    else if (k.startsWith('v.')) v.set(k.slice(2), t);
  }
  const optional = async (f: string) => (existsSync(join(dir, f)) ? readSafetensors(join(dir, f)) : new Map<string, HostTensor>());
  return { state, trainable, m, v, base: await optional('base.safetensors'), procedure: await optional('procedure.safetensors') };
}

/** A kept TF.js tensor from a host tensor, checked against the shape it replaces. */
export function restoreTensor(file: string, name: string, host: HostTensor | undefined, like: tf.Tensor): tf.Tensor {
  if (!host) throw new InputError(file, name, 'tensor missing from the checkpoint (was it written by a different adapter spec?)');
  if (host.shape.length !== like.shape.length || host.shape.some((d, i) => d !== like.shape[i]))
    throw new InputError(file, name, `shape [${host.shape.join(', ')}] does not match the adapter's [${like.shape.join(', ')}]`);
  return tf.keep(toTf(host));
}
