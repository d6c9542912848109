/**
 * Hugging Face checkpoint folders: `model.safetensors`, or `model.safetensors.index.json` plus its
 * shards; where neither is there, `pytorch_model.bin` or `pytorch_model.bin.index.json` (read by
 * torch-checkpoint.ts, which runs none of the pickle's code).
 */
import { existsSync, promises as fsp } from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import { compareUtf8, isPlainObject, MAX_HEADER_BYTES, q, SafetensorsError, SafetensorsFile, type TensorFile, type HostTensor, type TensorEntry } from './safetensors';
import { TorchCheckpointFile } from './torch-checkpoint';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
const TORCH_SINGLE = 'pytorch_model.bin';
const TORCH_INDEX = 'pytorch_model.bin.index.json';
/** The files that make a folder a checkpoint, in the order they are looked for (transformers' own). */
export const CHECKPOINT_FILES = [SINGLE, INDEX, TORCH_SINGLE, TORCH_INDEX] as const;

/** Whether a folder holds a checkpoint of either format. */
export const hasCheckpoint = (dir: string): boolean => CHECKPOINT_FILES.some((f) => existsSync(join(dir, f)));

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * A checkpoint folder: `model.safetensors`, or `model.safetensors.index.json` plus its shards,
 * or an explicit file name (a `.safetensors` file or an `.index.json`). With an index, its
 * `weight_map` is authoritative: names() are its keys, and tensors a shard holds beyond it are
 * ignored (as `from_pretrained` ignores them when it plans what to load).
 */
export class CheckpointReader {
  private constructor(
    readonly dir: string,
    private readonly shards: Map<string, TensorFile>,
    private readonly fileSizes: Map<string, number>,
    private readonly where: Map<string, string>, // tensor name → shard file name
  ) {}

  static async open(dir: string, fileName?: string): Promise<CheckpointReader> {
    let name = fileName;
    if (name === undefined) {
      for (const candidate of CHECKPOINT_FILES) {
        if (await exists(join(dir, candidate))) {
          name = candidate;
          break;
        }
      }
      if (name === undefined) throw new SafetensorsError(dir, `no ${SINGLE}, ${INDEX}, ${TORCH_SINGLE} or ${TORCH_INDEX} in this folder`);
    } else if (!(await exists(join(dir, name)))) {
      throw new SafetensorsError(join(dir, name), 'no such file');
    }
    return name.endsWith('.index.json') ? CheckpointReader.openIndex(dir, name) : CheckpointReader.openFiles(dir, [name], undefined);
  }

  private static async openIndex(dir: string, indexName: string): Promise<CheckpointReader> {
    const indexPath = join(dir, indexName);
    const fail = (problem: string): never => {
      throw new SafetensorsError(indexPath, problem);
    };
    const size = (await fsp.stat(indexPath)).size;
    if (size > MAX_HEADER_BYTES) fail(`index is ${size} bytes, over the 100 MB limit`);
    let json: unknown;
    try {
      json = JSON.parse(await fsp.readFile(indexPath, 'utf8'));
    } catch (e) {
      return fail(`index is not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(json)) return fail('index is not a JSON object');
    if ('metadata' in json && json.metadata !== null && !isPlainObject(json.metadata)) fail('"metadata" is not an object');
    if (!('weight_map' in json)) fail('missing "weight_map"');
    if (!isPlainObject(json.weight_map)) fail('"weight_map" is not an object');
    const where = new Map<string, string>();
    for (const [tensor, shard] of Object.entries(json.weight_map as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard === '') fail(`weight_map[${q(tensor)}] is not a shard file name`);
      const s = shard as string;
      // Shards live in the folder: refuse absolute paths and `..`, which would read elsewhere.
      if (isAbsolute(s) || normalize(s).split(/[\\/]/).includes('..')) {
        fail(`weight_map[${q(tensor)}]: shard ${q(s)} is outside the checkpoint folder`);
      }
      where.set(tensor, s);
    }
    if (where.size === 0) fail('"weight_map" is empty');
    const shardNames = [...new Set(where.values())].sort(compareUtf8);
    for (const s of shardNames) {
      if (!(await exists(join(dir, s)))) {
        const tensor = [...where].find(([, f]) => f === s)![0];
        fail(`shard ${q(s)} (weight_map[${q(tensor)}]) is missing`);
      }
    }
    const reader = await CheckpointReader.openFiles(dir, shardNames, where);
    for (const [tensor, s] of where) {
      if (!reader.shards.get(s)!.has(tensor)) {
        await reader.close();
        fail(`weight_map[${q(tensor)}] says shard ${q(s)}, which has no such tensor`);
      }
    }
    return reader;
  }

  private static async openFiles(dir: string, names: string[], where: Map<string, string> | undefined): Promise<CheckpointReader> {
    const shards = new Map<string, TensorFile>();
    const sizes = new Map<string, number>();
    try {
      for (const n of names) {
        const f = n.endsWith('.bin') ? await TorchCheckpointFile.open(join(dir, n)) : await SafetensorsFile.open(join(dir, n));
        shards.set(n, f);
        sizes.set(n, (await fsp.stat(f.path)).size);
      }
    } catch (e) {
      await Promise.all([...shards.values()].map((f) => f.close().catch(() => undefined)));
      throw e;
    }
    if (!where) {
      where = new Map();
      for (const [n, f] of shards) for (const t of f.entries.keys()) where.set(t, n);
    }
    return new CheckpointReader(dir, shards, sizes, where);
  }

  names(): string[] {
    return [...this.where.keys()].sort(compareUtf8);
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** The tensor's entry plus `file`, the shard's name inside the folder. */
  entry(name: string): TensorEntry & { file: string } {
    const file = this.fileOf(name);
    return { ...this.shards.get(file)!.entries.get(name)!, file };
  }

  async read(name: string): Promise<HostTensor> {
    return this.shards.get(this.fileOf(name))!.read(name);
  }

  async readFloat32(name: string): Promise<Float32Array> {
    return this.shards.get(this.fileOf(name))!.readFloat32(name);
  }

  /** Bytes of tensor data over names() (what an index's `metadata.total_size` counts). */
  totalBytes(): number {
    let n = 0;
    for (const name of this.where.keys()) {
      const e = this.entry(name);
      n += e.end - e.begin;
    }
    return n;
  }

  /** The checkpoint files read, with their sizes on disk. */
  files(): { name: string; bytes: number }[] {
    return [...this.fileSizes].map(([name, bytes]) => ({ name, bytes }));
  }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].map((f) => f.close()));
  }

  private fileOf(name: string): string {
    const f = this.where.get(name);
    if (f === undefined) throw new SafetensorsError(this.dir, `no tensor ${q(name)} in this checkpoint`);
    return f;
  }
}
