// Packs what the GPU benchmark machine needs into .device/ (git-ignored; named in the device tool's
// `carry`): that machine has PyTorch but no Node.js and no network. Contents: an xz copy of this
// node binary, Dawn's dawn.node for linux-x64, the bundled CLI (dist/cli.js, the wasm binaries, the
// native kernels), the PyTorch anchor, and the runs in .device/runs (PEFT export checks), if any.
// Usage: npm run build && node scripts/device/pack.mjs [--anchor ../shared/bench/torch_anchor.py]
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, '.device');
const i = process.argv.indexOf('--anchor');
const anchor = resolve(i > 0 ? process.argv[i + 1] : join(root, '..', 'shared', 'bench', 'torch_anchor.py'));
mkdirSync(out, { recursive: true });

const xz = (src, dst) => {
  if (existsSync(dst) && statSync(dst).mtimeMs >= statSync(src).mtimeMs) return;
  execFileSync('sh', ['-c', `xz -T2 -6 -c "${src}" > "${dst}.tmp" && mv "${dst}.tmp" "${dst}"`], { stdio: 'inherit' });
};
xz(process.execPath, join(out, 'node.xz'));
xz(join(root, 'node_modules', 'webgpu', 'dist', 'linux-x64', 'dawn.node'), join(out, 'dawn.node.xz'));

rmSync(join(out, 'dist'), { recursive: true, force: true });
mkdirSync(join(out, 'dist'));
for (const f of readdirSync(join(root, 'dist')).filter((f) => f === 'cli.js' || f.endsWith('.wasm'))) copyFileSync(join(root, 'dist', f), join(out, 'dist', f));
cpSync(join(root, 'dist', 'native'), join(out, 'dist', 'native'), { recursive: true });
copyFileSync(anchor, join(out, 'torch_anchor.py'));
process.stderr.write(`packed ${out}\n`);
