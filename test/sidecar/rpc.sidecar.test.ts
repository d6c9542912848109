/**
 * The real sidecar bundle (dist/sidecar.js) as a child process, driven over JSON-RPC on stdio the
 * way the extension's LanguageClient drives it: initialize/initialized, the protocol's requests,
 * job notifications, shutdown. Every wait is on a message or on process exit, bounded by a timeout
 * that only turns a hang into a failure.
 *
 * PEFT_LAB_TEST_BACKEND picks the backend (default cpu: the same everywhere, and quick to start).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import {
  BACKENDS,
  CancelJob,
  JobEndNote,
  JobProgressNote,
  LogNote,
  Shutdown,
  StartJob,
  Status,
  type JobEnd,
  type JobParams,
  type JobProgress,
  type LogMessage,
  type RequestDef,
} from '../../src/protocol';
import { onNotification, sendRequest, type RpcEndpoint } from '../../sidecar/src/rpc';
import { WASM_ABORT } from '../../sidecar/src/errors';

const BUNDLE = resolve('dist/sidecar.js');
const BACKEND = process.env.PEFT_LAB_TEST_BACKEND || 'cpu';
const VERSION = (JSON.parse(readFileSync(resolve('package.json'), 'utf8')) as { version: string }).version;
/** Bounds every wait; generous because a cold backend start on a loaded CI box can take a while. */
const WAIT_MS = 30_000;

/**
 * Checks the raw stdout bytes independently of the message reader: each frame must be exactly
 * `Content-Length: N\r\n[Content-Type: …\r\n]\r\n` followed by N bytes of a JSON-RPC 2.0 message.
 */
class StdoutFrameChecker {
  frames = 0;
  readonly problems: string[] = [];
  private buf = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const prefix = 'Content-Length: ';
      const head = this.buf.subarray(0, Math.min(this.buf.length, prefix.length)).toString('latin1');
      if (!prefix.startsWith(head)) return this.fail(`not a JSON-RPC frame: ${JSON.stringify(this.buf.toString('utf8', 0, 200))}`);
      const headerEnd = this.buf.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const header = this.buf.subarray(0, headerEnd).toString('latin1');
      const m = /^Content-Length: (\d+)(\r\nContent-Type: [^\r\n]+)?$/.exec(header);
      if (!m) return this.fail(`bad frame header: ${JSON.stringify(header.slice(0, 200))}`);
      const start = headerEnd + 4;
      const end = start + Number(m[1]);
      if (this.buf.length < end) return;
      const body = this.buf.subarray(start, end).toString('utf8');
      this.buf = this.buf.subarray(end);
      try {
        const msg = JSON.parse(body) as { jsonrpc?: unknown };
        if (msg.jsonrpc !== '2.0') this.problems.push(`frame without jsonrpc 2.0: ${body.slice(0, 200)}`);
      } catch {
        this.problems.push(`frame body is not JSON: ${body.slice(0, 200)}`);
      }
      this.frames++;
    }
  }

  /** Bytes received that do not (yet) form a whole frame. */
  get pending(): number {
    return this.buf.length;
  }

  private fail(problem: string): void {
    this.problems.push(problem);
    this.buf = Buffer.alloc(0);
  }
}

type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** One sidecar child with a client connection, recording everything it sends. */
class Sidecar {
  readonly child: ChildProcessWithoutNullStreams;
  readonly conn: MessageConnection;
  readonly stdout = new StdoutFrameChecker();
  readonly progress: (JobProgress & { seq: number })[] = [];
  readonly ends: (JobEnd & { seq: number })[] = [];
  readonly logs: LogMessage[] = [];
  /** Reader/writer errors, unhandled notifications, a connection closed before we asked: all failures. */
  readonly channelProblems: string[] = [];
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  stderr = '';
  private seq = 0;
  private readonly waiters = new Set<() => void>();

  constructor(args: string[]) {
    assert.ok(existsSync(BUNDLE), `${BUNDLE} is missing: run node scripts/build.mjs first`);
    this.child = spawn(process.execPath, [BUNDLE, ...args], { stdio: 'pipe', env: { ...process.env, PEFT_LAB_BACKEND: '' } });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.child.stdout.on('data', (chunk: Buffer) => {
      this.stdout.push(chunk);
      if (this.stdout.problems.length > 0) this.wake();
    });
    this.exited = new Promise((resolveExit) =>
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolveExit(this.exit);
        this.wake();
      }),
    );
    this.conn = createMessageConnection(new StreamMessageReader(this.child.stdout), new StreamMessageWriter(this.child.stdin));
    this.conn.onError(([err]) => this.record(() => this.channelProblems.push(`connection error: ${err.message}`)));
    this.conn.onUnhandledNotification((n) => this.record(() => this.channelProblems.push(`unhandled notification ${n.method}`)));
    const rpc: RpcEndpoint = this.conn;
    onNotification(rpc, JobProgressNote, (p) => this.record(() => this.progress.push({ ...p, seq: this.seq++ })));
    onNotification(rpc, JobEndNote, (e) => this.record(() => this.ends.push({ ...e, seq: this.seq++ })));
    onNotification(rpc, LogNote, (m) => this.record(() => this.logs.push(m)));
    this.conn.listen();
  }

  get rpc(): RpcEndpoint {
    return this.conn;
  }

  async initialize(): Promise<{ capabilities: object }> {
    const init = { processId: process.pid, rootUri: null, capabilities: {} };
    const result = await this.guard('initialize', this.conn.sendRequest<{ capabilities: object }>('initialize', init));
    await this.conn.sendNotification('initialized', {});
    return result;
  }

  /** A typed request that fails fast (instead of hanging) if the channel breaks or the process exits. */
  request<P, R>(def: RequestDef<P, R>, params: P): Promise<R> {
    return this.guard(def.method, sendRequest(this.rpc, def, params));
  }

  start(params: JobParams): Promise<{ id: string }> {
    return this.request(StartJob, params);
  }

  /** `p`, unless the channel breaks, the process exits or WAIT_MS passes first. */
  guard<T>(what: string, p: Promise<T>): Promise<T> {
    let settled = false;
    const settle = () => {
      settled = true;
      this.wake();
    };
    p.then(settle, settle);
    const broken = this.until(`the reply to ${what}`, () => (settled ? true : undefined));
    return Promise.race([p, broken.then(() => p)]);
  }

  /** Resolves with `check()`'s first defined value, re-checked on every message; rejects on exit or timeout. */
  until<T>(what: string, check: () => T | undefined, timeoutMs = WAIT_MS): Promise<T> {
    return new Promise<T>((resolveWait, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${this.diagnostics()}`)), timeoutMs);
      const finish = (err?: Error, value?: T) => {
        clearTimeout(timer);
        this.waiters.delete(poll);
        if (err) reject(err);
        else resolveWait(value as T);
      };
      const poll = () => {
        const value = check();
        if (value !== undefined) finish(undefined, value);
        else if (this.stdout.problems.length > 0 || this.channelProblems.length > 0) {
          finish(new Error(`the channel broke while waiting for ${what}: ${[...this.stdout.problems, ...this.channelProblems].join('; ')}`));
        } else if (this.exit) finish(new Error(`sidecar exited (${JSON.stringify(this.exit)}) while waiting for ${what}${this.diagnostics()}`));
      };
      this.waiters.add(poll);
      poll();
    });
  }

  endOf(id: string): Promise<JobEnd & { seq: number }> {
    return this.until(`the end of ${id}`, () => this.ends.find((e) => e.id === id));
  }

  progressOf(id: string): (JobProgress & { seq: number })[] {
    return this.progress.filter((p) => p.id === id);
  }

  /** Fails the current test if anything but well-formed JSON-RPC reached stdout or the channel broke. */
  assertCleanChannel(): void {
    assert.deepEqual(this.stdout.problems, [], 'stdout carried something other than JSON-RPC frames');
    assert.deepEqual(this.channelProblems, [], 'the JSON-RPC channel reported problems');
    assert.ok(this.stdout.frames > 0, 'no frames seen on stdout');
  }

  diagnostics(): string {
    const logs = this.logs.slice(-20).map((l) => `  [${l.level}] ${l.message}`);
    return `\nrecent sidecar logs:\n${logs.join('\n') || '  (none)'}\nstderr:\n${this.stderr.slice(-2000) || '  (none)'}`;
  }

  kill(): void {
    this.conn.dispose();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private record(push: () => void): void {
    push();
    this.wake();
  }

  private wake(): void {
    for (const poll of [...this.waiters]) poll();
  }
}

/** Sends a StartJob that must be refused: either the request fails or the job ends `failed`. Returns the error text. */
async function expectRefused(sc: Sidecar, params: unknown): Promise<string> {
  let id: string;
  try {
    ({ id } = await sc.request(StartJob, params as JobParams));
  } catch (err) {
    assert.ok(err instanceof ResponseError, `expected a JSON-RPC error response, got ${String(err)}`);
    assert.ok(err.message.length > 0);
    return err.message;
  }
  const end = await sc.endOf(id);
  assert.equal(end.state, 'failed', `job with params ${JSON.stringify(params)} should fail`);
  assert.ok(end.state === 'failed');
  return end.error;
}

describe('sidecar over JSON-RPC (stdio)', { timeout: 4 * WAIT_MS }, () => {
  let sc: Sidecar;

  before(async () => {
    sc = new Sidecar(['--backend', BACKEND]);
    const init = await sc.initialize();
    assert.equal(typeof init.capabilities, 'object', 'initialize returns capabilities');
  });

  after(() => sc?.kill());

  it('reports its version and backend in Status', async () => {
    const status = await sc.request(Status, {});
    assert.equal(status.version, VERSION);
    assert.ok((BACKENDS as readonly string[]).includes(status.backend.name), `backend name ${status.backend.name}`);
    if (BACKEND !== 'auto') assert.equal(status.backend.name, BACKEND, '--backend is honoured');
    assert.ok(status.backend.device.length > 0, 'backend has a device description');
    assert.match(status.tfjs, /^\d+\.\d+\.\d+/);
    assert.equal(status.node, process.version);
    assert.equal(status.pid, sc.child.pid);
    assert.ok(Array.isArray(status.jobs));
    assert.ok(status.memory.rssMb > 0);
    assert.ok(sc.logs.some((l) => l.message.includes(VERSION)), 'startup is logged through LogNote');
  });

  it('streams selftest progress with increasing `done` and ends done with the losses', async () => {
    const steps = 12;
    const { id } = await sc.start({ kind: 'selftest', steps });
    assert.match(id, /\S/);
    const end = await sc.endOf(id);
    assert.equal(end.state, 'done', `selftest ended ${end.state}: ${end.state === 'failed' ? end.error : ''}`);
    assert.ok(end.state === 'done' && end.result.kind === 'selftest');
    assert.equal(end.result.steps, steps);
    assert.equal(end.result.losses.length, steps);
    assert.ok(end.result.losses.every(Number.isFinite), 'losses are finite');
    assert.ok(end.result.losses[steps - 1]! < end.result.losses[0]!, `loss falls: ${end.result.losses.join(', ')}`);

    const progress = sc.progressOf(id);
    assert.ok(progress.length >= steps, `expected ≥ ${steps} progress notes, got ${progress.length}`);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.done > progress[i - 1]!.done, 'done increases');
    assert.ok(progress.every((p) => p.total === steps && Number.isFinite(p.metrics?.loss)), 'each note has total and a loss');
    assert.equal(progress.at(-1)!.done, steps);
    assert.ok(progress.every((p) => p.seq < end.seq), 'no progress after the end note');
    assert.equal(sc.ends.filter((e) => e.id === id).length, 1, 'exactly one end note');
  });

  it('answers Status while a job runs, and cancels that job mid-way', async () => {
    const steps = 10_000;
    const { id } = await sc.start({ kind: 'selftest', steps, delayMs: 20 });
    await sc.until('3 progress notes', () => (sc.progressOf(id).length >= 3 ? true : undefined));

    const during = await sc.request(Status, {});
    assert.equal(during.jobs.find((j) => j.id === id)?.state, 'running', 'Status answered while the job runs');
    assert.equal(sc.ends.find((e) => e.id === id), undefined);

    assert.deepEqual(await sc.request(CancelJob, { id }), { cancelled: true });
    const end = await sc.endOf(id);
    assert.equal(end.state, 'cancelled');
    assert.ok(sc.progressOf(id).length < steps, 'stopped before the last step');
    assert.ok(sc.progressOf(id).every((p) => p.seq < end.seq), 'no progress after the end note');

    assert.deepEqual(await sc.request(CancelJob, { id }), { cancelled: false }, 'an ended job cannot be cancelled again');
    assert.deepEqual(await sc.request(CancelJob, { id: 'no-such-job' }), { cancelled: false });
    const afterwards = await sc.request(Status, {});
    assert.equal(afterwards.jobs.find((j) => j.id === id)?.state, 'cancelled');
  });

  it('refuses bad jobs without dying', async () => {
    for (const params of [
      { kind: 'no-such-kind' },
      { kind: 'selftest', steps: 'many' },
      { kind: 'selftest', steps: -1 },
      { kind: 'selftest', steps: 2, delayMs: 'soon' },
      { kind: 'train' },
      { steps: 3 },
      'not an object',
    ]) {
      const error = await expectRefused(sc, params);
      assert.ok(!error.includes('\n'), `error is one line: ${error}`);
    }
    // Valid params, but the runner fails (no such model): a failed end with a one-line error.
    const { id } = await sc.start({ kind: 'inspect', model: resolve('test/no-such-model-dir') });
    const end = await sc.endOf(id);
    assert.equal(end.state, 'failed');
    assert.ok(end.state === 'failed' && end.error.length > 0 && !end.error.includes('\n'), 'one-line error');
    await assert.rejects(sc.request(CancelJob, {} as { id: string }), ResponseError);

    // Still alive and still working.
    const status = await sc.request(Status, {});
    assert.equal(status.pid, sc.child.pid);
    const ok = await sc.start({ kind: 'selftest', steps: 2 });
    assert.equal((await sc.endOf(ok.id)).state, 'done');
    assert.equal(sc.exit, undefined);
  });

  it('wrote nothing but JSON-RPC to stdout', () => {
    sc.assertCleanChannel();
    assert.ok(!sc.logs.some((l) => l.level === 'error'), `error logs: ${sc.diagnostics()}`);
  });

  it('Shutdown cancels running jobs and exits with code 0', async () => {
    const { id } = await sc.start({ kind: 'selftest', steps: 10_000, delayMs: 20 });
    await sc.until('a progress note', () => (sc.progressOf(id).length > 0 ? true : undefined));
    assert.deepEqual(await sc.request(Shutdown, {}), { ok: true });
    assert.equal((await sc.endOf(id)).state, 'cancelled', 'the running job was reported cancelled');
    const exit = await sc.until('exit', () => sc.exit, 5000);
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(sc.stdout.pending, 0, 'no partial frame left on stdout');
    sc.assertCleanChannel();
  });
});

describe('sidecar lifecycle as a LanguageClient drives it', { timeout: 2 * WAIT_MS }, () => {
  let sc: Sidecar;
  after(() => sc?.kill());

  it('LSP shutdown + exit ends the process with code 0', async () => {
    sc = new Sidecar(['--backend', BACKEND, '--stdio']);
    const init = await sc.initialize();
    assert.equal(typeof init.capabilities, 'object');
    const status = await sc.request(Status, {});
    assert.ok(status.backend.name);
    await sc.guard('shutdown', sc.conn.sendRequest('shutdown'));
    await sc.conn.sendNotification('exit');
    const exit = await sc.until('exit', () => sc.exit, 5000);
    assert.deepEqual(exit, { code: 0, signal: null });
    sc.assertCleanChannel();
  });
});

describe('a backend abort', { timeout: 2 * WAIT_MS }, () => {
  let sc: Sidecar;
  after(() => sc?.kill());

  it('fails its job with what happened, then the sidecar exits (70) so that a fresh one starts; other failures keep it', async () => {
    sc = new Sidecar(['--backend', BACKEND]);
    await sc.initialize();
    const other = await sc.start({ kind: 'selftest', steps: 1, failWith: 'boom' });
    const otherEnd = await sc.endOf(other.id);
    assert.ok(otherEnd.state === 'failed' && otherEnd.error === 'boom');
    assert.ok((await sc.request(Status, {})).pid > 0, 'an ordinary failure leaves the sidecar serving');
    const { id } = await sc.start({ kind: 'selftest', steps: 1, failWith: 'Aborted(). Build with -sASSERTIONS for more info.' });
    const end = await sc.endOf(id);
    assert.ok(end.state === 'failed');
    assert.equal(end.error, WASM_ABORT, 'the job end arrives before the exit');
    const exit = await sc.until('exit', () => sc.exit, 5000);
    assert.deepEqual(exit, { code: 70, signal: null });
  });
});
