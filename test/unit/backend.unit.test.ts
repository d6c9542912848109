/** The backend ladder: what 'auto' picks on this machine, named preferences, PEFT_LAB_BACKEND. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { currentBackend, initBackend, nativeThreadCount } from '../../sidecar/src/backend';
import { dawnFlags, dawnSkipReason, type LoaderProbe } from '../../sidecar/src/backend/webgpu/dawn';

const installed = (m: string): boolean => {
  try {
    createRequire(__filename).resolve(m);
    return true;
  } catch {
    return false;
  }
};
// webgpu (Dawn) is an optional dependency that installs everywhere; the native TF.js packages are extras.
const optionalInstalled = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].filter(installed);

describe('initBackend', () => {
  let savedEnv: string | undefined;
  let logs: string[];
  const log = (m: string) => void logs.push(m);
  beforeEach(() => {
    savedEnv = process.env.PEFT_LAB_BACKEND;
    delete process.env.PEFT_LAB_BACKEND;
    logs = [];
  });
  afterEach(() => {
    if (savedEnv === undefined) delete process.env.PEFT_LAB_BACKEND;
    else process.env.PEFT_LAB_BACKEND = savedEnv;
  });

  test("'auto' picks WebGPU on a hardware adapter, else wasm with every skipped rung's reason", { skip: optionalInstalled.length ? `installed: ${optionalInstalled}` : false }, async () => {
    const consoleBefore = [console.log, console.warn, console.info, console.error];
    const info = await initBackend('auto', log);
    assert.deepEqual(currentBackend(), info);
    assert.match(info.skipped[0].reason, /Cannot find module '@tensorflow\/tfjs-node-gpu'/);
    assert.match(info.skipped[1].reason, /Cannot find module '@tensorflow\/tfjs-node'/);
    for (const s of info.skipped) assert.ok(!s.reason.includes('\n'), 'reasons are one line');
    if (info.name === 'webgpu') {
      // A machine with a GPU: never a software rasteriser under 'auto'.
      assert.doesNotMatch(info.device, /software/);
      assert.deepEqual(info.skipped.map((s) => s.name), ['tensorflow-gpu', 'tensorflow']);
      return;
    }
    assert.equal(info.name, 'wasm');
    assert.match(info.device, /^CPU \(WebAssembly( SIMD)?( \+ native AVX2 GEMM)?, \d+ threads?\)$/);
    assert.deepEqual(
      info.skipped.map((s) => s.name),
      ['tensorflow-gpu', 'tensorflow', 'webgpu'],
    );
    // No GPU here: no Vulkan loader, no GPU device node, or Dawn finds no adapter, or only a software one, which 'auto' refuses.
    assert.match(info.skipped[2].reason, /^(no Vulkan loader \(libvulkan\.so\.1\) on this machine.*|no GPU device \(.*\); only a software Vulkan driver could answer|no WebGPU adapter found|only a software adapter \(.+\), slower than the CPU backend)$/);
    assert.equal(tf.getBackend(), 'wasm');
    // The kernel fixes came with it: the gradient of tf.gather works.
    assert.ok(tf.getKernel('UnsortedSegmentSum', 'wasm'));
    const g = tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([1, 1, 3], 'int32'))))(tf.ones([4, 2])).arraySync());
    assert.deepEqual(g, [[0, 0], [2, 2], [0, 0], [1, 1]]);
    // Console output during init went to the log callback, and the console was restored.
    assert.deepEqual([console.log, console.warn, console.info, console.error], consoleBefore);
    assert.ok(logs.some((l) => l.startsWith('using wasm')), logs.join('\n'));
  });

  test("'cpu' initialises the pure-JS backend", async () => {
    const info = await initBackend('cpu', log);
    assert.deepEqual(info, { name: 'cpu', device: 'CPU (JavaScript, 1 thread)', skipped: [] });
    assert.equal(tf.getBackend(), 'cpu');
    assert.deepEqual(currentBackend(), info);
    assert.deepEqual(tf.tidy(() => tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]])).arraySync()), [[11]]);
  });

  test("'wasm' by name", async () => {
    const info = await initBackend('wasm', log);
    assert.equal(info.name, 'wasm');
    assert.deepEqual(info.skipped, []);
    assert.equal(tf.getBackend(), 'wasm');
  });

  for (const name of ['tensorflow-gpu', 'tensorflow'] as const) {
    const pkg = { 'tensorflow-gpu': '@tensorflow/tfjs-node-gpu', tensorflow: '@tensorflow/tfjs-node' }[name];
    test(`'${name}' by name throws a clear error when ${pkg} is missing`, { skip: installed(pkg) ? `${pkg} installed` : false }, async () => {
      await initBackend('cpu', log);
      await assert.rejects(initBackend(name, log), (e: Error) => {
        assert.match(e.message, new RegExp(`^Backend '${name}' is not available: Cannot find module '${pkg.replace('/', '\\/')}'`));
        return true;
      });
      assert.equal(tf.getBackend(), 'cpu', 'the previous backend stays active');
      assert.equal(currentBackend()?.name, 'cpu');
    });
  }

  test("'webgpu' by name throws a clear error when Dawn cannot load; the previous backend stays", async () => {
    await initBackend('cpu', log);
    const saved = process.env.PEFT_LAB_DAWN_NODE;
    process.env.PEFT_LAB_DAWN_NODE = '/nonexistent/dawn.node';
    try {
      await assert.rejects(initBackend('webgpu', log), /^Error: Backend 'webgpu' is not available: Cannot find module '\/nonexistent\/dawn\.node'/);
    } finally {
      if (saved === undefined) delete process.env.PEFT_LAB_DAWN_NODE;
      else process.env.PEFT_LAB_DAWN_NODE = saved;
    }
    assert.equal(tf.getBackend(), 'cpu');
    assert.equal(currentBackend()?.name, 'cpu');
    assert.equal((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu, undefined, 'no navigator.gpu shim left behind');
  });

  test('a wasmDir without the binaries is an error', async () => {
    await assert.rejects(initBackend('wasm', log, { wasmDir: __dirname }), /tfjs-backend-wasm\.wasm not found in/);
  });

  test("PEFT_LAB_BACKEND replaces 'auto' but not a named preference; bad values are ignored", async () => {
    process.env.PEFT_LAB_BACKEND = 'cpu';
    assert.equal((await initBackend('auto', log)).name, 'cpu');
    assert.equal((await initBackend('wasm', log)).name, 'wasm');
    process.env.PEFT_LAB_BACKEND = 'tensorflow-gpu';
    if (!installed('@tensorflow/tfjs-node-gpu')) await assert.rejects(initBackend('auto', log), /Backend 'tensorflow-gpu' is not available/);
    process.env.PEFT_LAB_BACKEND = 'quantum';
    logs = [];
    const info = await initBackend('auto', log);
    assert.ok(logs.some((l) => l.includes('ignoring PEFT_LAB_BACKEND=quantum')), logs.join('\n'));
    if (!optionalInstalled.length) assert.equal(info.name, 'wasm');
  });
});

test('PEFT_LAB_DAWN_FLAGS: comma-separated key=value flags; an item without = continues the previous value', () => {
  assert.deepEqual(dawnFlags({}), []);
  assert.deepEqual(dawnFlags({ PEFT_LAB_DAWN_FLAGS: 'backend=opengl' }), ['backend=opengl']);
  assert.deepEqual(dawnFlags({ PEFT_LAB_DAWN_FLAGS: ' backend=vulkan , enable-dawn-features=allow_unsafe_apis,foo,' }), ['backend=vulkan', 'enable-dawn-features=allow_unsafe_apis,foo']);
});

test("Dawn's robustness stays on (TF.js's matmul reads past B without it) unless PEFT_LAB_WEBGPU_ROBUSTNESS=0, merged into the user's enable-dawn-features", () => {
  const off = { PEFT_LAB_WEBGPU_ROBUSTNESS: '0' };
  assert.deepEqual(dawnFlags({ PEFT_LAB_WEBGPU_ROBUSTNESS: '1' }), []);
  assert.deepEqual(dawnFlags(off), ['enable-dawn-features=disable_robustness']);
  assert.deepEqual(dawnFlags({ ...off, PEFT_LAB_DAWN_FLAGS: 'backend=opengl' }), ['backend=opengl', 'enable-dawn-features=disable_robustness']);
  assert.deepEqual(dawnFlags({ ...off, PEFT_LAB_DAWN_FLAGS: 'enable-dawn-features=allow_unsafe_apis,backend=vulkan' }), ['enable-dawn-features=allow_unsafe_apis,disable_robustness', 'backend=vulkan']);
  assert.deepEqual(dawnFlags({ ...off, PEFT_LAB_DAWN_FLAGS: 'enable-dawn-features=disable_robustness,allow_unsafe_apis' }), ['enable-dawn-features=disable_robustness,allow_unsafe_apis'], 'not twice');
});

test('Dawn is not started on Linux without the Vulkan loader, or without a GPU device unless WebGPU was named; explicit non-Vulkan Dawn backends skip both checks', () => {
  const probe = (over: Partial<LoaderProbe>): LoaderProbe => ({
    platform: 'linux',
    env: {},
    exists: () => false,
    ldCache: () => 'ld.so-1.7.0\0libc.so.6\0/lib/x86_64-linux-gnu/libc.so.6\0',
    list: (dir) => (dir === '/dev' ? ['null', 'zero', 'dri'] : dir === '/dev/dri' ? ['renderD128', 'card0'] : undefined),
    ...over,
  });
  const auto = { allowSoftware: false };
  const skip = (flags: string[], p: LoaderProbe, opts = auto) => dawnSkipReason(flags, opts, p);
  // The loader.
  assert.match(skip([], probe({}))!, /no Vulkan loader \(libvulkan\.so\.1\)/);
  assert.match(skip(['backend=vulkan'], probe({}))!, /no Vulkan loader/);
  assert.match(skip([], probe({}), { allowSoftware: true })!, /no Vulkan loader/, 'named: still nothing Dawn could use');
  assert.equal(skip(['backend=opengl'], probe({})), undefined);
  assert.equal(skip(['backend=null'], probe({})), undefined);
  assert.equal(skip([], probe({ platform: 'darwin' })), undefined);
  const withLoader = { ldCache: () => 'ld.so-1.7.0\0libvulkan.so.1\0/usr/lib/x86_64-linux-gnu/libvulkan.so.1\0' };
  assert.equal(skip([], probe(withLoader)), undefined, 'loader and a render node: let Dawn look');
  assert.equal(skip([], probe({ env: { LD_LIBRARY_PATH: '/opt/a:/opt/vk' }, exists: (p) => p === '/opt/vk/libvulkan.so.1' })), undefined);
  assert.equal(skip([], probe({ ldCache: () => undefined })), undefined, 'no readable cache: let Dawn try');
  // The device nodes (loader present).
  const noGpu = probe({ ...withLoader, list: (dir) => (dir === '/dev' ? ['null', 'zero', 'tty'] : undefined) });
  assert.match(skip([], noGpu)!, /no GPU device \(\/dev\/dri\/renderD\*, \/dev\/nvidiactl or \/dev\/dxg\)/);
  const driWithoutRender = probe({ ...withLoader, list: (dir) => (dir === '/dev' ? ['dri'] : dir === '/dev/dri' ? ['card0'] : undefined) });
  assert.match(skip([], driWithoutRender)!, /no GPU device/);
  assert.equal(skip([], noGpu, { allowSoftware: true }), undefined, 'webgpu named: lavapipe may answer');
  assert.equal(skip(['backend=null'], noGpu), undefined);
  assert.equal(skip([], probe({ ...withLoader, list: (dir) => (dir === '/dev' ? ['nvidia0', 'nvidiactl', 'nvidia-uvm'] : undefined) })), undefined, 'NVIDIA');
  assert.equal(skip([], probe({ ...withLoader, list: (dir) => (dir === '/dev' ? ['dxg'] : undefined) })), undefined, 'WSL');
  assert.equal(skip([], probe({ ...withLoader, list: () => undefined })), undefined, '/dev unreadable: let Dawn try');
});

test('native kernel threads: the request, else PEFT_LAB_THREADS, else every core but one', () => {
  assert.equal(nativeThreadCount(3, { PEFT_LAB_THREADS: '5' }, 8), 3);
  assert.equal(nativeThreadCount(undefined, { PEFT_LAB_THREADS: '5' }, 8), 5);
  assert.equal(nativeThreadCount(undefined, {}, 8), 7);
  assert.equal(nativeThreadCount(undefined, {}, 2), 1, 'two cores: one for the editor');
  assert.equal(nativeThreadCount(undefined, {}, 1), 1);
  assert.equal(nativeThreadCount(undefined, { PEFT_LAB_THREADS: 'x' }, 4), 3, 'a bad value is ignored');
  assert.equal(nativeThreadCount(500, {}, 8), 64, 'capped');
});
