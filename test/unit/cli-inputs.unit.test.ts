/**
 * Command-line inputs the QA pass found mishandled: labels, token types and sequence lengths the
 * model cannot take (checked against config.json, the error naming the batch file), `--out` paths,
 * a file where a model folder belongs, malformed config.json, argument errors without a file,
 * extra positional arguments, negative option values, common options before the command, bench
 * --quick against typed counts, checkpoint tensors the config leaves unused, and a zombie lock owner.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { joinNegativeValues, main, splitLeadingCommon } from '../../sidecar/src/cli';
import { errorMessage, InputError, WASM_ABORT } from '../../sidecar/src/errors';
import { oneLine } from '../../sidecar/src/jobs/manager';
import { parseJsonText } from '../../sidecar/src/io/json';
import { i32, i64, readSafetensors, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { cliContext } from '../../sidecar/src/jobs/context';
import { readConfig } from '../../sidecar/src/models/config';
import { Model } from '../../sidecar/src/models/model';
import { runForward, runGrads } from '../../sidecar/src/tasks/forward';
import { inspectModel } from '../../sidecar/src/tasks/inspect';
import { pidAlive, procStatState } from '../../sidecar/src/train/run-lock';

const HF = join(__dirname, '../../../shared/fixtures/hf');
const GPT2 = join(HF, 'gpt2-tiny'); // vocab 128, n_positions 64, 4 layers
const BERT = join(HF, 'bert-cls-tiny'); // vocab 128, 3 classes, type_vocab_size 2
const root = mkdtempSync(join(tmpdir(), 'peft-lab-cli-inputs-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  await initBackend('cpu', () => undefined);
});

let count = 0;
const fresh = (name: string) => join(root, `${count++}-${name}`);

async function inputs(tensors: Record<string, HostTensor>): Promise<string> {
  const file = fresh('in.safetensors');
  await writeSafetensors(file, tensors);
  return file;
}

/** The InputError `p` rejects with, checked to name `file` and a place matching `where`. */
async function inputError(p: Promise<unknown>, file: string, where: RegExp): Promise<InputError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof InputError, `expected an InputError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.match(e.where, where);
    return e;
  }
  return assert.fail('expected a rejection');
}

const forward = (model: string, file: string, out = fresh('out.safetensors')) => runForward({ kind: 'forward', model, inputs: file, out }, cliContext());
const grads = (model: string, file: string) => runGrads({ kind: 'grads', model, inputs: file, out: fresh('grads.safetensors') }, cliContext());
const ids = (b: number, t: number, f = (i: number) => i % 100) => Array.from({ length: b * t }, (_, i) => f(i));

describe('batch files checked against the model (A, B)', () => {
  test('causal-LM labels outside the vocabulary are refused, naming the file, labels and the first bad one', async () => {
    const file = await inputs({ input_ids: i64([2, 8], ids(2, 8)), labels: i64([2, 8], ids(2, 8, (i) => (i === 11 ? 600 : i % 100))) });
    for (const run of [forward, grads]) {
      const e = await inputError(run(GPT2, file), file, /^labels\[1, 3\]$/);
      assert.match(e.message, /label 600 is outside the vocabulary \[0, 128\)/);
    }
  });

  test('-100, the ignore index, is accepted (the loss skips it)', async () => {
    const labels = ids(2, 8, (i) => (i % 3 === 0 ? -100 : i % 100));
    const r = await forward(GPT2, await inputs({ input_ids: i64([2, 8], ids(2, 8)), labels: i64([2, 8], labels) }));
    assert.ok(Number.isFinite(r.loss) && r.loss! > 0, `loss ${r.loss}`);
    const c = await forward(BERT, await inputs({ input_ids: i64([2, 6], ids(2, 6)), labels: i64([2], [2, -100]) }));
    assert.ok(Number.isFinite(c.loss) && c.loss! > 0, `loss ${c.loss}`);
  });

  test('a class label past num_labels is refused', async () => {
    const file = await inputs({ input_ids: i64([2, 6], ids(2, 6)), labels: i32([2], [1, 7]) });
    const e = await inputError(forward(BERT, file), file, /^labels\[1\]$/);
    assert.match(e.message, /label 7 is outside the classes \[0, 3\)/);
  });

  test('token_type_ids past type_vocab_size are refused, naming the file', async () => {
    const tt = ids(2, 6, (i) => (i === 4 ? 5 : 0));
    const file = await inputs({ input_ids: i64([2, 6], ids(2, 6)), token_type_ids: i64([2, 6], tt) });
    const e = await inputError(forward(BERT, file), file, /^token_type_ids\[0, 4\]$/);
    assert.match(e.message, /token type 5 is outside \[0, 2\)/);
  });

  test('a sequence longer than the model\'s positions names the file and input_ids', async () => {
    const file = await inputs({ input_ids: i64([1, 65], ids(1, 65)) });
    const e = await inputError(forward(GPT2, file), file, /^input_ids$/);
    assert.match(e.message, /sequence length 65 exceeds n_positions=64/);
    const bert = await inputs({ input_ids: i64([1, 65], ids(1, 65)) });
    await inputError(forward(BERT, bert), bert, /^input_ids$/);
  });

  test('token ids past the vocabulary are located by row and position', async () => {
    const file = await inputs({ input_ids: i64([2, 4], [1, 2, 3, 4, 5, 6, 128, 8]) });
    const e = await inputError(forward(GPT2, file), file, /^input_ids\[1, 2\]$/);
    assert.match(e.message, /token id 128 is outside the vocabulary/);
  });
});

describe('--out of forward and grads (C)', () => {
  test('the command line creates missing parent folders', async () => {
    const out = join(fresh('new'), 'deeper', 'x.safetensors');
    const r = await cli(['forward', '--backend', 'cpu', '--model', GPT2, '--inputs', join(GPT2, 'refs.safetensors'), '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readSafetensors(out)).has('logits'));
    const g = join(fresh('new'), 'g.safetensors');
    assert.equal((await cli(['grads', '--backend', 'cpu', '--model', GPT2, '--inputs', join(GPT2, 'refs.safetensors'), '--out', g])).code, 0);
    assert.ok((await readSafetensors(g)).has('loss'));
  });

  test('a job (no command line) names a missing folder instead of an internal temp file', async () => {
    const out = join(fresh('absent'), 'x.safetensors');
    const e = await inputError(forward(GPT2, join(GPT2, 'refs.safetensors'), out), out, /^$/);
    assert.match(e.message, /its folder .* does not exist/);
    assert.doesNotMatch(e.message, /\.tmp-/);
  });

  test('a folder is refused by name before any compute', async () => {
    const dir = fresh('outdir');
    mkdirSync(dir);
    const e = await inputError(forward(GPT2, join(GPT2, 'refs.safetensors'), dir), dir, /^$/);
    assert.match(e.message, /is a folder/);
  });
});

describe('model folders (D, E, H)', () => {
  test('a file given as the model folder is named as not a folder', async () => {
    const file = join(GPT2, 'config.json');
    const e = await inputError(inspectModel(file), file, /^$/);
    assert.match(e.message, /not a folder/);
    assert.doesNotMatch(e.message, /ENOTDIR/);
  });

  test('inspect checks shapes as loading does: a tensor config.json sizes otherwise is named', async () => {
    const dir = fresh('badshape');
    mkdirSync(dir);
    const cfg = JSON.parse(readFileSync(join(GPT2, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, n_positions: (cfg.n_positions as number) + 1 }));
    copyFileSync(join(GPT2, 'model.safetensors'), join(dir, 'model.safetensors'));
    const e = await inputError(inspectModel(dir), join(dir, 'model.safetensors'), /wpe\.weight$/);
    assert.match(e.message, /shape \[\d+, 64\] does not match config\.json, which implies \[\d+, 64\]/);
  });

  test('malformed config.json is located by line:column, as spec errors are', () => {
    const dir = fresh('badjson');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), '{\n  "model_type": "gpt2",\n  "n_embd": 64\n  "n_head": 4\n}\n');
    const file = join(dir, 'config.json');
    assert.throws(() => readConfig(dir), (e: unknown) => e instanceof InputError && e.message === `${file} (4:3): JSON syntax error: comma expected`);
    assert.throws(() => parseJsonText('', 'f.json'), (e: unknown) => e instanceof InputError && e.message === 'f.json: the file is empty');
    assert.deepEqual(parseJsonText('{"a": [1]}', 'f.json'), { a: [1] });
  });

  test('a checkpoint with tensors the config leaves unused is refused, naming the first and the count', async () => {
    const dir = fresh('layer3');
    cpSync(GPT2, dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, n_layer: 3 }));
    const e = await inputError(Model.load(dir), join(dir, 'model.safetensors'), /^transformer\.h\.3\./);
    assert.match(e.message, /12 unused tensors/);
  });

  test('buffers transformers saves (attn.bias, masked_bias), a stored tied lm_head and another task\'s head still load', async () => {
    const dir = fresh('buffers');
    cpSync(GPT2, dir, { recursive: true });
    const tensors = await readSafetensors(join(dir, 'model.safetensors'));
    for (let i = 0; i < 4; i++) {
      tensors.set(`transformer.h.${i}.attn.bias`, { dtype: 'F32', shape: [1, 1, 4, 4], data: new Float32Array(16) });
      tensors.set(`transformer.h.${i}.attn.masked_bias`, { dtype: 'F32', shape: [], data: new Float32Array(1) });
    }
    tensors.set('lm_head.weight', tensors.get('transformer.wte.weight')!);
    // Heads of another task load as in transformers (e.g. BERT's pretraining cls.* in a classifier's checkpoint).
    tensors.set('cls.predictions.bias', { dtype: 'F32', shape: [4], data: new Float32Array(4) });
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const m = await Model.load(dir);
    assert.equal(m.params.size, m.paramInfo().length);
    m.dispose();
  });
});

/** Runs `main(argv)` and returns its exit code and what it wrote to stderr (stdout, the test
 * runner's report too, is left alone). */
async function cli(argv: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}

/** Runs the command line in a child process (for what it writes to stdout). */
function node(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(__dirname, '../../sidecar/src/cli.ts'), ...argv], { maxBuffer: 1 << 24 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('a wasm abort', () => {
  test("reads as what it is (the heap ran out) and what to do, on the command line and in a job's error", () => {
    const abort = new Error('Aborted(). Build with -sASSERTIONS for more info.');
    assert.equal(errorMessage(abort), WASM_ABORT);
    assert.equal(oneLine(abort), WASM_ABORT);
    assert.match(WASM_ABORT, /ran out of memory .* lower batchSize or data\.maxLength/);
    assert.equal(errorMessage(new Error('other\nlines')), 'other');
  });
});

describe('command-line arguments (F, G)', () => {
  test('an InputError without a file reads as the argument, not an empty file slot', async () => {
    assert.equal(new InputError('', 'budgets', 'bad').message, 'budgets: bad');
    assert.equal(new InputError('', '', 'a spec file is required').message, 'a spec file is required');
    const train = await cli(['train']);
    assert.equal(train.code, 2);
    assert.match(train.stderr, /^peft-lab train: a spec file \(\*\.peft\.json\) is required\nusage: peft-lab train /);
    const merge = await cli(['merge', '--backend', 'cpu', '--base', GPT2, '--runs', 'a,b', '--method', 'ties', '--weights', '1', '--out', fresh('m')]);
    assert.equal(merge.code, 2);
    assert.match(merge.stderr, /^peft-lab merge: --weights: 1 weights for 2 runs\n/);
  });

  test('extra positional arguments are refused', async () => {
    const train = await cli(['train', 'a.peft.json', 'b.peft.json']);
    assert.equal(train.code, 2);
    assert.match(train.stderr, /^peft-lab train: one spec per train; got 2\n/);
    assert.match((await cli(['resume', 'r1', 'r2'])).stderr, /one run folder per resume; got 2/);
    assert.match((await cli(['inspect', GPT2, BERT])).stderr, /one model folder per inspect; got 2/);
    const fwd = await cli(['forward', '--model', GPT2, 'extra.safetensors']);
    assert.equal(fwd.code, 2);
    assert.match(fwd.stderr, /unexpected argument 'extra\.safetensors' \(forward takes options only\)/);
  });

  test('a negative number is an option value, checked by the option\'s range check (not "ambiguous")', async () => {
    const t = await cli(['generate', '--backend', 'cpu', '--model', GPT2, '--prompt', 'hi', '--temperature', '-1']);
    assert.equal(t.code, 2);
    assert.match(t.stderr, /^peft-lab generate: --temperature: must be a number ≥ 0, got -1\n/);
    const m = await cli(['generate', '--backend', 'cpu', '--model', GPT2, '--prompt', 'hi', '--max-new-tokens', '-3']);
    assert.equal(m.code, 2);
    assert.match(m.stderr, /^peft-lab generate: --max-new-tokens must be an integer ≥ 1, got '-3'\n/);
    const options = { temperature: { type: 'string' }, chat: { type: 'boolean' }, prompt: { type: 'string' } } as const;
    assert.deepEqual(joinNegativeValues(['--temperature', '-1', '--prompt', '-.5', '--chat', '-2', '--', '--prompt', '-3'], options), ['--temperature=-1', '--prompt=-.5', '--chat', '-2', '--', '--prompt', '-3']);
    assert.deepEqual(joinNegativeValues(['--prompt', '-x', '--temperature=-1'], options), ['--prompt', '-x', '--temperature=-1']);
  });

  test('the common options may come before the command name', async () => {
    // Parsed, not skipped: a bad value is refused as the option.
    const bad = await cli(['--threads', '0', 'inspect', GPT2]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^peft-lab inspect: --threads must be an integer ≥ 1, got '0'\n/);
    const r = await node(['--backend', 'cpu', '--threads', '2', 'inspect', GPT2, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { parameters: number }).parameters, 212352);
    assert.deepEqual(splitLeadingCommon(['--threads', '2', '--verbose', '--backend=cpu', 'inspect', 'DIR', '--json']), { leading: ['--threads', '2', '--verbose', '--backend=cpu'], name: 'inspect', rest: ['DIR', '--json'] });
    assert.deepEqual(splitLeadingCommon(['inspect', '--threads', '2']), { leading: [], name: 'inspect', rest: ['--threads', '2'] });
  });

  test('bench: --steps and --warmup typed win over --quick\'s 1 and 0', async () => {
    const bench = async (...extra: string[]) => {
      const r = await node(['bench', '--backend', 'cpu', '--cases', 'gpu-host', '--modes', 'lora', '--json', '--quick', ...extra]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.trim()) as { steps: number; losses: number[] };
    };
    const quick = await bench();
    assert.deepEqual([quick.steps, quick.losses.length], [1, 1]);
    const typed = await bench('--steps', '3', '--warmup', '1');
    assert.deepEqual([typed.steps, typed.losses.length], [3, 4], 'one warmup step, then 3 timed');
  });
});

describe('run folder locks (I)', () => {
  test('the state of a /proc/PID/stat line, past a command name with spaces and parentheses', () => {
    assert.equal(procStatState('4242 (node) S 1 4242 4242 0 -1'), 'S');
    assert.equal(procStatState('4242 (a b) Z) Z 1 4242'), 'Z');
    assert.equal(procStatState('garbage'), undefined);
  });

  test('a zombie (killed, not yet reaped) is not alive', { skip: process.platform !== 'linux' && 'Linux /proc only' }, async () => {
    // The shell starts a child and execs into sleep, which never reaps it: the child stays a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const pid = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
      const stat = `/proc/${pid}/stat`;
      for (let i = 0; i < 200 && !(existsSync(stat) && procStatState(readFileSync(stat, 'utf8')) === 'Z'); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(procStatState(readFileSync(stat, 'utf8')), 'Z');
      assert.equal(pidAlive(pid), false);
      assert.equal(pidAlive(parent.pid!), true);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
