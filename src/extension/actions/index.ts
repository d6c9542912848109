/**
 * Every command of the extension except the panels' own (peftLab.open*, registered by ./panels).
 * What each needs (trust, a sidecar that has not given up) is in ../model/availability.ts.
 */
import type { CommandFactory, Ctx, Handler } from '../commands';
import { COMMAND_NEEDS, type CommandId } from '../model/availability';
import { specFromArgs } from './args';
import { allocateBudget, compare, scoreLayers, train } from './jobs';
import * as runs from './run-actions';
import * as side from './sidecar-actions';
import { newFineTune } from './wizard';

type Enabled = (ctx: Ctx) => Handler;

const withSpec =
  (body: (ctx: Ctx, spec: string) => Promise<void>): Enabled =>
  (ctx) =>
  async (...args) => {
    const spec = await specFromArgs(args);
    if (spec) await body(ctx, spec);
  };

const plain =
  (body: (ctx: Ctx, args: unknown[]) => unknown): Enabled =>
  (ctx) =>
  (...args) =>
    body(ctx, args);

const ENABLED: Record<CommandId, Enabled> = {
  // specs
  'peftLab.newFineTune': plain((ctx) => newFineTune(ctx)),
  'peftLab.fineTune': withSpec((ctx, spec) => train(ctx, { specFile: spec })),
  'peftLab.scoreLayers': withSpec((ctx, spec) => scoreLayers(ctx, spec)),
  'peftLab.compareVariants': withSpec((ctx, spec) => compare(ctx, { specFile: spec })),
  'peftLab.allocateBudget': plain(allocateBudget),
  'peftLab.cancelJob': plain(runs.cancelJob),
  // runs view
  'peftLab.runs.refresh': plain((ctx) => ctx.runs.refresh()),
  'peftLab.runs.openDashboard': plain(runs.openDashboard),
  'peftLab.runs.compareSelected': plain(runs.compareSelected),
  'peftLab.runs.merge': plain(runs.mergeRuns),
  'peftLab.runs.localize': plain(runs.localize),
  'peftLab.runs.evaluate': plain(runs.evaluateRuns),
  'peftLab.runs.try': plain(runs.tryModel),
  'peftLab.runs.openComparison': plain(runs.openComparison),
  'peftLab.runs.openSpec': plain(runs.openSpec),
  'peftLab.runs.cancel': plain(runs.cancelRun),
  'peftLab.runs.resume': plain(runs.resumeRun),
  'peftLab.runs.exportAdapter': plain(runs.exportAdapter),
  'peftLab.runs.exportMerged': plain(runs.exportMerged),
  'peftLab.runs.reveal': plain(runs.revealRun),
  'peftLab.runs.delete': plain(runs.deleteRuns),
  // sidecar
  'peftLab.startSidecar': plain((ctx) => side.startSidecar(ctx)),
  'peftLab.stopSidecar': plain((ctx) => side.stopSidecar(ctx)),
  'peftLab.restartSidecar': plain(side.restartSidecar),
  'peftLab.showStatus': plain((ctx) => side.showStatus(ctx)),
  'peftLab.showOutput': plain((ctx) => ctx.log.show(true)),
};

export const COMMANDS: Record<string, CommandFactory> = Object.fromEntries(
  (Object.keys(ENABLED) as CommandId[]).map((id) => [id, { needs: COMMAND_NEEDS[id], enabled: ENABLED[id] }]),
);
