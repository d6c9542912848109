/**
 * Models by name: bundled ones (`peft-lab/<name>`), and Hugging Face ids ("Qwen/Qwen2.5-0.5B") from
 * the local hub cache, as transformers' from_pretrained finds them offline:
 * <cache>/models--Qwen--Qwen2.5-0.5B/snapshots/<commit>, the commit that refs/main names (without
 * refs/main, the newest snapshot). Nothing is downloaded: PEFT Lab makes no network requests.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { InputError } from '../errors';

export const BUNDLED_PREFIX = 'peft-lab/';

/** The extension's `media/models` (found from the bundle or the source tree), or PEFT_LAB_MODELS_DIR. */
export function defaultBundledModelsDir(): string {
  const env = process.env.PEFT_LAB_MODELS_DIR;
  if (env) return resolve(env);
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'peft-lab') return join(dir, 'media', 'models');
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return join(dirname(__dirname), 'media', 'models');
}

/** "org/name" (the hub's repository ids: letters, digits, '-', '_', '.'). */
export const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/u;

/** The hub cache folder, from the variables huggingface_hub reads, in its order. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const home = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

const repoFolder = (id: string) => `models--${id.replace('/', '--')}`;

/** The snapshot folder (with a config.json) of a model id in the cache, or undefined. */
export function hubSnapshot(id: string, cache = hubCacheDir()): string | undefined {
  if (!HUB_ID.test(id)) return undefined;
  const repo = join(cache, repoFolder(id));
  const snapshots = join(repo, 'snapshots');
  const withConfig = (d: string) => existsSync(join(snapshots, d, 'config.json'));
  let main: string | undefined;
  try {
    main = readFileSync(join(repo, 'refs', 'main'), 'utf8').trim();
  } catch {
    /* no refs/main: the newest snapshot */
  }
  // refs/main names the revision: another snapshot would be another model than transformers loads.
  if (main) return withConfig(main) ? join(snapshots, main) : undefined;
  try {
    const all = readdirSync(snapshots).filter(withConfig);
    all.sort((a, b) => statSync(join(snapshots, b)).mtimeMs - statSync(join(snapshots, a)).mtimeMs);
    return all[0] === undefined ? undefined : join(snapshots, all[0]);
  } catch {
    return undefined;
  }
}

/** The model id of a hub-cache snapshot folder (…/models--org--name/snapshots/<commit>), or undefined. */
export function hubIdOfSnapshot(dir: string): string | undefined {
  const segs = dir.split(/[\\/]+/u).filter(Boolean);
  const i = segs.length - 3;
  if (i < 0 || segs[i + 1] !== 'snapshots' || !segs[i]!.startsWith('models--')) return undefined;
  return idOfRepoFolder(segs[i]!);
}

/** "models--org--name" → "org/name" (huggingface_hub joins the id's parts with "--"). */
const idOfRepoFolder = (folder: string) => folder.slice('models--'.length).replace('--', '/');

/**
 * A model folder as people name it: a hub snapshot by its id, a bundled model (…/media/models/<name>)
 * as peft-lab/<name>, any other folder as it is.
 */
export function modelDisplayName(dir: string): string {
  const id = hubIdOfSnapshot(dir);
  if (id) return id;
  const bundled = /[\\/]media[\\/]models[\\/]([A-Za-z0-9][\w.-]*)[\\/]?$/u.exec(dir);
  return bundled ? `peft-lab/${bundled[1]}` : dir;
}

/** Model ids with a snapshot in the cache (for pickers), sorted. */
export function cachedHubModels(cache = hubCacheDir()): { id: string; dir: string }[] {
  let names: string[];
  try {
    names = readdirSync(cache).filter((n) => n.startsWith('models--'));
  } catch {
    return [];
  }
  const out: { id: string; dir: string }[] = [];
  for (const n of names) {
    const id = idOfRepoFolder(n);
    const dir = hubSnapshot(id, cache);
    if (dir) out.push({ id, dir });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * A model argument of a command or job (`--model`, `--base`) as a folder: the folder when it exists,
 * else a bundled model (`peft-lab/<name>`), else the cached snapshot of a hub id, else the path as
 * given (for the loader's own error).
 */
export function modelFolder(arg: string): string {
  if (existsSync(arg)) return resolve(arg);
  if (arg.startsWith(BUNDLED_PREFIX) && existsSync(join(defaultBundledModelsDir(), arg.slice(BUNDLED_PREFIX.length), 'config.json')))
    return join(defaultBundledModelsDir(), arg.slice(BUNDLED_PREFIX.length));
  if (!HUB_ID.test(arg)) return resolve(arg);
  const snapshot = hubSnapshot(arg);
  if (!snapshot) throw new InputError(arg, '', missingModelProblem(arg));
  return snapshot;
}

/** Why a model named like a hub id was not found: no such folder, and not in the cache. */
export function missingModelProblem(id: string, cache = hubCacheDir()): string {
  return `no model folder ${JSON.stringify(id)}, and no ${id} in the Hugging Face cache ${cache} (with refs/main's snapshot; PEFT Lab does not download: fetch it with \`huggingface-cli download ${id}\`, or give a folder)`;
}
