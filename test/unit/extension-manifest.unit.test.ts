/**
 * package.json's contributions against the code: menus name contributed commands, every extension
 * command has its needs, view-item `when` clauses use flags the runs view sets, the settings the
 * code reads exist, the schema and icon files are where the manifest says, the run-folder default
 * matches the sidecar's, and the .vsix allow-list keeps what the extension needs.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { PANEL_KINDS } from '../../src/protocol/webview';
import { COMMAND_NEEDS } from '../../src/extension/model/availability';
import { planRunDir } from '../../src/extension/model/run-plan';
import { runContextValue } from '../../src/extension/model/tree';

interface Menu {
  command: string;
  when?: string;
  group?: string;
}
interface Manifest {
  main: string;
  engines: { vscode: string };
  activationEvents: string[];
  capabilities: { untrustedWorkspaces: { supported: string | boolean; restrictedConfigurations?: string[] } };
  contributes: {
    commands: { command: string; title: string; enablement?: string }[];
    menus: Record<string, Menu[]>;
    views: Record<string, { id: string; icon?: string }[]>;
    viewsContainers: { activitybar: { id: string; icon: string }[] };
    jsonValidation: { fileMatch: string; url: string }[];
    configuration: { properties: Record<string, { default?: unknown }> };
  };
  scripts: Record<string, string>;
  devDependencies: Record<string, string>;
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as Manifest;
const c = pkg.contributes;
const contributed = new Set(c.commands.map((x) => x.command));
const PANEL_COMMANDS = ['peftLab.openDashboard', 'peftLab.openImportance', 'peftLab.openBudget', 'peftLab.openComparison', 'peftLab.openLocalization', 'peftLab.openEvaluation'];

describe('manifest', () => {
  it('contributes every command the extension registers, and only those', () => {
    for (const id of [...Object.keys(COMMAND_NEEDS), ...PANEL_COMMANDS]) assert.ok(contributed.has(id), id);
    for (const id of contributed) assert.ok(id in COMMAND_NEEDS || PANEL_COMMANDS.includes(id), `${id} is contributed but has no handler`);
    for (const x of c.commands) assert.ok(x.title.length > 0);
  });

  it('names only contributed commands in menus', () => {
    for (const [menu, items] of Object.entries(c.menus)) for (const m of items) assert.ok(contributed.has(m.command), `${menu}: ${m.command}`);
  });

  it('hides the entries that start computation in Restricted Mode (the palette keeps them: run anyway, they explain)', () => {
    const needsTrust = (id: string) => (COMMAND_NEEDS as Record<string, string>)[id]?.startsWith('trust') ?? false;
    let checked = 0;
    for (const [menu, items] of Object.entries(c.menus)) {
      if (menu === 'commandPalette') continue;
      for (const m of items.filter((x) => needsTrust(x.command))) {
        checked++;
        assert.match(m.when ?? '', /(^|&& )isWorkspaceTrusted( &&|$)/, `${menu}: ${m.command}`);
      }
    }
    assert.ok(checked >= 10);
    for (const m of c.menus.commandPalette ?? []) assert.ok(!needsTrust(m.command) || !/isWorkspaceTrusted/.test(m.when ?? ''), m.command);
  });

  it('matches view items by flags the runs view sets', () => {
    const flags = new Set<string>();
    for (const m of c.menus['view/item/context'] ?? []) for (const f of m.when?.matchAll(/viewItem =~ \/:([a-z-]+)\(:\|\$\)\//g) ?? []) flags.add(f[1]!);
    assert.ok(flags.size >= 4);
    const run = (over: object) =>
      runContextValue({ dir: '/r', name: 'r', status: undefined, state: 'done', spec: undefined, lastMetric: undefined, hasAdapter: true, compareFile: '/c.json', ...over });
    const produced = new Set([run({}), run({ state: 'running' }), run({ state: 'interrupted' })].flatMap((v) => v.split(':')));
    for (const f of flags) assert.ok(produced.has(f), `flag ${f} is never set`);
    assert.ok(run({}).startsWith('run:'), 'run items start with run: (the menus match /^run:/)');
  });

  it('declares the settings the code reads, under one prefix', () => {
    const props = Object.keys(c.configuration.properties);
    for (const key of ['backend', 'runsFolder', 'logEvery', 'sidecar.memoryLimitMb', 'sidecar.maxRestarts', 'sidecar.path']) assert.ok(props.includes(`peftLab.${key}`), key);
    for (const p of props) assert.ok(p.startsWith('peftLab.'), p);
  });

  it('runs in untrusted workspaces with limits, and never lets one choose the sidecar script', () => {
    assert.equal(pkg.capabilities.untrustedWorkspaces.supported, 'limited');
    assert.ok(pkg.capabilities.untrustedWorkspaces.restrictedConfigurations?.includes('peftLab.sidecar.path'));
  });

  it('validates *.peft.json with the bundled schema and has its view icon', () => {
    const v = c.jsonValidation.find((x) => x.fileMatch === '*.peft.json');
    assert.ok(v);
    assert.ok(existsSync(v.url), v.url);
    for (const container of c.viewsContainers.activitybar) assert.ok(existsSync(container.icon), container.icon);
    assert.deepEqual(
      c.views[c.viewsContainers.activitybar[0]!.id]?.map((x) => x.id),
      ['peftLab.runs'],
    );
  });

  it('activates for specs and for restored panels', () => {
    assert.ok(pkg.activationEvents.includes('workspaceContains:**/*.peft.json'));
    for (const kind of PANEL_KINDS) assert.ok(pkg.activationEvents.includes(`onWebviewPanel:peftLab.${kind}`), kind);
  });

  it("puts runs where the sidecar does by default (the spec's runsDir default)", () => {
    const schema = JSON.parse(readFileSync('schemas/peft-spec.schema.json', 'utf8')) as { properties: { runsDir: { default: string } } };
    assert.equal(c.configuration.properties['peftLab.runsFolder']?.default, '');
    const dir = planRunDir({ specFile: '/ws/a.peft.json', specText: '{}', now: new Date(2025, 0, 1), exists: () => false });
    assert.equal(dir, `/ws/${schema.properties.runsDir.default}/a-20250101-000000`);
  });

  it('targets VS Code 1.96 and packages a bundled build', () => {
    assert.equal(pkg.engines.vscode, '^1.96.0');
    assert.equal(pkg.devDependencies['@types/vscode'], '1.96.0');
    assert.equal(pkg.main, './dist/extension.js');
    assert.match(pkg.scripts['vscode:prepublish'] ?? '', /build\.mjs --production/);
    // scripts/package.mjs runs vsce on the bundles (no node_modules), per target or for this platform.
    assert.equal(pkg.scripts.package, 'node scripts/package.mjs');
    assert.match(readFileSync('scripts/package.mjs', 'utf8'), /const VSCE_FLAGS = \['--no-dependencies'/);
    assert.match(pkg.devDependencies['@vscode/vsce'] ?? '', /^3\./);
  });

  it('packages from an allow-list that keeps the bundles, media and schemas', () => {
    const lines = readFileSync('.vscodeignore', 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    assert.equal(lines[0], '**');
    for (const keep of ['!package.json', '!dist/extension.js', '!dist/sidecar.js', '!dist/*.wasm', '!dist/webviews/*.js', '!dist/webviews/*.css', '!dist/native/*/*.node', '!dist/dawn/*/*', '!media/**', '!schemas/**']) assert.ok(lines.includes(keep), keep);
  });
});
