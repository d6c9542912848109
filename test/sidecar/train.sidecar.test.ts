/**
 * Training through the real bundles: a 'train' job over JSON-RPC (dist/sidecar.js) that streams
 * progress and ends done with a run folder, cancellation of a train job, a 'compare' job cancelled
 * and continued in its folder, and the CLI
 * (dist/cli.js) killed with SIGKILL after its first checkpoint, then `peft-lab resume`: the final
 * adapter is bitwise equal to an uninterrupted run and every logged step appears once.
 *
 * PEFT_LAB_TEST_BACKEND picks the backend (default wasm: training on the pure-JS backend is slow).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import { CancelJob, JobEndNote, JobProgressNote, StartJob, type JobEnd, type JobProgress, type MetricRecord, type RunStatus } from '../../src/protocol';
import { onNotification, sendRequest } from '../../sidecar/src/rpc';

const SIDECAR = resolve('dist/sidecar.js');
const CLI = resolve('dist/cli.js');
const BACKEND = process.env.PEFT_LAB_TEST_BACKEND || 'wasm';
const WAIT_MS = 60_000;
const FIXTURE = resolve(__dirname, '../../../shared/fixtures/hf/gpt2-tiny');

const root = mkdtempSync(join(tmpdir(), 'peft-lab-train-sidecar-'));
after(() => rmSync(root, { recursive: true, force: true }));

function writeSpec(name: string, extra: Record<string, unknown>): string {
  const f = join(root, `${name}.peft.json`);
  writeFileSync(f, JSON.stringify({ model: 'gpt2-tiny', data: { train: 'add.jsonl', evalSplit: 0.2, maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.02 }, batchSize: 4, ...extra }));
  return f;
}
const readStatus = (dir: string) => JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')) as RunStatus;
const readMetrics = (dir: string) =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as MetricRecord);

before(() => {
  assert.ok(existsSync(SIDECAR) && existsSync(CLI), 'dist/ is missing: run node scripts/build.mjs first');
  cpSync(FIXTURE, join(root, 'gpt2-tiny'), { recursive: true });
  writeFileSync(join(root, 'add.jsonl'), Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `${i % 7}+${i % 4}=`, completion: `${(i % 7) + (i % 4)}` })).join('\n'));
});

describe('train job over JSON-RPC', () => {
  let child: ChildProcessWithoutNullStreams;
  let conn: MessageConnection;
  let stderr = '';
  const progress: JobProgress[] = [];
  const ends: JobEnd[] = [];
  const waiters = new Set<() => void>();
  const wake = () => waiters.forEach((w) => w());
  const until = <T>(what: string, check: () => T | undefined): Promise<T> =>
    new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}\nstderr: ${stderr.slice(-2000)}`)), WAIT_MS);
      const poll = () => {
        const v = check();
        if (v !== undefined) {
          clearTimeout(timer);
          waiters.delete(poll);
          res(v);
        } else if (child.exitCode !== null) {
          clearTimeout(timer);
          waiters.delete(poll);
          rej(new Error(`sidecar exited while waiting for ${what}\nstderr: ${stderr.slice(-2000)}`));
        }
      };
      waiters.add(poll);
      poll();
    });

  before(async () => {
    child = spawn(process.execPath, [SIDECAR, '--backend', BACKEND], { stdio: 'pipe', env: { ...process.env, PEFT_LAB_BACKEND: '' } });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('exit', wake);
    conn = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    onNotification(conn, JobProgressNote, (p) => {
      progress.push(p);
      wake();
    });
    onNotification(conn, JobEndNote, (e) => {
      ends.push(e);
      wake();
    });
    conn.onNotification(() => undefined); // logs
    conn.listen();
    await conn.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {} });
    await conn.sendNotification('initialized', {});
  });
  after(() => {
    conn?.dispose();
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('streams progress and ends done with a run folder', async () => {
    const spec = writeSpec('job', { steps: 6, logEvery: 2, evalEvery: 3, checkpointEvery: 3 });
    const { id } = await sendRequest(conn, StartJob, { kind: 'train', spec });
    const end = await until('the end of the train job', () => ends.find((e) => e.id === id));
    assert.equal(end.state, 'done', end.state === 'failed' ? end.error : '');
    assert.ok(end.state === 'done' && end.result.kind === 'train');
    const runDir = end.result.runDir;
    assert.match(runDir, /[\\/]runs[\\/]job-\d{8}-\d{6}$/, 'a new folder under the spec\'s runs folder');
    assert.equal(end.result.status.state, 'done');
    assert.equal(end.result.status.step, 6);
    const notes = progress.filter((p) => p.id === id);
    assert.deepEqual(notes.map((p) => p.done), [1, 2, 3, 4, 5, 6]);
    for (const p of notes) {
      assert.equal(p.total, 6);
      assert.ok(Number.isFinite(p.metrics?.loss) && p.metrics!.lr! > 0 && p.metrics!.tokens_per_s! > 0, JSON.stringify(p));
      assert.match(p.message!, /^step \d\/6 · loss /);
    }
    assert.ok(Number.isFinite(notes.at(-1)!.metrics!.eval_loss) && notes.at(-1)!.metrics!.eval_accuracy !== undefined);
    assert.equal(readStatus(runDir).state, 'done');
    assert.deepEqual(readMetrics(runDir).map((r) => r.step), [2, 3, 4, 6]);
    assert.ok(existsSync(join(runDir, 'adapter', 'adapter_model.safetensors')));
  });

  it('cancels a train job ("cancelled", checkpoint kept), and a resume job finishes it', async () => {
    const spec = writeSpec('cancel', { steps: 40, logEvery: 1, checkpointEvery: 1000 });
    const runDir = join(root, 'cancel-run');
    const { id } = await sendRequest(conn, StartJob, { kind: 'train', spec, runDir });
    await until('3 steps', () => (progress.filter((p) => p.id === id).length >= 3 ? true : undefined));
    assert.deepEqual(await sendRequest(conn, CancelJob, { id }), { cancelled: true });
    const end = await until('the end of the cancelled job', () => ends.find((e) => e.id === id));
    assert.equal(end.state, 'cancelled');
    const s = readStatus(runDir);
    assert.equal(s.state, 'cancelled');
    assert.ok(s.step >= 3 && s.step < 40);
    assert.equal(s.lastCheckpoint, `step-${s.step}`);

    const resumed = await sendRequest(conn, StartJob, { kind: 'train', spec, runDir, resume: true });
    const end2 = await until('the end of the resume job', () => ends.find((e) => e.id === resumed.id));
    assert.ok(end2.state === 'done' && end2.result.kind === 'train', JSON.stringify(end2));
    assert.equal(end2.result.status.step, 40);
    assert.equal(progress.find((p) => p.id === resumed.id)!.done, s.step + 1, 'continues after the checkpoint');
    assert.deepEqual(readMetrics(runDir).map((r) => r.step), Array.from({ length: 40 }, (_, i) => i + 1));
  });

  it('compares variants as a job: progress over all variants; cancelled, then resumed in the same folder to the end', async () => {
    const spec = writeSpec('cmp', {
      steps: 30,
      logEvery: 1,
      checkpointEvery: 1000,
      variants: [
        { name: 'lora-r2', adapter: { kind: 'lora', r: 2, alpha: 4 } },
        { name: 'bitfit', adapter: { kind: 'bitfit' }, steps: 4 },
      ],
    });
    const outDir = join(root, 'cmp-out');
    const { id } = await sendRequest(conn, StartJob, { kind: 'compare', spec, outDir });
    await until('3 steps', () => (progress.filter((p) => p.id === id).length >= 3 ? true : undefined));
    await sendRequest(conn, CancelJob, { id });
    const end = await until('the cancelled compare job', () => ends.find((e) => e.id === id));
    assert.equal(end.state, 'cancelled');
    const partial = JSON.parse(readFileSync(join(outDir, 'compare.json'), 'utf8')) as { variants: { name: string; state: string }[] };
    assert.deepEqual(partial.variants.map((v) => [v.name, v.state]), [['lora-r2', 'cancelled']], 'what ran is saved');
    const stopped = readStatus(join(outDir, 'lora-r2')).step;

    const again = await sendRequest(conn, StartJob, { kind: 'compare', spec, outDir });
    const end2 = await until('the resumed compare job', () => ends.find((e) => e.id === again.id));
    assert.ok(end2.state === 'done' && end2.result.kind === 'compare', JSON.stringify(end2));
    assert.equal(end2.result.compareFile, join(outDir, 'compare.json'));
    assert.deepEqual(end2.result.variants, [{ name: 'lora-r2', state: 'done' }, { name: 'bitfit', state: 'done' }]);
    const notes = progress.filter((p) => p.id === again.id);
    assert.equal(notes[0]!.done, stopped + 1, 'lora-r2 continues after its checkpoint');
    assert.deepEqual(notes.map((p) => p.done), Array.from({ length: 30 - stopped + 4 }, (_, i) => stopped + 1 + i), 'one count over both variants');
    assert.equal(notes.at(-1)!.total, 34);
    assert.match(notes.at(-1)!.message!, /^\[bitfit 2\/2\] step 4\/4 · loss /);
    assert.deepEqual(readMetrics(join(outDir, 'lora-r2')).map((r) => r.step), Array.from({ length: 30 }, (_, i) => i + 1), 'each step once');
  });

  it('fails a job whose spec is invalid, naming the place', async () => {
    const bad = join(root, 'bad.peft.json');
    writeFileSync(bad, '{\n  "model": "gpt2-tiny",\n  "data": { "train": "add.jsonl" },\n  "adapter": { "kind": "lora" },\n  "stpes": 3\n}');
    const { id } = await sendRequest(conn, StartJob, { kind: 'train', spec: bad });
    const end = await until('the failed job', () => ends.find((e) => e.id === id));
    assert.ok(end.state === 'failed');
    assert.match(end.error, /bad\.peft\.json \(stpes at 5:3\): unknown key "stpes" \(did you mean "steps"\?\)/);
  });
});

describe('peft-lab train / resume (CLI)', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args, '--backend', BACKEND], { encoding: 'utf8', timeout: WAIT_MS });

  it('resumes a run killed with SIGKILL after its first checkpoint to the same bits', async () => {
    const spec = writeSpec('kill', { steps: 40, logEvery: 1, evalEvery: 10, checkpointEvery: 5 });
    // Uninterrupted reference.
    const refDir = join(root, 'ref-run');
    const ref = cli(['train', spec, '--run-dir', refDir]);
    assert.equal(ref.status, 0, ref.stderr);
    assert.equal(ref.stdout.trim(), refDir, 'prints the run folder');
    assert.match(ref.stderr, /\[#+\.*\] \d+\/40 {2}loss \d\.\d{4}/, 'a progress bar on stderr');

    // Killed run: SIGKILL as soon as the first checkpoint is complete.
    const dir = join(root, 'killed-run');
    const child = spawn(process.execPath, [CLI, 'train', spec, '--run-dir', dir, '--backend', BACKEND], { stdio: 'ignore' });
    const exited = new Promise<void>((res) => child.once('exit', () => res()));
    const t0 = Date.now();
    while (!existsSync(join(dir, 'checkpoints', 'step-5', 'state.json'))) {
      assert.ok(child.exitCode === null, 'the run ended before its first checkpoint');
      assert.ok(Date.now() - t0 < WAIT_MS, 'no checkpoint in time');
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await exited;
    const killed = readStatus(dir);
    assert.equal(killed.state, 'running', 'a killed run is left "running" (with a dead pid)');
    assert.ok(killed.step < 40, 'killed mid-run');
    const before = readMetrics(dir).length;
    assert.ok(before >= 5 && before < 40);

    const res = cli(['resume', dir]);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stderr, /resuming .* from step-\d+/);
    assert.equal(res.stdout.trim(), dir);
    assert.deepEqual(readMetrics(dir).map((r) => r.step), Array.from({ length: 40 }, (_, i) => i + 1), 'each logged step once, in order');
    const strip = (ms: MetricRecord[]) => ms.map(({ tokens_per_s: _t, elapsed_s: _e, ...r }) => r);
    assert.deepEqual(strip(readMetrics(dir)), strip(readMetrics(refDir)));
    const a = readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
    const b = readFileSync(join(refDir, 'adapter', 'adapter_model.safetensors'));
    assert.ok(a.equals(b), 'final adapter bitwise equal to the uninterrupted run');
    assert.equal(readStatus(dir).state, 'done');
  });

  it('prints spec errors as one line with the place, exit code 1', () => {
    const bad = join(root, 'bad-cli.peft.json');
    writeFileSync(bad, '{"model": "gpt2-tiny", "data": {"train": "../outside.jsonl"}, "adapter": {"kind": "lora"}}');
    const r = cli(['train', bad]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^peft-lab train: .*bad-cli\.peft\.json \(data\.train at 1:42\): "\.\.\/outside\.jsonl" resolves to .* outside the workspace root/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
});
