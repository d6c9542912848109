/**
 * Reliability of a training run in one process (wasm backend, tiny GPT-2 from ../shared/fixtures):
 *  - resource limits: the memory estimate refuses a run over the wasm heap, also when the spec's
 *    memoryLimitMb claims more; a diverging loss stops naming the step and the last good checkpoint;
 *  - disk full: ENOSPC injected into the writes of a real checkpoint (fs.promises.open /
 *    FileHandle.write / writeFile mocked) fails the run with a clear error, leaves the previous
 *    checkpoint byte-identical and loadable and no temp or half-written file, and `peft-lab resume`
 *    then finishes bitwise equal to an uninterrupted run;
 *  - leaks: over 150 steps (1000 with PEFT_LAB_LONG=1) with gradient accumulation, clipping, eval
 *    and checkpoints, tf.memory().numTensors is exactly flat after warm-up and RSS grows < 10 MB;
 *  - the run folder lock (sidecar/src/train/run-lock.ts): one trainer per folder, stale locks of
 *    dead processes taken over, a busy folder refused untouched;
 *  - nothing is executed from a spec: only bench/ imports child_process in sidecar/src.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { after, before, describe, mock, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { MetricRecord, RunStatus } from '../../src/protocol';
import { initBackend } from '../../sidecar/src/backend';
import { InputError } from '../../sidecar/src/errors';
import type { JobContext } from '../../sidecar/src/jobs/context';
import { loadSpec, runConfig } from '../../sidecar/src/spec/load';
import type { RunConfig } from '../../sidecar/src/spec/types';
import { resumeCommand } from '../../sidecar/src/tasks/train';
import { listCheckpoints, readCheckpoint } from '../../sidecar/src/train/checkpoint';
import { WASM_HEAP_LIMIT_MB } from '../../sidecar/src/train/memory';
import { readMetrics } from '../../sidecar/src/train/run-folder';
import { acquireRunLock, LOCK_FILE, pidAlive } from '../../sidecar/src/train/run-lock';
import { runTraining, TrainingError } from '../../sidecar/src/train/trainer';

const LONG = process.env.PEFT_LAB_LONG === '1';
const FIXTURES = join(__dirname, '../../../shared/fixtures/hf');
const root = mkdtempSync(join(tmpdir(), 'peft-lab-reliability-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  await initBackend('wasm', () => undefined);
  cpSync(join(FIXTURES, 'gpt2-tiny'), join(root, 'gpt2-tiny'), { recursive: true });
  writeFileSync(join(root, 'add.jsonl'), Array.from({ length: 32 }, (_, i) => JSON.stringify({ prompt: `${i % 7}+${i % 4}=`, completion: `${(i % 7) + (i % 4)}` })).join('\n'));
  writeFileSync(join(root, 'long.jsonl'), Array.from({ length: 4 }, (_, i) => JSON.stringify({ text: `row ${i} `.repeat(20) })).join('\n'));
});

let n = 0;
function config(spec: Record<string, unknown>): RunConfig {
  const f = join(root, `s${n++}.peft.json`);
  writeFileSync(f, JSON.stringify({ model: 'gpt2-tiny', data: { train: 'add.jsonl', maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.02 }, batchSize: 4, seed: 7, ...spec }));
  return runConfig(loadSpec(f));
}
const quiet = (): JobContext => ({ signal: new AbortController().signal, progress: () => undefined, log: () => undefined });
const runDir = () => join(root, 'runs', `r${n++}`);
const status = (dir: string) => JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')) as RunStatus;
const adapterBytes = (dir: string) => readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
const numbers = (ms: MetricRecord[]) => ms.map(({ tokens_per_s: _t, elapsed_s: _e, ...rest }) => rest);

async function failure<T extends Error>(p: Promise<unknown>, cls: abstract new (...a: never[]) => T): Promise<T> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    return e as T;
  }
  return assert.fail(`expected ${cls.name}`);
}

/** Every file under `dir`, relative, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

describe('resource limits', () => {
  // batch 4096 × 64 tokens of the tiny GPT-2: ~11 GB of activations by the estimate.
  const HUGE = { data: { train: 'long.jsonl', maxLength: 64 }, batchSize: 4096, steps: 1 };

  test('on wasm, a run over the heap is refused by default, naming the wasm heap', async () => {
    const dir = runDir();
    const e = await failure(runTraining(config(HUGE), { runDir: dir, ctx: quiet() }), InputError);
    assert.match(e.message, new RegExp(`\\(memoryLimitMb\\): estimated memory \\d+ MB .* exceeds the limit of ${WASM_HEAP_LIMIT_MB} MB \\(the default for the wasm backend, whose heap fails near 3\\.6 GiB\\)`));
    assert.ok(!e.message.includes('\n'));
    assert.equal(status(dir).state, 'failed');
    assert.ok(!existsSync(join(dir, 'checkpoints')), 'refused before the first step');
  });

  test('on wasm, memoryLimitMb above the heap does not lift the heap bound', async () => {
    const dir = runDir();
    const e = await failure(runTraining(config({ ...HUGE, memoryLimitMb: 100_000 }), { runDir: dir, ctx: quiet() }), InputError);
    assert.match(e.message, new RegExp(`exceeds the limit of ${WASM_HEAP_LIMIT_MB} MB \\(the wasm backend's heap, which fails near 3\\.6 GiB whatever memoryLimitMb \\(100000\\) says`));
    // Below the heap bound, the spec's own limit is the one checked.
    const e2 = await failure(runTraining(config({ ...HUGE, memoryLimitMb: 50 }), { runDir: runDir(), ctx: quiet() }), InputError);
    assert.match(e2.message, /exceeds the limit of 50 MB \(memoryLimitMb in the spec\)/);
  });

  test('a loss that turns non-finite before any checkpoint says so; after one, names it, and it loads', async () => {
    const dir = runDir();
    const e = await failure(runTraining(config({ steps: 6, checkpointEvery: 100, optimizer: { lr: 1e30 }, maxGradNorm: 0 }), { runDir: dir, ctx: quiet() }), TrainingError);
    assert.match(e.message, /^training diverged at step \d+: (loss|gradient norm) is (NaN|-?Infinity).*; no checkpoint was written before it\. Lower optimizer\.lr or set maxGradNorm$/);
    assert.equal(status(dir).state, 'failed');
    const dir2 = runDir();
    const e2 = await failure(runTraining(config({ steps: 6, checkpointEvery: 1, optimizer: { lr: 1e30 }, maxGradNorm: 0 }), { runDir: dir2, ctx: quiet() }), TrainingError);
    const m = /diverged at step (\d+).*last good checkpoint: checkpoints\/(step-\d+) \(step (\d+)\)/.exec(e2.message);
    assert.ok(m, e2.message);
    assert.equal(Number(m[3]), Number(m[1]) - 1);
    const ck = await readCheckpoint(join(dir2, 'checkpoints', m[2]!));
    assert.equal(ck.state.step, Number(m[3]));
    for (const t of ck.trainable.values()) assert.ok(Array.from(t.data as Float32Array).every(Number.isFinite), 'the named checkpoint holds finite weights');
  });
});

describe('disk full while writing a checkpoint', () => {
  const SPEC = { steps: 6, logEvery: 1, checkpointEvery: 2, keepCheckpoints: 2, data: { train: 'add.jsonl', evalSplit: 0.25, maxLength: 16 } };
  let reference: string;
  let fhProto: FileHandle;
  before(async () => {
    reference = runDir();
    await runTraining(config(SPEC), { runDir: reference, ctx: quiet() });
    const fh = await fs.promises.open(join(root, 'probe'), 'w');
    fhProto = Object.getPrototypeOf(fh) as FileHandle;
    await fh.close();
  });

  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });

  /**
   * Runs SPEC and, from step 3 on, fails the `failAt`-th write (or the state.json write) into
   * the step-4 checkpoint's temp folder with ENOSPC after writing half of it (a torn file).
   */
  async function runWithDiskFull(failAt: number | 'state.json'): Promise<{ dir: string; error: TrainingError; before: Map<string, Buffer>; writes: number }> {
    const dir = runDir();
    const paths = new WeakMap<object, string>();
    let armed = false;
    let writes = 0;
    let failed = false;
    const realOpen = fs.promises.open;
    const realWrite = fhProto.write;
    const realWriteFile = fhProto.writeFile;
    const target = (fh: object) => armed && !failed && (paths.get(fh) ?? '').includes(`${sep}.step-4.tmp-`);
    mock.method(fs.promises, 'open', async function (this: unknown, ...args: Parameters<typeof realOpen>) {
      const fh = await realOpen.apply(this, args);
      paths.set(fh, String(args[0]));
      return fh;
    });
    mock.method(fhProto, 'write', async function (this: FileHandle, ...args: unknown[]) {
      const isState = (paths.get(this) ?? '').includes('state.json');
      if (target(this) && (failAt === 'state.json' ? isState : ++writes === failAt)) {
        failed = true;
        const [buf, off = 0, len] = args as [Buffer, number?, number?];
        const whole = len ?? buf.length - off;
        await (realWrite as (...a: unknown[]) => Promise<unknown>).call(this, buf, off, Math.floor(whole / 2));
        throw enospc();
      }
      return (realWrite as (...a: unknown[]) => Promise<unknown>).apply(this, args);
    });
    mock.method(fhProto, 'writeFile', async function (this: FileHandle, ...args: unknown[]) {
      if (target(this) && (paths.get(this) ?? '').includes('state.json') && failAt === 'state.json') {
        failed = true;
        await (realWriteFile as (...a: unknown[]) => Promise<unknown>).call(this, String(args[0]).slice(0, 10));
        throw enospc();
      }
      return (realWriteFile as (...a: unknown[]) => Promise<unknown>).apply(this, args);
    });
    const before = new Map<string, Buffer>();
    try {
      const error = await failure(
        runTraining(config(SPEC), {
          runDir: dir,
          ctx: quiet(),
          afterStep: (s) => {
            if (s !== 3) return;
            for (const f of readdirSync(join(dir, 'checkpoints', 'step-2'))) before.set(f, readFileSync(join(dir, 'checkpoints', 'step-2', f)));
            armed = true;
          },
        }),
        TrainingError,
      );
      assert.ok(failed, 'the injected ENOSPC fired');
      return { dir, error, before, writes };
    } finally {
      mock.restoreAll();
    }
  }

  for (const failAt of [1, 4, 'state.json'] as const) {
    test(`ENOSPC at ${failAt === 'state.json' ? 'state.json' : `write #${failAt}`} of checkpoint step-4: clear failure, step-2 intact, nothing torn; resume finishes bitwise`, async () => {
      const { dir, error, before } = await runWithDiskFull(failAt);
      // A clear one-line error: which checkpoint, disk full, and what a resume will do.
      assert.match(error.message, /checkpoints[\\/]step-4: cannot write the checkpoint of step 4 \(disk full: ENOSPC: no space left on device, write\); the previous checkpoint checkpoints\/step-2 is intact; peft-lab resume continues from it$/);
      const st = status(dir);
      assert.equal(st.state, 'failed');
      assert.equal(st.error, error.message);
      assert.equal(st.lastCheckpoint, 'step-2');
      // step-2 byte-identical and loadable; no step-4, no temp folder, no half file under a final name.
      assert.deepEqual(listCheckpoints(dir).map((c) => c.name), ['step-2']);
      assert.deepEqual(readdirSync(join(dir, 'checkpoints')), ['step-2']);
      for (const [f, bytes] of before) assert.ok(readFileSync(join(dir, 'checkpoints', 'step-2', f)).equals(bytes), `step-2/${f} changed`);
      assert.equal(before.size, 3);
      const ck = await readCheckpoint(join(dir, 'checkpoints', 'step-2'));
      assert.equal(ck.state.step, 2);
      assert.deepEqual(tree(dir).filter((f) => /\.tmp-|\.lock$/.test(f)), [], 'no temp files, lock released');

      // `peft-lab resume DIR` continues from step-2 and ends where an uninterrupted run ends.
      const out: string[] = [];
      const err: string[] = [];
      mock.method(process.stdout, 'write', (s: string) => (out.push(String(s)), true));
      mock.method(process.stderr, 'write', (s: string) => (err.push(String(s)), true));
      try {
        await resumeCommand({ backend: 'wasm' }, [dir]);
      } finally {
        mock.restoreAll();
      }
      assert.match(err.join(''), /resuming .* from step-2/);
      assert.equal(out.join('').trim(), dir);
      assert.equal(status(dir).state, 'done');
      assert.deepEqual((await readMetrics(dir)).map((r) => r.step), [1, 2, 3, 4, 5, 6], 'each logged step once');
      assert.deepEqual(numbers(await readMetrics(dir)), numbers(await readMetrics(reference)));
      assert.ok(adapterBytes(dir).equals(adapterBytes(reference)), 'final adapter bitwise equal to the uninterrupted run');
    });
  }
});

describe('leaks over a long run', () => {
  const STEPS = LONG ? 1000 : 150;
  const WARMUP = 30;
  test(`${STEPS} steps (accumulation, clipping, eval, checkpoints): numTensors exactly flat, RSS growth < 10 MB after ${WARMUP} warm-up steps`, async () => {
    setFlagsFromString('--expose_gc');
    const gc = runInNewContext('gc') as () => void;
    const tensors: number[] = [];
    const rss: number[] = [];
    const cfg = config({ steps: STEPS, gradientAccumulation: 2, maxGradNorm: 0.05, evalEvery: 25, checkpointEvery: 25, logEvery: 5, data: { train: 'add.jsonl', evalSplit: 0.25, maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8, dropout: 0.1 } });
    const before = tf.memory().numTensors;
    await runTraining(cfg, {
      runDir: runDir(),
      ctx: quiet(),
      afterStep: (s) => {
        tensors.push(tf.memory().numTensors);
        if (s % 10 === 0 || s === WARMUP) {
          gc();
          rss.push(process.memoryUsage().rss);
        }
      },
    });
    assert.equal(tf.memory().numTensors, before, 'every tensor of the run is released at its end');
    const after = tensors.slice(WARMUP);
    const base = tensors[WARMUP - 1]!;
    const grew = after.findIndex((t) => t !== base);
    assert.equal(grew, -1, `numTensors ${base} after warm-up, ${after[grew]} at step ${WARMUP + grew + 1}`);
    const mb = (b: number) => b / 2 ** 20;
    const rssAfterWarmup = rss[Math.floor(WARMUP / 10)]!;
    const growth = mb(Math.max(...rss.slice(Math.floor(WARMUP / 10))) - rssAfterWarmup);
    process.stderr.write(`leaks (in-process, ${STEPS} steps): numTensors ${base} from step ${WARMUP} to ${STEPS}; RSS ${mb(rssAfterWarmup).toFixed(1)} MB after warm-up, max growth ${growth.toFixed(1)} MB\n`);
    assert.ok(growth < 10, `RSS grew ${growth.toFixed(1)} MB after warm-up`);
  });
});

describe('run folder lock', () => {
  const DEAD_PID = 2 ** 22 + 4321; // above Linux's largest pid_max: never a live process

  test('one holder at a time; released on release(); a second acquire in this process names this pid', async () => {
    const dir = join(root, 'lock-a');
    mkdirSync(dir);
    const lock = await acquireRunLock(dir);
    const held = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number };
    assert.equal(held.pid, process.pid);
    await assert.rejects(acquireRunLock(dir), (e: unknown) => e instanceof InputError && e.message === `${dir}: run folder is in use by pid ${process.pid}, another job of this process (${LOCK_FILE}): wait for that run to end or stop it, or pick another run folder`);
    await lock.release();
    await lock.release();
    assert.ok(!existsSync(join(dir, LOCK_FILE)));
    await (await acquireRunLock(dir)).release();
  });

  test('a live foreign pid makes the folder busy; a dead pid or a torn lock is stale and taken over', async () => {
    assert.ok(!pidAlive(DEAD_PID) && pidAlive(process.pid) && pidAlive(1));
    const dir = join(root, 'lock-b');
    mkdirSync(dir);
    const lockFile = join(dir, LOCK_FILE);
    writeFileSync(lockFile, JSON.stringify({ pid: 1, host: hostname(), token: 'x', startedAt: '' }));
    await assert.rejects(acquireRunLock(dir), /run folder is in use by pid 1 \(\.lock\)/);
    assert.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, 1, 'a live owner\'s lock is left alone');
    for (const stale of [JSON.stringify({ pid: DEAD_PID, token: 'y' }), '', '{"pid":', 'garbage']) {
      writeFileSync(lockFile, stale);
      const lock = await acquireRunLock(dir);
      assert.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, process.pid, `took over ${JSON.stringify(stale)}`);
      await lock.release();
    }
    // release() removes only its own lock.
    const lock = await acquireRunLock(dir);
    writeFileSync(lockFile, JSON.stringify({ pid: 1, token: 'someone-else' }));
    await lock.release();
    assert.ok(existsSync(lockFile));
  });

  test('a trainer on a busy folder fails at once and touches nothing; the lock lives exactly as long as the run', async () => {
    const cfg = config({ steps: 3, logEvery: 1, checkpointEvery: 1 });
    const dir = runDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 1, token: 'z' }));
    const e = await failure(runTraining(cfg, { runDir: dir, ctx: quiet() }), InputError);
    assert.match(e.message, /run folder is in use by pid 1/);
    assert.deepEqual(readdirSync(dir), [LOCK_FILE], 'no spec.json, status.json or metrics written');
    rmSync(join(dir, LOCK_FILE));

    // Two trainers on one folder in one process: the second is refused, the first unaffected.
    let seen = false;
    const first = runTraining(cfg, {
      runDir: dir,
      ctx: quiet(),
      afterStep: async (s) => {
        assert.ok(existsSync(join(dir, LOCK_FILE)), 'locked while running');
        if (s === 1) {
          const e2 = await failure(runTraining(cfg, { runDir: dir, ctx: quiet() }), InputError);
          assert.match(e2.message, new RegExp(`run folder is in use by pid ${process.pid}, another job of this process`));
          seen = true;
        }
      },
    });
    const out = await first;
    assert.ok(seen);
    assert.equal(out.status.state, 'done');
    assert.ok(!existsSync(join(dir, LOCK_FILE)), 'released at the end');
    // And released after a failure too.
    const bad = config({ steps: 3, optimizer: { lr: 1e30 }, maxGradNorm: 0 });
    const dir3 = runDir();
    await failure(runTraining(bad, { runDir: dir3, ctx: quiet() }), TrainingError);
    assert.ok(!existsSync(join(dir3, LOCK_FILE)), 'released after a failed run');
  });
});

describe('nothing from a spec is executed', () => {
  const src = join(__dirname, '..', '..', 'sidecar', 'src');
  const files = tree(src).filter((f) => f.endsWith('.ts'));
  const text = (f: string) => readFileSync(join(src, f), 'utf8');
  /** Value imports (not `import type`) of a file: [specifier, ...]. */
  const imports = (f: string): string[] =>
    [...text(f).matchAll(/^\s*(?:import|export)\s+(?!type\s)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm), ...text(f).matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]!);
  /** The sidecar files reachable from `entry` through value imports. */
  function reachable(entry: string): Set<string> {
    const seen = new Set<string>();
    const visit = (f: string) => {
      if (seen.has(f)) return;
      seen.add(f);
      for (const spec of imports(f)) {
        if (!spec.startsWith('.')) continue;
        const base = join(f, '..', spec);
        const hit = [`${base}.ts`, join(base, 'index.ts')].find((c) => files.includes(c));
        if (hit) visit(hit);
      }
    };
    visit(entry);
    return seen;
  }

  test('in sidecar/src only bench/ uses child_process (or eval / new Function / vm)', () => {
    const spawning = files.filter((f) => imports(f).some((m) => /^(node:)?child_process$/.test(m)) || /\bexecSync\(|\bspawnSync\(|\bspawn\(|\bfork\(/.test(text(f)));
    assert.deepEqual(spawning.map((f) => f.split(sep).join('/')), ['bench/bench.ts']);
    const dynamic = files.filter((f) => /\beval\(|new Function\(/.test(text(f)) || imports(f).some((m) => /^(node:)?vm$/.test(m)));
    assert.deepEqual(dynamic, []);
  });

  test('the sidecar server (every job it runs) never reaches child_process; only the CLI reaches bench/', () => {
    const server = reachable('server.ts');
    assert.ok(server.has(join('jobs', 'runners.ts')) && server.has(join('tasks', 'train.ts')) && server.has(join('train', 'run-lock.ts')) && server.size > 40, `the graph walk follows the job runners (${server.size} files)`);
    const bad = [...server].filter((f) => imports(f).some((m) => /^(node:)?child_process$/.test(m)));
    assert.deepEqual(bad, [], 'a file the sidecar server loads imports child_process');
    assert.ok(!server.has(join('bench', 'bench.ts')));
    assert.ok(reachable('cli.ts').has(join('bench', 'bench.ts')), 'the walk does find bench/ from the CLI');
  });
});
