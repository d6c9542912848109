// `npm run demo`: fine-tunes the bundled tiny GPT with LoRA on a bundled task, on the CPU, then
// checks without Python that the exported PEFT adapter reproduces the run's logits.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const spec = join(root, 'media', 'demo.peft.json');
const runDir = resolve(process.argv[2] ?? join(root, '.peft-lab', 'runs', `demo-${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`));

function run(args, opts = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts });
  if (r.status !== 0) {
    process.stderr.write(`demo: peft-lab ${args[0]} failed (exit ${r.status})\n`);
    process.exit(r.status ?? 1);
  }
  return r.stdout;
}

if (!existsSync(cli)) spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { stdio: 'inherit' });
const t0 = performance.now();
process.stderr.write(`PEFT Lab demo: LoRA on the bundled tiny-gpt, spec ${spec}\n`);
run(['train', spec, '--run-dir', runDir]);
const status = JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8'));
const s = status.summary ?? {};
const pct = (x) => `${(100 * x).toFixed(1)}%`;
const seconds = ((performance.now() - t0) / 1000).toFixed(0);
process.stdout.write(`\nrun folder: ${runDir}\n`);
process.stdout.write(`eval loss      ${s.baselineEvalLoss?.toFixed(4)} (zero-shot) → ${s.evalLoss?.toFixed(4)} (after ${status.step} LoRA steps)\n`);
if (s.baselineEvalMetric !== undefined)
  process.stdout.write(`eval ${s.metricName ?? 'metric'} ${pct(s.baselineEvalMetric)} (zero-shot) → ${pct(s.evalMetric)}\n`);

// Try it: the first eval row's prompt through the fine-tuned model and the base (greedy).
const evalFile = JSON.parse(readFileSync(join(runDir, 'spec.json'), 'utf8')).data.eval;
const row = JSON.parse(readFileSync(evalFile, 'utf8').split('\n')[0]);
const texts = run(['generate', '--run', runDir, '--prompt', row.prompt, '--max-new-tokens', '12', '--compare-base']);
const [tuned, base] = texts.split(/^--- .*$/m).slice(1).map((t) => JSON.stringify(t.replace(/^\n|\n$/g, '')));
process.stdout.write(`try it: …${JSON.stringify(row.prompt.slice(-40)).slice(1)} → fine-tuned ${tuned}, base ${base} (expected ${JSON.stringify(row.completion)})\n`);

// Python-free round trip: the exported PEFT adapter, loaded back onto the base, gives the run's logits.
const check = join(runDir, 'adapter_check.safetensors');
const out = join(runDir, 'adapter_check.forward.safetensors');
run(['forward', '--model', join(root, 'media', 'models', 'tiny-gpt'), '--adapter', join(runDir, 'adapter'), '--inputs', check, '--out', out]);
const { maxRel } = compareLogits(check, out);
process.stdout.write(`exported adapter reloads: max|Δlogits|/max|logits| = ${maxRel.toExponential(2)} (${maxRel <= 1e-5 ? 'ok' : 'MISMATCH'})\n`);
process.stdout.write(`done in ${seconds} s\n`);
if (maxRel > 1e-5) process.exit(1);

/** Reads `logits` from two safetensors files (F32) and returns their relative max difference. */
function compareLogits(a, b) {
  const read = (f) => {
    const buf = readFileSync(f);
    const n = Number(buf.readBigUInt64LE(0));
    const h = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    const [s0, s1] = h.logits.data_offsets;
    const bytes = buf.subarray(8 + n + s0, 8 + n + s1);
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  };
  const x = read(a);
  const y = read(b);
  let d = 0;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]));
    m = Math.max(m, Math.abs(x[i]));
  }
  return { maxRel: x.length === y.length ? d / m : Infinity };
}
