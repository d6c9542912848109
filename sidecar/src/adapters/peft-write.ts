/**
 * Low-level writer of a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`).
 * Atomic at folder level: everything is written into a temp folder beside the target, which is
 * then renamed into place (an existing adapter folder is moved aside first and removed afterwards;
 * anything else there is refused, never replaced).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError } from '../errors';
import { writeSafetensors, type HostTensor } from '../io/safetensors';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** What PEFT wrote before safetensors (a torch.save pickle). */
export const ADAPTER_WEIGHTS_BIN = 'adapter_model.bin';
/** What an adapter folder may hold: PEFT's files (save_pretrained adds a README.md) and an init's residual base. */
const ADAPTER_FOLDER_FILES = new Set([ADAPTER_CONFIG, ADAPTER_WEIGHTS, 'residual_model.safetensors', 'README.md']);

/**
 * Checks that `dir` may receive an adapter: absent, empty, or an adapter folder (which is replaced).
 * A file, or a folder with anything else (a model, the user's files), is refused: it would be lost.
 */
export async function checkAdapterTarget(dir: string): Promise<void> {
  const target = resolve(dir);
  const st = await fsp.stat(target).catch(() => undefined);
  if (!st) return;
  if (!st.isDirectory()) throw new InputError(target, '', 'is a file: give a new folder, or an adapter folder to replace');
  const others = (await fsp.readdir(target)).filter((f) => !ADAPTER_FOLDER_FILES.has(f));
  if (others.length > 0) {
    const shown = others.sort().slice(0, 3).join(', ') + (others.length > 3 ? `, … (${others.length} in all)` : '');
    throw new InputError(target, '', `holds other files than an adapter's (${shown}): give a new folder, or an adapter folder to replace`);
  }
}

/**
 * Writes `config` (as adapter_config.json, 2-space indented, sorted keys like PEFT) and
 * `tensors` (names as PEFT saves them, i.e. with the `base_model.model.` prefix) into `dir`.
 */
export async function writePeftLora(
  dir: string,
  payload: { config: Record<string, unknown>; tensors: Map<string, HostTensor> | Record<string, HostTensor>; readme?: string },
): Promise<void> {
  const target = resolve(dir);
  await checkAdapterTarget(target);
  const parent = dirname(target);
  await fsp.mkdir(parent, { recursive: true });
  const tag = `${process.pid}-${randomBytes(6).toString('hex')}`;
  const tmp = join(parent, `.${basename(target)}.tmp-${tag}`);
  await fsp.mkdir(tmp);
  try {
    await fsp.writeFile(join(tmp, ADAPTER_CONFIG), `${JSON.stringify(sortKeys(payload.config), null, 2)}\n`, 'utf8');
    await writeSafetensors(join(tmp, ADAPTER_WEIGHTS), payload.tensors, { format: 'pt' });
    if (payload.readme !== undefined) await fsp.writeFile(join(tmp, 'README.md'), payload.readme, 'utf8');
    let old: string | undefined;
    try {
      await fsp.rename(tmp, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EISDIR' && code !== 'ENOTDIR') throw e;
      // The target exists: move it aside, put the new folder in place, then drop the old one.
      old = join(parent, `.${basename(target)}.old-${tag}`);
      await fsp.rename(target, old);
      try {
        await fsp.rename(tmp, target);
      } catch (e2) {
        await fsp.rename(old, target).catch(() => undefined);
        throw e2;
      }
    }
    if (old) await fsp.rm(old, { recursive: true, force: true }).catch(() => undefined);
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object' && !(ArrayBuffer.isView(v))) {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortKeys(o[k])]));
  }
  return v;
}
