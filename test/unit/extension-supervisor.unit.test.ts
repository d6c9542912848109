/**
 * The pure parts of the sidecar lifecycle: backoff and the crash window, the supervisor driven by
 * in-memory fake processes and a fake clock, which commands are enabled when, and what the status
 * bar says. Real child processes are in test/sidecar/lifecycle.sidecar.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Emitter, once } from '../../src/extension/model/events';
import { COMMAND_NEEDS, unavailability } from '../../src/extension/model/availability';
import { cancelJobsWarning, progressMessage, settingsRestartPrompt, statusBarView } from '../../src/extension/model/status-text';
import { backoffDelay, crashesInWindow, Supervisor, type ExitInfo, type SupervisedProcess } from '../../src/extension/model/supervisor';

/** A process that lives in memory: `crash()` ends it. */
function fakeProcess(pid: number) {
  let end!: (e: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((r) => (end = r));
  const p: SupervisedProcess & { crash(code: number): void } = {
    pid,
    exited,
    shutdown: async () => end({ code: 0, signal: null }),
    kill: () => end({ code: null, signal: 'SIGKILL' }),
    crash: (code) => end({ code, signal: null }),
  };
  return p;
}

describe('backoff and crash window', () => {
  it('doubles the delay per crash, capped', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 500, 8000)),
      [500, 1000, 2000, 4000, 8000, 8000],
    );
    assert.equal(backoffDelay(0, 500, 8000), 500);
    assert.equal(backoffDelay(1, 500, 100), 100);
  });

  it('counts only crashes within the window', () => {
    assert.deepEqual(crashesInWindow([0, 50_000, 170_000, 200_000], 200_000, 180_000), [50_000, 170_000, 200_000]);
    assert.deepEqual(crashesInWindow([0], 180_000, 180_000), []);
  });

  it('forgets crashes older than the window (fake clock, in-memory processes)', async () => {
    let clock = 0;
    let pid = 100;
    const procs: ReturnType<typeof fakeProcess>[] = [];
    const sup = new Supervisor({
      launch: async () => {
        const p = fakeProcess(pid++);
        procs.push(p);
        return p;
      },
      maxRestarts: 1,
      backoffMs: 0,
      restartWindowMs: 1000,
      now: () => clock,
    });
    await sup.start();
    for (let i = 0; i < 4; i++) {
      // One crash per window: never more than one counts, so it always restarts.
      const started = once(sup.onDidStart);
      clock += 5000;
      procs.at(-1)!.crash(1);
      await started;
      assert.equal(sup.recentCrashes, 1);
    }
    assert.equal(procs.length, 5);
    // A second crash within the window of the last one: one too many.
    const failed = once(sup.onDidChangeState, (e) => e.state === 'failed');
    clock += 500;
    procs.at(-1)!.crash(1);
    await failed;
    assert.equal(procs.length, 5, 'no restart after giving up');
    assert.equal(sup.state, 'failed');
    await sup.stop();
    assert.equal(sup.state, 'stopped');
  });
});

describe('events', () => {
  it('delivers to every listener, survives a throwing one, and stops after dispose', () => {
    const e = new Emitter<number>();
    const got: number[] = [];
    const errors: unknown[] = [];
    e.event(() => {
      throw new Error('boom');
    });
    const sub = e.event((n) => got.push(n));
    e.fire(1, (err) => errors.push(err));
    sub.dispose();
    e.fire(2, (err) => errors.push(err));
    assert.deepEqual(got, [1]);
    assert.equal(errors.length, 2);
  });

  it('once() resolves with the first matching event', async () => {
    const e = new Emitter<number>();
    const p = once(e.event, (n) => n > 1);
    e.fire(1);
    e.fire(2);
    e.fire(3);
    assert.equal(await p, 2);
  });
});

describe('command availability', () => {
  it('disables start commands in an untrusted workspace, sidecar commands after a give-up', () => {
    assert.equal(unavailability('trust', { trusted: false, sidecarFailed: false }), 'untrusted');
    assert.equal(unavailability('trust+sidecar', { trusted: false, sidecarFailed: true }), 'untrusted', 'trust is reported first');
    assert.equal(unavailability('trust+sidecar', { trusted: true, sidecarFailed: true }), 'sidecar-failed');
    assert.equal(unavailability('sidecar', { trusted: false, sidecarFailed: false }), undefined);
    assert.equal(unavailability('none', { trusted: false, sidecarFailed: true }), undefined);
  });

  it('guards every command that starts computation with workspace trust', () => {
    for (const id of ['peftLab.fineTune', 'peftLab.scoreLayers', 'peftLab.compareVariants', 'peftLab.runs.resume'] as const) {
      assert.ok(COMMAND_NEEDS[id].startsWith('trust'), id);
    }
    // Viewing stays available in Restricted Mode.
    for (const id of ['peftLab.runs.openDashboard', 'peftLab.runs.refresh', 'peftLab.runs.compareSelected', 'peftLab.restartSidecar'] as const) {
      assert.equal(COMMAND_NEEDS[id], 'none', id);
    }
  });
});

describe('progress notification', () => {
  it('leads with the count and the loss, unless the message says them already (training)', () => {
    assert.equal(progressMessage({ id: 'j', done: 3, total: 8, message: 'fisher: batch 3', metrics: { loss: 2.5 } }), '3/8 · loss 2.5000 · fisher: batch 3');
    assert.equal(progressMessage({ id: 'j', done: 99, total: 600, message: 'step 99/600 · loss 1.8562 · lr 1.00e-3 · ETA 10s', metrics: { loss: 1.8562 } }), 'step 99/600 · loss 1.8562 · lr 1.00e-3 · ETA 10s');
    assert.equal(progressMessage({ id: 'j', done: 1, total: 0 }), '1');
    assert.equal(progressMessage({ id: 'j', done: 2, total: 4, metrics: { loss: Number.NaN } }), '2/4');
  });
});

describe('status bar', () => {
  const backend = { name: 'webgpu' as const, device: 'NVIDIA', skipped: [] };

  it('shows the backend by the name people know, and jobs', () => {
    assert.equal(statusBarView({ state: 'running', backend, jobs: 0 }).text, '$(chip) PEFT: WebGPU');
    assert.equal(statusBarView({ state: 'running', backend: { ...backend, name: 'tensorflow-gpu' }, jobs: 1, progress: { done: 3, total: 10 } }).text, '$(pulse) PEFT: CUDA · 3/10');
    assert.equal(statusBarView({ state: 'running', backend: { ...backend, name: 'wasm' }, jobs: 2 }).text, '$(pulse) PEFT: wasm · 2 jobs');
    assert.equal(statusBarView({ state: 'running', jobs: 0 }).text, '$(chip) PEFT: …');
  });

  it('shows each state, in the error colour after crashes', () => {
    assert.equal(statusBarView({ state: 'stopped', jobs: 0 }).error, false);
    assert.match(statusBarView({ state: 'starting', jobs: 0 }).text, /sync~spin/);
    const restarting = statusBarView({ state: 'restarting', jobs: 0, lastError: 'exited with signal SIGKILL' });
    assert.equal(restarting.error, true);
    assert.match(restarting.tooltip, /SIGKILL/);
    const failed = statusBarView({ state: 'failed', jobs: 0 });
    assert.equal(failed.error, true);
    assert.match(failed.tooltip, /Click to restart/);
  });
});

describe('stopping or restarting under running jobs', () => {
  it('asks the same question before a stop and a restart, only when jobs run', () => {
    assert.equal(cancelJobsWarning(0, 'restart'), undefined);
    assert.equal(cancelJobsWarning(1, 'stop'), 'PEFT Lab: 1 job is running; stopping the sidecar cancels it.');
    assert.equal(cancelJobsWarning(2, 'restart'), 'PEFT Lab: 2 jobs are running; restarting the sidecar cancels them.');
  });

  it('says in the settings prompt what a restart would cancel', () => {
    assert.equal(settingsRestartPrompt(0), 'PEFT Lab: restart the sidecar to apply the new settings?');
    assert.match(settingsRestartPrompt(3), /3 jobs are running: restarting cancels them/);
  });
});
