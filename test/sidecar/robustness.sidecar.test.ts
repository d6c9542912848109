/**
 * The sidecar bundle (dist/sidecar.js) under abuse, over JSON-RPC on stdio:
 *  - a few hundred bad jobs (forward / grads / inspect / importance on corrupt model folders, inputs
 *    and adapters; train on bad specs, data, tokenizers and locked run folders), started in bursts
 *    with Status requests between them: every job ends `failed` with a one-line error naming a path
 *    of the job, the process never exits, Status always answers, and tf.memory().numTensors (from
 *    Status) is back at its baseline after every burst;
 *  - leaks: 10 (PEFT_LAB_LONG=1: 100) repeated forward, grads, train and importance jobs leave
 *    numTensors exactly equal after each, and the median RSS of the later half within 10 MB of the
 *    earlier half's, after 5 warm-up jobs (the child runs a full GC every 50 ms, so RSS follows live
 *    memory rather than V8's lazy heap growth);
 *  - concurrency: `--max-jobs 2` runs two trains at once, cancelling one leaves the other's adapter
 *    bitwise equal to a solo run; the default (1) queues; two jobs, or a CLI run and a job, on one
 *    run folder: the second fails "run folder is in use by pid N"; Status answers during a run;
 *  - no network: under test/fixtures/no-network.cjs (which records and throws on any connect,
 *    listen, DNS, HTTP, fetch or WebSocket), real train, forward, grads, inspect and importance jobs
 *    succeed and nothing is recorded; a self-check proves the preload catches a deliberate fetch.
 *
 * PEFT_LAB_TEST_BACKEND picks the backend (default wasm).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import { CancelJob, JobEndNote, JobProgressNote, LogNote, StartJob, Status, type JobEnd, type JobParams, type JobProgress, type RequestDef, type StatusResult } from '../../src/protocol';
import { writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { onNotification, sendRequest } from '../../sidecar/src/rpc';

const SIDECAR = resolve('dist/sidecar.js');
const CLI = resolve('dist/cli.js');
const NO_NETWORK = resolve('test/fixtures/no-network.cjs');
const BACKEND = process.env.PEFT_LAB_TEST_BACKEND || 'wasm';
const LONG = process.env.PEFT_LAB_LONG === '1';
const WAIT_MS = 120_000;
const FIXTURES = resolve(__dirname, '../../../shared/fixtures/hf');

const root = mkdtempSync(join(tmpdir(), 'peft-lab-robust-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** One sidecar child and its client end. Every wait fails fast if the process exits. */
class Sidecar {
  readonly child: ChildProcessWithoutNullStreams;
  readonly conn: MessageConnection;
  readonly ends = new Map<string, JobEnd>();
  readonly progress: JobProgress[] = [];
  readonly logs: string[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly waiters = new Set<() => void>();

  constructor(args: string[], opts: { preload?: string; env?: Record<string, string>; gcEveryMs?: number } = {}) {
    assert.ok(existsSync(SIDECAR), `${SIDECAR} is missing: run node scripts/build.mjs first`);
    const node = opts.preload ? ['--require', opts.preload] : [];
    // Leak measurements: a full GC every few ms in the child, so RSS follows live memory, not V8's lazy heap growth.
    if (opts.gcEveryMs) node.push('--expose-gc', '--import', `data:text/javascript,setInterval(() => globalThis.gc(), ${opts.gcEveryMs}).unref()`);
    this.child = spawn(process.execPath, [...node, SIDECAR, '--backend', BACKEND, ...args], { stdio: 'pipe', env: { ...process.env, PEFT_LAB_BACKEND: '', ...opts.env } });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.child.once('exit', (code, signal) => {
      this.exit = { code, signal };
      this.wake();
    });
    this.conn = createMessageConnection(new StreamMessageReader(this.child.stdout), new StreamMessageWriter(this.child.stdin));
    onNotification(this.conn, JobEndNote, (e) => {
      this.ends.set(e.id, e);
      this.wake();
    });
    onNotification(this.conn, JobProgressNote, (p) => {
      this.progress.push(p);
      this.wake();
    });
    onNotification(this.conn, LogNote, (m) => void this.logs.push(`[${m.level}] ${m.message}`));
    this.conn.listen();
  }

  async initialize(): Promise<void> {
    await this.guard('initialize', this.conn.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {} }));
    await this.conn.sendNotification('initialized', {});
  }

  request<P, R>(def: RequestDef<P, R>, params: P): Promise<R> {
    return this.guard(def.method, sendRequest(this.conn, def, params));
  }
  status(): Promise<StatusResult> {
    return this.request(Status, {});
  }
  async start(params: JobParams): Promise<string> {
    return (await this.request(StartJob, params)).id;
  }
  end(id: string): Promise<JobEnd> {
    return this.until(`the end of ${id}`, () => this.ends.get(id));
  }
  async run(params: JobParams): Promise<JobEnd> {
    return this.end(await this.start(params));
  }

  guard<T>(what: string, p: Promise<T>): Promise<T> {
    let settled = false;
    const done = () => {
      settled = true;
      this.wake();
    };
    p.then(done, done);
    return Promise.race([p, this.until(what, () => (settled ? true : undefined)).then(() => p)]);
  }

  until<T>(what: string, check: () => T | undefined, timeoutMs = WAIT_MS): Promise<T> {
    return new Promise<T>((res, rej) => {
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${this.diagnostics()}`)), timeoutMs);
      const finish = (err?: Error, v?: T) => {
        clearTimeout(timer);
        this.waiters.delete(poll);
        if (err) rej(err);
        else res(v as T);
      };
      const poll = () => {
        const v = check();
        if (v !== undefined) finish(undefined, v);
        else if (this.exit) finish(new Error(`sidecar exited (${JSON.stringify(this.exit)}) while waiting for ${what}${this.diagnostics()}`));
      };
      this.waiters.add(poll);
      poll();
    });
  }

  diagnostics(): string {
    return `\nrecent logs:\n${this.logs.slice(-15).join('\n')}\nstderr:\n${this.stderr.slice(-2000)}`;
  }

  kill(): void {
    this.conn.dispose();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

// ---- the workspace ------------------------------------------------------------------------------

const M = join(root, 'gpt2-tiny');
const files = {
  inputs: join(root, 'inputs.safetensors'),
  data: join(root, 'add.jsonl'),
};
const i32 = (shape: number[], values: number[]): HostTensor => ({ dtype: 'I32', shape, data: Int32Array.from(values) });
const f32 = (shape: number[], values: number[]): HostTensor => ({ dtype: 'F32', shape, data: Float32Array.from(values) });
const ids = (b: number, t: number, f = (i: number) => (i * 7) % 100) => i32([b, t], Array.from({ length: b * t }, (_, i) => f(i)));

function spec(name: string, body: Record<string, unknown> | string): string {
  const f = join(root, `${name}.peft.json`);
  writeFileSync(f, typeof body === 'string' ? body : JSON.stringify({ model: 'gpt2-tiny', data: { train: 'add.jsonl', maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.02 }, batchSize: 4, seed: 5, ...body }));
  return f;
}

/** Corrupt model folders: a copy of the tiny GPT-2 with one thing broken. */
function corruptModel(name: string, damage: (dir: string) => void): string {
  const d = join(root, 'models', name);
  cpSync(M, d, { recursive: true });
  damage(d);
  return d;
}

const BAD: { name: string; params: JobParams; paths: string[] }[] = [];

before(async () => {
  cpSync(join(FIXTURES, 'gpt2-tiny'), M, { recursive: true });
  mkdirSync(join(root, 'out'), { recursive: true });
  writeFileSync(files.data, Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `${i % 7}+${i % 4}=`, completion: `${(i % 7) + (i % 4)}` })).join('\n'));
  await writeSafetensors(files.inputs, { input_ids: ids(2, 8), labels: ids(2, 8) });

  const weights = readFileSync(join(M, 'model.safetensors'));
  const config = JSON.parse(readFileSync(join(M, 'config.json'), 'utf8')) as Record<string, unknown>;
  const models = {
    truncConfig: corruptModel('trunc-config', (d) => writeFileSync(join(d, 'config.json'), JSON.stringify(config).slice(0, 40))),
    badType: corruptModel('bad-type', (d) => writeFileSync(join(d, 'config.json'), JSON.stringify({ ...config, model_type: 't5' }))),
    noWeights: corruptModel('no-weights', (d) => rmSync(join(d, 'model.safetensors'))),
    truncWeights: corruptModel('trunc-weights', (d) => writeFileSync(join(d, 'model.safetensors'), weights.subarray(0, weights.length >> 1))),
    shape: corruptModel('shape', (d) => writeFileSync(join(d, 'config.json'), JSON.stringify({ ...config, n_embd: 32 }))),
    garbageHeader: corruptModel('garbage-header', (d) => { const b = Buffer.from(weights); b.fill(0x7b, 8, 40); writeFileSync(join(d, 'model.safetensors'), b); }),
    hugeHeader: corruptModel('huge-header', (d) => { const b = Buffer.from(weights); b.writeBigUInt64LE(2n ** 62n); writeFileSync(join(d, 'model.safetensors'), b); }),
    badTokenizer: corruptModel('bad-tokenizer', (d) => writeFileSync(join(d, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": {"a": 1000000000}, "merges": []}}')),
    missing: join(root, 'models', 'does-not-exist'),
    file: files.data,
  };

  // Inputs for the valid model that must be refused.
  const inputs: Record<string, string> = {};
  const writeIn = async (name: string, t: Record<string, HostTensor> | Buffer) => {
    const f = join(root, 'inputs', `${name}.safetensors`);
    mkdirSync(join(root, 'inputs'), { recursive: true });
    if (Buffer.isBuffer(t)) writeFileSync(f, t);
    else await writeSafetensors(f, t);
    inputs[name] = f;
  };
  await writeIn('noInputIds', { labels: ids(2, 8) });
  await writeIn('floatIds', { input_ids: f32([2, 8], Array(16).fill(1)), labels: ids(2, 8) });
  await writeIn('rank1', { input_ids: i32([8], Array(8).fill(1)), labels: ids(2, 8) });
  await writeIn('outOfVocab', { input_ids: ids(2, 8, (i) => (i === 5 ? 5000 : 3)), labels: ids(2, 8) });
  await writeIn('negativeId', { input_ids: ids(2, 8, (i) => (i === 3 ? -1 : 3)), labels: ids(2, 8) });
  await writeIn('maskShape', { input_ids: ids(2, 8), attention_mask: ids(2, 5), labels: ids(2, 8) });
  await writeIn('labelsShape', { input_ids: ids(2, 8), labels: ids(3, 2) });
  await writeIn('noLabels', { input_ids: ids(2, 8) });
  await writeIn('truncated', readFileSync(files.inputs).subarray(0, 30));
  await writeIn('empty', Buffer.alloc(0));

  // Adapters for forward: missing, garbage config, and weights that do not fit the model.
  const adapters = { missing: join(root, 'adapters', 'none'), garbage: join(root, 'adapters', 'garbage'), mismatch: join(root, 'adapters', 'mismatch') };
  mkdirSync(adapters.garbage, { recursive: true });
  writeFileSync(join(adapters.garbage, 'adapter_config.json'), '{"peft_type": "LORA", "r": ');
  mkdirSync(adapters.mismatch, { recursive: true });
  writeFileSync(join(adapters.mismatch, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['c_attn'], base_model_name_or_path: M }));
  await writeSafetensors(join(adapters.mismatch, 'adapter_model.safetensors'), { 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight': f32([4, 7], Array(28).fill(0.1)), 'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight': f32([192, 4], Array(768).fill(0.1)) });

  const out = (n: string) => join(root, 'out', `${n}.safetensors`);
  const add = (name: string, params: JobParams, ...paths: string[]) => BAD.push({ name, params, paths });
  for (const [k, dir] of Object.entries(models)) {
    if (k === 'badTokenizer') continue;
    add(`forward/${k}`, { kind: 'forward', model: dir, inputs: files.inputs, out: out('f') }, dir);
    add(`grads/${k}`, { kind: 'grads', model: dir, inputs: files.inputs, out: out('g') }, dir);
    // inspect reads headers only: a config whose shapes disagree with the weights is not its business.
    if (k !== 'shape') add(`inspect/${k}`, { kind: 'inspect', model: dir }, dir);
  }
  for (const [k, f] of Object.entries(inputs)) {
    if (k !== 'noLabels' && k !== 'labelsShape') add(`forward-inputs/${k}`, { kind: 'forward', model: M, inputs: f, out: out('f') }, f);
    add(`grads-inputs/${k}`, { kind: 'grads', model: M, inputs: f, out: out('g') }, f);
    add(`importance-inputs/${k}`, { kind: 'importance', model: M, inputs: f, out: join(root, 'out', 'imp'), methods: ['fisher'] }, f);
  }
  add('forward-labelsShape', { kind: 'forward', model: M, inputs: inputs.labelsShape!, out: out('f') }, inputs.labelsShape!);
  for (const [k, a] of Object.entries(adapters)) add(`forward-adapter/${k}`, { kind: 'forward', model: M, adapter: a, inputs: files.inputs, out: out('f') }, a);
  add('forward-out-missing-dir', { kind: 'forward', model: M, inputs: files.inputs, out: join(root, 'no', 'such', 'dir', 'x.safetensors') }, join(root, 'no', 'such', 'dir'));
  add('grads-out-is-dir', { kind: 'grads', model: M, inputs: files.inputs, out: root }, root);
  add('importance-data-missing', { kind: 'importance', model: M, data: join(root, 'nope.jsonl'), out: join(root, 'out', 'imp'), batches: 1, batchSize: 2 }, join(root, 'nope.jsonl'));

  // Train jobs: bad specs, bad data, bad tokenizer, busy or impossible run folders.
  writeFileSync(join(root, 'bad-rows.jsonl'), '{"text": "ok text"}\n{"text": 5}\n');
  writeFileSync(join(root, 'non-ascii.jsonl'), '{"text": "héllo wörld"}\n');
  writeFileSync(join(root, 'bad-json.jsonl'), '{"text": "a"}\n{"text": \n');
  writeFileSync(join(root, 'mask.safetensors'), 'not safetensors');
  const locked = join(root, 'locked-run');
  mkdirSync(locked, { recursive: true });
  writeFileSync(join(locked, '.lock'), JSON.stringify({ pid: 1, token: 'held' }));
  const trains: [string, string, string[]][] = [
    ['syntax', spec('syntax', '{"model": "gpt2-tiny", "data": {"train": "add.jsonl"},'), []],
    ['unknown-key', spec('unknown-key', { stpes: 3 }), []],
    ['escape', spec('escape', { data: { train: '../outside.jsonl' } }), []],
    ['absolute-escape', spec('absolute-escape', { data: { train: '/etc/hostname' } }), []],
    ['missing-data', spec('missing-data', { data: { train: 'none.jsonl' } }), []],
    ['bad-rows', spec('bad-rows', { data: { train: 'bad-rows.jsonl' }, steps: 2 }), [join(root, 'bad-rows.jsonl')]],
    ['non-ascii', spec('non-ascii', { data: { train: 'non-ascii.jsonl' }, steps: 2 }), [join(root, 'non-ascii.jsonl')]],
    ['bad-json', spec('bad-json', { data: { train: 'bad-json.jsonl' }, steps: 2 }), [join(root, 'bad-json.jsonl')]],
    ['infinite-lr', spec('infinite-lr', '{"model": "gpt2-tiny", "data": {"train": "add.jsonl"}, "adapter": {"kind": "lora"}, "optimizer": {"lr": 1e999}}'), []],
    ['memory', spec('memory', { memoryLimitMb: 1, steps: 2 }), []],
    ['diverge', spec('diverge', { steps: 4, optimizer: { lr: 1e30 }, maxGradNorm: 0 }), [join(root, 'runs', 'diverge-')]],
    ['bad-targets', spec('bad-targets', { adapter: { kind: 'lora', targets: ['nope'] }, steps: 2 }), []],
    ['bad-mask', spec('bad-mask', { adapter: { kind: 'sparse', mask: 'mask.safetensors' }, steps: 2 }), [join(root, 'mask.safetensors')]],
    ['bad-tokenizer', spec('bad-tokenizer', { model: 'models/bad-tokenizer', steps: 2 }), [join(models.badTokenizer, 'tokenizer.json')]],
    ['corrupt-model', spec('corrupt-model', { model: 'models/trunc-weights', steps: 2 }), [models.truncWeights]],
  ];
  for (const [k, f, extra] of trains) add(`train/${k}`, { kind: 'train', spec: f }, f, ...extra);
  const ok = spec('ok', { steps: 2 });
  add('train/locked-run-dir', { kind: 'train', spec: ok, runDir: locked }, locked);
  add('train/run-dir-is-file', { kind: 'train', spec: ok, runDir: files.data }, files.data);
  add('train/resume-nothing', { kind: 'train', spec: ok, resume: true }, ok);
  add('train/resume-not-a-run', { kind: 'train', spec: ok, resume: true, runDir: join(root, 'models') }, join(root, 'models'));
  add('train/spec-missing', { kind: 'train', spec: join(root, 'none.peft.json') }, join(root, 'none.peft.json'));
});

describe('bad jobs never take the sidecar down', { timeout: 10 * WAIT_MS }, () => {
  let sc: Sidecar;
  before(async () => {
    sc = new Sidecar([]);
    await sc.initialize();
  });
  after(() => sc?.kill());

  const TOTAL = LONG ? 1500 : 300;
  it(`${TOTAL} bad jobs in bursts with Status between: each fails with a one-line error naming its input; numTensors back to baseline after each burst`, async () => {
    const baseline = (await sc.status()).memory.numTensors;
    const errors = new Map<string, string>();
    const outcomes = new Map<string, number>();
    let statuses = 0;
    const BURST = Number(process.env.PEFT_LAB_ROBUST_BURST ?? 10); // 1 pins a leak on a single job
    for (let done = 0; done < TOTAL; ) {
      const burst = Array.from({ length: Math.min(BURST, TOTAL - done) }, (_, i) => BAD[(done + i) % BAD.length]!);
      const started: [typeof burst[number], string][] = [];
      const pending: Promise<StatusResult>[] = [];
      for (const job of burst) {
        started.push([job, await sc.start(job.params)]);
        pending.push(sc.status()); // Status interleaved with the jobs, answered while they queue and run
      }
      for (const s of await Promise.all(pending)) assert.equal(s.pid, sc.child.pid);
      statuses += pending.length;
      for (const [job, id] of started) {
        const end = await sc.end(id);
        assert.equal(end.state, 'failed', `${job.name} ended ${end.state}: ${JSON.stringify(end).slice(0, 300)}`);
        assert.ok(end.state === 'failed');
        const e = end.error;
        assert.ok(e.length > 0 && !e.includes('\n') && e.length <= 500, `${job.name}: not a one-line error: ${JSON.stringify(e)}`);
        assert.ok(job.paths.length === 0 ? /\.peft\.json/.test(e) : job.paths.some((p) => e.includes(p)), `${job.name}: the error does not name ${job.paths.join(' or ') || 'the spec'}: ${e}`);
        errors.set(job.name, e);
        const family = job.name.split('/')[0]!.split('-')[0]!;
        outcomes.set(family, (outcomes.get(family) ?? 0) + 1);
      }
      done += burst.length;
      const s = await sc.status();
      statuses++;
      assert.equal(s.memory.numTensors, baseline, `numTensors ${s.memory.numTensors} (baseline ${baseline}) after the burst ${burst.map((j) => j.name).join(', ')}`);
      assert.ok(s.jobs.every((j) => j.state !== 'running' && j.state !== 'queued'));
    }
    assert.equal(sc.exit, undefined, 'the sidecar is still running');
    const final = await sc.status();
    process.stderr.write(
      `robustness: ${TOTAL} bad jobs (${BAD.length} kinds: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}) all failed with one-line errors; ${statuses + 1} Status requests answered; numTensors ${final.memory.numTensors} (baseline ${baseline}); RSS ${final.memory.rssMb} MB\n`,
    );
    if (process.env.PEFT_LAB_VERBOSE === '1') for (const [k, e] of errors) process.stderr.write(`  ${k}: ${e}\n`);
    // Still does real work afterwards.
    const ok = await sc.run({ kind: 'forward', model: M, inputs: files.inputs, out: join(root, 'out', 'after.safetensors') });
    assert.equal(ok.state, 'done', JSON.stringify(ok));
  });
});

describe('no leaks over repeated jobs in one sidecar', { timeout: 10 * WAIT_MS }, () => {
  let sc: Sidecar;
  before(async () => {
    sc = new Sidecar([], { gcEveryMs: 50 });
    await sc.initialize();
  });
  after(() => sc?.kill());

  const N = LONG ? 100 : 10;
  // Warm-up: the wasm heap and V8's old space grow to their working size over the first jobs.
  const WARMUP = 5;
  const jobs: Record<string, () => JobParams> = {
    forward: () => ({ kind: 'forward', model: M, inputs: files.inputs, out: join(root, 'out', 'leak-f.safetensors') }),
    grads: () => ({ kind: 'grads', model: M, inputs: files.inputs, out: join(root, 'out', 'leak-g.safetensors') }),
    importance: () => ({ kind: 'importance', model: M, data: files.data, batches: 2, batchSize: 4, out: join(root, 'out', 'leak-imp') }),
    'importance-inputs': () => ({ kind: 'importance', model: M, inputs: files.inputs, methods: ['fisher', 'taylor'], out: join(root, 'out', 'leak-imp2') }),
    train: () => ({ kind: 'train', spec: spec('leak-train', { steps: 4, logEvery: 2, checkpointEvery: 2, gradientAccumulation: 2, maxGradNorm: 0.05 }), runDir: join(root, 'runs', `leak-${Math.random().toString(36).slice(2)}`) }),
  };
  for (const [kind, make] of Object.entries(jobs)) {
    it(`${N} ${kind} jobs: numTensors exactly flat, RSS growth bounded after ${WARMUP} warm-up jobs`, async () => {
      const tensors: number[] = [];
      const rss: number[] = [];
      for (let i = 0; i < N + WARMUP; i++) {
        const end = await sc.run(make());
        assert.equal(end.state, 'done', `${kind} #${i}: ${JSON.stringify(end).slice(0, 400)}`);
        const s = await sc.status();
        tensors.push(s.memory.numTensors);
        rss.push(s.memory.rssMb);
      }
      const base = tensors[WARMUP - 1]!;
      assert.deepEqual(tensors.slice(WARMUP), Array(N).fill(base), `${kind}: numTensors per job ${tensors.join(' ')}`);
      // Without a forced GC in the sidecar, RSS moves with V8's heap: bound the growth of the later
      // half's median over the first half's (after warm-up), a trend and not a single GC's noise.
      const after = rss.slice(WARMUP);
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
      const growth = median(after.slice(after.length >> 1)) - median(after.slice(0, Math.max(1, after.length >> 1)));
      process.stderr.write(`leaks (sidecar, ${N} ${kind} jobs): numTensors ${base} after each; RSS ${after[0]} → ${after.at(-1)} MB (max ${Math.max(...after)}), median growth ${growth} MB\n`);
      assert.ok(growth < 10, `${kind}: RSS grew ${growth} MB (${after.join(' ')})`);
    });
  }
});

describe('concurrency and run folder locks', { timeout: 10 * WAIT_MS }, () => {
  const trainSpec = () => spec('conc', { steps: 30, logEvery: 5, checkpointEvery: 10, data: { train: 'add.jsonl', evalSplit: 0.2, maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8, dropout: 0.1 } });
  const longSpec = () => spec('conc-long', { steps: 100_000, logEvery: 50, checkpointEvery: 100_000 });
  const adapterBytes = (dir: string) => readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
  let parallel: Sidecar;
  let solo: string;
  before(async () => {
    parallel = new Sidecar(['--max-jobs', '2']);
    await parallel.initialize();
    solo = join(root, 'runs', 'solo');
    const end = await parallel.run({ kind: 'train', spec: trainSpec(), runDir: solo });
    assert.equal(end.state, 'done', JSON.stringify(end));
  });
  after(() => parallel?.kill());

  it('--max-jobs 2: two trains run at once; cancelling one leaves the other bitwise equal to a solo run; Status answers throughout', async () => {
    const dirA = join(root, 'runs', 'parallel-a');
    const dirB = join(root, 'runs', 'parallel-b');
    const b = await parallel.start({ kind: 'train', spec: longSpec(), runDir: dirB });
    await parallel.until('B running', () => (parallel.progress.some((p) => p.id === b) ? true : undefined));
    const a = await parallel.start({ kind: 'train', spec: trainSpec(), runDir: dirA });
    // Interleaved: B keeps stepping after A's first step.
    await parallel.until('A and B both stepping', () => {
      const firstA = parallel.progress.findIndex((p) => p.id === a);
      return firstA >= 0 && parallel.progress.slice(firstA).some((p) => p.id === b) ? true : undefined;
    });
    const s = await parallel.status();
    assert.deepEqual(s.jobs.filter((j) => j.id === a || j.id === b).map((j) => j.state), ['running', 'running']);
    // Status answers promptly while both run.
    let slowest = 0;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await parallel.status();
      slowest = Math.max(slowest, performance.now() - t0);
    }
    assert.deepEqual(await parallel.request(CancelJob, { id: b }), { cancelled: true });
    const endB = await parallel.end(b);
    assert.equal(endB.state, 'cancelled');
    const endA = await parallel.end(a);
    assert.equal(endA.state, 'done', JSON.stringify(endA));
    assert.ok(adapterBytes(dirA).equals(adapterBytes(solo)), 'the surviving run\'s adapter is bitwise equal to a solo run');
    assert.ok(!existsSync(join(dirA, '.lock')) && !existsSync(join(dirB, '.lock')), 'locks released');
    const statusB = JSON.parse(readFileSync(join(dirB, 'status.json'), 'utf8')) as { state: string };
    assert.equal(statusB.state, 'cancelled');
    process.stderr.write(`concurrency: Status answered in ≤ ${Math.round(slowest)} ms while two trains ran\n`);
    assert.ok(slowest < 5000, `Status took ${Math.round(slowest)} ms`);
  });

  it('two jobs on one run folder: the second fails "run folder is in use by pid N", the first is unaffected', async () => {
    const dir = join(root, 'runs', 'shared');
    const first = await parallel.start({ kind: 'train', spec: trainSpec(), runDir: dir });
    await parallel.until('the first job stepping', () => (parallel.progress.some((p) => p.id === first) ? true : undefined));
    const second = await parallel.run({ kind: 'train', spec: trainSpec(), runDir: dir, resume: false });
    assert.ok(second.state === 'failed');
    const pid = (await parallel.status()).pid;
    assert.equal(second.error, `${dir}: run folder is in use by pid ${pid}, another job of this process (.lock): wait for that run to end or stop it, or pick another run folder`);
    const end = await parallel.end(first);
    assert.equal(end.state, 'done', JSON.stringify(end));
    assert.ok(adapterBytes(dir).equals(adapterBytes(solo)), 'the first run finished untouched');
  });

  it('two runs of one spec started at once (no run folder given) get a folder each', async () => {
    const f = spec('twin', { steps: 3 });
    const [x, y] = await Promise.all([parallel.start({ kind: 'train', spec: f }), parallel.start({ kind: 'train', spec: f })]);
    const [ex, ey] = [await parallel.end(x), await parallel.end(y)];
    assert.ok(ex.state === 'done' && ey.state === 'done' && ex.result.kind === 'train' && ey.result.kind === 'train', `${JSON.stringify(ex)} ${JSON.stringify(ey)}`);
    assert.notEqual(ex.result.runDir, ey.result.runDir);
  });

  it('a CLI run and a sidecar job on one run folder: the job fails naming the CLI\'s pid', async () => {
    const dir = join(root, 'runs', 'cli-held');
    const cli = spawn(process.execPath, [CLI, 'train', longSpec(), '--run-dir', dir, '--backend', BACKEND], { stdio: ['ignore', 'ignore', 'pipe'] });
    let cliErr = '';
    cli.stderr.on('data', (d: Buffer) => (cliErr += d.toString()));
    try {
      // The CLI is not the sidecar: poll the folder (status.json is written after the lock is taken).
      for (const t0 = Date.now(); !existsSync(join(dir, 'status.json')); await new Promise((r) => setTimeout(r, 20))) {
        assert.ok(cli.exitCode === null, `the CLI exited: ${cliErr}`);
        assert.ok(Date.now() - t0 < WAIT_MS, `the CLI did not start its run: ${cliErr}`);
      }
      const end = await parallel.run({ kind: 'train', spec: longSpec(), runDir: dir, resume: true });
      assert.ok(end.state === 'failed');
      assert.equal(end.error, `${dir}: run folder is in use by pid ${cli.pid} (.lock): wait for that run to end or stop it, or pick another run folder (if pid ${cli.pid} is no PEFT Lab run, delete .lock)`);
    } finally {
      cli.kill('SIGKILL');
    }
    await new Promise((r) => cli.once('exit', r));
    // The killed CLI left a stale lock (dead pid): a resume job takes it over.
    assert.ok(existsSync(join(dir, '.lock')));
    const resumed = await parallel.start({ kind: 'train', spec: longSpec(), runDir: dir, resume: true });
    await parallel.until('the resumed run stepping', () => (parallel.progress.some((p) => p.id === resumed) ? true : undefined));
    await parallel.request(CancelJob, { id: resumed });
    assert.equal((await parallel.end(resumed)).state, 'cancelled');
  });

  it('the default (--max-jobs 1) queues the second job until the first ends', async () => {
    const sc = new Sidecar([]);
    try {
      await sc.initialize();
      const a = await sc.start({ kind: 'train', spec: longSpec(), runDir: join(root, 'runs', 'queue-a') });
      await sc.until('A stepping', () => (sc.progress.some((p) => p.id === a) ? true : undefined));
      const b = await sc.start({ kind: 'selftest', steps: 3 });
      const s = await sc.status();
      assert.deepEqual(s.jobs.filter((j) => j.id === a || j.id === b).map((j) => j.state), ['running', 'queued']);
      await sc.request(CancelJob, { id: a });
      assert.equal((await sc.end(a)).state, 'cancelled');
      assert.equal((await sc.end(b)).state, 'done');
    } finally {
      sc.kill();
    }
  });
});

describe('no network', { timeout: 5 * WAIT_MS }, () => {
  it('self-check: the preload records and refuses a deliberate fetch, connect, listen and DNS lookup', () => {
    const log = join(root, 'net-self.log');
    const r = spawnSync(
      process.execPath,
      ['--require', NO_NETWORK, '-e', `
        const tries = [() => fetch('https://example.com'), () => require('net').connect(443, 'example.com'), () => require('net').createServer().listen(0), () => require('dns').lookup('example.com', () => {}), () => require('https').get('https://example.com'), () => new WebSocket('wss://example.com')];
        let blocked = 0;
        for (const t of tries) { try { t(); } catch (e) { if (e.code === 'ENETBLOCKED') blocked++; } }
        process.stdout.write(String(blocked));`],
      { encoding: 'utf8', env: { ...process.env, PEFT_LAB_NET_LOG: log } },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '6');
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { what: string; target: string });
    assert.deepEqual(lines.map((l) => l.what), ['fetch', 'net.connect', 'net.Server.listen', 'dns.lookup', 'https.get', 'WebSocket']);
    assert.equal(lines[0]!.target, 'https://example.com');
  });

  it('real train, forward, grads, inspect and importance jobs under the preload succeed and record nothing', async () => {
    const log = join(root, 'net-sidecar.log');
    const sc = new Sidecar([], { preload: NO_NETWORK, env: { PEFT_LAB_NET_LOG: log } });
    try {
      await sc.initialize();
      const train = await sc.run({ kind: 'train', spec: spec('net-train', { steps: 6, logEvery: 2, evalEvery: 3, checkpointEvery: 3, data: { train: 'add.jsonl', evalSplit: 0.2, maxLength: 16 } }), runDir: join(root, 'runs', 'net') });
      assert.equal(train.state, 'done', `${JSON.stringify(train)}${sc.diagnostics()}`);
      const adapter = join(root, 'runs', 'net', 'adapter');
      for (const params of [
        { kind: 'forward', model: M, adapter, inputs: files.inputs, out: join(root, 'out', 'net-f.safetensors') },
        { kind: 'grads', model: M, inputs: files.inputs, out: join(root, 'out', 'net-g.safetensors') },
        { kind: 'inspect', model: M },
        { kind: 'importance', model: M, data: files.data, batches: 1, batchSize: 4, out: join(root, 'out', 'net-imp') },
      ] as JobParams[]) {
        const end = await sc.run(params);
        assert.equal(end.state, 'done', `${params.kind}: ${JSON.stringify(end)}${sc.diagnostics()}`);
      }
      assert.equal((await sc.status()).pid, sc.child.pid);
    } finally {
      sc.kill();
    }
    const recorded = existsSync(log) ? readFileSync(log, 'utf8') : '';
    assert.equal(recorded, '', `network attempts were recorded:\n${recorded}`);
  });
});
