/**
 * `peft-lab localize` and the 'localize' job: skill localization by grafting (see
 * ../analysis/grafting.ts) for one or more fine-tunes of a base model, at several sparsity levels.
 * Writes `mask-<ρ>.safetensors` (U8 0/1, base tensor names) per level and `localize.json`; with
 * several runs each gets a subfolder and the report adds the per-layer Jaccard overlap of their
 * masks at each level. `peft-lab overlap maskA maskB` compares two mask files.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { formatMetricValue, type GraftEval, type GraftLevel, type JobResult, type LocalizeJobParams, type LocalizeReport, type LocalizeRunReport, type MaskOverlap } from '../../../src/protocol';
import { InputError } from '../errors';
import { readSafetensors, toFloat32, writeSafetensors, type HostTensor } from '../io/safetensors';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from '../jobs/context';
import { readConfig } from '../models/config';
import { architectureOf, Model } from '../models/model';
import { disposeTrainBatch, makeBatch } from '../data/batch';
import type { Example } from '../data/dataset';
import { readRunConfig } from '../train/run-folder';
import { baseLoadOptions } from './base-options';
import { chunks, loadAnalysisData, loadDataAsRun, type AnalysisData } from '../analysis/data';
import { evaluateDetailed, scoreOf } from '../analysis/evaluation';
import { loadFinetuned, type Finetuned } from '../analysis/finetuned';
import { GRAFT_DEFAULTS, Grafter, countOnes, hostMasks, maskOverlap } from '../analysis/grafting';
import { divideGrids, gridAxes, layerFromName, moduleTypes, sumGrid } from '../analysis/grid';
import { AnalysisUsageError, int, list, num, reportProgress, runCli, str } from './importance';
import { modelFolder } from '../spec/hub-cache';

export const LOCALIZE_JSON = 'localize.json';
export const DEFAULT_SPARSITY = [1e-4, 1e-3, 1e-2];
export const maskFileName = (rho: number) => `mask-${String(rho)}.safetensors`;

const recovered = (graft: number | undefined, base: number | undefined, ft: number | undefined): number | null => {
  if (graft === undefined || base === undefined || ft === undefined) return null;
  const d = ft - base;
  return Math.abs(d) < 1e-12 || !Number.isFinite(d) ? null : (graft - base) / d;
};

interface Source {
  label: string;
  path: string;
  isRun: boolean;
}

/** Training and validation rows for a source: --data (+ --eval, else a 20% split; read as a run reads its data), else the run's own data. */
async function rowsFor(model: Model, src: Source, p: LocalizeJobParams): Promise<AnalysisData> {
  let d: AnalysisData;
  if (p.data) d = await loadDataAsRun(model, src.isRun ? src.path : undefined, p.data, p.eval ? { eval: p.eval } : { evalSplit: 0.2 }, p.seed ?? 0);
  else if (src.isRun) {
    const cfg = await readRunConfig(src.path);
    d = await loadAnalysisData(model, { ...cfg.data, ...(cfg.data.eval || cfg.data.evalSplit !== undefined ? {} : { evalSplit: 0.2 }) }, p.seed ?? 0);
  } else throw new InputError(src.path, '', 'a fine-tuned model folder has no data of its own: pass --data FILE');
  if (d.data.eval.length === 0) throw new InputError(p.data ?? src.path, '', 'no validation rows (give --eval FILE, or more rows for the 20% split)');
  return d;
}

async function localizeOne(model: Model, src: Source, p: LocalizeJobParams, outDir: string, ctx: JobContext, step: { done: number; total: number; t0: number }): Promise<{ report: LocalizeRunReport; masks: Map<number, Map<string, Uint8Array>> }> {
  const epochs = p.epochs ?? 10;
  const batchSize = p.batchSize ?? 16;
  const maxRows = p.maxRows ?? 256;
  const levels = p.sparsity ?? DEFAULT_SPARSITY;
  const data = await rowsFor(model, src, p);
  const train: Example[] = data.data.train.slice(0, maxRows);
  const val: Example[] = data.data.eval.slice(0, maxRows);
  const info = model.paramInfo();
  const cand = info.filter((x) => x.layer >= 0);
  const candidateParams = cand.reduce((s, x) => s + x.shape.reduce((a, b) => a * b, 1), 0);
  const ft: Finetuned = await loadFinetuned(model, src.path);
  const tau = new Map<string, tf.Tensor>();
  const carried = new Map<string, tf.Tensor>();
  const masksOut = new Map<number, Map<string, Uint8Array>>();
  try {
    for (const x of info) {
      const t = ft.params.get(x.name);
      if (!t) continue;
      const d = tf.tidy(() => tf.sub(t, model.params.get(x.name)!));
      const changed = (await tf.tidy(() => tf.max(tf.abs(d))).data())[0]! > 0;
      if (!changed) {
        d.dispose();
        continue;
      }
      if (x.layer >= 0) tau.set(x.name, d);
      else {
        d.dispose();
        // A classification head trained with the run travels with every graft (and the base reference).
        if (x.type === 'head' && model.arch.task !== 'causal-lm') carried.set(x.name, t);
      }
    }
    if (tau.size === 0) throw new InputError(src.path, '', 'the fine-tune changes no tensor of the transformer blocks: nothing to localize');
    const names = [...tau.keys()];
    const pre = new Map(names.map((n) => [n, model.params.get(n)!]));
    const evalWith = async (over: ReadonlyMap<string, tf.Tensor> | undefined, rows: Example[]): Promise<GraftEval> => {
      const m = new Map(carried);
      for (const [k, v] of over ?? []) m.set(k, v);
      return evaluateDetailed(model, { overrides: m }, rows, batchSize, data.batchOpts, ctx.signal);
    };
    // The fine-tuned model itself: every tensor the fine-tune changed (embeddings too), not just the candidates.
    const ftOver = new Map(ft.params);
    const base = { train: await evalWith(undefined, train), validation: await evalWith(undefined, val) };
    const fine = { train: await evalWith(ftOver, train), validation: await evalWith(ftOver, val) };
    const levelReports: GraftLevel[] = [];
    const batches = chunks(train, batchSize, p.batches ?? Infinity);
    for (const rho of levels) {
      throwIfCancelled(ctx.signal);
      const g = await Grafter.create(pre, tau, { sparsity: rho, bias: p.bias ?? GRAFT_DEFAULTS.bias, lr: p.lr ?? GRAFT_DEFAULTS.lr, seed: p.seed ?? 0, candidateParams });
      let best: { score: number; tie: number; epoch: number; mask: Map<string, tf.Tensor> } | undefined;
      const curve: GraftLevel['curve'] = [];
      try {
        const consider = async (epoch: number) => {
          const mask = g.mask();
          const graft = g.graft(true);
          try {
            const tr = await evalWith(graft, train);
            const va = await evalWith(graft, val);
            let grafted = 0;
            for (const m of mask.values()) grafted += (await tf.tidy(() => tf.sum(m)).data())[0]!;
            curve.push({ epoch, grafted, trainLoss: tr.loss, valLoss: va.loss, ...(tr.metric !== undefined ? { trainMetric: tr.metric } : {}), ...(va.metric !== undefined ? { valMetric: va.metric } : {}) });
            // Train + validation accuracy (−loss when the data has no metric), ties broken by the lower
            // train + validation loss; the first mask, then strictly better ones.
            const score = scoreOf(tr) + scoreOf(va);
            const tie = -(tr.loss + va.loss);
            if (!best || score > best.score || (score === best.score && tie > best.tie)) {
              if (best) tf.dispose([...best.mask.values()]);
              best = { score, tie, epoch, mask };
            } else tf.dispose([...mask.values()]);
          } finally {
            tf.dispose([...graft.values()]);
          }
        };
        await consider(0);
        for (let epoch = 1; epoch <= epochs; epoch++) {
          throwIfCancelled(ctx.signal);
          const soft = g.graft(false);
          const extra = new Map(carried);
          for (const [k, v] of soft) extra.set(k, v);
          let sum: Map<string, tf.Tensor> | undefined;
          try {
            for (const chunk of batches) {
              throwIfCancelled(ctx.signal);
              const b = makeBatch(chunk, data.batchOpts);
              try {
                const { loss, grads } = model.lossAndGrads(names, b.inputs, b.labels, { extra });
                loss.dispose();
                if (!sum) sum = grads;
                else {
                  for (const [n, gr] of grads) {
                    const old = sum.get(n)!;
                    sum.set(n, tf.add(old, gr));
                    tf.dispose([old, gr]);
                  }
                }
              } finally {
                disposeTrainBatch(b);
              }
              await yieldToEventLoop();
            }
            const mean = new Map<string, tf.Tensor>();
            for (const [n, s] of sum!) mean.set(n, tf.div(s, batches.length));
            g.update(mean);
            tf.dispose([...mean.values()]);
          } finally {
            if (sum) tf.dispose([...sum.values()]);
            tf.dispose([...soft.values()]);
          }
          await consider(epoch);
          step.done++;
          const last = curve.at(-1)!;
          reportProgress(ctx, step.t0, step.done, step.total, `${src.label}: ρ=${rho} epoch ${epoch}/${epochs}`, { grafted: last.grafted, eval_loss: last.valLoss, ...(last.valMetric !== undefined ? { eval_accuracy: last.valMetric } : {}) });
        }
        // The best mask, evaluated in full (with calibration).
        const bestMask = best!.mask;
        const graft = new Map<string, tf.Tensor>();
        for (const n of names) graft.set(n, tf.tidy(() => tf.add(pre.get(n)!, tf.mul(bestMask.get(n)!, tau.get(n)!))));
        let trE: GraftEval;
        let vaE: GraftEval;
        try {
          trE = await evalWith(graft, train);
          vaE = await evalWith(graft, val);
        } finally {
          tf.dispose([...graft.values()]);
        }
        throwIfCancelled(ctx.signal);
        const host = await hostMasks(bestMask);
        masksOut.set(rho, host);
        const file = join(outDir, maskFileName(rho));
        const tensors = new Map<string, HostTensor>();
        for (const [n, m] of host) tensors.set(n, { dtype: 'U8', shape: [...tau.get(n)!.shape], data: m });
        await writeSafetensors(file, tensors, { format: 'pt', peft_lab: 'graft-mask', sparsity: String(rho), source: src.path });
        const grafted = [...host.values()].reduce((s, m) => s + countOnes(m), 0);
        const cells = info.map((x) => ({ layer: x.layer, type: x.type, numel: x.shape.reduce((a, b) => a * b, 1), grafted: host.has(x.name) ? countOnes(host.get(x.name)!) : 0 }));
        const axes = gridAxes(model.config.numLayers, moduleTypes(info));
        const density = divideGrids(sumGrid(axes, cells, (c) => c.grafted), sumGrid(axes, cells, (c) => c.numel));
        const layerDensity = Array.from({ length: model.config.numLayers }, (_, l) => {
          const c = cells.filter((x) => x.layer === l);
          const gsum = c.reduce((s, x) => s + x.grafted, 0);
          return { layer: l, grafted: gsum, density: gsum / Math.max(1, c.reduce((s, x) => s + x.numel, 0)) };
        });
        levelReports.push({
          sparsity: rho,
          mask: file,
          grafted,
          candidates: candidateParams,
          fraction: grafted / candidateParams,
          fractionOfModel: grafted / model.parameterCount(),
          baseMask: g.baseMaskSize,
          bestEpoch: best!.epoch,
          curve,
          train: trE,
          validation: vaE,
          recovered: { metric: recovered(vaE.metric, base.validation.metric, fine.validation.metric), loss: recovered(vaE.loss, base.validation.loss, fine.validation.loss) },
          recoveredTrain: { metric: recovered(trE.metric, base.train.metric, fine.train.metric), loss: recovered(trE.loss, base.train.loss, fine.train.loss) },
          layerDensity,
          density,
        });
      } finally {
        if (best) tf.dispose([...best.mask.values()]);
        g.dispose();
      }
    }
    return {
      report: {
        name: src.label,
        source: src.path,
        ...(data.data.metricName ? { metricName: data.data.metricName } : {}),
        trainRows: train.length,
        validationRows: val.length,
        carried: [...carried.keys()],
        base,
        finetuned: fine,
        levels: levelReports,
      },
      masks: masksOut,
    };
  } finally {
    tf.dispose([...tau.values()]);
    ft.dispose();
  }
}

const labelOf = (path: string) => {
  const b = basename(resolve(path));
  return b === 'adapter' ? basename(dirname(resolve(path))) : b;
};

/** (layer, module type) of a base tensor, from the architecture. */
function locator(model: Model): (name: string) => { layer: number; type: string } {
  const m = new Map(model.paramInfo().map((x) => [x.name, { layer: x.layer, type: x.type }]));
  return (n) => m.get(n) ?? { layer: layerFromName(n), type: 'other' };
}

export async function runLocalize(p: LocalizeJobParams, ctx: JobContext): Promise<JobResult & { kind: 'localize' }> {
  const sources: Source[] = [...(p.runs ?? []).map((r) => ({ label: labelOf(r), path: resolve(r), isRun: existsSync(join(r, 'spec.json')) })), ...(p.finetuned ?? []).map((f) => ({ label: labelOf(f), path: resolve(f), isRun: false }))];
  if (sources.length === 0) throw new InputError('', 'runs', 'give --run RUN_DIR or --finetuned DIR');
  const levels = p.sparsity ?? DEFAULT_SPARSITY;
  if (levels.some((r) => !(r > 0 && r <= 1))) throw new InputError('', 'sparsity', `each level must be in (0, 1]; got ${levels.join(', ')}`);
  const out = resolve(p.out);
  await fsp.mkdir(out, { recursive: true });
  // Every source fine-tunes this base with one head size: the first one's.
  const model = await Model.load(modelFolder(p.base), await baseLoadOptions(sources[0]!.path));
  try {
    const step = { done: 0, total: sources.length * levels.length * (p.epochs ?? 10), t0: performance.now() };
    const runs: LocalizeRunReport[] = [];
    const masks: Map<number, Map<string, Uint8Array>>[] = [];
    const labels = new Set<string>();
    for (const src of sources) {
      let label = src.label;
      for (let i = 2; labels.has(label); i++) label = `${src.label}-${i}`;
      labels.add(label);
      const dir = sources.length > 1 ? join(out, label) : out;
      await fsp.mkdir(dir, { recursive: true });
      const r = await localizeOne(model, { ...src, label }, p, dir, ctx, step);
      runs.push(r.report);
      masks.push(r.masks);
    }
    const report: LocalizeReport = {
      version: 1,
      base: modelFolder(p.base),
      options: { epochs: p.epochs ?? 10, lr: p.lr ?? GRAFT_DEFAULTS.lr, bias: p.bias ?? GRAFT_DEFAULTS.bias, batchSize: p.batchSize ?? 16, seed: p.seed ?? 0 },
      runs,
    };
    if (runs.length > 1) {
      const where = locator(model);
      const columns = moduleTypes(model.paramInfo());
      const overlap: MaskOverlap[] = [];
      for (const rho of levels)
        for (let i = 0; i < runs.length; i++)
          for (let j = i + 1; j < runs.length; j++)
            overlap.push(maskOverlap(masks[i]!.get(rho)!, masks[j]!.get(rho)!, where, { a: runs[i]!.name, b: runs[j]!.name, numLayers: model.config.numLayers, columns, sparsity: rho }));
      report.overlap = overlap;
    }
    throwIfCancelled(ctx.signal);
    await fsp.writeFile(join(out, LOCALIZE_JSON), `${JSON.stringify(report, null, 1)}\n`, 'utf8');
    return { kind: 'localize', out, report };
  } finally {
    model.dispose();
  }
}

/** Overlap of two mask files (layers and module types from --model when given, else from the names). */
export async function overlapFiles(a: string, b: string, modelDir?: string): Promise<MaskOverlap> {
  const read = async (f: string) => new Map([...(await readSafetensors(f))].map(([n, h]) => [n, Uint8Array.from(toFloat32(h), (v) => (v !== 0 ? 1 : 0))]));
  const [ma, mb] = [await read(a), await read(b)];
  for (const [n, m] of ma) {
    const o = mb.get(n);
    if (o && o.length !== m.length) throw new InputError(b, n, `size ${o.length} differs from ${a}'s ${m.length}: masks of different models`);
  }
  let where: (n: string) => { layer: number; type: string };
  let numLayers: number;
  let columns: string[];
  if (modelDir) {
    const cfg = readConfig(modelFolder(modelDir));
    const info = architectureOf(cfg).params(cfg);
    const m = new Map(info.map((x) => [x.name, { layer: x.layer, type: x.type }]));
    where = (n) => m.get(n) ?? { layer: layerFromName(n), type: 'other' };
    numLayers = cfg.numLayers;
    columns = moduleTypes(info);
  } else {
    // The module path after the block index, without .weight / .bias (e.g. attn.c_attn).
    where = (n) => ({ layer: layerFromName(n), type: n.replace(/^.*?(?:^|\.)(?:h|layers|layer|blocks)\.\d+\./, '').replace(/\.(weight|bias)$/, '') });
    const all = [...new Set([...ma.keys(), ...mb.keys()])];
    numLayers = Math.max(0, ...all.map((n) => layerFromName(n) + 1));
    columns = [...new Set(all.map((n) => where(n).type))];
  }
  return maskOverlap(ma, mb, where, { a: resolve(a), b: resolve(b), numLayers, columns });
}

// ---- command line ------------------------------------------------------------------------------

export const LOCALIZE_USAGE =
  'localize --base DIR (--run RUN_DIR | --finetuned DIR)… [--data FILE [--eval FILE]] [--sparsity 1e-4,1e-3,1e-2] [--epochs 10] [--lr 1e7] [--bias 10] [--batch-size 16] [--batches N] [--max-rows 256] [--seed N] --out DIR';
export const OVERLAP_USAGE = 'overlap MASK_A MASK_B [--model DIR] [--out FILE]';

export async function localizeCommand(v: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const runs = list(v, 'run');
  const finetuned = list(v, 'finetuned');
  if (runs.length + finetuned.length === 0) throw new AnalysisUsageError('give --run RUN_DIR (or --finetuned DIR), once per fine-tune');
  const p: LocalizeJobParams = { kind: 'localize', base: str(v, 'base')!, out: str(v, 'out')!, ...(runs.length ? { runs } : {}), ...(finetuned.length ? { finetuned } : {}) };
  const sp = list(v, 'sparsity').map(Number);
  if (sp.length) {
    if (sp.some((x) => !(x > 0 && x <= 1))) throw new AnalysisUsageError(`--sparsity levels must be in (0, 1], got '${list(v, 'sparsity').join(',')}'`);
    p.sparsity = sp;
  }
  const data = str(v, 'data', false);
  const ev = str(v, 'eval', false);
  if (data) p.data = data;
  if (ev) p.eval = ev;
  const e = int(v, 'epochs');
  const lr = num(v, 'lr');
  const bias = num(v, 'bias');
  const bs = int(v, 'batch-size');
  const nb = int(v, 'batches');
  const mr = int(v, 'max-rows');
  const seed = int(v, 'seed', 0);
  if (e !== undefined) p.epochs = e;
  if (lr !== undefined) p.lr = lr;
  if (bias !== undefined) p.bias = bias;
  if (bs !== undefined) p.batchSize = bs;
  if (nb !== undefined) p.batches = nb;
  if (mr !== undefined) p.maxRows = mr;
  if (seed !== undefined) p.seed = seed;
  const r = await runCli(v.verbose === true, (ctx) => runLocalize(p, ctx));
  const pct = (x: number | undefined | null) => (x === undefined || x === null ? '-' : `${(x * 100).toFixed(1)}%`);
  const ece = (e: GraftEval) => (Number.isFinite(e.ece) ? `, ECE ${e.ece.toFixed(3)}` : '');
  for (const run of r.report.runs) {
    // A task metric in its own terms (a percent of right answers, a regression's r); recovery is a fraction either way.
    const metric = (e: GraftEval) => (e.metric === undefined ? '-' : formatMetricValue(run.metricName, e.metric));
    process.stderr.write(`${run.name}: base ${metric(run.base.validation)} / loss ${run.base.validation.loss.toFixed(4)}, fine-tuned ${metric(run.finetuned.validation)} / loss ${run.finetuned.validation.loss.toFixed(4)}${ece(run.finetuned.validation)}\n`);
    for (const l of run.levels)
      process.stderr.write(`  ρ=${l.sparsity}: ${l.grafted} grafted (${(l.fraction * 100).toPrecision(3)}% of block parameters), ${metric(l.validation)} / loss ${l.validation.loss.toFixed(4)}, recovered ${pct(l.recovered.metric)} (metric), ${pct(l.recovered.loss)} (loss)${ece(l.validation)}\n`);
  }
  for (const o of r.report.overlap ?? []) process.stderr.write(`overlap ${o.a} × ${o.b} at ρ=${o.sparsity}: Jaccard ${o.jaccard.toFixed(4)}\n`);
  process.stdout.write(`wrote ${join(r.out, LOCALIZE_JSON)}\n`);
}

export async function overlapCommand(v: Record<string, string | boolean | string[] | undefined>, positionals: string[]): Promise<void> {
  const [a, b] = positionals;
  if (!a || !b) throw new AnalysisUsageError('two mask files are required');
  const model = str(v, 'model', false);
  const o = await overlapFiles(a, b, model);
  const out = str(v, 'out', false);
  if (out) {
    await fsp.mkdir(dirname(resolve(out)), { recursive: true });
    await fsp.writeFile(out, `${JSON.stringify(o, null, 1)}\n`, 'utf8');
  }
  process.stdout.write(`Jaccard ${o.jaccard.toFixed(6)}\n${o.perLayer.map((l) => `  layer ${l.layer}: ${l.jaccard.toFixed(6)} (${l.both} shared of ${l.a} and ${l.b})`).join('\n')}\n`);
}
