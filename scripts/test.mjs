// Runs the test tiers, chosen by file name, with node's test runner:
//   *.unit.test.ts     no VS Code, no child processes (fuzzers too: thousands of cases, 20x with --long)
//   *.parity.test.ts   numerics against ../shared/fixtures
//   *.webgpu.test.ts   fused WGSL kernels on a WebGPU adapter (Mesa llvmpipe through EGL where no GPU;
//                      test/webgpu/setup.sh installs it)
//   *.sidecar.test.ts  real sidecar child processes (needs the bundle: built first)
//   *.e2e.test.ts      real VS Code workbench (code-server + Chromium, installed on first use); skip with --no-e2e
// Usage: node scripts/test.mjs [tier...] [--no-e2e] [--long]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const tiers = args.filter((a) => !a.startsWith('--'));
const wanted = tiers.length ? tiers : ['unit', 'parity', 'webgpu', 'sidecar', ...(args.includes('--no-e2e') || process.env.PEFT_LAB_E2E === '0' ? [] : ['e2e'])];
if (args.includes('--long')) process.env.PEFT_LAB_LONG = '1';

function walk(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}
const files = walk('test').filter((f) => wanted.some((t) => f.endsWith(`.${t}.test.ts`))).sort();
if (files.length === 0) {
  console.error(`no test files for tiers: ${wanted.join(', ')}`);
  process.exit(1);
}

const run = (cmd, argv) => {
  const r = spawnSync(cmd, argv, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (wanted.includes('webgpu')) run('bash', ['test/webgpu/setup.sh']);
if (wanted.some((t) => t === 'sidecar' || t === 'e2e' || t === 'webgpu')) run('node', ['scripts/build.mjs']);
run('node', ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files]);
