/** `inspect`: what a checkpoint folder holds, read from headers only (no tensor data is loaded). */
import { basename } from 'node:path';
import type { InspectResult } from '../../../src/protocol';
import { InputError } from '../errors';
import { numel } from '../io/safetensors';
import { CheckpointReader } from '../io/checkpoint';
import { readConfig } from '../models/config';
import { architectureOf, withoutTaskPrefix } from '../models/model';
import { modelFolder } from '../spec/hub-cache';

export async function inspectModel(arg: string): Promise<InspectResult> {
  const dir = modelFolder(arg);
  const config = readConfig(dir);
  const arch = architectureOf(config);
  const reader = await CheckpointReader.open(dir);
  try {
    const byModule: Record<string, number> = {};
    const dtypes: Record<string, number> = {};
    let parameters = 0;
    const freshHeads: string[] = [];
    for (const info of arch.params(config)) {
      const stored = reader.has(info.name) ? info.name : withoutTaskPrefix(info.name);
      // A classifier's head may be missing (a base model), as Model.load allows.
      if (!reader.has(stored) && info.type === 'head' && arch.task !== 'causal-lm') {
        freshHeads.push(info.name);
        continue;
      }
      if (!reader.has(stored)) throw new InputError(`${dir}/model.safetensors`, info.name, 'tensor missing from the checkpoint');
      const e = reader.entry(stored);
      if (e.shape.length !== info.shape.length || e.shape.some((s, i) => s !== info.shape[i]))
        throw new InputError(`${dir}/${e.file}`, stored, `shape [${e.shape.join(', ')}] does not match config.json, which implies [${info.shape.join(', ')}]`);
      const n = numel(e.shape);
      parameters += n;
      byModule[info.type] = (byModule[info.type] ?? 0) + n;
      dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + n;
    }
    return {
      architecture: config.architecture,
      modelType: config.modelType,
      parameters,
      byModule,
      dtypes,
      files: reader.files().map((f) => ({ name: basename(f.name), bytes: f.bytes })),
      ...(freshHeads.length ? { freshHeads } : {}),
    };
  } finally {
    await reader.close();
  }
}

export function formatInspect(r: InspectResult): string {
  const fmt = (n: number) => n.toLocaleString('en-US');
  const lines = [`${r.architecture} (${r.modelType}), ${fmt(r.parameters)} parameters`, 'parameters by module type:'];
  for (const [k, v] of Object.entries(r.byModule).sort((a, b) => b[1] - a[1])) lines.push(`  ${k.padEnd(16)} ${fmt(v).padStart(14)}  ${((100 * v) / r.parameters).toFixed(1)}%`);
  lines.push(`dtypes: ${Object.entries(r.dtypes).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`);
  lines.push('files:');
  for (const f of r.files) lines.push(`  ${f.name.padEnd(32)} ${fmt(f.bytes).padStart(14)} bytes`);
  if (r.freshHeads?.length) lines.push(`not in the checkpoint (a run starts and trains them fresh): ${r.freshHeads.join(', ')}`);
  return lines.join('\n');
}
