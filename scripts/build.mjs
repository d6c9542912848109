// Bundles the extension (node/cjs, vscode external), the sidecar + CLI (node) and the webviews (browser).
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');
const common = { bundle: true, sourcemap: !production, minify: production, logLevel: 'warning', legalComments: 'none' };

const node = {
  ...common,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // The native TF.js packages are optional extras, loaded at run time only if installed.
  external: ['vscode', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'webgpu'],
};

const builds = [
  { ...node, entryPoints: { extension: 'src/extension/extension.ts' } },
  { ...node, entryPoints: { sidecar: 'sidecar/src/server.ts', cli: 'sidecar/src/cli.ts' } },
  {
    ...common,
    platform: 'browser',
    target: 'es2022',
    format: 'iife',
    entryPoints: Object.fromEntries(
      readdirSync('webviews/src').filter((f) => f.endsWith('.panel.ts')).map((f) => [f.replace(/\.panel\.ts$/, ''), `webviews/src/${f}`]),
    ),
    outdir: 'dist/webviews',
  },
];

mkdirSync('dist', { recursive: true });
// The wasm backend loads its .wasm binaries from beside the sidecar bundle.
const wasmDir = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
for (const f of readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'))) copyFileSync(join(wasmDir, f), join('dist', f));

// Dawn (WebGPU for Node) for this platform, from the optional `webgpu` package, beside the bundles:
// dist/dawn/<platform>-<arch>/ (the whole folder: on Windows the D3D shader compilers sit beside
// dawn.node). Per-platform like the native kernels; the .vsix has no node_modules.
{
  const target = process.platform === 'darwin' ? 'darwin-universal' : `${process.platform}-${process.arch}`;
  let webgpuDir;
  try {
    webgpuDir = dirname(require.resolve('webgpu/package.json'));
  } catch {
    console.error('[build] the optional webgpu package is not installed: the sidecar will have no WebGPU backend');
  }
  const from = webgpuDir && join(webgpuDir, 'dist', target);
  if (from && existsSync(join(from, 'dawn.node'))) {
    mkdirSync(join('dist', 'dawn', target), { recursive: true });
    for (const f of readdirSync(from)) copyFileSync(join(from, f), join('dist', 'dawn', target, f));
  }
}

for (const b of builds) {
  const opts = b.outdir ? b : { ...b, outdir: 'dist' };
  if (watch) await (await esbuild.context(opts)).watch();
  else await esbuild.build(opts);
}

// Optional native kernels: dist/native/<platform>-<arch>/peft_kernels.node, shipped prebuilt in
// dist/ (and so in the .vsix). Skipped with a message where no C++ compiler is present; the wasm
// kernels stay the fallback. Rebuilt only when native/ changed.
if (!watch) {
  const r = spawnSync(process.execPath, [join('scripts', 'build-native.mjs'), '--quiet'], { stdio: 'inherit' });
  if (r.status !== 0) process.exitCode = r.status ?? 1;
}
