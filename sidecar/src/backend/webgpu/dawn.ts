/**
 * WebGPU for Node through Dawn (the `webgpu` npm package, a prebuilt `dawn.node` per platform):
 * loads it, picks an adapter and exposes it as `navigator.gpu`, which is what
 * `@tensorflow/tfjs-backend-webgpu` looks for when it is first loaded.
 *
 * Adapter policy:
 * - the high-performance adapter Dawn offers (Vulkan on Linux, Metal on macOS, D3D12 on Windows);
 * - software rasterisers (llvmpipe, lavapipe, SwiftShader) are slower than the CPU backend, so 'auto'
 *   never picks them; asking for `webgpu` by name accepts them (CI tests the WGSL path that way);
 * - with Dawn's OpenGL backend (`PEFT_LAB_DAWN_FLAGS=backend=opengl`, Mesa llvmpipe through EGL on
 *   machines without a GPU) only a compatibility-mode adapter exists: it is asked for with
 *   featureLevel 'compatibility', also for the backend's own request.
 *
 * PEFT_LAB_DAWN_NODE=<path to dawn.node> loads that binary instead of the one beside the bundle or
 * the installed package's (the GPU benchmark machine carries just the one file).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export interface GPUAdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
}
export interface GPUAdapterLike {
  info?: GPUAdapterInfoLike;
  isFallbackAdapter?: boolean;
  requestAdapterInfo?(): Promise<GPUAdapterInfoLike>;
}
interface GPULike {
  requestAdapter(options?: Record<string, unknown>): Promise<GPUAdapterLike | null>;
  getPreferredCanvasFormat?(): string;
  wgslLanguageFeatures?: unknown;
}
interface DawnModule {
  create(flags: string[]): GPULike;
  globals: Record<string, unknown>;
}

const runtimeRequire = createRequire(__filename);

/**
 * Dawn's flags, as `create()`'s list. PEFT_LAB_DAWN_FLAGS: comma-separated `key=value` items, where
 * an item without `=` continues the previous value (`enable-dawn-features=allow_unsafe_apis,foo` is
 * one flag with two features).
 *
 * PEFT_LAB_WEBGPU_ROBUSTNESS=0 adds Dawn's `disable_robustness` feature (into the
 * `enable-dawn-features` flag), for measurements only. Robustness clamps every storage-buffer access of
 * every shader; without it the gpu bench case's step on the H100 was 10–17% faster (two runs on
 * 2026-11-27, off vs on: LoRA 41.2 vs 47.8 and 40.0 vs 44.1 ms; full 55.9 vs 67.5 and 56.4 vs 61.8 ms).
 * It stays on by default because TF.js's kernels rely on it: its packed matmul reads B without bounds
 * checks (`mm_readB`), past the end of B whenever K or N is not a multiple of its 32-wide tiles, which
 * without robustness is undefined behaviour (NaN from 0 × garbage, or a lost device).
 */
export function dawnFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const flags: string[] = [];
  for (const item of (env.PEFT_LAB_DAWN_FLAGS ?? '').split(',').map((f) => f.trim())) {
    if (!item) continue;
    if (!item.includes('=') && flags.length) flags[flags.length - 1] += `,${item}`;
    else flags.push(item);
  }
  if (env.PEFT_LAB_WEBGPU_ROBUSTNESS !== '0') return flags;
  const features = flags.findIndex((f) => f.startsWith('enable-dawn-features='));
  if (features < 0) flags.push('enable-dawn-features=disable_robustness');
  else if (!flags[features]!.split(/[=,]/).includes('disable_robustness')) flags[features] += ',disable_robustness';
  return flags;
}

/** dawn.node: PEFT_LAB_DAWN_NODE, else the copy the build puts beside the bundle
 * (dist/dawn/<platform>-<arch>/, what the .vsix ships), else the installed `webgpu` package. */
function loadDawn(): DawnModule {
  const explicit = process.env.PEFT_LAB_DAWN_NODE?.trim();
  if (explicit) return runtimeRequire(explicit) as DawnModule;
  const target = process.platform === 'darwin' ? 'darwin-universal' : `${process.platform}-${process.arch}`;
  const beside = join(__dirname, 'dawn', target, 'dawn.node');
  if (existsSync(beside)) return runtimeRequire(beside) as DawnModule;
  // The package is an ES module; Node ≥ 20.19 `require`s it.
  return runtimeRequire('webgpu') as DawnModule;
}

/**
 * Linux machines where Dawn could only print warnings and find no (hardware) adapter; the demo and the
 * sidecar's log would carry those warnings on every start of a CPU-only machine. Two checks, where
 * the answer is certain without starting Dawn:
 * - no Vulkan loader: libvulkan.so.1 neither on LD_LIBRARY_PATH nor in ld.so's cache
 *   (/etc/ld.so.cache holds the library names as strings);
 * - no GPU device node (/dev/dri/renderD*, /dev/nvidiactl, WSL's /dev/dxg): the loader is there
 *   (Mesa's Vulkan drivers are installed on many desktops and VMs without a GPU) but only a software
 *   driver (lavapipe) could answer, which 'auto' refuses anyway. Not checked when a WebGPU backend
 *   was asked for by name (a software adapter is allowed then).
 * Neither is checked with an explicit non-Vulkan Dawn backend (`backend=opengl`, `backend=null`), nor
 * where the cache or /dev cannot be read.
 */
export interface LoaderProbe {
  platform: string;
  env: NodeJS.ProcessEnv;
  exists(path: string): boolean;
  /** The dynamic loader's cache (its library names), undefined when it cannot be read. */
  ldCache(): string | undefined;
  /** A directory's entries, undefined when it cannot be read. */
  list(dir: string): string[] | undefined;
}
const HOST_PROBE: LoaderProbe = { platform: process.platform, env: process.env, exists: (p) => existsSync(p), ldCache: () => readLdCache(), list: listDir };

/** Why Dawn need not start on this machine (see LoaderProbe), or undefined to let it try. */
export function dawnSkipReason(flags: string[], opts: { allowSoftware: boolean }, probe: LoaderProbe = HOST_PROBE): string | undefined {
  if (probe.platform !== 'linux') return undefined;
  const backend = flags.find((f) => f.startsWith('backend='));
  if (backend && backend !== 'backend=vulkan') return undefined;
  if (vulkanLoaderMissing(probe)) return 'no Vulkan loader (libvulkan.so.1) on this machine, the only GPU API Dawn uses on Linux';
  if (!opts.allowSoftware && gpuNodesMissing(probe)) return 'no GPU device (/dev/dri/renderD*, /dev/nvidiactl or /dev/dxg); only a software Vulkan driver could answer';
  return undefined;
}

function vulkanLoaderMissing(probe: LoaderProbe): boolean {
  const dirs = (probe.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  if (dirs.some((d) => probe.exists(join(d, 'libvulkan.so.1')))) return false;
  const cache = probe.ldCache();
  return cache !== undefined && !cache.includes('libvulkan.so.1');
}

function gpuNodesMissing(probe: LoaderProbe): boolean {
  const dev = probe.list('/dev');
  if (dev === undefined) return false;
  if (dev.includes('nvidiactl') || dev.includes('dxg')) return false;
  const dri = dev.includes('dri') ? probe.list('/dev/dri') : [];
  if (dri === undefined) return false;
  return !dri.some((f) => /^renderD\d+$/.test(f));
}

function listDir(dir: string): string[] | undefined {
  try {
    return readdirSync(dir);
  } catch {
    return undefined;
  }
}

function readLdCache(): string | undefined {
  try {
    return readFileSync('/etc/ld.so.cache', 'latin1');
  } catch {
    return undefined;
  }
}

/** A software rasteriser: correct, but slower than the CPU backend. */
export function isSoftwareAdapter(adapter: GPUAdapterLike, info: GPUAdapterInfoLike | undefined): boolean {
  if (adapter.isFallbackAdapter) return true;
  const text = [info?.vendor, info?.architecture, info?.device, info?.description].join(' ');
  return /llvmpipe|lavapipe|softpipe|swiftshader|software/i.test(text);
}

export function adapterLabel(info: GPUAdapterInfoLike | undefined): string {
  return [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ');
}

export interface DawnGpu {
  adapter: GPUAdapterLike;
  info: GPUAdapterInfoLike | undefined;
  software: boolean;
  /** Undo the navigator shim (when the backend could not be used). */
  restore(): void;
}

/**
 * Loads Dawn, finds an adapter and installs `navigator.gpu` for tfjs-backend-webgpu.
 * Throws (with a one-line reason) when Dawn is missing or no usable adapter exists.
 */
export async function installDawn(opts: { allowSoftware: boolean }): Promise<DawnGpu> {
  const dawn = loadDawn();
  const flags = dawnFlags();
  const skip = dawnSkipReason(flags, opts);
  if (skip) throw new Error(skip);
  const g = globalThis as Record<string, unknown> & { navigator?: { gpu?: GPULike } };
  const saved = Object.getOwnPropertyDescriptor(g, 'navigator');
  const gpu = dawn.create(flags);
  const compat = flags.some((f) => /^backend=(opengl|opengles)$/.test(f));
  const extra = compat ? { featureLevel: 'compatibility' } : {};
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance', ...extra });
  if (!adapter) throw new Error(`no WebGPU adapter found${flags.length ? ` (Dawn flags: ${flags.join(',')})` : ''}`);
  const info = adapter.info ?? (await adapter.requestAdapterInfo?.());
  const software = isSoftwareAdapter(adapter, info);
  if (software && !opts.allowSoftware) throw new Error(`only a software adapter (${adapterLabel(info) || 'unknown'}), slower than the CPU backend`);
  Object.assign(g, dawn.globals);
  const shim: GPULike = {
    requestAdapter: (o?: Record<string, unknown>) => gpu.requestAdapter({ ...o, ...extra }),
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat?.() ?? 'rgba8unorm',
    wgslLanguageFeatures: gpu.wgslLanguageFeatures,
  };
  Object.defineProperty(g, 'navigator', { value: { ...(g.navigator ?? {}), gpu: shim }, configurable: true, writable: true });
  return {
    adapter,
    info,
    software,
    restore() {
      if (saved) Object.defineProperty(g, 'navigator', saved);
      else delete g.navigator;
    },
  };
}
