/**
 * `status.json` read leniently (pure): the fields the dashboard knows, each only when its type is
 * right; keys it does not know (the sidecar may add some) are left out rather than failing the
 * whole file. Undefined when it is not a run status at all.
 */
import { ADAPTER_KINDS, RUN_STATES, type RunStatus } from '../../../protocol';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function statusFromJson(raw: unknown): RunStatus | undefined {
  if (!isObject(raw) || raw.version !== 1 || !(RUN_STATES as readonly unknown[]).includes(raw.state)) return undefined;
  const str = (k: string) => (typeof raw[k] === 'string' ? (raw[k] as string) : undefined);
  // Finite only: 1e999 parses to Infinity, which the JSON trip to the webview would turn into null.
  const num = (o: Record<string, unknown>, k: string) => (typeof o[k] === 'number' && Number.isFinite(o[k]) ? (o[k] as number) : undefined);
  const adapter = str('adapter');
  const s: RunStatus = {
    version: 1,
    state: raw.state as RunStatus['state'],
    spec: str('spec') ?? '',
    name: str('name') ?? '',
    // An adapter kind this build does not know yet still shows as its name.
    adapter: (adapter && (ADAPTER_KINDS as readonly string[]).includes(adapter) ? adapter : 'lora') as RunStatus['adapter'],
    step: num(raw, 'step') ?? 0,
    totalSteps: num(raw, 'totalSteps') ?? 0,
    startedAt: str('startedAt') ?? '',
    updatedAt: str('updatedAt') ?? '',
  };
  const pid = num(raw, 'pid');
  if (pid !== undefined) s.pid = pid;
  const error = str('error');
  if (error !== undefined) s.error = error;
  const ckpt = str('lastCheckpoint');
  if (ckpt !== undefined) s.lastCheckpoint = ckpt;
  const tp = num(raw, 'trainableParams');
  if (tp !== undefined) s.trainableParams = tp;
  const backend = str('backend');
  if (backend !== undefined) s.backend = backend;
  if (isObject(raw.summary)) {
    const sum = raw.summary;
    const out: NonNullable<RunStatus['summary']> = {};
    for (const k of ['loss', 'evalLoss', 'evalMetric', 'tokensPerS'] as const) {
      const v = num(sum, k);
      if (v !== undefined) out[k] = v;
    }
    if (typeof sum.metricName === 'string') out.metricName = sum.metricName;
    s.summary = out;
  }
  return s;
}
