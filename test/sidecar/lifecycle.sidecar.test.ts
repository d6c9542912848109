/**
 * The extension's sidecar supervisor (src/extension/model/supervisor.ts) against real child
 * processes: tiny fake sidecars in test/fixtures/fake-sidecars that speak JSON-RPC with
 * vscode-jsonrpc and crash, fail to start or refuse to stop on demand. The launcher here plays the
 * part the LanguageClient plays in the extension (spawn, `initialize`, `shutdown` + `exit`, kill).
 *
 * Every wait is on an event (a state change, a process exit, a reply), bounded by a timeout that
 * only turns a hang into a failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { resolve } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import { once } from '../../src/extension/model/events';
import { Supervisor, type CrashInfo, type ExitInfo, type SupervisedProcess, type SupervisorOptions, type SupervisorState } from '../../src/extension/model/supervisor';

const CRASH = resolve('test/fixtures/fake-sidecars/crash-server.js');
const HANG = resolve('test/fixtures/fake-sidecars/hang-on-shutdown-server.js');
/** Bounds every wait: only a hang reaches it. */
const WAIT_MS = 20_000;

function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface FakeProcess extends SupervisedProcess {
  readonly conn: MessageConnection;
  readonly child: ChildProcessWithoutNullStreams;
}

/** Spawns `script` with the current `args()`; resolves once it has answered `initialize`. */
function fakeLauncher(script: string, args: () => string[] = () => []) {
  const children: ChildProcessWithoutNullStreams[] = [];
  const launch = async (): Promise<FakeProcess> => {
    const child = spawn(process.execPath, [script, ...args()], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    // A child that dies leaves a closed pipe behind: writes to it must not throw.
    child.stdin.on('error', () => undefined);
    const exited = new Promise<ExitInfo>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const conn = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    conn.onError(() => undefined);
    conn.listen();
    const init = conn.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {} });
    init.catch(() => undefined);
    const first = await Promise.race([init.then(() => 'ready' as const), exited.then(() => 'exited' as const)]);
    if (first === 'exited') {
      conn.dispose();
      const e = await exited;
      throw new Error(`exited during start-up (code ${e.code}, signal ${e.signal})`);
    }
    void exited.then(() => conn.dispose());
    return {
      pid: child.pid,
      exited,
      conn,
      child,
      shutdown: async () => {
        await conn.sendRequest('shutdown');
        await conn.sendNotification('exit');
      },
      kill: () => void child.kill('SIGKILL'),
    };
  };
  return { launch, children };
}

/** A supervisor with its transitions and crashes recorded. */
function supervise(opts: SupervisorOptions<FakeProcess>) {
  const sup = new Supervisor<FakeProcess>(opts);
  const states: SupervisorState[] = [sup.state];
  const crashes: CrashInfo[] = [];
  sup.onDidChangeState(({ state }) => states.push(state));
  sup.onDidCrash((c) => crashes.push(c));
  live.push(sup);
  return { sup, states, crashes };
}

const reached = (sup: Supervisor<FakeProcess>, state: SupervisorState) =>
  within(
    once(sup.onDidChangeState, (e) => e.state === state),
    `state ${state}`,
  );

const live: Supervisor<FakeProcess>[] = [];
const spawned: ChildProcessWithoutNullStreams[][] = [];

afterEach(async () => {
  await Promise.all(live.splice(0).map((s) => s.stop()));
  for (const c of spawned.splice(0).flat()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('sidecar supervisor (real child processes)', () => {
  it('starts: stopped → starting → running, and the process answers', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup, states } = supervise({ launch: f.launch, maxRestarts: 2 });
    const p = await within(sup.start(), 'start');
    assert.deepEqual(states, ['stopped', 'starting', 'running']);
    assert.equal(sup.process, p);
    assert.equal(await p.conn.sendRequest('test/pid'), p.pid);
  });

  it('joins concurrent starts into one launch', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup } = supervise({ launch: f.launch, maxRestarts: 2 });
    const [a, b] = await within(Promise.all([sup.start(), sup.start()]), 'two starts');
    assert.equal(a, b);
    assert.equal(f.children.length, 1);
  });

  it('restarts a crashed process: running → restarting → running, with a new process', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup, states, crashes } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 10 });
    const first = await within(sup.start(), 'start');
    const restarted = within(once(sup.onDidStart), 'the restart');
    await first.conn.sendNotification('test/crash', { code: 7 });
    const second = await restarted;
    assert.deepEqual((await first.exited).code, 7);
    assert.notEqual(second.pid, first.pid);
    assert.deepEqual(states, ['stopped', 'starting', 'running', 'restarting', 'running']);
    assert.equal(crashes.length, 1);
    assert.deepEqual({ pid: crashes[0]!.pid, code: crashes[0]!.code, crashes: crashes[0]!.crashes, willRestart: crashes[0]!.willRestart }, { pid: first.pid, code: 7, crashes: 1, willRestart: true });
    assert.equal(await second.conn.sendRequest('test/pid'), second.pid);
    assert.equal(sup.recentCrashes, 1);
  });

  it('gives up after maxRestarts crashes within the window, and a later start() begins afresh', async () => {
    let args = ['--exit-after-ms', '20'];
    const f = fakeLauncher(CRASH, () => args);
    spawned.push(f.children);
    const { sup, states, crashes } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 5 });
    const failed = reached(sup, 'failed');
    await within(sup.start(), 'start');
    await failed;
    assert.equal(f.children.length, 3, 'the first launch and two restarts');
    assert.deepEqual(
      crashes.map((c) => [c.code, c.crashes, c.willRestart]),
      [
        [4, 1, true],
        [4, 2, true],
        [4, 3, false],
      ],
    );
    assert.deepEqual(crashes.map((c) => c.delayMs), [5, 10, 0], 'exponential backoff');
    assert.deepEqual(states, ['stopped', 'starting', 'running', 'restarting', 'running', 'restarting', 'running', 'failed']);
    assert.equal(sup.process, undefined);
    assert.match(sup.lastError ?? '', /code 4/);

    args = [];
    const p = await within(sup.start(), 'a start after giving up');
    assert.equal(sup.state, 'running');
    assert.equal(sup.recentCrashes, 0, 'the crash count starts over');
    assert.equal(await p.conn.sendRequest('test/pid'), p.pid);
  });

  it('counts a relaunch that fails as a crash', async () => {
    let launches = 0;
    const f = fakeLauncher(CRASH, () => (launches++ === 0 ? [] : ['--fail-start']));
    spawned.push(f.children);
    const { sup, crashes } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 5 });
    const p = await within(sup.start(), 'start');
    const failed = reached(sup, 'failed');
    await p.conn.sendNotification('test/crash');
    await failed;
    assert.equal(f.children.length, 3);
    assert.deepEqual(
      crashes.map((c) => c.willRestart),
      [true, true, false],
    );
    assert.match(sup.lastError ?? '', /exited during start-up \(code 5/);
  });

  it('rejects a start that fails, leaves the state stopped and does not retry', async () => {
    const f = fakeLauncher(CRASH, () => ['--fail-start']);
    spawned.push(f.children);
    const { sup, states, crashes } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 5 });
    await assert.rejects(within(sup.start(), 'start'), /exited during start-up \(code 5/);
    assert.equal(sup.state, 'stopped');
    assert.deepEqual(states, ['stopped', 'starting', 'stopped']);
    assert.equal(crashes.length, 0);
    assert.equal(f.children.length, 1);
  });

  it('stops gracefully: shutdown + exit, code 0, no restart', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup, states, crashes } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 5 });
    const p = await within(sup.start(), 'start');
    const result = await within(sup.stop(), 'stop');
    assert.deepEqual(result, { forced: false, exit: { code: 0, signal: null } });
    assert.deepEqual(await p.exited, { code: 0, signal: null });
    assert.deepEqual(states, ['stopped', 'starting', 'running', 'stopping', 'stopped']);
    assert.equal(crashes.length, 0, 'an exit asked for is not a crash');
    assert.equal(f.children.length, 1);
  });

  it('kills a process that does not stop within the stop timeout', async () => {
    const f = fakeLauncher(HANG);
    spawned.push(f.children);
    const { sup, states, crashes } = supervise({ launch: f.launch, maxRestarts: 2, stopTimeoutMs: 300 });
    const p = await within(sup.start(), 'start');
    const began = Date.now();
    const result = await within(sup.stop(), 'stop');
    const took = Date.now() - began;
    assert.equal(result.forced, true);
    assert.deepEqual(result.exit, { code: null, signal: 'SIGKILL' });
    assert.equal(p.child.signalCode, 'SIGKILL');
    assert.ok(took >= 290, `waited the stop timeout before killing (${took} ms)`);
    assert.deepEqual(states, ['stopped', 'starting', 'running', 'stopping', 'stopped']);
    assert.equal(crashes.length, 0);
  });

  it('cancels a pending restart when stopped during the backoff', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    // A backoff far longer than the test: only stop() can end it.
    const { sup, states } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 600_000, maxBackoffMs: 600_000 });
    const p = await within(sup.start(), 'start');
    const restarting = reached(sup, 'restarting');
    await p.conn.sendNotification('test/crash');
    await restarting;
    const result = await within(sup.stop(), 'stop');
    assert.deepEqual(result, { forced: false, exit: undefined });
    assert.equal(sup.state, 'stopped');
    assert.deepEqual(states.slice(-2), ['restarting', 'stopped']);
    assert.equal(f.children.length, 1, 'no relaunch');
  });

  it('skips the rest of the backoff when start() is called while restarting', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup } = supervise({ launch: f.launch, maxRestarts: 2, backoffMs: 600_000, maxBackoffMs: 600_000 });
    const p = await within(sup.start(), 'start');
    const restarting = reached(sup, 'restarting');
    await p.conn.sendNotification('test/crash');
    await restarting;
    const q = await within(sup.start(), 'start during backoff');
    assert.notEqual(q.pid, p.pid);
    assert.equal(sup.state, 'running');
    assert.equal(f.children.length, 2);
  });

  it('does not keep a process that finished starting after stop() was called', async () => {
    const f = fakeLauncher(CRASH);
    spawned.push(f.children);
    const { sup, states } = supervise({ launch: f.launch, maxRestarts: 2 });
    const starting = sup.start();
    const stopped = sup.stop();
    await assert.rejects(within(starting, 'start'), /stopped while starting/);
    await within(stopped, 'stop');
    assert.equal(sup.state, 'stopped');
    assert.equal(sup.process, undefined);
    const child = f.children[0]!;
    if (child.exitCode === null && child.signalCode === null) await within(new Promise((r) => child.once('exit', r)), 'the unwanted process to exit');
    assert.deepEqual(states, ['stopped', 'starting', 'stopped']);
  });
});
