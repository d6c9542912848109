/** What the status bar item says (vscode-free): the sidecar's state, its backend, active jobs; and what stopping or restarting it under running jobs asks. */
import type { BackendInfo, BackendName, JobProgress } from '../../protocol';
import type { SupervisorState } from './supervisor';

/** Short names people know the backends by. */
export const BACKEND_LABELS: Record<BackendName, string> = {
  'tensorflow-gpu': 'CUDA',
  tensorflow: 'TF CPU',
  webgpu: 'WebGPU',
  wasm: 'wasm',
  cpu: 'CPU',
};

export interface StatusBarView {
  text: string;
  tooltip: string;
  /** Whether to show it in the error colour. */
  error: boolean;
}

export interface StatusBarInput {
  state: SupervisorState;
  backend?: BackendInfo;
  /** Active (queued or running) jobs started through this window. */
  jobs: number;
  /** Progress of the single active job, if exactly one. */
  progress?: { done: number; total: number };
  lastError?: string;
  restarts?: number;
}

export function statusBarView(i: StatusBarInput): StatusBarView {
  const backend = i.backend ? BACKEND_LABELS[i.backend.name] : undefined;
  const device = i.backend ? `\nBackend: ${i.backend.name} on ${i.backend.device}` : '';
  switch (i.state) {
    case 'stopped':
      return { text: '$(circle-outline) PEFT', tooltip: 'PEFT Lab sidecar: not running (starts when needed)\nClick for status', error: false };
    case 'starting':
      return { text: '$(sync~spin) PEFT', tooltip: 'PEFT Lab sidecar: starting', error: false };
    case 'restarting':
      return {
        text: '$(sync~spin) PEFT: restarting',
        tooltip: `PEFT Lab sidecar: restarting after a crash${i.lastError ? ` (${i.lastError})` : ''}`,
        error: true,
      };
    case 'stopping':
      return { text: '$(sync~spin) PEFT: stopping', tooltip: 'PEFT Lab sidecar: stopping', error: false };
    case 'failed':
      return {
        text: '$(error) PEFT: stopped',
        tooltip: `PEFT Lab sidecar: crashed too often and was not restarted${i.lastError ? ` (${i.lastError})` : ''}\nClick to restart`,
        error: true,
      };
    case 'running': {
      let jobs = '';
      if (i.jobs === 1 && i.progress && i.progress.total > 0) jobs = ` · ${i.progress.done}/${i.progress.total}`;
      else if (i.jobs > 0) jobs = ` · ${i.jobs} jobs`;
      const icon = i.jobs > 0 ? '$(pulse)' : '$(chip)';
      return {
        text: `${icon} PEFT: ${backend ?? '…'}${jobs}`,
        tooltip: `PEFT Lab sidecar: running${device}${i.jobs ? `\n${i.jobs} active job${i.jobs > 1 ? 's' : ''}` : ''}${i.restarts ? `\nRestarted after ${i.restarts} crash${i.restarts > 1 ? 'es' : ''}` : ''}\nClick for status`,
        error: false,
      };
    }
  }
}

const jobsRunning = (jobs: number) => `${jobs} job${jobs > 1 ? 's are' : ' is'} running`;

/** The modal question before stopping or restarting the sidecar under running jobs; undefined when none run (nothing to ask). */
export function cancelJobsWarning(jobs: number, action: 'stop' | 'restart'): string | undefined {
  if (jobs <= 0) return undefined;
  return `PEFT Lab: ${jobsRunning(jobs)}; ${action === 'stop' ? 'stopping' : 'restarting'} the sidecar cancels ${jobs > 1 ? 'them' : 'it'}.`;
}

/** The offer to restart after a setting the sidecar reads changed, saying what a restart would cancel. */
export function settingsRestartPrompt(jobs: number): string {
  const cancels = jobs > 0 ? ` ${jobsRunning(jobs)}: restarting cancels ${jobs > 1 ? 'them' : 'it'} (a fine-tune keeps its last checkpoint).` : '';
  return `PEFT Lab: restart the sidecar to apply the new settings?${cancels}`;
}

/**
 * A job's progress notification line: the count and the loss, then the sidecar's message, without
 * saying twice what the message says already (training's reads "step 5/20 · loss …").
 */
export function progressMessage(p: JobProgress): string {
  const message = p.message ?? '';
  const count = p.total > 0 ? `${p.done}/${p.total}` : `${p.done}`;
  const parts: string[] = [];
  if (!message.includes(count)) parts.push(count);
  const loss = p.metrics?.loss;
  if (loss !== undefined && Number.isFinite(loss) && !/\bloss\b/.test(message)) parts.push(`loss ${loss.toFixed(4)}`);
  if (message) parts.push(message);
  return parts.join(' · ');
}
