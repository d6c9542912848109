/**
 * The sidecar: a TF.js compute process that speaks JSON-RPC (LSP base protocol) on stdio.
 *
 * stdout is the RPC channel and nothing else: the connection writes through its own handle on the
 * real stdout, while `process.stdout.write` and `console.*` are redirected to `LogNote`
 * notifications before anything else runs. Long work runs as jobs (see `JobManager`), which yield
 * to the event loop, so `Status` and `CancelJob` are answered while a job runs.
 *
 * Usage: node dist/sidecar.js [--backend auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu] [--max-jobs N]
 *        (or PEFT_LAB_BACKEND=...; the flag wins). --max-jobs: jobs running at once (default 1; the
 *        rest queue); parallel jobs interleave step by step on the one backend, and a run folder is
 *        never shared (train/run-lock.ts). Speaks LSP `initialize`/`shutdown`/`exit`, so a
 *        vscode-languageclient `LanguageClient` can drive it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Writable } from 'node:stream';
import { format } from 'node:util';
import { createConnection, ErrorCodes, ProposedFeatures, ResponseError } from 'vscode-languageserver/node';
import { version } from '../../package.json';
import {
  CancelJob,
  isBackendPreference,
  JobEndNote,
  JobProgressNote,
  LogNote,
  Shutdown,
  StartJob,
  Status,
  type BackendInfo,
  type BackendPreference,
  type JobParams,
  type LogMessage,
} from '../../src/protocol';
import { initBackend } from './backend';
import { throwIfCancelled } from './jobs/context';
import { jobParamsProblem, JobManager, oneLine } from './jobs/manager';
import { runJob } from './jobs/runners';
import { onRequest, sendNotification } from './rpc';
import { WASM_ABORT } from './errors';

// ---- stdout belongs to the connection ------------------------------------------------------

const writeStdout = process.stdout.write.bind(process.stdout) as (chunk: Uint8Array, cb: (err?: Error | null) => void) => boolean;
/** The only writer of the real stdout. */
const rpcOutput = new Writable({
  write(chunk: Buffer, _encoding, callback) {
    writeStdout(chunk, (err) => callback(err ?? null));
  },
});

/** Log lines produced before the connection listens, sent once it does. */
let pendingLogs: LogMessage[] | undefined = [];

function log(level: LogMessage['level'], message: string): void {
  if (pendingLogs) {
    if (pendingLogs.length < 1000) pendingLogs.push({ level, message });
    return;
  }
  try {
    sendNotification(connection, LogNote, { level, message }).catch(() => undefined);
  } catch {
    // Connection closed or disposed: the client is gone, so is the place to log to.
  }
}

process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
  const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  if (text.trim() !== '') log('info', text.replace(/\r?\n$/, ''));
  const cb = rest.find((r): r is () => void => typeof r === 'function');
  if (cb) process.nextTick(cb);
  return true;
}) as typeof process.stdout.write;

const toLog =
  (level: LogMessage['level']) =>
  (...args: unknown[]): void =>
    log(level, format(...args));
/* eslint-disable no-console -- the safety net itself: console output becomes LogNote lines */
console.log = toLog('info');
console.info = toLog('info');
console.debug = toLog('debug');
console.trace = toLog('debug');
console.warn = toLog('warn');
console.error = toLog('error');
/* eslint-enable no-console */

process.on('uncaughtException', (err) => {
  log('error', `uncaught exception: ${err instanceof Error && err.stack ? err.stack : oneLine(err)}`);
  // A broken RPC pipe means the client is gone; nothing useful can happen after that.
  if (isStreamGone(err)) process.exit(1);
});
process.on('unhandledRejection', (reason) => log('error', `unhandled rejection: ${oneLine(reason)}`));
process.stdout.on('error', (err) => {
  if (isStreamGone(err)) process.exit(1);
});

function isStreamGone(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_WRITE_AFTER_END';
}

// ---- connection ----------------------------------------------------------------------------

const connection = createConnection(ProposedFeatures.all, process.stdin, rpcOutput);

const backendPreference = readBackendPreference(process.argv.slice(2), process.env.PEFT_LAB_BACKEND);
const maxJobs = readMaxJobs(process.argv.slice(2));
let backendPromise: Promise<BackendInfo> | undefined;

/** Initialises the backend once; every request that needs it awaits the same promise. */
function backendReady(): Promise<BackendInfo> {
  if (!backendPromise) {
    // initBackend logs the backend it picked and why it skipped others.
    backendPromise = initBackend(backendPreference, (m) => log('info', m)).catch(
      (err: unknown) => {
        const message = `backend '${backendPreference}' failed to initialise: ${oneLine(err)}`;
        log('error', message);
        throw new Error(message);
      },
    );
    backendPromise.catch(() => undefined);
  }
  return backendPromise;
}

const jobs = new JobManager(
  async (params: JobParams, ctx) => {
    await backendReady();
    throwIfCancelled(ctx.signal);
    return runJob(params, ctx);
  },
  {
    progress: (p) => void sendNotification(connection, JobProgressNote, p).catch(() => undefined),
    end: (e) => {
      log(e.state === 'failed' ? 'warn' : 'debug', `job ${e.id} ${e.state}${e.state === 'failed' ? `: ${e.error}` : ''}`);
      void sendNotification(connection, JobEndNote, e).catch(() => undefined);
      // After an abort the wasm module is dead: every later job would fail. The job's end is sent;
      // exit, and the extension's supervisor starts a fresh sidecar.
      if (e.state === 'failed' && e.error === WASM_ABORT) {
        log('error', 'the WebAssembly backend aborted: the sidecar exits so that a fresh one starts');
        void exitAfterFlush(EXIT_BACKEND_ABORTED);
      }
    },
    log,
  },
  { concurrency: maxJobs },
);

let shuttingDown = false;

/** The sidecar's exit code after its backend aborted (EX_SOFTWARE). */
const EXIT_BACKEND_ABORTED = 70;

connection.onInitialize(() => {
  // Start the backend now so the first Status / job does not pay for it; not awaited.
  void backendReady().catch(() => undefined);
  return { capabilities: {}, serverInfo: { name: 'peft-lab-sidecar', version } };
});

/** LSP `shutdown` (LanguageClient.stop): stop jobs; the library exits on the `exit` notification that follows. */
connection.onShutdown(async () => {
  shuttingDown = true;
  await jobs.cancelAll();
});

onRequest(connection, Status, async () => {
  const backend = await backendReady().catch((err: unknown) => {
    throw new ResponseError(ErrorCodes.InternalError, oneLine(err));
  });
  const memory = tf.memory();
  return {
    version,
    node: process.version,
    tfjs: tf.version_core,
    backend,
    pid: process.pid,
    jobs: jobs.list(),
    memory: { rssMb: Math.round(process.memoryUsage().rss / 2 ** 20), numTensors: memory.numTensors, numBytes: memory.numBytes },
  };
});

onRequest(connection, StartJob, (params) => {
  if (shuttingDown) throw new ResponseError(ErrorCodes.InvalidRequest, 'the sidecar is shutting down');
  const problem = jobParamsProblem(params);
  if (problem) throw new ResponseError(ErrorCodes.InvalidParams, problem);
  const id = jobs.start(params);
  log('debug', `job ${id} started: ${params.kind}`);
  return { id };
});

onRequest(connection, CancelJob, (params) => {
  const id: unknown = (params as { id?: unknown } | undefined)?.id;
  if (typeof id !== 'string') throw new ResponseError(ErrorCodes.InvalidParams, "CancelJob: 'id' must be a string");
  return { cancelled: jobs.cancel(id) };
});

onRequest(connection, Shutdown, async () => {
  shuttingDown = true;
  await jobs.cancelAll();
  // After this handler returns, the reply is queued on the connection's (FIFO) writer.
  setImmediate(() => void exitAfterFlush(0));
  return { ok: true as const };
});

/** Exits once everything written so far (the Shutdown reply included) has reached the pipe. */
async function exitAfterFlush(code: number): Promise<never> {
  setTimeout(() => process.exit(code), 2000).unref();
  try {
    // One more turn so the reply is surely queued, then a note behind it: once that is written, so is the reply.
    await new Promise<void>((resolve) => setImmediate(resolve));
    await sendNotification(connection, LogNote, { level: 'info', message: 'sidecar exiting' });
    await new Promise<void>((resolve) => rpcOutput.write('', () => resolve()));
  } catch {
    // Client already gone.
  }
  process.exit(code);
}

connection.listen();

const early = pendingLogs;
pendingLogs = undefined;
for (const m of early) log(m.level, m.message);
log('info', `PEFT Lab sidecar ${version} (pid ${process.pid}, node ${process.version}, tfjs ${tf.version_core}), backend preference ${backendPreference}, max jobs ${maxJobs}`);

/** `--max-jobs N` (or `--max-jobs=N`): a positive integer, default 1. */
function readMaxJobs(argv: string[]): number {
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--max-jobs') value = argv[++i];
    else if (arg.startsWith('--max-jobs=')) value = arg.slice('--max-jobs='.length);
  }
  if (value === undefined) return 1;
  const n = Number(value);
  if (Number.isInteger(n) && n >= 1) return n;
  log('warn', `--max-jobs must be a positive integer, got '${value}': using 1`);
  return 1;
}

function readBackendPreference(argv: string[], env: string | undefined): BackendPreference {
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--backend') value = argv[++i];
    else if (arg.startsWith('--backend=')) value = arg.slice('--backend='.length);
  }
  if (value !== undefined) {
    if (isBackendPreference(value)) return value;
    log('warn', `unknown --backend '${value}', using 'auto'`);
    return 'auto';
  }
  // An invalid PEFT_LAB_BACKEND is reported by initBackend, which also reads it for 'auto'.
  const fromEnv = env?.trim();
  return fromEnv && isBackendPreference(fromEnv) ? fromEnv : 'auto';
}
