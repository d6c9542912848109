// @ts-check
'use strict';
/* global suite, test */
/**
 * Runs inside a real VS Code (see .vscode-test.mjs): the extension activates on the fixture
 * workspace (a spec, and a run folder whose process is long gone), registers its commands and puts
 * CodeLenses above the spec.
 */
const assert = require('node:assert/strict');
const path = require('node:path');
const vscode = require('vscode');

const workspace = path.resolve(__dirname, '..', 'fixtures', 'workspace');

suite('PEFT Lab in VS Code', () => {
  test('activates and registers its commands', async () => {
    const ext = vscode.extensions.getExtension('peft-lab.peft-lab');
    assert.ok(ext, 'extension installed');
    await ext.activate();
    const commands = await vscode.commands.getCommands(true);
    for (const id of ['peftLab.fineTune', 'peftLab.newFineTune', 'peftLab.runs.resume', 'peftLab.openDashboard', 'peftLab.restartSidecar']) {
      assert.ok(commands.includes(id), id);
    }
  });

  test('puts Fine-tune and Score layers above a spec', async () => {
    const uri = vscode.Uri.file(path.join(workspace, 'addition-lora.peft.json'));
    await vscode.window.showTextDocument(uri);
    /** @type {vscode.CodeLens[]} */
    const lenses = await vscode.commands.executeCommand('vscode.executeCodeLensProvider', uri);
    const titles = lenses.map((l) => l.command && l.command.title);
    assert.ok(titles.includes('▶ Fine-tune'), JSON.stringify(titles));
    assert.ok(titles.includes('Score layers'), JSON.stringify(titles));
    assert.equal(lenses[0].range.start.line, 0);
  });
});
