/**
 * Picks and initialises the TF.js compute backend.
 *
 * 'auto' walks a ladder, fastest first, recording why each rung was skipped:
 *   1. tensorflow-gpu  `@tensorflow/tfjs-node-gpu` (libtensorflow + CUDA 11.2/cuDNN 8.1; optional extra)
 *   2. tensorflow      `@tensorflow/tfjs-node` (libtensorflow on the CPU; optional extra)
 *   3. webgpu          `@tensorflow/tfjs-backend-webgpu` (bundled) on Dawn through the `webgpu` npm
 *                      package (optional dependency), with this project's fused WGSL kernels
 *                      (backend/webgpu); a hardware adapter only, see webgpu/dawn.ts
 *   4. wasm            `@tensorflow/tfjs-backend-wasm` (+ this project's kernel fixes), the CPU default;
 *                      with the prebuilt native addon (backend/native: AVX2/FMA GEMM and fused training
 *                      kernels over the wasm heap) where the platform and CPU allow, else pure wasm
 *   5. cpu             `@tensorflow/tfjs-backend-cpu`, pure JavaScript
 * The optional packages are loaded with a run-time `require` (and are external in the esbuild
 * bundle), so they are used when installed beside the sidecar and skipped otherwise.
 * A named preference tries only that backend and throws if it cannot be used.
 *
 * PEFT_LAB_NATIVE=0 keeps the wasm backend off the native kernels; PEFT_LAB_THREADS=N gives them N
 * threads (default: every core but one; `peft-lab bench`: 1).
 *
 * Environment: PEFT_LAB_BACKEND=<tensorflow-gpu|tensorflow|webgpu|wasm|cpu|auto> replaces an
 * 'auto' preference (a named preference from the caller wins), e.g. to force the pure-JS backend
 * in CI or to try WebGPU from the command line.
 *
 * PEFT_LAB_DAWN_FLAGS=<comma-separated Dawn toggles> are passed to the `webgpu` package's
 * `create()`, e.g. `backend=opengl` for Mesa llvmpipe on machines without a GPU (see engine notes),
 * `backend=null` for Dawn's no-op device (host-side timing only).
 *
 * WebGPU measurement knobs (each keeps TF.js's own behaviour for side-by-side timing):
 * PEFT_LAB_WEBGPU_DISPATCH=tfjs (webgpu/dispatch.ts), PEFT_LAB_SAVED_TENSORS=engine
 * (saved-tensors.ts), PEFT_LAB_WEBGPU_TUNE (webgpu/kernels.ts), PEFT_LAB_WEBGPU_SUBMIT_BATCH and
 * PEFT_LAB_WEBGPU_FIRST_SUBMIT (dispatches per submit), PEFT_LAB_WEBGPU_ROBUSTNESS=0 (Dawn's bounds
 * clamping off: faster, unsafe with TF.js's kernels, webgpu/dawn.ts).
 *
 * Nothing may reach stdout (the sidecar's RPC channel): while backends load, console.log/info/
 * warn/debug/error are routed to the `log` callback (or stderr).
 */
import * as tf from '@tensorflow/tfjs-core';
// A named import, not a bare one: the package's "sideEffects" list omits its node bundle, so
// esbuild would drop `import '@tensorflow/tfjs-backend-cpu'` and the cpu backend with it.
import { version_cpu } from '@tensorflow/tfjs-backend-cpu';
import * as tfwasm from '@tensorflow/tfjs-backend-wasm';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { isBackendPreference, type BackendInfo, type BackendName, type BackendPreference } from '../../../src/protocol';
import { loadNativeAddon } from './native/addon';
import { registerNativeKernels } from './native/kernels';
import { installSavedTensorShortcut } from './saved-tensors';
import { registerWasmKernelFixes } from './wasm-kernels';
import { adapterLabel, installDawn } from './webgpu/dawn';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { installDispatchCache } from './webgpu/dispatch';
import { registerWebGpuKernels } from './webgpu/kernels';

export interface InitBackendOptions {
  /** Folder holding tfjs-backend-wasm's .wasm binaries (default: beside the bundle, else the package's dist/). */
  wasmDir?: string;
  /** Requested CPU threads. The wasm backend runs single-threaded under Node (tfjs issue #3830); the
   * native kernels (when loaded) use this many (default: PEFT_LAB_THREADS, else every core but one). */
  threads?: number;
}

type Log = (msg: string) => void;
/** Resolves to the device description; `named` when the caller asked for this backend (not 'auto'). */
type Attempt = (log: Log, opts: InitBackendOptions, named: boolean) => Promise<string>;

const LADDER: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
const WASM_FILE = 'tfjs-backend-wasm.wasm';
/** WebGPU dispatches per queue submit (see the webgpu rung). */
export const WEBGPU_SUBMIT_BATCH = 64;
const WASM_SIMD_FILE = 'tfjs-backend-wasm-simd.wasm';

// A run-time require that esbuild does not follow: optional packages stay external.
const runtimeRequire = createRequire(__filename);

let current: BackendInfo | undefined;

export function currentBackend(): BackendInfo | undefined {
  return current;
}

export async function initBackend(pref: BackendPreference, log?: Log, opts: InitBackendOptions = {}): Promise<BackendInfo> {
  const say: Log = log ?? ((msg) => process.stderr.write(`[backend] ${msg}\n`));
  let wanted: BackendPreference = pref;
  if (pref === 'auto') {
    const env = process.env.PEFT_LAB_BACKEND?.trim();
    if (env) {
      if (isBackendPreference(env)) {
        wanted = env;
        if (env !== 'auto') say(`PEFT_LAB_BACKEND=${env}`);
      } else {
        say(`ignoring PEFT_LAB_BACKEND=${env}: expected one of auto, ${LADDER.join(', ')}`);
      }
    }
  }
  say(`tfjs-core ${tf.version_core}, tfjs-backend-cpu ${version_cpu}, tfjs-backend-wasm ${tfwasm.version_wasm}`);
  const previous = tf.getBackend() ? tf.getBackend() : undefined;
  const skipped: BackendInfo['skipped'] = [];
  for (const name of wanted === 'auto' ? LADDER : [wanted]) {
    try {
      const device = await withConsoleTo(say, () => ATTEMPTS[name](say, opts, wanted !== 'auto'));
      current = { name, device, skipped };
      installSavedTensorShortcut();
      say(`using ${name}: ${device}${skipped.length ? ` (skipped ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')})` : ''}`);
      return current;
    } catch (e) {
      const reason = firstLine(e);
      if (wanted !== 'auto') {
        await restore(previous);
        throw new Error(`Backend '${name}' is not available: ${reason}`);
      }
      skipped.push({ name, reason });
      say(`skipping ${name}: ${reason}`);
    }
  }
  // Unreachable in practice: the pure-JS cpu backend is always bundled.
  await restore(previous);
  throw new Error(`No TF.js backend could be initialised (${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')})`);
}

// ---- the rungs ------------------------------------------------------------------------------------

const ATTEMPTS: Record<BackendName, Attempt> = {
  'tensorflow-gpu': async () => {
    runtimeRequire('@tensorflow/tfjs-node-gpu');
    await setBackendOrThrow('tensorflow');
    return 'GPU (TensorFlow native, CUDA)';
  },
  tensorflow: async () => {
    runtimeRequire('@tensorflow/tfjs-node');
    await setBackendOrThrow('tensorflow');
    return `CPU (TensorFlow native${tfNodeVersion()})`;
  },
  webgpu: async (_log, _opts, named) => {
    // Dawn first: tfjs-backend-webgpu registers itself only if navigator.gpu exists when it loads.
    const dawn = await installDawn({ allowSoftware: named });
    try {
      await import('@tensorflow/tfjs-backend-webgpu');
      await setBackendOrThrow('webgpu');
      // Dispatches recorded per queue submit. TF.js submits every 15; each submit costs the host
      // about a millisecond on Dawn/Vulkan, so a training step of ~600 dispatches spent more time
      // submitting than computing (H100: 143 → 87 ms per step at 64). PEFT_LAB_WEBGPU_SUBMIT_BATCH=N.
      const batch = Number(process.env.PEFT_LAB_WEBGPU_SUBMIT_BATCH);
      tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', Number.isInteger(batch) && batch > 0 ? batch : WEBGPU_SUBMIT_BATCH);
      registerWebGpuKernels();
      installDispatchCache(tf.backend() as WebGPUBackend);
      const label = adapterLabel(dawn.info);
      return `GPU (WebGPU${label ? `: ${label}` : ''}${dawn.software ? ', software adapter' : ''})`;
    } catch (e) {
      dawn.restore();
      throw e;
    }
  },
  wasm: async (log, opts) => {
    // The binary is chosen by SIMD support; multi-threaded builds are never used under Node.
    const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
    const dir = wasmDir(opts.wasmDir, simd ? [WASM_FILE, WASM_SIMD_FILE] : [WASM_FILE]);
    log(`wasm binaries from ${dir}`);
    try {
      tfwasm.setWasmPaths(dir.endsWith(sep) || dir.endsWith('/') ? dir : dir + sep);
    } catch (e) {
      // tfjs-backend-wasm refuses new paths once an initialisation has failed in this process.
      throw new Error(`an earlier wasm initialisation failed in this process (${firstLine(e)})`);
    }
    if (opts.threads && opts.threads > 1) {
      tfwasm.setThreadsCount(opts.threads);
      log(`requested ${opts.threads} threads; TF.js runs the wasm backend single-threaded under Node`);
    }
    registerWasmKernelFixes();
    // The native kernels (AVX2/FMA GEMM and fused training ops over the wasm heap), when a prebuilt
    // addon for this platform is present and the CPU supports it; the wasm kernels stay the fallback.
    const native = loadNativeAddon();
    let nativeLabel = '';
    let nativeThreads = 0;
    if (native.addon) {
      registerNativeKernels(native.addon);
      const threads = (nativeThreads = native.addon.setThreads(nativeThreadCount(opts.threads)));
      nativeLabel = ' + native AVX2 GEMM';
      log(`native kernels from ${native.path} (${threads} thread${threads === 1 ? '' : 's'})`);
    } else {
      log(`native kernels not used: ${native.reason}`);
    }
    await setBackendOrThrow('wasm');
    const threads = nativeThreads || tfwasm.getThreadsCount();
    return `CPU (WebAssembly${simd ? ' SIMD' : ''}${nativeLabel}, ${threads} thread${threads === 1 ? '' : 's'})`;
  },
  cpu: async () => {
    await setBackendOrThrow('cpu');
    // The cpu backend prints a "Hi, looks like you are running TensorFlow.js in Node.js … install
    // our node backend" banner (console.warn) on its first tensor, long after init: pre-empt it.
    const cpu = tf.backend() as unknown as { firstUse?: boolean };
    if (cpu.firstUse) cpu.firstUse = false;
    return 'CPU (JavaScript, 1 thread)';
  },
};

/** The folder with the .wasm files: explicit, else beside the running bundle (the build copies them
 * into dist/ next to sidecar.js and cli.js), else the installed package's dist/. */
function wasmDir(explicit: string | undefined, files: string[]): string {
  const missing = (dir: string) => files.find((f) => !existsSync(join(dir, f)));
  if (explicit) {
    const m = missing(explicit);
    if (m) throw new Error(`${m} not found in ${explicit}`);
    return explicit;
  }
  if (!missing(__dirname)) return __dirname;
  const pkgDist = join(dirname(runtimeRequire.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
  const m = missing(pkgDist);
  if (m) throw new Error(`${m} not found beside the sidecar (${__dirname}) nor in ${pkgDist}`);
  return pkgDist;
}

/** Threads for the native kernels: the caller's request, else PEFT_LAB_THREADS, else every core but
 * one (the editor keeps one; results do not depend on the count, see native/peft_kernels.cc). */
export function nativeThreadCount(requested: number | undefined, env: NodeJS.ProcessEnv = process.env, cores = availableParallelism()): number {
  const fromEnv = Number(env.PEFT_LAB_THREADS);
  const n = requested && requested > 0 ? requested : Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : Math.max(1, cores - 1);
  return Math.min(n, 64);
}

// ---- helpers --------------------------------------------------------------------------------------

async function setBackendOrThrow(name: string): Promise<void> {
  if (!tf.findBackendFactory(name)) throw new Error(`TF.js backend '${name}' is not registered`);
  // tf.setBackend resolves false (after a console.warn, captured by withConsoleTo) when init fails.
  const warnings: string[] = [];
  const ok = await captureWarnings(warnings, () => tf.setBackend(name));
  if (!ok) {
    const detail = warnings.find((w) => !/^Initialization of backend .* failed$/.test(w)) ?? warnings[0];
    throw new Error(`initialising '${name}' failed${detail ? `: ${detail}` : ''}`);
  }
  await tf.ready();
}

/* eslint-disable no-console -- these helpers patch console (temporarily) to keep stdout clean */

/** Collects console.warn lines (as strings) emitted while `f` runs, on top of routing them. */
async function captureWarnings<T>(into: string[], f: () => Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    into.push(firstLine(args.map(String).join(' ')));
    warn(...args);
  };
  try {
    return await f();
  } finally {
    console.warn = warn;
  }
}

const CONSOLE_METHODS = ['log', 'info', 'warn', 'debug', 'error', 'trace'] as const;

/** Runs `f` with console output routed to `log`, so nothing a backend prints while it loads
 * (e.g. tfjs-node's banner, "backend was already registered" warnings) reaches stdout. */
async function withConsoleTo<T>(log: Log, f: () => Promise<T>): Promise<T> {
  const saved = CONSOLE_METHODS.map((m) => console[m]);
  let inside = false; // a log callback that itself uses console must not loop
  for (const m of CONSOLE_METHODS) {
    console[m] = (...args: unknown[]) => {
      const line = `[tfjs ${m}] ${args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ')}`;
      if (inside) return void process.stderr.write(line + '\n');
      inside = true;
      try {
        log(line);
      } finally {
        inside = false;
      }
    };
  }
  try {
    return await f();
  } finally {
    CONSOLE_METHODS.forEach((m, i) => (console[m] = saved[i]));
  }
}

/* eslint-enable no-console */

async function restore(previous: string | undefined): Promise<void> {
  if (previous && tf.getBackend() !== previous && tf.findBackendFactory(previous)) {
    try {
      await tf.setBackend(previous);
    } catch {
      /* keep the original error */
    }
  }
}

function tfNodeVersion(): string {
  try {
    const v = (runtimeRequire('@tensorflow/tfjs-node') as { version?: { 'tfjs-node'?: string } }).version?.['tfjs-node'];
    return v ? `, tfjs-node ${v}` : '';
  } catch {
    return '';
  }
}

function firstLine(e: unknown): string {
  const msg =
    e instanceof Error ? e.message : typeof e === 'object' && e && 'message' in e ? String((e as { message: unknown }).message) : String(e);
  return msg.split('\n')[0].trim() || 'unknown error';
}
