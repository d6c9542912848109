// Packages the extension as a .vsix (vsce, production build).
//   node scripts/package.mjs                 one .vsix for every platform, with this machine's Dawn
//                                            (WebGPU) and native kernels: peft-lab.vsix (as before)
//   node scripts/package.mjs --target darwin-arm64,win32-x64[,...] | --target all
//                                            one .vsix per VS Code target, each with that platform's
//                                            Dawn from the `webgpu` package and the native kernels
//                                            where they were built for it: peft-lab-<target>.vsix
// Per-target packages are what the Marketplace serves by platform (as rust-analyzer does): a macOS
// or Windows user gets Metal / D3D12 WebGPU, and nobody downloads the other platforms' binaries.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleTarget, TARGETS } from './package-targets.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const vsce = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'vsce.cmd' : 'vsce');
const VSCE_FLAGS = ['--no-dependencies', '--allow-missing-repository'];

const run = (cmd, args, cwd = root) => {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

const i = process.argv.indexOf('--target');
if (i < 0) {
  // vsce runs the manifest's vscode:prepublish (the production build) itself.
  run(vsce, ['package', ...VSCE_FLAGS, '--out', 'peft-lab.vsix']);
  process.exit(0);
}
const asked = process.argv[i + 1] ?? '';
const targets = asked === 'all' ? Object.keys(TARGETS) : asked.split(',').filter(Boolean);
for (const t of targets) if (!(t in TARGETS)) throw new Error(`--target ${t}: not a target this package is built for (${Object.keys(TARGETS).join(', ')}, or all)`);
if (targets.length === 0) throw new Error('--target needs a list of targets, or all');

run(process.execPath, [join('scripts', 'build.mjs'), '--production']);
const webgpuDist = join(root, 'node_modules', 'webgpu', 'dist');
for (const target of targets) {
  const { dawn, native } = bundleTarget(target);
  const stage = join(root, '.package', target);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, 'dist'), { recursive: true });
  // The manifest without its build scripts (the bundles are built already, above).
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  delete manifest.scripts;
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  for (const f of ['README.md', 'LICENSE', '.vscodeignore', 'media', 'schemas']) cpSync(join(root, f), join(stage, f), { recursive: true });
  for (const f of readdirSync(join(root, 'dist'))) if (f !== 'dawn' && f !== 'native') cpSync(join(root, 'dist', f), join(stage, 'dist', f), { recursive: true });
  const nativeDir = native && join(root, 'dist', 'native', native);
  if (nativeDir && existsSync(nativeDir)) cpSync(nativeDir, join(stage, 'dist', 'native', native), { recursive: true });
  if (dawn) {
    if (!existsSync(join(webgpuDist, dawn, 'dawn.node'))) throw new Error(`no Dawn for ${target}: ${join(webgpuDist, dawn)} (install the optional webgpu package)`);
    cpSync(join(webgpuDist, dawn), join(stage, 'dist', 'dawn', dawn), { recursive: true });
  }
  run(vsce, ['package', ...VSCE_FLAGS, '--target', target, '--out', join(root, `peft-lab-${target}.vsix`)], stage);
  rmSync(stage, { recursive: true, force: true });
  console.log(`peft-lab-${target}.vsix: Dawn ${dawn ?? 'none (WebAssembly only)'}, native kernels ${nativeDir && existsSync(nativeDir) ? native : 'none'}`);
}
rmSync(join(root, '.package'), { recursive: true, force: true });
