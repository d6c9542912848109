/** Learning-rate schedules as transformers' get_{cosine,linear,constant}_schedule_with_warmup. */
import type { ScheduleSpec } from '../spec/types';

export function warmupSteps(s: ScheduleSpec, totalSteps: number): number {
  if (s.warmupSteps !== undefined) return s.warmupSteps;
  if (s.warmupRatio !== undefined) return Math.ceil(s.warmupRatio * totalSteps);
  return 0;
}

/**
 * Learning rate of optimizer step `step` (1-based: the first update is step 1). As in transformers,
 * the multiplier is evaluated at the 0-based update index, so with warmup the first update has lr 0.
 */
export function lrAt(step: number, peak: number, s: ScheduleSpec, totalSteps: number): number {
  const i = step - 1;
  const w = warmupSteps(s, totalSteps);
  if (i < w) return (peak * i) / Math.max(1, w);
  if (s.type === 'constant') return peak;
  const progress = (i - w) / Math.max(1, totalSteps - w);
  if (s.type === 'linear') return peak * Math.max(0, 1 - progress);
  return peak * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
