// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'out/**', 'test-output/**', 'scratch/**', '.ci/**', 'media/**', '.e2e-cache/**', '.peft-lab/**', '.vscode-test/**', '.device/**', '.scratch/**', '.gl/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.mjs', 'scripts/*.mjs', 'scripts/device/*.mjs', 'bin/*.js', 'test/fixtures/fake-sidecars/*.js', 'test/fixtures/*.cjs', 'test/fixtures/fake-anchor/*.cjs', 'test/electron/*.js'], maximumDefaultProjectFileMatchCount_THIS_WILL_SLOW_DOWN_LINTING: 32 }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
    },
  },
  // node:test's describe/it return promises the runner tracks itself.
  { files: ['test/**/*.ts'], rules: { '@typescript-eslint/no-floating-promises': 'off' } },
  // The sidecar's stdout is the JSON-RPC channel: nothing may print to it.
  { files: ['sidecar/src/**/*.ts'], ignores: ['sidecar/src/cli.ts', 'sidecar/src/tasks/**'], rules: { 'no-console': 'error' } },
  // The protocol module is shared by every side: no vscode, no TF.js.
  {
    files: ['src/protocol/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['vscode', 'vscode-*', '@tensorflow/*', 'node:*'] }] },
  },
  // The extension's pure logic (unit-tested without VS Code) may not import the vscode API.
  { files: ['src/extension/model/**/*.ts'], rules: { 'no-restricted-imports': ['error', { patterns: ['vscode', 'vscode-languageclient*'] }] } },
  // Webviews run in a browser sandbox: no Node, no vscode API module, no TF.js.
  { files: ['webviews/**/*.ts'], rules: { 'no-restricted-imports': ['error', { patterns: ['vscode', 'node:*', '@tensorflow/*', '**/sidecar/**'] }] } },
  { files: ['bin/*.js', 'test/fixtures/fake-sidecars/*.js'], rules: { '@typescript-eslint/no-require-imports': 'off' }, languageOptions: { globals: { require: 'readonly', __dirname: 'readonly', process: 'readonly' } } },
  // Preloads (`node --require test/fixtures/x.cjs`): CommonJS.
  { files: ['test/fixtures/*.cjs', 'test/fixtures/fake-anchor/*.cjs'], rules: { '@typescript-eslint/no-require-imports': 'off' }, languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', process: 'readonly', console: 'readonly', URL: 'readonly' } } },
  // Desktop VS Code suites (.vscode-test.mjs): CommonJS run by mocha inside the extension host.
  { files: ['test/electron/*.js'], rules: { '@typescript-eslint/no-require-imports': 'off' }, languageOptions: { globals: { require: 'readonly', __dirname: 'readonly' } } },
  { files: ['scripts/*.mjs', 'scripts/device/*.mjs'], languageOptions: { globals: { process: 'readonly', console: 'readonly', performance: 'readonly' } } },
);
