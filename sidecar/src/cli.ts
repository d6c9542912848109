/**
 * `peft-lab` command line: the sidecar's compute without VS Code. Results go to the files named,
 * human-readable summaries to stdout, errors to stderr as one line with a non-zero exit code.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isBackendPreference, type BackendPreference } from '../../src/protocol';
import { currentBackend, initBackend } from './backend';
import { loraFactory } from './adapters/bench-lora';
import { errorMessage, InputError } from './errors';
import { prepareOutputFile } from './io/atomic';
import { cliContext } from './jobs/context';
import { benchCase, CASES, runAnchor, type BenchMode, type KernelTime } from './bench/bench';
import { matMulsCommand } from './bench/matmuls';
import { runForward, runGrads } from './tasks/forward';
import { formatInspect, inspectModel } from './tasks/inspect';
import { resumeCommand, trainCommand } from './tasks/train';
import { compareCommand } from './tasks/compare';
import { CLI_INIT_METHODS, parseInitMethod, runAdapterInit, validateAdapterInit, type AdapterInitParams } from './tasks/adapter-init';
import { IMPORTANCE_USAGE, importanceCommand } from './tasks/importance';
import { ALLOCATE_USAGE, allocateCommand } from './tasks/allocate';
import { MERGE_USAGE, mergeCommand } from './tasks/merge';
import { LOCALIZE_USAGE, OVERLAP_USAGE, localizeCommand, overlapCommand } from './tasks/localize';
import { EVALUATE_USAGE, evaluateCommand } from './tasks/evaluate';
import { GENERATE_USAGE, generateCommand } from './tasks/generate';

type Options = NonNullable<ParseArgsConfig['options']>;
const COMMON: Options = {
  backend: { type: 'string', default: 'auto' },
  threads: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

interface Command {
  usage: string;
  options: Options;
  /** Whether the command computes with TF.js (and so needs a backend). */
  compute: boolean;
  /** Positional arguments it takes: at most `max`, each a `noun`. None when absent. */
  positionals?: { max: number; noun: string };
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void>;
}

class UsageError extends Error {}

function need(values: Record<string, string | boolean | undefined>, key: string): string {
  const v = values[key];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${key} is required`);
  return v;
}

const COMMANDS: Record<string, Command> = {
  forward: {
    usage: 'forward --model DIR [--adapter DIR] --inputs FILE --out FILE',
    options: { model: { type: 'string' }, adapter: { type: 'string' }, inputs: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    async run(v) {
      const adapter = typeof v.adapter === 'string' ? { adapter: v.adapter } : {};
      const p = { kind: 'forward', model: need(v, 'model'), inputs: need(v, 'inputs'), out: need(v, 'out'), ...adapter } as const;
      await prepareOutputFile(p.out, { createFolder: true });
      const r = await runForward(p, cliContext(v.verbose === true));
      process.stdout.write(`wrote ${r.out}${r.loss !== undefined ? ` (loss ${r.loss.toFixed(6)})` : ''}\n`);
    },
  },
  grads: {
    usage: 'grads --model DIR --inputs FILE --out FILE',
    options: { model: { type: 'string' }, inputs: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    async run(v) {
      const p = { kind: 'grads', model: need(v, 'model'), inputs: need(v, 'inputs'), out: need(v, 'out') } as const;
      await prepareOutputFile(p.out, { createFolder: true });
      const r = await runGrads(p, cliContext(v.verbose === true));
      process.stdout.write(`wrote ${r.out}: loss ${r.loss.toFixed(6)} and ${r.tensors} gradients\n`);
    },
  },
  bench: {
    usage: 'bench [--cases tiny,small] [--modes full,lora] [--steps N] [--warmup N] [--anchor PATH [--python PY]] [--kernels] [--quick] [--json]\n       bench --backend webgpu --matmuls [--cases gpu] [--modes lora,full] [--reps N] [--plan-out FILE] [--json]   (each matmul of a step under every kernel choice; the plan file: the faster choices, for PEFT_LAB_WEBGPU_MATMUL_PLAN)',
    options: {
      cases: { type: 'string' },
      modes: { type: 'string', default: 'full,lora' },
      // No parseArgs defaults for steps, warmup and reps: --quick must tell a typed value from a default.
      steps: { type: 'string' },
      warmup: { type: 'string' },
      anchor: { type: 'string' },
      python: { type: 'string', default: '/usr/bin/python3' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      kernels: { type: 'boolean', default: false },
      matmuls: { type: 'boolean', default: false },
      reps: { type: 'string' },
      'plan-out': { type: 'string' },
    },
    compute: true,
    async run(v) {
      const info = currentBackend()!;
      const gpu = info.name === 'webgpu' || info.name === 'tensorflow-gpu';
      const wanted = typeof v.cases === 'string' ? v.cases.split(',') : CASES.filter((c) => !!c.gpu === gpu && !c.onRequest).map((c) => c.case);
      if (v.matmuls) {
        if (info.name !== 'webgpu') throw new UsageError(`--matmuls times the WebGPU kernels: use --backend webgpu (this run has ${info.name})`);
        const cases = wanted.map((name) => CASES.find((x) => x.case === name) ?? unknownCase(name));
        const modes = String(v.modes).split(',').map(benchMode);
        return matMulsCommand(cases, modes, { reps: quickOr(v, 'reps', 1, 10), lora: loraFactory(), table: !v.json, device: info.device, ...(typeof v['plan-out'] === 'string' ? { planOut: v['plan-out'] } : {}) });
      }
      // A median of 10 steps: 5 moved by ±30% on a shared machine (one GC pause or load spike).
      const steps = quickOr(v, 'steps', 1, 10);
      const warmup = quickOr(v, 'warmup', 0, 2, 0);
      // The threads the compute actually uses (native kernels: PEFT_LAB_THREADS); the anchor gets as many.
      const threads = Number(/(\d+) threads?\)$/.exec(info.device)?.[1] ?? 1);
      const rows = [];
      for (const name of wanted) {
        const c = CASES.find((x) => x.case === name) ?? unknownCase(name);
        for (const mode of String(v.modes).split(',').map(benchMode)) {
          const r = await benchCase(c, mode, { steps, warmup, threads, backend: info.name, lora: loraFactory(), kernels: v.kernels === true });
          if (typeof v.anchor === 'string') {
            const a = runAnchor(v.anchor, String(v.python), c, mode, threads, Math.max(steps, 5));
            if ('error' in a) process.stderr.write(`anchor ${c.case}/${mode} failed: ${a.error}\n`);
            else Object.assign(r, { torch_tokens_per_s: a.tokens_per_s, ratio: Math.round((r.tokens_per_s / a.tokens_per_s) * 1000) / 1000 });
          }
          rows.push(r);
          process.stdout.write(`${JSON.stringify(r)}\n`);
          if (r.kernels && !v.json) {
            const timed = r.kernels.every((k) => k.ms !== null);
            const total = timed ? `${r.kernels.reduce((s, k) => s + (k.ms ?? 0), 0).toFixed(1)} ms` : 'no valid kernel times on this device';
            process.stderr.write(`kernels of one ${c.case}/${mode} step (${total}; ${r.kernels.reduce((s, k) => s + k.calls, 0)} calls):\n`);
            const line = (k: KernelTime) => `  ${k.kernel.padEnd(28)} ${(k.ms === null ? '-' : k.ms.toFixed(2)).padStart(9)} ms ${String(k.calls).padStart(5)} calls${k.shapes ? `  ${k.shapes}` : ''}\n`;
            for (const k of r.kernels.slice(0, 25)) process.stderr.write(line(k));
            if (timed && r.kernel_shapes) {
              process.stderr.write(`largest by input shapes:\n`);
              for (const k of r.kernel_shapes.slice(0, 15)) process.stderr.write(line(k));
            }
          }
        }
      }
      if (!v.json) {
        process.stderr.write(`\n${'case'.padEnd(6)} ${'mode'.padEnd(5)} ${'backend'.padEnd(8)} ${'step ms'.padStart(9)} ${'tokens/s'.padStart(9)} ${'rss MB'.padStart(7)} ${'torch/s'.padStart(9)} ${'ratio'.padStart(6)}\n`);
        for (const r of rows)
          process.stderr.write(`${r.case.padEnd(6)} ${r.mode.padEnd(5)} ${r.backend.padEnd(8)} ${r.step_ms.toFixed(1).padStart(9)} ${String(r.tokens_per_s).padStart(9)} ${String(r.peak_rss_mb).padStart(7)} ${String(r.torch_tokens_per_s ?? '-').padStart(9)} ${String(r.ratio ?? '-').padStart(6)}\n`);
      }
    },
  },
  inspect: {
    usage: 'inspect DIR [--json]',
    options: { json: { type: 'boolean', default: false } },
    compute: false,
    positionals: { max: 1, noun: 'model folder' },
    async run(v, positionals) {
      const dir = positionals[0];
      if (!dir) throw new UsageError('a model folder is required');
      const r = await inspectModel(dir);
      process.stdout.write(v.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatInspect(r)}\n`);
    },
  },
  'adapter-init': {
    usage: `adapter-init --model DIR --method ${CLI_INIT_METHODS.join('|')} --r N --alpha A --targets q_proj,v_proj[,...] [--calib FILE] [--seed N] --out DIR`,
    options: { model: { type: 'string' }, method: { type: 'string' }, r: { type: 'string' }, alpha: { type: 'string' }, targets: { type: 'string' }, calib: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    async run(v) {
      const method = parseInitMethod(need(v, 'method'));
      if (!method) throw new UsageError(`--method must be one of ${CLI_INIT_METHODS.join(', ')}; got '${String(v.method)}'`);
      const alpha = Number(need(v, 'alpha'));
      const p: AdapterInitParams = {
        model: need(v, 'model'),
        method,
        r: positiveInt(need(v, 'r'), 'r'),
        alpha,
        targets: need(v, 'targets').split(',').map((t) => t.trim()),
        out: need(v, 'out'),
        ...(typeof v.calib === 'string' ? { calib: v.calib } : {}),
        ...(v.seed !== undefined ? { seed: positiveInt(v.seed, 'seed', 0) } : {}),
      };
      try {
        validateAdapterInit(p);
      } catch (e) {
        throw new UsageError(errorMessage(e));
      }
      const res = await runAdapterInit(p, cliContext(v.verbose === true));
      process.stdout.write(`wrote ${res.out}: ${v.method} init of ${res.modules.length} modules${res.residual ? `, residual base weights in ${res.residual}` : ''}\n`);
    },
  },
  train: {
    usage: 'train SPEC.peft.json [--run-dir DIR] [--workspace DIR]   (an existing --run-dir resumes from its last checkpoint)',
    options: { 'run-dir': { type: 'string' }, workspace: { type: 'string' } },
    compute: false, // the backend comes from --backend, else the spec's "backend"
    positionals: { max: 1, noun: 'spec' },
    run: (v, positionals) => trainCommand(v, positionals),
  },
  resume: {
    usage: 'resume RUN_DIR',
    options: {},
    compute: false,
    positionals: { max: 1, noun: 'run folder' },
    run: (v, positionals) => resumeCommand(v, positionals),
  },
  compare: {
    usage: 'compare SPEC.peft.json [--out DIR] [--workspace DIR]   (the spec lists "variants")',
    options: { out: { type: 'string' }, workspace: { type: 'string' } },
    compute: false,
    positionals: { max: 1, noun: 'spec' },
    run: (v, positionals) => compareCommand(v, positionals),
  },
  importance: {
    usage: IMPORTANCE_USAGE,
    options: { model: { type: 'string' }, adapter: { type: 'string' }, data: { type: 'string' }, spec: { type: 'string' }, inputs: { type: 'string' }, method: { type: 'string' }, batches: { type: 'string' }, 'batch-size': { type: 'string' }, 'no-activations': { type: 'boolean' }, seed: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    run: (v) => importanceCommand(v),
  },
  allocate: {
    usage: ALLOCATE_USAGE,
    options: { importance: { type: 'string' }, budgets: { type: 'string' }, method: { type: 'string' }, r: { type: 'string' }, 'alpha-ratio': { type: 'string' }, beta: { type: 'string' }, 'lora-alpha': { type: 'string' }, candidates: { type: 'string' }, ranks: { type: 'string' }, 'rank-scale': { type: 'string' }, out: { type: 'string' } },
    compute: false,
    run: (v) => allocateCommand(v),
  },
  merge: {
    usage: MERGE_USAGE,
    options: { base: { type: 'string' }, runs: { type: 'string', multiple: true }, method: { type: 'string' }, weights: { type: 'string' }, lambda: { type: 'string' }, density: { type: 'string' }, drop: { type: 'string' }, top: { type: 'string' }, bottom: { type: 'string' }, alpha: { type: 'string' }, seed: { type: 'string' }, data: { type: 'string' }, eval: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    run: (v) => mergeCommand(v),
  },
  localize: {
    usage: LOCALIZE_USAGE,
    options: { base: { type: 'string' }, run: { type: 'string', multiple: true }, finetuned: { type: 'string', multiple: true }, data: { type: 'string' }, eval: { type: 'string' }, sparsity: { type: 'string' }, epochs: { type: 'string' }, lr: { type: 'string' }, bias: { type: 'string' }, 'batch-size': { type: 'string' }, batches: { type: 'string' }, 'max-rows': { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' } },
    compute: true,
    run: (v) => localizeCommand(v),
  },
  evaluate: {
    usage: EVALUATE_USAGE,
    options: { run: { type: 'string', multiple: true }, data: { type: 'string' }, 'max-rows': { type: 'string' }, 'batch-size': { type: 'string' }, out: { type: 'string' } },
    compute: true,
    run: (v) => evaluateCommand(v),
  },
  generate: {
    usage: GENERATE_USAGE,
    options: {
      run: { type: 'string' },
      model: { type: 'string' },
      adapter: { type: 'string' },
      prompt: { type: 'string' },
      pair: { type: 'string' },
      chat: { type: 'boolean' },
      'no-chat': { type: 'boolean' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      'repetition-penalty': { type: 'string' },
      seed: { type: 'string' },
      'compare-base': { type: 'boolean' },
    },
    compute: true,
    run: (v) => generateCommand(v),
  },
  overlap: {
    usage: OVERLAP_USAGE,
    options: { model: { type: 'string' }, out: { type: 'string' } },
    compute: false,
    positionals: { max: 2, noun: 'mask file' },
    run: (v, positionals) => overlapCommand(v, positionals),
  },
};

function unknownCase(name: string): never {
  throw new UsageError(`unknown case '${name}' (cases: ${CASES.map((x) => x.case).join(', ')})`);
}

function benchMode(mode: string): BenchMode {
  if (mode !== 'full' && mode !== 'lora') throw new UsageError(`unknown mode '${mode}'`);
  return mode;
}

function positiveInt(v: unknown, name: string, min = 1): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got '${String(v)}'`);
  return n;
}

/** A bench count: the value typed, else --quick's, else the default (a typed value wins over --quick). */
function quickOr(v: Record<string, string | boolean | undefined>, name: string, quick: number, normal: number, min = 1): number {
  if (v[name] !== undefined) return positiveInt(v[name], name, min);
  return v.quick ? quick : normal;
}

/**
 * `--opt -1` as `--opt=-1` for an option that takes a value: parseArgs calls a value starting with
 * `-` ambiguous, and a negative number should reach the range check that names the option.
 */
export function joinNegativeValues(args: readonly string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    const long = /^--([^=]+)$/.exec(a)?.[1];
    const opt = long !== undefined && Object.hasOwn(options, long) ? options[long] : undefined;
    if (opt?.type === 'string' && next !== undefined && /^-\d|^-\.\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/**
 * The common options (--backend, --threads, --verbose) typed before the command name, split from
 * the rest: `peft-lab --threads 2 inspect DIR` as `inspect --threads 2 DIR`.
 */
export function splitLeadingCommon(argv: readonly string[]): { leading: string[]; name: string | undefined; rest: string[] } {
  const leading: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const m = /^--(backend|threads|verbose)(=.*)?$/.exec(argv[i]!);
    if (!m) break;
    leading.push(argv[i]!);
    // A value in the next argument (a command name never starts with '-', but a negative number may).
    if (COMMON[m[1]!]!.type === 'string' && m[2] === undefined && i + 1 < argv.length) leading.push(argv[++i]!);
  }
  return { leading, name: argv[i], rest: argv.slice(i + 1) };
}

/** Extra positional arguments are refused: one silently ignored is work the user thinks was done. */
function checkPositionals(name: string, cmd: Command, positionals: readonly string[]): void {
  const max = cmd.positionals?.max ?? 0;
  const n = positionals.length;
  if (n <= max) return;
  if (max === 0) throw new UsageError(`unexpected argument '${positionals[0]}' (${name} takes options only)`);
  const noun = cmd.positionals!.noun;
  throw new UsageError(max === 1 ? `one ${noun} per ${name}; got ${n}` : `${name} takes ${max} ${noun}s; got ${n}`);
}

/**
 * The message of an InputError about an argument (no file; `where` is the parameter's name): the
 * name as the option the user typed (`--budgets`, or `--run` for the parameter `runs`), unless the
 * problem names it already or no option matches.
 */
function argumentMessage(e: InputError, options: Options): string {
  // Job parameters are camelCase (topP), options kebab-case (--top-p).
  const kebab = e.where.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const option = [e.where, e.where.replace(/s$/, ''), kebab].find((o) => o !== '' && Object.hasOwn(options, o));
  return option && !e.problem.includes(`--${option}`) ? `--${option}: ${e.problem}` : e.problem;
}

function help(): string {
  return [
    'usage: peft-lab <command> [options]',
    '',
    'commands:',
    ...Object.values(COMMANDS).map((c) => `  peft-lab ${c.usage}`),
    '',
    'common options: --backend auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu   --threads N   --verbose',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const { leading, name, rest } = splitLeadingCommon(argv);
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${help()}\n`);
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`peft-lab: unknown command '${name}'\n${help()}\n`);
    return 2;
  }
  try {
    const options = { ...COMMON, ...cmd.options };
    const args = joinNegativeValues([...leading, ...rest], options);
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    if (values.help) {
      process.stdout.write(`usage: peft-lab ${cmd.usage}\n`);
      return 0;
    }
    checkPositionals(name, cmd, positionals);
    const backend = values.backend;
    if (!isBackendPreference(backend)) throw new UsageError(`--backend must be one of auto, tensorflow-gpu, tensorflow, webgpu, wasm, cpu; got '${String(backend)}'`);
    // --threads N: the native kernels' threads for whatever backend this command starts.
    if (values.threads !== undefined) process.env.PEFT_LAB_THREADS = String(positiveInt(values.threads, 'threads'));
    if (cmd.compute) {
      const quiet = () => undefined;
      // bench compares at one thread unless asked (PEFT_LAB_THREADS or --threads); the rest use the cores.
      const threads = name === 'bench' && !process.env.PEFT_LAB_THREADS ? 1 : undefined;
      await initBackend(backend as BackendPreference, values.verbose ? (m) => process.stderr.write(`[backend] ${m}\n`) : quiet, threads ? { threads } : {});
    }
    await cmd.run(values as Record<string, string | boolean | undefined>, positionals);
    return 0;
  } catch (e) {
    // An InputError without a file is about an argument: a usage error, named as the option typed.
    const argument = e instanceof InputError && e.file === '' ? argumentMessage(e, { ...COMMON, ...cmd.options }) : undefined;
    if (argument !== undefined || e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`peft-lab ${name}: ${argument ?? errorMessage(e)}\nusage: peft-lab ${cmd.usage}\n`);
      return 2;
    }
    process.stderr.write(`peft-lab ${name}: ${errorMessage(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`peft-lab: ${errorMessage(e)}\n`);
      process.exitCode = 1;
    },
  );
}
