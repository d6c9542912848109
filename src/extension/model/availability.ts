/**
 * Which variant of a command to register (vscode-free): a command that starts computation needs a
 * trusted workspace; one that talks to the sidecar needs a sidecar that has not given up.
 */

/**
 *  - `trust`: it starts computation or runs code (fine-tune, compare, resume): not in Restricted Mode;
 *  - `sidecar`: it talks to the sidecar: not after the sidecar gave up (until restarted);
 *  - `none`: always enabled (viewing, file operations, restart).
 */
export type Need = 'trust' | 'sidecar' | 'trust+sidecar' | 'none';

export type Unavailable = 'untrusted' | 'sidecar-failed';

export interface Availability {
  trusted: boolean;
  sidecarFailed: boolean;
}

/** Why a command with these needs is unavailable, or undefined when it is enabled. Trust is reported first. */
export function unavailability(needs: Need, a: Availability): Unavailable | undefined {
  if ((needs === 'trust' || needs === 'trust+sidecar') && !a.trusted) return 'untrusted';
  if ((needs === 'sidecar' || needs === 'trust+sidecar') && a.sidecarFailed) return 'sidecar-failed';
  return undefined;
}

/**
 * What each extension command needs (the panels' own `peftLab.open*` commands are not here: they
 * only show files). Everything that starts a job or runs code needs trust.
 */
export const COMMAND_NEEDS = {
  'peftLab.newFineTune': 'none',
  'peftLab.fineTune': 'trust+sidecar',
  'peftLab.scoreLayers': 'trust+sidecar',
  'peftLab.compareVariants': 'trust+sidecar',
  'peftLab.allocateBudget': 'trust+sidecar',
  'peftLab.cancelJob': 'none',
  'peftLab.runs.refresh': 'none',
  'peftLab.runs.openDashboard': 'none',
  'peftLab.runs.compareSelected': 'none',
  'peftLab.runs.merge': 'trust+sidecar',
  'peftLab.runs.localize': 'trust+sidecar',
  'peftLab.runs.evaluate': 'trust+sidecar',
  'peftLab.runs.try': 'trust+sidecar',
  'peftLab.runs.exportMerged': 'trust+sidecar',
  'peftLab.runs.openComparison': 'none',
  'peftLab.runs.openSpec': 'none',
  'peftLab.runs.cancel': 'none',
  'peftLab.runs.resume': 'trust+sidecar',
  'peftLab.runs.exportAdapter': 'none',
  'peftLab.runs.reveal': 'none',
  'peftLab.runs.delete': 'none',
  'peftLab.startSidecar': 'none',
  'peftLab.stopSidecar': 'none',
  'peftLab.restartSidecar': 'none',
  'peftLab.showStatus': 'sidecar',
  'peftLab.showOutput': 'none',
} as const satisfies Record<string, Need>;

export type CommandId = keyof typeof COMMAND_NEEDS;
