/**
 * `train` and `resume`: the 'train' job of the sidecar and the `peft-lab train SPEC` /
 * `peft-lab resume RUN_DIR` commands. The work is in ../train/trainer.ts; this file picks the run
 * folder, the backend (command line) and renders progress.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { BackendPreference, JobProgress, JobResult, TrainJobParams } from '../../../src/protocol';
import { formatMetricValue, isBackendPreference } from '../../../src/protocol';
import { initBackend } from '../backend';
import { errorMessage, InputError } from '../errors';
import { CancelledError, type JobContext } from '../jobs/context';
import { loadSpec, runConfig } from '../spec/load';
import type { RunConfig } from '../spec/types';
import { listCheckpoints } from '../train/checkpoint';
import { newRunDir, readRunConfig, SPEC_FILE } from '../train/run-folder';
import { runTraining, type TrainOutcome } from '../train/trainer';

/** The newest run folder under `runsDir` that was started from `specFile`. */
export function latestRunOf(runsDir: string, specFile: string): string | undefined {
  if (!existsSync(runsDir)) return undefined;
  let best: { dir: string; t: number } | undefined;
  for (const name of readdirSync(runsDir)) {
    const dir = join(runsDir, name);
    const f = join(dir, SPEC_FILE);
    if (!existsSync(f)) continue;
    try {
      const cfg = JSON.parse(readFileSync(f, 'utf8')) as RunConfig;
      if (cfg.specFile !== specFile || cfg.variant !== undefined) continue;
      const t = statSync(f).mtimeMs;
      if (!best || t > best.t) best = { dir, t };
    } catch {
      /* not a run folder */
    }
  }
  return best?.dir;
}

/** The run configuration and folder a train job works on. */
export async function planTrain(p: TrainJobParams): Promise<{ cfg: RunConfig; runDir: string }> {
  if (p.resume) {
    let runDir = p.runDir ? resolve(p.runDir) : undefined;
    if (!runDir) {
      const spec = loadSpec(p.spec, p.workspaceRoot ? { workspaceRoot: p.workspaceRoot } : {});
      runDir = latestRunOf(spec.runsDir, spec.specFile);
      if (!runDir) throw new InputError(spec.specFile, '', `no run folder of this spec under ${spec.runsDir} to resume`);
    }
    return { cfg: await readRunConfig(runDir), runDir };
  }
  const spec = loadSpec(p.spec, p.workspaceRoot ? { workspaceRoot: p.workspaceRoot } : {});
  const cfg = runConfig(spec);
  return { cfg, runDir: p.runDir ? resolve(p.runDir) : newRunDir(cfg.runsDir, cfg.name, new Date(), { claim: true }) };
}

/** The 'train' job. */
export async function runTrainJob(p: TrainJobParams, ctx: JobContext): Promise<JobResult & { kind: 'train' }> {
  if (typeof p.spec !== 'string' || (p.spec === '' && !(p.resume && p.runDir))) throw new Error("train job: 'spec' must be a non-empty string");
  const { cfg, runDir } = await planTrain(p);
  ctx.log('info', `training ${cfg.name} into ${runDir}`);
  let out: TrainOutcome;
  try {
    out = await runTraining(cfg, { runDir, ctx });
  } catch (e) {
    // Input errors name their file; a failure of the training itself (divergence, a failed write)
    // names the run folder, as the CLI's message does.
    if (e instanceof CancelledError || e instanceof InputError || errorMessage(e).includes(runDir)) throw e;
    throw new Error(`${errorMessage(e)} (run folder: ${runDir})`);
  }
  return { kind: 'train', runDir, status: out.status };
}

// ---- command line ------------------------------------------------------------------------------

/** A one-line progress bar on stderr: redrawn in place on a terminal, a line per ~5% otherwise. */
export function progressRenderer(stream: NodeJS.WriteStream = process.stderr, prefix = ''): { progress(p: Omit<JobProgress, 'id'>): void; done(): void } {
  const tty = stream.isTTY === true;
  let drawn = false;
  let lastPrinted = -1;
  return {
    progress(p) {
      const width = 20;
      const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
      const filled = Math.round(frac * width);
      const m = p.metrics ?? {};
      const eta = m.eta_s ?? NaN;
      const etaText = Number.isFinite(eta) ? (eta >= 60 ? `${Math.floor(eta / 60)}m${String(Math.round(eta % 60)).padStart(2, '0')}s` : `${Math.round(eta)}s`) : '?';
      const parts = [
        `${prefix}[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.done}/${p.total}`,
        m.loss !== undefined ? `loss ${m.loss.toFixed(4)}` : '',
        m.eval_loss !== undefined ? `eval ${m.eval_loss.toFixed(4)}${m.eval_accuracy !== undefined ? ` (${p.metricName === 'pearson' ? 'r ' : ''}${formatMetricValue(p.metricName, m.eval_accuracy)})` : ''}` : '',
        m.tokens_per_s !== undefined ? `${Math.round(m.tokens_per_s)} tok/s` : '',
        `ETA ${etaText}`,
      ].filter(Boolean);
      const line = parts.join('  ');
      if (tty) {
        stream.write(`\r${line}\x1b[K`);
        drawn = true;
      } else {
        const every = Math.max(1, Math.floor(p.total / 20));
        if (p.done < lastPrinted) lastPrinted = -1; // a new run (compare's next variant)
        if (p.done === p.total || p.done - lastPrinted >= every) {
          stream.write(`${line}\n`);
          lastPrinted = p.done;
        }
      }
    },
    done() {
      if (tty && drawn) stream.write('\n');
      drawn = false;
    },
  };
}

/**
 * A command-line job context: Ctrl-C / SIGTERM cancel (saying `onCancel`: training keeps a
 * checkpoint), logs to stderr, a progress bar.
 */
export function cliTrainContext(verbose: boolean, prefix = '', onCancel = 'cancelling after the current step (a checkpoint is kept)...'): { ctx: JobContext; close(): void } {
  const ac = new AbortController();
  const onSignal = () => {
    process.stderr.write(`\n${onCancel}\n`);
    ac.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressRenderer(process.stderr, prefix);
  const ctx: JobContext = {
    signal: ac.signal,
    progress: (p) => bar.progress(p),
    log: (level, message) => {
      if (verbose || level === 'warn' || level === 'error') {
        bar.done();
        process.stderr.write(`[${level}] ${message}\n`);
      }
    },
  };
  return {
    ctx,
    close: () => {
      bar.done();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export async function initCliBackend(flag: unknown, fromSpec: BackendPreference, verbose: boolean): Promise<void> {
  const pref = typeof flag === 'string' && flag !== 'auto' && isBackendPreference(flag) ? flag : fromSpec;
  await initBackend(pref, verbose ? (m) => process.stderr.write(`[backend] ${m}\n`) : () => undefined);
}

function summaryLine(out: TrainOutcome): string {
  const s = out.status.summary ?? {};
  const bits = [
    `${out.status.step}/${out.status.totalSteps} steps`,
    s.loss !== undefined ? `loss ${s.loss.toFixed(4)}` : '',
    s.evalLoss !== undefined ? `eval loss ${s.evalLoss.toFixed(4)}` : '',
    s.evalMetric !== undefined ? `${s.metricName ?? 'metric'} ${formatMetricValue(s.metricName, s.evalMetric)}` : '',
    `${out.trainableParams} trainable parameters`,
  ].filter(Boolean);
  return bits.join(', ');
}

async function trainCli(p: TrainJobParams, backendFlag: unknown, verbose: boolean): Promise<void> {
  const { cfg, runDir } = await planTrain(p);
  await initCliBackend(backendFlag, cfg.backend, verbose);
  const resuming = listCheckpoints(runDir).at(-1);
  process.stderr.write(`${resuming ? `resuming ${runDir} from ${resuming.name}` : `training ${cfg.name} into ${runDir}`}\n`);
  const { ctx, close } = cliTrainContext(verbose);
  try {
    const out = await runTraining(cfg, { runDir, ctx });
    close();
    process.stderr.write(`done: ${summaryLine(out)}\n`);
    process.stdout.write(`${runDir}\n`);
  } catch (e) {
    close();
    if (e instanceof CancelledError) throw new Error(`cancelled; continue with: peft-lab resume ${runDir}`);
    throw new Error(`${errorMessage(e)} (run folder: ${runDir})`);
  }
}

/** `peft-lab train SPEC [--run-dir DIR] [--workspace DIR]` */
export async function trainCommand(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void> {
  const spec = positionals[0];
  if (!spec) throw new InputError('', '', 'a spec file (*.peft.json) is required');
  const p: TrainJobParams = { kind: 'train', spec };
  if (typeof values['run-dir'] === 'string') p.runDir = values['run-dir'];
  if (typeof values.workspace === 'string') p.workspaceRoot = values.workspace;
  await trainCli(p, values.backend, values.verbose === true);
}

/** `peft-lab resume RUN_DIR` */
export async function resumeCommand(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void> {
  const dir = positionals[0];
  if (!dir) throw new InputError('', '', 'a run folder is required');
  await trainCli({ kind: 'train', spec: '', runDir: dir, resume: true }, values.backend, values.verbose === true);
}
