/** Which AdapterSpec options each adapter kind uses; validation rejects the others. */
import type { AdapterKind, AdapterSpec, LoraInit } from '../../../src/protocol';

type Option = Exclude<keyof AdapterSpec, 'kind'>;

const LORA: Option[] = ['targets', 'layers', 'r', 'alpha', 'dropout', 'rslora', 'bias', 'rankPattern', 'alphaPattern', 'init', 'calibRows', 'modulesToSave'];

export const ADAPTER_OPTIONS: Record<AdapterKind, readonly Option[]> = {
  lora: LORA,
  dora: LORA,
  adalora: ['targets', 'layers', 'r', 'alpha', 'dropout', 'bias', 'adalora', 'modulesToSave'],
  loha: ['targets', 'layers', 'r', 'alpha', 'rankPattern', 'alphaPattern', 'modulesToSave'],
  lokr: ['targets', 'layers', 'r', 'alpha', 'rankPattern', 'alphaPattern', 'decomposeBoth', 'decomposeFactor', 'modulesToSave'],
  oft: ['targets', 'layers', 'blockSize', 'modulesToSave'],
  hra: ['targets', 'layers', 'r', 'gramSchmidt', 'modulesToSave'],
  vera: ['targets', 'layers', 'r', 'dropout', 'bias', 'modulesToSave'],
  ia3: ['targets', 'modulesToSave'],
  ssf: ['targets', 'modulesToSave'],
  bottleneck: ['targets', 'bottleneck', 'modulesToSave'],
  bitfit: ['targets', 'modulesToSave'],
  'ln-tuning': ['targets', 'modulesToSave'],
  loldu: ['targets', 'r', 'modulesToSave'],
  svfit: ['targets', 'r', 'modulesToSave'],
  full: [],
  sparse: ['mask', 'modulesToSave'],
};

/** Inits that read training rows (calibration for CorDA, gradients for LoRA-GA). */
export const CALIBRATED_INITS: readonly LoraInit[] = ['corda-ipm', 'corda-kpm', 'lora-ga'];
/** Inits that replace the frozen base weight by a residual. */
export const RESIDUAL_INITS: readonly LoraInit[] = ['pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga'];

/** Problems with an adapter spec's combination of options: [option or '', message]. */
export function adapterOptionProblems(a: AdapterSpec): [string, string][] {
  const out: [string, string][] = [];
  const allowed = ADAPTER_OPTIONS[a.kind];
  if (!allowed) return out; // the schema reports an unknown kind
  for (const key of Object.keys(a) as (keyof AdapterSpec)[]) {
    if (key === 'kind') continue;
    if (!(allowed as readonly string[]).includes(key)) {
      out.push([key, `option ${JSON.stringify(key)} is not used by adapter kind ${JSON.stringify(a.kind)} (${allowed.length ? `its options: ${allowed.join(', ')}` : 'it takes no options'})`]);
    }
  }
  if (a.kind === 'sparse' && a.mask === undefined) out.push(['', 'adapter kind "sparse" needs "mask" (a safetensors file of 0/1 masks)']);
  if (a.kind === 'dora' && a.init !== undefined && a.init !== 'default' && a.init !== 'gaussian')
    out.push(['init', `init ${JSON.stringify(a.init)} is not available with DoRA (use "default" or "gaussian")`]);
  if (a.decomposeFactor !== undefined && (a.decomposeFactor === 0 || a.decomposeFactor < -1))
    out.push(['decomposeFactor', `"decomposeFactor" is -1 (near the square root) or a positive integer, got ${a.decomposeFactor}`]);
  if (a.calibRows !== undefined && !(a.init && CALIBRATED_INITS.includes(a.init)))
    out.push(['calibRows', `"calibRows" is only used by the calibrated inits (${CALIBRATED_INITS.join(', ')})`]);
  return out;
}
