// Builds the optional native kernels (native/peft_kernels.cc, an N-API addon) into
// dist/native/<platform>-<arch>/peft_kernels.node with the system C++ compiler: no node-gyp, no
// downloads. The .node file ships prebuilt inside dist/ (and so in the .vsix); users never need a
// compiler. Where none is present (or on a platform this script does not know) the step is skipped
// with a message and the sidecar keeps the WebAssembly kernels.
//
// Usage: node scripts/build-native.mjs [--force] [--quiet]
// Env:   CXX (default g++), PEFT_LAB_SKIP_NATIVE=1 to skip.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const say = (msg) => process.stderr.write(`[build-native] ${msg}\n`);

const src = join(root, 'native', 'peft_kernels.cc');
const target = `${process.platform}-${process.arch}`;
const outDir = join(root, 'dist', 'native', target);
const out = join(outDir, 'peft_kernels.node');

function main() {
  if (process.env.PEFT_LAB_SKIP_NATIVE === '1') return say('skipped (PEFT_LAB_SKIP_NATIVE=1): the wasm kernels stay in use');
  if (target !== 'linux-x64') return say(`skipped: no native build recipe for ${target}; the wasm kernels stay in use`);
  const cxx = process.env.CXX || 'g++';
  const probe = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return say(`skipped: no C++ compiler (${cxx}) found; the wasm kernels stay in use`);
  // node_api.h ships with Node in <prefix>/include/node.
  const include = [join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node', '/usr/local/include/node'].find((d) =>
    existsSync(join(d, 'node_api.h')),
  );
  if (!include) return say('skipped: node_api.h not found (install Node.js headers); the wasm kernels stay in use');
  if (!force && existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs && statSync(out).mtimeMs >= statSync(fileURLToPath(import.meta.url)).mtimeMs) {
    if (!quiet) say(`up to date: ${out}`);
    return;
  }
  mkdirSync(outDir, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  const args = [
    '-std=c++17',
    '-O3',
    // x86-64-v3 = AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE: checked at run time before loading.
    '-march=x86-64-v3',
    '-mtune=generic',
    // Element-wise kernels must round like the tfjs ops they replace: no implicit a*b+c → fma.
    '-ffp-contract=off',
    '-fno-math-errno',
    '-fvisibility=hidden',
    '-fPIC',
    '-shared',
    '-pthread',
    // Self-contained: no dependency on the user's libstdc++ version.
    '-static-libstdc++',
    '-static-libgcc',
    '-s', // stripped: the .node ships inside the .vsix
    '-Wl,--exclude-libs,ALL', // keep the static libstdc++ symbols private
    '-Wl,--as-needed',
    '-Wl,-z,defs',
    '-Wl,--unresolved-symbols=ignore-in-object-files', // napi_* resolve against the node binary
    '-DNAPI_VERSION=8',
    '-DNODE_GYP_MODULE_NAME=peft_kernels',
    `-I${include}`,
    src,
    '-o',
    tmp,
  ];
  const t0 = Date.now();
  const r = spawnSync(cxx, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(r.stderr || String(r.error));
    say(`FAILED (${cxx} exited ${r.status}); the wasm kernels stay in use`);
    process.exitCode = process.env.PEFT_LAB_REQUIRE_NATIVE === '1' ? 1 : 0;
    return;
  }
  if (r.stderr.trim() && !quiet) process.stderr.write(r.stderr);
  renameSync(tmp, out);
  say(`built ${out} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

main();
