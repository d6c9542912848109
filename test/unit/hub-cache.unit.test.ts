/**
 * Models by Hugging Face id from the local hub cache (sidecar/src/spec/hub-cache.ts): a cache laid
 * out as huggingface_hub writes it (blobs, snapshots of symbolic links, refs/main), specs naming an
 * id, and the commands' --model arguments.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { cachedHubModels, hubCacheDir, hubIdOfSnapshot, hubSnapshot, modelDisplayName, modelFolder } from '../../sidecar/src/spec/hub-cache';
import { baseModelName, loadSpec, SpecError } from '../../sidecar/src/spec/load';
import { inspectModel } from '../../sidecar/src/tasks/inspect';
import { fixture } from '../helpers/numeric';
import { InputError } from '../../sidecar/src/errors';

const root = mkdtempSync(join(tmpdir(), 'peft-lab-hub-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A snapshot of llama-tiny in `cache` for `id` at `commit`, files as links into blobs/ (as huggingface_hub stores them). */
function addSnapshot(cache: string, id: string, commit: string, opts: { main?: boolean; mtime?: number } = {}): string {
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  const snap = join(repo, 'snapshots', commit);
  mkdirSync(snap, { recursive: true });
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) {
    const blob = join(repo, 'blobs', `${commit}-${f}`);
    copyFileSync(fixture('hf', 'llama-tiny', f), blob);
    symlinkSync(join('..', '..', 'blobs', `${commit}-${f}`), join(snap, f));
  }
  if (opts.main) {
    mkdirSync(join(repo, 'refs'), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), commit);
  }
  if (opts.mtime !== undefined) utimesSync(snap, opts.mtime, opts.mtime);
  return snap;
}

describe('the Hugging Face hub cache', () => {
  const cache = join(root, 'hub');
  const main = addSnapshot(cache, 'org/tiny', 'aaa111', { main: true, mtime: 1000 });
  addSnapshot(cache, 'org/tiny', 'bbb222', { mtime: 2000 }); // newer, but refs/main names aaa111
  const newest = addSnapshot(cache, 'other/tiny-2', 'ccc333', { mtime: 3000 });
  addSnapshot(cache, 'other/tiny-2', 'ddd444', { mtime: 500 });

  it('is where huggingface_hub looks: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub', () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/a', HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }), '/a');
    assert.equal(hubCacheDir({ HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }), '/b');
    assert.equal(hubCacheDir({ HF_HOME: '/c', XDG_CACHE_HOME: '/x' }), join('/c', 'hub'));
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), join('/x', 'huggingface', 'hub'));
  });

  it("resolves an id to refs/main's snapshot, else the newest; lists the cached models; names a snapshot's id", () => {
    assert.equal(hubSnapshot('org/tiny', cache), main);
    assert.equal(hubSnapshot('other/tiny-2', cache), newest);
    assert.equal(hubSnapshot('org/absent', cache), undefined);
    // refs/main names the revision: when its snapshot is gone, no other stands in for it.
    const stale = join(cache, 'models--org--stale');
    addSnapshot(cache, 'org/stale', 'eee555');
    mkdirSync(join(stale, 'refs'), { recursive: true });
    writeFileSync(join(stale, 'refs', 'main'), 'fff666');
    assert.equal(hubSnapshot('org/stale', cache), undefined);
    assert.equal(hubSnapshot('not an id', cache), undefined);
    assert.deepEqual(cachedHubModels(cache), [
      { id: 'org/tiny', dir: main },
      { id: 'other/tiny-2', dir: newest },
    ]);
    assert.equal(hubIdOfSnapshot(main), 'org/tiny');
    assert.equal(hubIdOfSnapshot(`${newest}/`), 'other/tiny-2');
    assert.equal(hubIdOfSnapshot(fixture('hf', 'llama-tiny')), undefined);
    // How panels name a model folder.
    assert.equal(modelDisplayName(main), 'org/tiny');
    assert.equal(modelDisplayName('/home/u/.vscode/extensions/peft-lab.peft-lab-0.1.0/media/models/tiny-gpt'), 'peft-lab/tiny-gpt');
    assert.equal(modelDisplayName('/ws/models/mine'), '/ws/models/mine');
  });

  it('a spec may name a cached model by id (a folder of that name beside the spec wins); the adapter records the id', () => {
    const ws = join(root, 'ws');
    mkdirSync(join(ws, 'data'), { recursive: true });
    writeFileSync(join(ws, 'data', 'train.jsonl'), '{"text":"hello"}\n');
    const spec = (model: string) => {
      const f = join(ws, 'run.peft.json');
      writeFileSync(f, JSON.stringify({ model, data: { train: 'data/train.jsonl' }, adapter: { kind: 'lora' } }));
      return f;
    };
    const s = loadSpec(spec('org/tiny'), { hubCacheDir: cache });
    assert.equal(s.modelDir, main);
    assert.equal(baseModelName(s), 'org/tiny');
    const e = (() => {
      try {
        loadSpec(spec('org/absent'), { hubCacheDir: cache });
      } catch (err) {
        return err as SpecError;
      }
      return assert.fail('loaded');
    })();
    assert.ok(e instanceof SpecError);
    assert.match(e.message, /no model folder "org\/absent", and no org\/absent in the Hugging Face cache .*hub \(with refs\/main's snapshot; PEFT Lab does not download: fetch it with `huggingface-cli download org\/absent`, or give a folder\)/);
    // A folder named like an id is a folder.
    mkdirSync(join(ws, 'org', 'tiny'), { recursive: true });
    copyFileSync(fixture('hf', 'llama-tiny', 'config.json'), join(ws, 'org', 'tiny', 'config.json'));
    const local = loadSpec(spec('org/tiny'), { hubCacheDir: cache });
    assert.equal(local.modelDir, join(ws, 'org', 'tiny'));
    assert.equal(baseModelName(local), join(ws, 'org', 'tiny'));
  });

  it('commands take an id as --model / --base (inspect here), from the cache the environment names', async () => {
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = cache;
    try {
      assert.equal(modelFolder('org/tiny'), main);
      assert.equal(modelFolder(fixture('hf', 'gpt2-tiny')), fixture('hf', 'gpt2-tiny'));
      assert.throws(() => modelFolder('org/absent'), (e: InputError) => e.file === 'org/absent' && /no model folder "org\/absent", and no org\/absent in the Hugging Face cache .*huggingface-cli download org\/absent/.test(e.problem));
      assert.equal(modelFolder('no/such/path'), resolve('no/such/path'), 'not an id: the path, for the loader to report');
      assert.equal(modelFolder('peft-lab/tiny-gpt'), resolve(__dirname, '..', '..', 'media', 'models', 'tiny-gpt'), 'a bundled model by its id');
      const r = await inspectModel('org/tiny');
      assert.equal(r.modelType, 'llama');
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
  });
});
