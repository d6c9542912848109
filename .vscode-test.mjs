// Desktop integration tests in a downloaded VS Code (Electron), for machines that can download it:
//   npm install --no-save @vscode/test-cli @vscode/test-electron && npx vscode-test
// Not run in CI (CI has no network beyond the npm registry; the end-to-end tier there uses
// code-server, see test/e2e/), and neither package is a dependency: @vscode/test-electron downloads
// VS Code when it runs. A plain object, so nothing here needs @vscode/test-cli to be installed.
export default {
  label: 'electron',
  // Plain CommonJS mocha (TDD) suites: nothing to compile.
  files: 'test/electron/**/*.electron.test.js',
  version: '1.96.4',
  workspaceFolder: './test/fixtures/workspace',
  launchArgs: ['--disable-extensions', '--disable-workspace-trust'],
  mocha: { ui: 'tdd', timeout: 60_000 },
};
