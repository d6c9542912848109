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
import { existsSync, readFileSync } from 'node:fs';
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

/** PEFT_LAB_DAWN_FLAGS as `create()`'s list: comma-separated `key=value` items, where an item
 * without `=` continues the previous value (`enable-dawn-features=allow_unsafe_apis,disable_robustness`
 * is one flag with two features). */
export function dawnFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const flags: string[] = [];
  for (const item of (env.PEFT_LAB_DAWN_FLAGS ?? '').split(',').map((f) => f.trim())) {
    if (!item) continue;
    if (!item.includes('=') && flags.length) flags[flags.length - 1] += `,${item}`;
    else flags.push(item);
  }
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
 * Linux without the Vulkan loader: Dawn could only print a warning and find no adapter (the demo and
 * the sidecar's log would carry that warning on every start of a CPU-only machine). Checked where the
 * dynamic loader looks: LD_LIBRARY_PATH, then ld.so's cache (/etc/ld.so.cache holds the library
 * names as strings). Not checked with an explicit Dawn backend flag (`backend=opengl`,
 * `backend=null`), nor when the cache cannot be read.
 */
export interface LoaderProbe {
  platform: string;
  env: NodeJS.ProcessEnv;
  exists(path: string): boolean;
  /** The dynamic loader's cache (its library names), undefined when it cannot be read. */
  ldCache(): string | undefined;
}
const HOST_PROBE: LoaderProbe = { platform: process.platform, env: process.env, exists: (p) => existsSync(p), ldCache: () => readLdCache() };

export function vulkanLoaderMissing(flags: string[], probe: LoaderProbe = HOST_PROBE): boolean {
  if (probe.platform !== 'linux') return false;
  const backend = flags.find((f) => f.startsWith('backend='));
  if (backend && backend !== 'backend=vulkan') return false;
  const dirs = (probe.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  if (dirs.some((d) => probe.exists(join(d, 'libvulkan.so.1')))) return false;
  const cache = probe.ldCache();
  return cache !== undefined && !cache.includes('libvulkan.so.1');
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
  if (vulkanLoaderMissing(flags)) throw new Error('no Vulkan loader (libvulkan.so.1) on this machine, the only GPU API Dawn uses on Linux');
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
