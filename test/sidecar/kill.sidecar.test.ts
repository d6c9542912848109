/**
 * Crash safety under SIGKILL: a real training run (dist/cli.js) is killed at 20 seeded random
 * moments, half of them while a checkpoint is being written, and resumed after each kill. The run
 * must finish with every logged step in metrics.jsonl exactly once and in order, never more than
 * the last logging interval missing at a kill, and a final adapter bitwise equal to an
 * uninterrupted run's. (PEFT_LAB_LONG=1: 60 kills.)
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { RunStatus } from '../../src/protocol';
import { rng } from '../helpers/fuzz';

const CLI = resolve('dist/cli.js');
const BACKEND = process.env.PEFT_LAB_TEST_BACKEND || 'wasm';
const KILLS = process.env.PEFT_LAB_LONG === '1' ? 60 : 20;
const STEPS = 240;
const root = mkdtempSync(join(tmpdir(), 'peft-lab-kill-'));
after(() => rmSync(root, { recursive: true, force: true }));

const spec = join(root, 'kill.peft.json');
before(() => {
  assert.ok(existsSync(CLI), 'dist/cli.js is missing: run node scripts/build.mjs first');
  cpSync(resolve(__dirname, '../../../shared/fixtures/hf/gpt2-tiny'), join(root, 'gpt2-tiny'), { recursive: true });
  writeFileSync(join(root, 'add.jsonl'), Array.from({ length: 64 }, (_, i) => JSON.stringify({ prompt: `${i % 9}+${i % 5}=`, completion: `${(i % 9) + (i % 5)}` })).join('\n'));
  writeFileSync(
    spec,
    JSON.stringify({
      model: 'gpt2-tiny',
      data: { train: 'add.jsonl', evalSplit: 0.125, maxLength: 16 },
      adapter: { kind: 'lora', r: 4, alpha: 8, dropout: 0.1 },
      optimizer: { lr: 0.01 },
      batchSize: 4,
      steps: STEPS,
      logEvery: 1,
      evalEvery: 60,
      checkpointEvery: 3,
      seed: 11,
    }),
  );
});

/** Metric steps of a run folder; a torn last line (killed mid-append) is allowed and ignored. */
function loggedSteps(dir: string): number[] {
  if (!existsSync(join(dir, 'metrics.jsonl'))) return [];
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').split('\n');
  const steps: number[] = [];
  lines.forEach((l, i) => {
    if (!l) return;
    try {
      steps.push((JSON.parse(l) as { step: number }).step);
    } catch (e) {
      assert.equal(i, lines.length - 1, `metrics.jsonl line ${i + 1} is corrupt but not the last line: ${String(e)}`);
    }
  });
  return steps;
}
/** status.json, or undefined before the run wrote one (it is replaced atomically, so never torn). */
const status = (dir: string): RunStatus | undefined => (existsSync(join(dir, 'status.json')) ? (JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')) as RunStatus) : undefined);
const tempCheckpoints = (dir: string) => (existsSync(join(dir, 'checkpoints')) ? readdirSync(join(dir, 'checkpoints')).filter((f) => f.includes('.tmp-')) : []);

describe(`SIGKILL at ${KILLS} random moments`, () => {
  it('finishes with every logged step once and the uninterrupted run\'s adapter, bit for bit', async () => {
    const refDir = join(root, 'ref');
    const ref = spawnSync(process.execPath, [CLI, 'train', spec, '--run-dir', refDir, '--backend', BACKEND], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(ref.status, 0, ref.stderr);

    const dir = join(root, 'killed');
    const r = rng(20261126);
    let killsDuringCheckpoint = 0;
    let kills = 0;
    while (kills < KILLS) {
      const args = existsSync(join(dir, 'status.json')) ? ['resume', dir] : ['train', spec, '--run-dir', dir];
      const child = spawn(process.execPath, [CLI, ...args, '--backend', BACKEND], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
      const duringCheckpoint = kills % 2 === 1;
      const startStep = status(dir)?.step ?? 0;
      // Wait for progress past the resume point, then kill after a random delay or when a checkpoint
      // temp folder shows up (a write in flight).
      const deadline = Date.now() + 120_000;
      let killed = false;
      const delay = 5 + Math.floor(r() * 400);
      let armedAt = 0;
      while (child.exitCode === null) {
        assert.ok(Date.now() < deadline, `round ${kills}: no progress in time\n${stderr}`);
        const progressed = (status(dir)?.step ?? 0) > startStep;
        if (progressed && !armedAt) armedAt = Date.now();
        if (armedAt && (duringCheckpoint ? tempCheckpoints(dir).length > 0 : Date.now() - armedAt >= delay)) {
          child.kill('SIGKILL');
          killed = true;
          break;
        }
        await new Promise((res) => setImmediate(res));
      }
      const code = await exited;
      if (!killed) {
        // The run finished before this round's kill moment.
        assert.equal(code, 0, stderr);
        break;
      }
      kills++;
      if (tempCheckpoints(dir).length > 0) killsDuringCheckpoint++;
      // At a kill, metrics are consecutive from step 1: nothing lost beyond the last logging interval.
      const steps = loggedSteps(dir);
      assert.deepEqual(steps, Array.from({ length: steps.length }, (_, i) => i + 1), `round ${kills}: metrics not consecutive`);
      const st = status(dir)!;
      assert.ok(st.step - steps.length <= 1, `round ${kills}: status at step ${st.step} but metrics end at ${steps.length}`);
    }
    assert.equal(kills, KILLS, 'the run finished before all kills happened: make it longer');
    assert.ok(killsDuringCheckpoint >= 1, 'no kill landed inside a checkpoint write');
    const fin = spawnSync(process.execPath, [CLI, 'resume', dir, '--backend', BACKEND], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(fin.status, 0, fin.stderr);

    assert.equal(status(dir)?.state, 'done');
    assert.deepEqual(loggedSteps(dir), Array.from({ length: STEPS }, (_, i) => i + 1), 'every logged step exactly once, in order');
    const a = readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
    const b = readFileSync(join(refDir, 'adapter', 'adapter_model.safetensors'));
    assert.ok(a.equals(b), 'final adapter bitwise equal to the uninterrupted run');
    assert.deepEqual(tempCheckpoints(dir), [], 'no temp checkpoint folder left behind');
    process.stderr.write(`kill test: ${kills} kills survived, ${killsDuringCheckpoint} inside a checkpoint write\n`);
  });
});
