/**
 * Dispatches a job to the task that runs it. Every task is the same code the `peft-lab` command
 * line runs; `selftest` is a tiny synthetic fit the sidecar-process tests use to exercise the job
 * pattern (progress, cancellation) without a model.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone has no gradients registered (the tfjs union package imports this).
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import type { JobParams, JobResult, SelftestJobParams } from '../../../src/protocol';
import { clearPendingDeviceError } from '../backend/webgpu/dispatch';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from './context';
import { runForward, runGrads } from '../tasks/forward';
import { inspectModel } from '../tasks/inspect';
import { runTrainJob } from '../tasks/train';
import { runCompareJob } from '../tasks/compare';
import { runImportance } from '../tasks/importance';
import { runAllocate } from '../tasks/allocate';
import { runLocalize } from '../tasks/localize';
import { runMerge } from '../tasks/merge';
import { runEvaluate } from '../tasks/evaluate';
import { runGenerate } from '../tasks/generate';

export async function runJob(params: JobParams, ctx: JobContext): Promise<JobResult> {
  // The current backend as it is (tf.backend() would initialise one).
  const backend = (tf.engine() as unknown as { backendInstance?: object }).backendInstance;
  if (backend) clearPendingDeviceError(backend);
  switch (params.kind) {
    case 'selftest':
      return selftest(params, ctx);
    case 'train':
      return runTrainJob(params, ctx);
    case 'compare':
      return runCompareJob(params, ctx);
    case 'importance':
      return runImportance(params, ctx);
    case 'allocate':
      return runAllocate(params, ctx);
    case 'localize':
      return runLocalize(params, ctx);
    case 'merge':
      return runMerge(params, ctx);
    case 'evaluate':
      return runEvaluate(params, ctx);
    case 'generate':
      return runGenerate(params, ctx);
    case 'forward':
      return runForward(params, ctx);
    case 'grads':
      return runGrads(params, ctx);
    case 'inspect':
      return { kind: 'inspect', inspect: await inspectModel(params.model) };
    default:
      throw new Error(`job kind '${(params as { kind: string }).kind}' is not implemented yet`);
  }
}

/** Fits W in X·W ≈ Y on a fixed [16,16] synthetic batch with plain SGD; the loss falls step by step. */
async function selftest(params: SelftestJobParams, ctx: JobContext): Promise<JobResult> {
  const { steps, delayMs = 0 } = params;
  const lr = 0.05;
  const [x, y] = tf.tidy(() => {
    const x = tf.randomNormal([16, 16], 0, 1, 'float32', 1);
    const target = tf.randomNormal([16, 16], 0, 0.5, 'float32', 2);
    return [x, tf.matMul(x, target)];
  });
  const w = tf.variable(tf.zeros([16, 16]), true, `selftest_w_${Date.now()}_${Math.random().toString(36).slice(2)}`);
  const losses: number[] = [];
  try {
    for (let step = 0; step < steps; step++) {
      throwIfCancelled(ctx.signal);
      const loss = tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(tf.sub(tf.matMul(x, w), y))) as tf.Scalar, [w]);
        w.assign(tf.sub(w, tf.mul(grads[w.name]!, lr)));
        return value;
      });
      const value = (await loss.data())[0]!;
      loss.dispose();
      losses.push(value);
      ctx.progress({ done: step + 1, total: steps, metrics: { loss: value } });
      if (delayMs > 0) await delay(delayMs, ctx.signal);
      else await yieldToEventLoop();
    }
    throwIfCancelled(ctx.signal);
    if (params.failWith !== undefined) throw new Error(params.failWith);
    return { kind: 'selftest', steps, losses };
  } finally {
    tf.dispose([x, y, w]);
  }
}

/** Waits `ms`, or less when the signal aborts (the next throwIfCancelled then ends the job). */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
