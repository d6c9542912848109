/**
 * The panels in a real workbench: the packaged extension installed into code-server 4.96.4, a
 * workspace with a ~20-step spec on the bundled `peft-lab/tiny-gpt` and a slice of the bundled
 * addition task. ▶ Fine-tune from the CodeLens; the run shows in the Runs view; the dashboard
 * (opened from the running CodeLens) draws loss points that grow as steps arrive; "Score layers"
 * opens the importance heatmap; the budget, comparison and localization panels open on reports;
 * the importance panel's "Allocate a parameter budget…" runs an allocate job and opens the budget
 * beside it; "Localize Skill…" on a run opens its localization; the Runs view lists the reports;
 * "Evaluate on Data…" scores a run and its base on a data file (the evaluation panel);
 * "Compare variants" from the CodeLens runs a compare job and opens its comparison; New Fine-tune…
 * writes a comparison spec; Merge Runs… merges two runs into a model with its report;
 * every panel is photographed in dark and light themes (test-output/screenshots/); after a window
 * reload the dashboard comes back (serializer + saved state). Fails on any CSP violation in any
 * frame and on any request that leaves 127.0.0.1.
 *
 * Run: node scripts/test.mjs e2e (installs code-server on first use into .e2e-cache/).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Frame } from 'playwright-core';
import { CACHE, ensureWorkbench, log, OUTPUT, packageExtension, pollUntil, REPO, startCodeServer, Workbench, type Server } from './harness';

const STEPS = 20;
const ROOT = join(CACHE, 'run');
const WS = join(ROOT, 'workspace');
const SETTINGS: Record<string, unknown> = {
  'security.workspace.trust.enabled': false,
  'workbench.startupEditor': 'none',
  'workbench.colorTheme': 'Default Dark Modern',
  'workbench.editor.enablePreview': false,
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'chat.commandCenter.enabled': false,
  'editor.minimap.enabled': false,
  'git.enabled': false,
  'git.openRepositoryInParentFolders': 'never',
};

const CLI = join(REPO, 'dist', 'cli.js');
const jsonl = (rows: string[], n: number) => `${rows.slice(0, n).join('\n')}\n`;

/** The workspace: the spec, a slice of the bundled addition task, and a compare spec. */
function makeWorkspace(): void {
  rmSync(WS, { recursive: true, force: true });
  mkdirSync(join(WS, 'data'), { recursive: true });
  mkdirSync(join(WS, 'reports'), { recursive: true });
  const train = readFileSync(join(REPO, 'media/data/addition/train.jsonl'), 'utf8').trim().split('\n');
  const evalRows = readFileSync(join(REPO, 'media/data/addition/eval.jsonl'), 'utf8').trim().split('\n');
  writeFileSync(join(WS, 'data/train.jsonl'), jsonl(train, 400));
  writeFileSync(join(WS, 'data/eval.jsonl'), jsonl(evalRows, 48));
  const spec = {
    name: 'tiny',
    description: 'e2e: LoRA on the bundled tiny-gpt, addition task',
    model: 'peft-lab/tiny-gpt',
    data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl' },
    adapter: { kind: 'lora', r: 4, alpha: 8 },
    batchSize: 16,
    steps: STEPS,
    logEvery: 1,
    evalEvery: 5,
    checkpointEvery: STEPS,
    seed: 7,
  };
  writeFileSync(join(WS, 'tiny.peft.json'), `${JSON.stringify(spec, null, 2)}\n`);
  // A comparison spec on the workspace's data (`data` relative to the spec's folder), `steps` each.
  const comparison = (file: string, name: string, data: string, steps: number, variants: { name: string; adapter: Record<string, unknown> }[]) =>
    writeFileSync(
      join(WS, file),
      `${JSON.stringify({ name, model: 'peft-lab/tiny-gpt', data: { train: `${data}/train.jsonl`, eval: `${data}/eval.jsonl` }, batchSize: 8, steps, logEvery: 1, evalEvery: steps / 2, checkpointEvery: steps, runsDir: `${name}-runs`, variants }, null, 2)}\n`,
    );
  // For the command line's report (the comparison panel's first test), three variants.
  comparison('reports/compare.peft.json', 'variants', '../data', 8, [
    { name: 'lora-r4', adapter: { kind: 'lora', r: 4, alpha: 8 } },
    { name: 'ia3', adapter: { kind: 'ia3' } },
    { name: 'bitfit', adapter: { kind: 'bitfit' } },
  ]);
  // Compared from the editor (the CodeLens): two variants, so that its panel is told from the report's.
  comparison('pair.peft.json', 'pair', 'data', 6, [
    { name: 'lora-r2', adapter: { kind: 'lora', r: 2, alpha: 4 } },
    { name: 'bitfit', adapter: { kind: 'bitfit' } },
  ]);
}

/** Runs the command line (for the report files the JSON panels show); resolves with its stderr tail. */
function cli(args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn('node', [CLI, ...args, '--backend', 'wasm'], { cwd: WS, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    p.stdout.resume();
    p.on('exit', (code) => (code === 0 ? res(err) : rej(new Error(`peft-lab ${args[0]} failed (${code}): ${err}`))));
  });
}

const attr = async (frame: Frame, selector: string, name: string): Promise<string | null> => frame.locator(selector).first().getAttribute(name, { timeout: 5_000 }).catch(() => null);

/**
 * Runs a palette command that asks for a run, and picks the comparison's lora-r4 in its quick pick
 * (titled `title`); returns the quick input's box for what the command asks next.
 */
async function pickRun(w: Workbench, command: string, title: string) {
  const p = w.page;
  await w.command(command);
  const input = p.locator('.quick-input-widget .quick-input-box input').first();
  await p.locator('.quick-input-widget .quick-input-title', { hasText: title }).waitFor({ state: 'visible', timeout: 20_000 });
  await input.fill('lora-r4');
  await p.locator('.quick-input-widget .monaco-list-row', { hasText: 'reports/compare/lora-r4' }).first().click();
  return input;
}

describe('panels in a real workbench (code-server + chromium)', { timeout: 15 * 60_000 }, () => {
  let server: Server | undefined;
  let wb: Workbench | undefined;
  let reports: Promise<unknown> = Promise.resolve();

  before(async () => {
    const csDir = ensureWorkbench();
    const vsix = packageExtension(CACHE);
    makeWorkspace();
    // Report files for the JSON panels, made while the workbench starts.
    reports = (async () => {
      await cli(['importance', '--model', join(REPO, 'media/models/tiny-gpt'), '--data', 'data/train.jsonl', '--batches', '4', '--batch-size', '8', '--out', 'reports/importance']);
      await cli(['allocate', '--importance', 'reports/importance/importance.json', '--budgets', '0.5%,1%,2%', '--out', 'reports/allocation.json']);
      await cli(['compare', 'reports/compare.peft.json', '--out', 'reports/compare', '--workspace', WS]);
      // grafting the comparison's LoRA and IA3 runs back onto the base model
      const runs = ['lora-r4', 'ia3'].flatMap((v) => ['--run', `reports/compare/${v}`]);
      await cli(['localize', '--base', join(REPO, 'media/models/tiny-gpt'), ...runs, '--sparsity', '1e-3,1e-2', '--epochs', '2', '--max-rows', '32', '--batch-size', '8', '--out', 'reports/localize']);
      log('report files ready');
    })();
    reports.catch(() => undefined);
    server = await startCodeServer(csDir, join(ROOT, 'profile'), vsix, SETTINGS);
    wb = await Workbench.open(server, WS);
  });

  after(async () => {
    if (wb) {
      if (wb.guards.consoleErrors.length) log('console errors:', wb.guards.consoleErrors.slice(0, 20));
      if (wb.guards.failedResponses.length) log('error responses:', wb.guards.failedResponses.slice(0, 20));
      await wb.page.screenshot({ path: join(OUTPUT, 'e2e-last.png') }).catch(() => undefined);
      await wb.close();
    }
    if (server) {
      writeFileSync(join(OUTPUT, 'e2e-code-server.log'), server.logText());
      await server.stop();
    }
  });

  const frames = new Map<string, Frame>();
  const shots: string[] = [];
  let runDir = '';

  it('fine-tunes from the CodeLens; the dashboard draws the run (growing while it trains, when it can be caught)', async () => {
    const w = wb!;
    await w.clickCodeLens('tiny.peft.json', 'Fine-tune', 90_000);
    // While it trains, the lens says "Fine-tuning n/N" and opens the run's dashboard; a run faster
    // than the lens refresh ends with a notification whose "Open Dashboard" does the same.
    const running = w.codeLens(/Fine-tuning/);
    const finished = w.page.locator('.notification-toast', { hasText: /fine-tune .*finished/ }).first();
    const first = await Promise.race([
      running.waitFor({ state: 'visible', timeout: 300_000 }).then(() => 'running' as const),
      finished.waitFor({ state: 'visible', timeout: 300_000 }).then(() => 'finished' as const),
    ]);
    const clickedLens = first === 'running' && (await running.click({ timeout: 3_000 }).then(() => true, () => false));
    if (!clickedLens) {
      await finished.waitFor({ state: 'visible', timeout: 300_000 });
      await finished.getByRole('button', { name: 'Open Dashboard' }).click();
    }
    log(`opened the dashboard from ${clickedLens ? 'the running CodeLens' : 'the "finished" notification'}`);
    const frame = await w.panelFrame('dashboard');
    frames.set('dashboard', frame);
    await frame.locator('body[data-ready="true"]').waitFor({ timeout: 60_000 });
    const counts = await pollUntil(
      w.page,
      async () => Number((await attr(frame, '#loss-chart', 'data-points')) ?? 0),
      (n) => n >= STEPS,
      180_000,
      `${STEPS} loss points`,
    );
    log('loss points seen:', counts.join(' → '));
    // On a fast backend the run can end before the dashboard is up: growth is then checked on a
    // replayed run below, where the test controls when each step arrives.
    if (counts[0]! < STEPS) assert.ok(counts.length >= 2, `the chart should grow while training; saw ${counts.join(', ')}`);
    else log(`the run finished before the dashboard opened (backend too fast to watch it grow)`);
    runDir = (await frame.locator('#progress tr[data-run]').first().getAttribute('data-run'))!;
    assert.equal(await attr(frame, '#loss-chart', 'data-drawn'), 'true');
    await frame.locator('#progress .state-done').first().waitFor({ timeout: 60_000 });
    assert.ok(Number(await attr(frame, '#loss-chart', 'data-eval-points')) >= 4, 'eval points drawn');
    assert.ok(Number(await attr(frame, '#lr-chart', 'data-points')) >= STEPS, 'learning rate drawn');
    assert.ok(Number(await attr(frame, '#grad-chart', 'data-points')) >= 1, 'gradient norm drawn');
    assert.equal(await frame.locator('#rank-budget').isHidden(), true, 'no AdaLoRA budget chart for a LoRA run');
    assert.equal(await Workbench.frameViolations(frame), 0);
    await w.screenshotPanel(frame, 'dashboard-dark.png');
    shots.push('dashboard');
  });

  it('shows the run in the Runs view', async () => {
    const w = wb!;
    await w.command('PEFT Lab: Focus on Runs View');
    const row = w.page.locator('.pane-body .monaco-list-row:visible', { hasText: /tiny-\d{8}-\d{6}/ }).first();
    await row.waitFor({ state: 'visible', timeout: 30_000 });
    log('runs view row:', (await row.innerText()).replace(/\s+/g, ' ').slice(0, 120));
  });

  it('draws points as steps arrive (a run replayed into a new run folder, one record at a time)', async () => {
    const w = wb!;
    // The real run's records, appended the way the sidecar does it (a line, flushed, per step),
    // with the test deciding when each arrives: every one must show up as a new point.
    const records = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    const status = JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')) as Record<string, unknown>;
    const replay = join(WS, 'runs', 'replay-live');
    mkdirSync(replay, { recursive: true });
    cpSync(join(runDir, 'spec.json'), join(replay, 'spec.json'));
    const writeStatus = (step: number, state: string) =>
      writeFileSync(join(replay, 'status.json'), JSON.stringify({ ...status, name: 'replay-live', state, step, pid: process.pid, updatedAt: new Date().toISOString() }));
    writeStatus(0, 'running');
    writeFileSync(join(replay, 'metrics.jsonl'), `${records.slice(0, 3).join('\n')}\n`);
    await w.command('PEFT Lab: Focus on Runs View');
    const row = w.page.locator('.pane-body .monaco-list-row:visible', { hasText: 'replay-live' }).first();
    await row.waitFor({ state: 'visible', timeout: 30_000 });
    await row.click();
    const frame = await w.panelFrame('dashboard', 60_000, `#progress tr[data-run="${replay}"]`);
    const points = async () => Number((await attr(frame, '#loss-chart', 'data-points')) ?? 0);
    await pollUntil(w.page, points, (n) => n === 3, 30_000, '3 replayed points');
    const seen = [3];
    let eta = '';
    for (let i = 3; i < records.length; i++) {
      appendFileSync(join(replay, 'metrics.jsonl'), `${records[i]}\n`);
      writeStatus(i + 1, 'running');
      await pollUntil(w.page, points, (n) => n === i + 1, 30_000, `${i + 1} replayed points`);
      seen.push(i + 1);
      if (i === 10) {
        await frame.locator('#progress tbody tr td', { hasText: `${i + 1} / ${records.length}` }).first().waitFor({ timeout: 10_000 });
        eta = await frame.locator('#progress tbody tr td').nth(3).innerText();
      }
    }
    log('replayed points:', seen.join(' → '));
    assert.match(eta, /^\d+(m \d\d)?s$/, `an ETA while running, got ${eta}`);
    writeStatus(records.length, 'done');
    await frame.locator('#progress .state-done').first().waitFor({ timeout: 30_000 });
    assert.equal(await points(), records.length);
    assert.ok(Number(await attr(frame, '#loss-chart', 'data-eval-points')) >= 1, 'eval points of the replay');
    log('ETA shown while running:', eta);
    assert.equal(await Workbench.frameViolations(frame), 0);
  });

  it('draws a diverged run (a NaN loss, written as null) with a gap; a message it cannot take shows an error box', async () => {
    const w = wb!;
    // Three records of the real run, the last one diverged: JSON writes its NaN loss as null.
    const records = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').slice(0, 3).map((l) => JSON.parse(l) as Record<string, unknown>);
    records[2]!.loss = null;
    const status = JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')) as Record<string, unknown>;
    const dir = join(WS, 'runs', 'diverged-run');
    mkdirSync(dir, { recursive: true });
    cpSync(join(runDir, 'spec.json'), join(dir, 'spec.json'));
    writeFileSync(join(dir, 'status.json'), JSON.stringify({ ...status, name: 'diverged-run', state: 'failed', step: 3, error: 'loss is NaN at step 3' }));
    writeFileSync(join(dir, 'metrics.jsonl'), `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
    await w.command('PEFT Lab: Focus on Runs View');
    const row = w.page.locator('.pane-body .monaco-list-row:visible', { hasText: 'diverged-run' }).first();
    await row.waitFor({ state: 'visible', timeout: 30_000 });
    await row.click();
    const frame = await w.panelFrame('dashboard', 60_000, `#progress tr[data-run="${dir}"]`);
    await pollUntil(w.page, async () => Number((await attr(frame, '#loss-chart', 'data-points')) ?? 0), (n) => n === 2, 30_000, '2 drawn points and a gap');
    assert.equal(await frame.locator('#empty').isHidden(), true, 'not waiting for metrics');
    assert.equal(await frame.locator('body').getAttribute('data-dropped-messages'), null, 'no message dropped');
    await frame.locator('#progress .state-failed').first().waitFor({ timeout: 10_000 });
    // A message that does not match the protocol (posted to the page the way the host's are): said, not swallowed.
    await frame.evaluate(`window.postMessage(${JSON.stringify({ type: 'dashboard/append', payload: { runId: 'x', records: [{ step: 1, loss: 'high' }] } })}, '*')`);
    const box = frame.locator('#dropped-message');
    await box.waitFor({ state: 'visible', timeout: 10_000 });
    assert.equal(await box.getAttribute('role'), 'alert');
    assert.match(await box.innerText(), /could not be shown .*records\[0\]\.loss/);
    assert.equal(await Workbench.frameViolations(frame), 0);
    await w.command('View: Close Editor');
  });

  it('scores layers and shows the importance heatmap', async () => {
    const w = wb!;
    await w.clickCodeLens('tiny.peft.json', 'Score layers');
    // The panel opens when the sidecar's importance job is done; a failure shows its message instead.
    const failed = w.page.locator('.notification-toast', { hasText: 'layer scoring failed' }).first();
    const outcome = await Promise.race([
      w.panelFrame('importance', 180_000).then(() => 'panel' as const),
      failed.waitFor({ state: 'visible', timeout: 180_000 }).then(() => 'failed' as const),
    ]);
    if (outcome === 'failed') throw new Error(await failed.innerText());
    const frame = await w.panelFrame('importance');
    frames.set('importance', frame);
    await frame.locator('#heatmap-canvas[data-drawn="true"]').waitFor({ timeout: 60_000 });
    const rows = Number(await attr(frame, '#heatmap-canvas', 'data-rows'));
    const cells = Number(await attr(frame, '#heatmap-canvas', 'data-cells'));
    log(`heatmap: ${rows} rows, ${cells} cells`);
    assert.ok(rows >= 4 && cells >= rows, 'heatmap has cells');
    // hover shows a value, click pins the layer
    const canvas = frame.locator('#heatmap-canvas');
    const box = (await canvas.boundingBox())!;
    await canvas.hover({ position: { x: box.width * 0.6, y: box.height * 0.5 } });
    await frame.locator('.tooltip:not([hidden])').waitFor({ timeout: 10_000 });
    await canvas.click({ position: { x: box.width * 0.6, y: box.height * 0.5 } });
    await frame.locator('#pins .chip').first().waitFor({ timeout: 10_000 });
    assert.equal(await Workbench.frameViolations(frame), 0);
    await canvas.hover({ position: { x: box.width * 0.6, y: box.height * 0.75 } });
    await frame.locator('.tooltip:not([hidden])').waitFor({ timeout: 10_000 });
    await w.screenshotPanel(frame, 'importance-dark.png', { keepPointer: true });
    shots.push('importance');
  });

  it('opens the budget, comparison and localization panels on their reports', async () => {
    const w = wb!;
    await reports;
    const open = async (kind: string, file: string, command: string, ready: string) => {
      await w.openFile(file);
      await w.command(command);
      const frame = await w.panelFrame(kind);
      frames.set(kind, frame);
      await frame.locator(ready).first().waitFor({ timeout: 60_000 });
      assert.equal(await Workbench.frameViolations(frame), 0);
      await w.screenshotPanel(frame, `${kind}-dark.png`);
      shots.push(kind);
    };
    await open('budget', 'allocation.json', 'PEFT Lab: Open Parameter Budget', '#budget-chart[data-drawn="true"]');
    // "Train with this allocation": a spec using it, beside the source spec, opened in an editor.
    const budget = frames.get('budget')!;
    await budget.locator('#train').click();
    await budget.locator('#train-result:not([hidden])').waitFor({ timeout: 30_000 });
    const message = await budget.locator('#train-result').innerText();
    log('train with allocation:', message);
    const derived = join(WS, 'tiny.spt-0.5pct.peft.json');
    assert.ok(existsSync(derived), `${derived} written (${message})`);
    const spec = JSON.parse(readFileSync(derived, 'utf8')) as { allocation?: string; name?: string };
    assert.equal(spec.name, 'tiny-spt-0.5pct');
    assert.ok(spec.allocation && existsSync(join(WS, spec.allocation)), `allocation file ${spec.allocation}`);
    await w.page.locator('.tab.active', { hasText: 'tiny.spt-0.5pct.peft.json' }).waitFor({ timeout: 30_000 });
    assert.match(message, /Wrote tiny\.spt-0\.5pct\.peft\.json/);
    await w.command('View: Close Editor');
    await w.page.locator('.tab', { hasText: 'tiny.spt-0.5pct.peft.json' }).waitFor({ state: 'detached', timeout: 30_000 });
    await open('comparison', 'compare.json', 'PEFT Lab: Open Adapter Comparison', '#comparison-chart[data-drawn="true"]');
    const rows = await frames.get('comparison')!.locator('#comparison-table tbody tr').count();
    assert.equal(rows, 3, 'three variants in the table');
    await open('localization', 'localize.json', 'PEFT Lab: Open Skill Localization', '#recovered-chart[data-drawn="true"]');
  });

  it('allocates a parameter budget from the importance panel: an allocate job, the budget panel beside it', async () => {
    const w = wb!;
    const p = w.page;
    await p.locator('.tabs-container .tab', { hasText: 'Importance:' }).first().click();
    const importance = await w.panelFrame('importance', 60_000, '#heatmap-canvas[data-drawn="true"]');
    await importance.locator('#allocate').waitFor({ state: 'visible', timeout: 30_000 });
    await importance.locator('#allocate').click();
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'parameter budgets for importance-tiny-' }).waitFor({ state: 'visible', timeout: 20_000 });
    const input = p.locator('.quick-input-widget .quick-input-box input').first();
    await input.fill('0.5%, 1%');
    await p.keyboard.press('Enter');
    // The Score layers report's allocation, not the command line's report opened before.
    const budget = await w.panelFrame('budget', 180_000, 'p.subtitle:has-text("importance-tiny-")');
    await budget.locator('#budget-chart[data-drawn="true"]').waitFor({ timeout: 60_000 });
    assert.equal(await Workbench.frameViolations(budget), 0);
    // The importance panel stays in view beside it, with the outcome.
    await importance.locator('#allocate-result:not([hidden])').waitFor({ timeout: 30_000 });
    assert.match(await importance.locator('#allocate-result').innerText(), /^Wrote allocation\.json$/);
    const folders = readdirSync(join(WS, 'runs')).filter((d) => /^importance-tiny-\d{8}-\d{6}$/.test(d));
    assert.equal(folders.length, 1, folders.join(', '));
    const report = JSON.parse(readFileSync(join(WS, 'runs', folders[0]!, 'allocation.json'), 'utf8')) as { method: string; spt: { budget: string }[]; rank: { budget: string }[] };
    assert.deepEqual(report.spt.map((b) => b.budget), ['0.5%', '1%']);
    assert.deepEqual(report.rank.map((b) => b.budget), ['0.5%', '1%']);
    assert.equal(report.method, 'fisher', 'the method the heatmap shows');
    await w.command('View: Close Editor');
    await p.locator('.tab', { hasText: 'Budget: allocation.json' }).nth(1).waitFor({ state: 'detached', timeout: 30_000 });
  });

  it('Localize Skill… on a finished run: a localize job, then its localization panel', async () => {
    const w = wb!;
    const p = w.page;
    await reports; // the command line's comparison: lora-r4 among its runs
    await w.command('PEFT Lab: Localize Skill…');
    const input = p.locator('.quick-input-widget .quick-input-box input').first();
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'localize the skill of' }).waitFor({ state: 'visible', timeout: 20_000 });
    await input.fill('lora-r4');
    await p.locator('.quick-input-widget .monaco-list-row', { hasText: 'reports/compare/lora-r4' }).first().click();
    for (const [step, value] of [['(1/2)', '1e-3'], ['(2/2)', '1']] as const) {
      await p.locator('.quick-input-widget .quick-input-title', { hasText: `localize the skill of lora-r4 ${step}` }).waitFor({ state: 'visible', timeout: 20_000 });
      await input.fill(value);
      await p.keyboard.press('Enter');
    }
    const frame = await w.panelFrame('localization', 300_000, 'p.subtitle:has-text("localize-lora-r4-")');
    await frame.locator('#recovered-chart[data-drawn="true"]').waitFor({ timeout: 60_000 });
    assert.equal(await Workbench.frameViolations(frame), 0);
    const folders = readdirSync(join(WS, 'reports', 'compare')).filter((d) => /^localize-lora-r4-\d{8}-\d{6}$/.test(d));
    assert.equal(folders.length, 1, folders.join(', '));
    const report = JSON.parse(readFileSync(join(WS, 'reports', 'compare', folders[0]!, 'localize.json'), 'utf8')) as { options: { epochs: number }; runs: { name: string; levels: { sparsity: number }[] }[] };
    assert.equal(report.options.epochs, 1);
    assert.deepEqual(report.runs.map((r) => [r.name, r.levels.map((l) => l.sparsity)]), [['lora-r4', [1e-3]]]);
    await w.command('View: Close Editor');
  });

  it('lists the reports in the Runs view; a click opens one in its panel', async () => {
    const w = wb!;
    await w.command('PEFT Lab: Focus on Runs View');
    const rows = w.page.locator('.pane-body .monaco-list-row:visible');
    await rows.filter({ hasText: /^Reports/ }).first().waitFor({ state: 'visible', timeout: 30_000 });
    // Score layers' report with the allocation made from it, the localization just made, and the command line's.
    const item = (text: RegExp) => rows.filter({ hasText: text }).first();
    for (const text of [/importance-tiny-\d{8}-\d{6}\s*layer importance/, /importance-tiny-\d{8}-\d{6}\s*parameter budget/, /localize-lora-r4-\d{8}-\d{6}\s*skill localization/, /localize\s*skill localization · reports/]) {
      await item(text).waitFor({ state: 'visible', timeout: 30_000 });
    }
    await item(/localize-lora-r4-/).click();
    const frame = await w.panelFrame('localization', 60_000, 'p.subtitle:has-text("localize-lora-r4-")');
    await frame.locator('#recovered-chart[data-drawn="true"]').waitFor({ timeout: 60_000 });
    await w.command('View: Close Editor');
  });

  it('Evaluate on Data…: a run and its base scored on a data file, the figures in a notification', async () => {
    const w = wb!;
    const p = w.page;
    const input = await pickRun(w, 'PEFT Lab: Evaluate on Data…', 'choose runs to evaluate on a data file');
    await input.fill('');
    await p.keyboard.press('Enter');
    // The workbench's own open dialog (a quick input in a browser), once it has listed the folder it
    // starts in (it sets its text then, over anything typed before): the file's path, then Enter.
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'rows to score lora-r4 on' }).waitFor({ state: 'visible', timeout: 20_000 });
    await p.locator('.quick-input-widget .monaco-list-row', { hasText: 'eval.jsonl' }).first().waitFor({ state: 'visible', timeout: 20_000 });
    const file = join(WS, 'data', 'eval.jsonl');
    await input.fill(file);
    await pollUntil(p, () => input.inputValue(), (v) => v === file, 10_000, 'the path typed into the open dialog');
    await p.keyboard.press('Enter');
    const toast = p.locator('.notification-toast', { hasText: 'rows of eval.jsonl' }).first();
    await toast.waitFor({ state: 'visible', timeout: 120_000 });
    const text = (await toast.innerText()).replace(/\s+/g, ' ');
    log('evaluation:', text.slice(0, 200));
    assert.match(text, /48 rows of eval\.jsonl: lora-r4: loss \d\.\d{4}, exact_match \d+\.\d%, ECE \d\.\d{3} \(base: loss \d\.\d{4}, exact_match \d+\.\d%\)/);
    // Beside the run (in its comparison's folder).
    const folders = readdirSync(join(WS, 'reports', 'compare')).filter((d) => /^eval-eval-\d{8}-\d{6}$/.test(d));
    assert.equal(folders.length, 1, folders.join(', '));
    const report = JSON.parse(readFileSync(join(WS, 'reports', 'compare', folders[0]!, 'evaluation.json'), 'utf8')) as { rows: number; runs: { name: string }[] };
    assert.equal(report.rows, 48);
    assert.deepEqual(report.runs.map((r) => r.name), ['lora-r4']);
    // Open Report: the evaluation panel, the run beside its base.
    await toast.getByRole('button', { name: 'Open Report' }).click();
    const frame = await w.panelFrame('evaluation', 60_000, '#evaluation-chart[data-drawn="true"]');
    frames.set('evaluation', frame);
    assert.deepEqual(await frame.locator('#evaluation-table tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-run'))), ['lora-r4']);
    assert.equal(await frame.locator('#evaluation-chart').getAttribute('data-series'), '2', 'fine-tuned and base bars');
    assert.equal(await Workbench.frameViolations(frame), 0);
    await w.screenshotPanel(frame, 'evaluation-dark.png');
    shots.push('evaluation');
  });

  it('Try the Model…: a prompt through a run and its base, both texts in a Markdown document beside', async () => {
    const w = wb!;
    const p = w.page;
    const input = await pickRun(w, 'PEFT Lab: Try the Model…', 'choose a run to try');
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'PEFT Lab: try lora-r4' }).waitFor({ state: 'visible', timeout: 20_000 });
    await input.fill('41+17=');
    await p.keyboard.press('Enter');
    // An untitled Markdown editor: the prompt, the fine-tuned text and the base's.
    const lines = p.locator('.editor-instance .view-lines', { hasText: '## base' }).first();
    await lines.waitFor({ state: 'visible', timeout: 120_000 });
    const text = (await lines.innerText()).replace(/\u00a0/g, ' ');
    log('try:', text.replace(/\s+/g, ' ').slice(0, 200));
    assert.match(text, /# lora-r4: prompt/);
    assert.match(text, /41\+17=/);
    assert.match(text, /## fine-tuned \(\d+ tokens?, (ended|token limit)\)/);
    assert.match(text, /greedy, up to 64 new tokens/);
    await w.command('View: Revert and Close Editor');
  });

  it('compares variants from the CodeLens: a compare job in the sidecar, then its comparison panel', async () => {
    const w = wb!;
    await w.clickCodeLens('pair.peft.json', 'Compare variants');
    // Two rows: this comparison's panel, not the three-variant report's opened before.
    const frame = await w.panelFrame('comparison', 300_000, '#comparison-table tbody tr:nth-child(2):last-child');
    await frame.locator('#comparison-chart[data-drawn="true"]').waitFor({ timeout: 60_000 });
    const folders = readdirSync(join(WS, 'pair-runs')).filter((d) => /^compare-pair-\d{8}-\d{6}$/.test(d));
    assert.equal(folders.length, 1, `one compare folder under the spec's runsDir: ${folders.join(', ')}`);
    for (const v of ['lora-r2', 'bitfit']) {
      const status = JSON.parse(readFileSync(join(WS, 'pair-runs', folders[0]!, v, 'status.json'), 'utf8')) as { state: string; step: number };
      assert.deepEqual([status.state, status.step], ['done', 6], v);
    }
    assert.equal(await Workbench.frameViolations(frame), 0);
    await w.command('View: Close Editor');
  });

  it('a malformed report opens its panel with the error, naming the file', async () => {
    const w = wb!;
    // A comparison without variants; from the palette, the active editor's file is taken when it
    // is a comparison by name (compare.json). Made here, so that no other test opens it by name.
    const broken = join(WS, 'reports', 'broken');
    mkdirSync(broken, { recursive: true });
    writeFileSync(join(broken, 'compare.json'), '{ "version": 1, "name": "x" }\n');
    await w.openFile('compare.json', 'broken/compare.json');
    await w.command('PEFT Lab: Open Adapter Comparison');
    const frame = await w.panelFrame('comparison', 60_000, '.error-box:not([hidden])');
    const text = await frame.locator('.error-box').first().innerText();
    assert.match(text, /broken[\\/]compare\.json: not a PEFT Lab comparison \(version 1 with "variants"\)/);
    assert.equal(await frame.locator('.error-box').first().getAttribute('role'), 'alert');
    await w.command('View: Close Editor');
    await w.command('View: Close Editor');
    rmSync(broken, { recursive: true, force: true });
  });

  it('New Fine-tune… → "Compare several adapters…" writes a comparison spec that offers Compare variants', async () => {
    const w = wb!;
    const p = w.page;
    const choose = async (label: string) => {
      // Filter as a person would (a long list scrolls its later rows out of view), then pick the row.
      await p.locator('.quick-input-widget .quick-input-box input').waitFor({ state: 'visible', timeout: 20_000 });
      await p.keyboard.type(label.replace(/…$/, ''));
      const row = p.locator('.quick-input-widget .monaco-list-row').filter({ has: p.locator('.label-name', { hasText: label }) }).first();
      await row.waitFor({ state: 'visible', timeout: 20_000 });
      await row.click();
    };
    await w.command('PEFT Lab: New Fine-tune…');
    await choose('peft-lab/tiny-gpt');
    await choose('source');
    await choose('Compare several adapters…');
    // The multi-pick starts with LoRA, DoRA and IA3 checked: accept them.
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'adapters to compare' }).waitFor({ state: 'visible', timeout: 20_000 });
    await p.keyboard.press('Enter');
    // The save dialog (the workbench's own, in a browser) proposes <workspace>/source-compare.peft.json.
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'save the spec' }).waitFor({ state: 'visible', timeout: 20_000 });
    await p.keyboard.press('Enter');
    await p.locator('.tab.active', { hasText: 'source-compare.peft.json' }).waitFor({ state: 'visible', timeout: 30_000 });
    const spec = JSON.parse(readFileSync(join(WS, 'source-compare.peft.json'), 'utf8')) as { adapter?: unknown; data: { train: string }; variants: { name: string }[] };
    assert.deepEqual(spec.variants.map((v) => v.name), ['lora', 'dora', 'ia3']);
    assert.equal(spec.adapter, undefined);
    assert.ok(existsSync(join(WS, spec.data.train)), `the bundled task copied beside the spec: ${spec.data.train}`);
    await w.codeLens('Compare variants').waitFor({ state: 'visible', timeout: 30_000 });
    assert.equal(await w.codeLens('Fine-tune').count(), 0, 'no single fine-tune for a spec without an adapter');
    await w.command('View: Close Editor');
  });

  it('Merge Runs…: two runs picked, a method, a merged model beside them with its report', async () => {
    const w = wb!;
    const p = w.page;
    await reports; // the command line's comparison: lora-r4, ia3 and bitfit, each with an adapter
    await w.command('PEFT Lab: Merge Runs (Task Vectors)…');
    const input = p.locator('.quick-input-widget .quick-input-box input').first();
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'choose runs to merge' }).waitFor({ state: 'visible', timeout: 20_000 });
    for (const name of ['lora-r4', 'ia3']) {
      await input.fill(name);
      const row = p.locator('.quick-input-widget .monaco-list-row', { hasText: `reports/compare/${name}` }).first();
      await row.waitFor({ state: 'visible', timeout: 20_000 });
      await row.click();
    }
    await input.fill('');
    await p.keyboard.press('Enter');
    await p.locator('.quick-input-widget .quick-input-title', { hasText: 'merge 2 runs by' }).waitFor({ state: 'visible', timeout: 20_000 });
    const method = p.locator('.quick-input-widget .monaco-list-row').filter({ has: p.locator('.label-name', { hasText: 'soup-uniform' }) }).first();
    await method.click();
    const toast = p.locator('.notification-toast', { hasText: 'merged 2 runs with soup-uniform' }).first();
    await toast.waitFor({ state: 'visible', timeout: 180_000 });
    log('merge:', (await toast.innerText()).replace(/\s+/g, ' ').slice(0, 160));
    const merges = readdirSync(join(WS, 'reports', 'compare')).filter((d) => /^merge-soup-uniform-\d{8}-\d{6}$/.test(d));
    assert.equal(merges.length, 1, merges.join(', '));
    const report = JSON.parse(readFileSync(join(WS, 'reports', 'compare', merges[0]!, 'merge.json'), 'utf8')) as { method: string; runs: string[]; eval?: { merged: { loss: number } } };
    assert.equal(report.method, 'soup-uniform');
    assert.deepEqual(report.runs.map((r) => r.split(/[\\/]/).pop()).sort(), ['ia3', 'lora-r4']);
    assert.ok(Number.isFinite(report.eval?.merged.loss), 'evaluated on the runs\' data');
    assert.ok(existsSync(join(WS, 'reports', 'compare', merges[0]!, 'model.safetensors')));
    await toast.getByRole('button', { name: 'Open Report' }).click();
    await p.locator('.tab.active', { hasText: 'merge.json' }).waitFor({ state: 'visible', timeout: 20_000 });
    await w.command('View: Close Editor');
  });

  it('re-colours the panels: light (pages rebuilt when their tab is shown again), high contrast (live, in place)', async () => {
    const w = wb!;
    await w.setTheme('Light Modern');
    for (const kind of shots) {
      const tab = w.page.locator('.tabs-container .tab', { hasText: { dashboard: 'Run: tiny-', importance: 'Importance:', budget: 'Budget:', comparison: 'Compare:', localization: 'Localization:', evaluation: 'Evaluation:' }[kind]! }).first();
      await tab.click();
      const frame = await w.panelFrame(kind);
      await frame.locator('body[data-theme="light"][data-ready="true"]').waitFor({ timeout: 60_000 });
      await frame.locator('canvas[data-drawn="true"]').first().waitFor({ timeout: 30_000 });
      assert.equal(await Workbench.frameViolations(frame), 0);
      await w.screenshotPanel(frame, `${kind}-light.png`);
      frames.set(kind, frame);
    }
    // High contrast, first on the panel in view: its page is not rebuilt, the theme watcher re-colours it live.
    const visible = shots.at(-1)!;
    const live = frames.get(visible)!;
    const canvasBefore = await live.locator('canvas').first().screenshot();
    await w.setTheme('Dark High Contrast');
    await live.locator('body[data-theme="high-contrast"]').waitFor({ timeout: 30_000 });
    assert.ok(!live.isDetached(), 'the same page, re-coloured in place');
    await pollUntil(w.page, async () => !(await live.locator('canvas').first().screenshot()).equals(canvasBefore), (changed) => changed, 10_000, 'the chart redrawn in the new colours');
    await w.screenshotPanel(live, `${visible}-high-contrast.png`);
    for (const kind of ['dashboard', 'importance'].filter((k) => shots.includes(k))) {
      await w.page.locator('.tabs-container .tab', { hasText: kind === 'dashboard' ? 'Run: tiny-' : 'Importance:' }).first().click();
      const frame = await w.panelFrame(kind);
      await frame.locator('body[data-theme="high-contrast"][data-ready="true"]').waitFor({ timeout: 60_000 });
      await frame.locator('canvas[data-drawn="true"]').first().waitFor({ timeout: 30_000 });
      await w.screenshotPanel(frame, `${kind}-high-contrast.png`);
    }
    await w.setTheme('Dark Modern');
  });

  it('restores the dashboard with its settings after a window reload', async () => {
    const w = wb!;
    await w.page.locator('.tabs-container .tab', { hasText: 'Run: tiny-' }).first().click();
    let frame = await w.panelFrame('dashboard');
    await frame.locator('body[data-ready="true"]').waitFor({ timeout: 30_000 });
    await frame.locator('#log-scale').check();
    await frame.locator('#x-axis').selectOption('time');
    await w.command('Developer: Reload Window');
    await w.page.locator('.monaco-workbench .part.statusbar').waitFor({ state: 'visible', timeout: 90_000 });
    frame = await w.panelFrame('dashboard', 90_000);
    await frame.locator('body[data-ready="true"]').waitFor({ timeout: 60_000 });
    await pollUntil(w.page, async () => Number((await attr(frame, '#loss-chart', 'data-points')) ?? 0), (n) => n >= STEPS, 60_000, 'restored points');
    assert.equal(await frame.locator('#log-scale').isChecked(), true, 'log scale restored');
    assert.equal(await frame.locator('#x-axis').inputValue(), 'time', 'x axis restored');
  });

  it('saw no CSP violation and no request leaving 127.0.0.1', () => {
    const g = wb!.guards;
    if (g.workbenchCsp.length) log('the workbench page reported CSP blocks of its own:', g.workbenchCsp);
    assert.deepEqual(g.cspViolations, [], `CSP violations:\n${g.cspViolations.join('\n')}`);
    assert.deepEqual(g.external, [], `requests outside 127.0.0.1:\n${g.external.join('\n')}`);
    const files = existsSync(join(OUTPUT, 'screenshots')) ? readdirSync(join(OUTPUT, 'screenshots')) : [];
    for (const kind of shots) for (const theme of ['dark', 'light']) assert.ok(files.includes(`${kind}-${theme}.png`), `${kind}-${theme}.png`);
  });
});
