/**
 * End-to-end harness: a real VS Code workbench (code-server 4.96.4, installed and cached by
 * ./setup.sh) with the packaged extension installed from its .vsix, driven by Debian's chromium
 * through playwright-core. Everything it starts it stops by process id (code-server is started as
 * a process group leader so its extension host and the sidecar go with it).
 *
 * Guards every test gets: no request may leave 127.0.0.1 (routed and aborted, and recorded), and
 * no frame may log a Content-Security-Policy violation (console messages of every frame, plus the
 * `data-csp-violations` counter the panels' bootstrap keeps from `securitypolicyviolation` events).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Frame, type Locator, type Page } from 'playwright-core';

export const REPO = resolve(__dirname, '..', '..');
export const CACHE = process.env.E2E_CACHE ?? join(REPO, '.e2e-cache');
export const OUTPUT = join(REPO, 'test-output');
export const SCREENSHOTS = join(OUTPUT, 'screenshots');
const t0 = Date.now();
export const log = (...a: unknown[]): void => console.log(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${(r.stderr || r.stdout || String(r.error ?? '')).slice(-4000)}`);
  return r.stdout;
}

/** Installs code-server (once; cached) and returns its folder. */
export function ensureWorkbench(): string {
  const r = spawnSync('bash', [join(REPO, 'test/e2e/setup.sh')], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, E2E_CACHE: CACHE } });
  if (r.status !== 0) throw new Error(`test/e2e/setup.sh failed (${r.status ?? r.signal})`);
  const dir = r.stdout.trim().split('\n').pop()!;
  if (!existsSync(join(dir, 'out', 'node', 'entry.js'))) throw new Error(`no code-server at ${dir}`);
  return dir;
}

/**
 * The extension as a .vsix: `npm run package` (vsce, production build) when the project has that
 * script, else a hand-made zip of what .vscodeignore lets through. Returns the path.
 */
export function packageExtension(into: string): string {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { name: string; publisher: string; version: string; scripts?: Record<string, string>; engines: { vscode: string }; displayName?: string };
  const out = join(into, `${pkg.name}.vsix`);
  rmSync(out, { force: true });
  if (pkg.scripts?.package && existsSync(join(REPO, 'node_modules', '.bin', 'vsce'))) {
    log('packaging with npm run package');
    run('npm', ['run', '--silent', 'package']);
    const made = join(REPO, `${pkg.name}.vsix`);
    if (!existsSync(made)) throw new Error(`npm run package did not write ${made}`);
    cpSync(made, out);
    rmSync(made, { force: true });
    return out;
  }
  log('packaging by hand (no npm run package)');
  run('node', ['scripts/build.mjs', '--production']);
  const stage = join(into, 'vsix-stage');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, 'extension'), { recursive: true });
  for (const p of ['package.json', 'README.md', 'dist', 'media', 'schemas']) if (existsSync(join(REPO, p))) cpSync(join(REPO, p), join(stage, 'extension', p), { recursive: true, filter: (s) => !s.endsWith('.map') });
  writeFileSync(
    join(stage, '[Content_Types].xml'),
    '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension=".json" ContentType="application/json"/><Default Extension=".js" ContentType="application/javascript"/><Default Extension=".vsixmanifest" ContentType="text/xml"/></Types>\n',
  );
  writeFileSync(
    join(stage, 'extension.vsixmanifest'),
    `<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011" xmlns:d="http://schemas.microsoft.com/developer/vsx-schema-design/2011">
  <Metadata>
    <Identity Language="en-US" Id="${pkg.name}" Version="${pkg.version}" Publisher="${pkg.publisher}" />
    <DisplayName>${pkg.displayName ?? pkg.name}</DisplayName>
    <Description xml:space="preserve"></Description>
    <Properties><Property Id="Microsoft.VisualStudio.Code.Engine" Value="${pkg.engines.vscode}" /><Property Id="Microsoft.VisualStudio.Code.ExtensionKind" Value="workspace" /></Properties>
  </Metadata>
  <Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation>
  <Dependencies/>
  <Assets><Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" Addressable="true" /></Assets>
</PackageManifest>
`,
  );
  run('zip', ['-q', '-X', '-r', out, '[Content_Types].xml', 'extension.vsixmanifest', 'extension'], { cwd: stage });
  return out;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

export interface Server {
  url: string;
  userData: string;
  stop(): Promise<void>;
  logText(): string;
}

/** A fresh profile (user data, extensions, HOME/XDG/TMPDIR) under `root`, the .vsix installed, and code-server on 127.0.0.1. */
export async function startCodeServer(csDir: string, root: string, vsix: string, settings: Record<string, unknown>): Promise<Server> {
  rmSync(root, { recursive: true, force: true });
  for (const d of ['home', 'tmp', 'data/user-data/User', 'data/extensions']) mkdirSync(join(root, d), { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: join(root, 'home'),
    XDG_CONFIG_HOME: join(root, 'home/.config'),
    XDG_DATA_HOME: join(root, 'home/.local/share'),
    XDG_CACHE_HOME: join(root, 'home/.cache'),
    TMPDIR: join(root, 'tmp'),
  };
  delete env.NODE_OPTIONS;
  // The workbench asks its extension gallery (open-vsx.org) for recommendations and themes: point it
  // at a closed local port, so that nothing leaves this machine.
  env.EXTENSIONS_GALLERY = JSON.stringify({ serviceUrl: 'http://127.0.0.1:9/gallery', itemUrl: 'http://127.0.0.1:9/items', resourceUrlTemplate: 'http://127.0.0.1:9/files/{publisher}/{name}/{version}/{path}' });
  const userData = join(root, 'data/user-data');
  writeFileSync(join(userData, 'User/settings.json'), JSON.stringify(settings, null, 2));
  const bin = join(csDir, 'out', 'node', 'entry.js');
  const dirs = ['--user-data-dir', userData, '--extensions-dir', join(root, 'data/extensions'), '--config', join(root, 'data/config.yaml')];
  log('installing', vsix);
  run('node', [bin, ...dirs, '--install-extension', vsix], { env });
  const port = await freePort();
  const out: string[] = [];
  const child: ChildProcess = spawn('node', [bin, '--bind-addr', `127.0.0.1:${port}`, '--auth', 'none', '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', ...dirs], {
    env,
    detached: true, // its own process group: the extension host and the sidecar stop with it
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  const pid = child.pid!;
  let exited = false;
  child.on('exit', () => (exited = true));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`code-server exited:\n${out.join('').slice(-3000)}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`code-server did not answer on ${url}:\n${out.join('').slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  log(`code-server PID ${pid} on ${url}`);
  return {
    url,
    userData,
    logText: () => out.join(''),
    async stop() {
      if (exited) return;
      try {
        process.kill(-pid, 'SIGTERM');
      } catch {
        return;
      }
      for (let i = 0; i < 40 && !exited; i++) await new Promise((r) => setTimeout(r, 250));
      try {
        process.kill(-pid, 'SIGKILL'); // whatever of the group is left
      } catch {
        /* gone */
      }
    },
  };
}

/** Everything the guards saw. */
export interface Guards {
  /** CSP violations logged by a webview frame (fail the suite). */
  cspViolations: string[];
  /** The workbench page's own CSP reports (its gallery client and such): logged, not ours to fix. */
  workbenchCsp: string[];
  external: string[];
  consoleErrors: string[];
  /** Responses with an error status (informational). */
  failedResponses: string[];
}

/** A regular expression matching exactly this text. */
export const exactly = (text: string): RegExp => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);

export class Workbench {
  readonly guards: Guards = { cspViolations: [], workbenchCsp: [], external: [], consoleErrors: [], failedResponses: [] };
  private constructor(
    readonly browser: Browser,
    readonly context: BrowserContext,
    readonly page: Page,
    readonly server: Server,
  ) {}

  static async open(server: Server, folder: string): Promise<Workbench> {
    const browser = await chromium.launch({
      executablePath: process.env.E2E_CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    const context = await browser.newContext({ viewport: { width: 1440, height: 960 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const wb = new Workbench(browser, context, page, server);
    // Nothing may leave this machine: abort and record any request that is not to 127.0.0.1.
    const local = (u: string) => {
      try {
        const url = new URL(u);
        return !/^(https?|wss?):$/.test(url.protocol) || url.hostname === '127.0.0.1' || url.hostname === 'localhost';
      } catch {
        return true;
      }
    };
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (local(u) || /^https:\/\/[^/]+\.vscode-resource\.vscode-cdn\.net\//.test(u)) return route.continue();
      wb.guards.external.push(u);
      return route.abort('blockedbyclient');
    });
    // Every request of every frame and of the service workers. Webview resources are addressed to
    // https://*.vscode-resource.vscode-cdn.net/… and answered by the webview's service worker from
    // the workbench (127.0.0.1): those count as local only when the response did come from it.
    context.on('request', (r) => {
      const u = r.url();
      if (local(u)) return;
      if (/^https:\/\/[^/]+\.vscode-resource\.vscode-cdn\.net\//.test(u)) {
        void r.response().then(
          (resp) => {
            if (!resp?.fromServiceWorker()) wb.guards.external.push(`${u} (not answered by the webview service worker)`);
          },
          () => wb.guards.external.push(`${u} (failed)`),
        );
        return;
      }
      if (!wb.guards.external.includes(u)) wb.guards.external.push(u);
    });
    page.on('console', (m) => {
      const text = m.text();
      if (/Content[- ]Security[- ]Policy|securitypolicyviolation|CSP violation/i.test(text)) {
        const where = m.location().url;
        // The workbench's own bundle (not a webview): its main page and workbench scripts.
        const workbench = where === page.url() || /\/static\/out\/vs\/code\/browser\/workbench\//.test(where);
        (workbench ? wb.guards.workbenchCsp : wb.guards.cspViolations).push(`${where}: ${text}`);
      }
      if (m.type() === 'error') wb.guards.consoleErrors.push(text);
    });
    page.on('pageerror', (e) => wb.guards.consoleErrors.push(`pageerror: ${e.message}`));
    context.on('response', (r) => {
      if (r.status() >= 400) wb.guards.failedResponses.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(`${server.url}/?folder=${encodeURIComponent(folder)}`, { waitUntil: 'domcontentloaded' });
    await page.locator('.monaco-workbench .part.statusbar').waitFor({ state: 'visible', timeout: 90_000 });
    await page.locator('.monaco-workbench .part.sidebar').first().waitFor({ state: 'visible', timeout: 60_000 });
    // Built-in extensions (themes among them) are scanned after the first paint: wait for the theme.
    await page.locator('.monaco-workbench[class*="vscode-theme-"]').first().waitFor({ state: 'attached', timeout: 60_000 });
    log('workbench loaded');
    return wb;
  }

  /**
   * Opens the quick input with a key and returns its text box. A key pressed while a webview page
   * is being rebuilt or focused (its editor shown again after the one in front of it closed) can be
   * lost on its way to the workbench, and the webview taking focus closes a quick input that had
   * just opened: so the box must still show a moment later, else the title bar's command center
   * opens it (as Quick Open; the callers' text, `>command` or a file name, works there the same).
   */
  private async quickInput(key: string): Promise<Locator> {
    const input = this.page.locator('.quick-input-widget .quick-input-box input').first();
    for (let attempt = 1; ; attempt++) {
      if (attempt === 1) await this.page.keyboard.press(key);
      else await this.page.locator('.command-center-center').first().click();
      try {
        await input.waitFor({ state: 'visible', timeout: 5_000 });
        await this.page.waitForTimeout(300);
        if (await input.isVisible()) return input;
        if (attempt === 3) throw new Error('the quick input closed as soon as it opened');
      } catch (err) {
        if (attempt === 3) throw err;
      }
      log(`${attempt === 1 ? key : 'the command center'} gave no quick input that stayed open; trying the command center`);
    }
  }

  /** Runs a command from the palette by its label. */
  async command(label: string): Promise<void> {
    const p = this.page;
    const input = await this.quickInput('Control+Shift+P');
    await input.fill(`>${label}`);
    // The palette matches fuzzily: pick the row whose label is exactly `label`.
    const row = p.locator('.quick-input-widget .monaco-list-row').filter({ has: p.locator('.label-name', { hasText: exactly(label) }) }).first();
    await row.waitFor({ state: 'visible', timeout: 20_000 });
    await row.click();
    log('command:', label);
  }

  /** Opens a workspace file by name with Quick Open. */
  /** Opens the file named `name` by Quick Open, typing `query` (a path like `broken/compare.json` where several files share the name). */
  async openFile(name: string, query = name): Promise<void> {
    const p = this.page;
    const input = await this.quickInput('Control+P');
    await input.fill(query);
    // Quick Open matches fuzzily: pick the row whose file name is exactly `name`.
    const row = p.locator('.quick-input-widget .monaco-list-row').filter({ has: p.locator('.label-name', { hasText: exactly(name) }) }).first();
    await row.waitFor({ state: 'visible', timeout: 20_000 });
    await row.click();
    await p.locator('.tab.active', { hasText: name }).first().waitFor({ state: 'visible', timeout: 20_000 });
    log('opened', name);
  }

  codeLens(text: string | RegExp): Locator {
    return this.page.locator('.codelens-decoration a', { hasText: text }).first();
  }

  /** Opens a workspace file and clicks its CodeLens `text` once it shows. */
  async clickCodeLens(file: string, text: string, timeout = 30_000): Promise<void> {
    await this.openFile(file);
    const lens = this.codeLens(text);
    await lens.waitFor({ state: 'visible', timeout });
    await lens.click();
    log(`clicked ${text} in ${file}`);
  }

  /** The frame of a panel's page (the inner webview iframe whose body says `data-panel=<kind>`), once it exists. */
  async panelFrame(kind: string, timeout = 60_000, has?: string): Promise<Frame> {
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      for (const f of this.page.frames()) {
        if (f.isDetached()) continue;
        const found = await f
          .locator(has ? `body[data-panel="${kind}"] ${has}` : `body[data-panel="${kind}"]`)
          .count()
          .catch(() => 0);
        if (found) return f;
      }
      await this.page.waitForTimeout(200);
    }
    throw new Error(`no ${kind} panel frame after ${timeout} ms`);
  }

  /** CSP violations the panels' bootstrap counted in a frame. */
  static async frameViolations(frame: Frame): Promise<number> {
    const v = await frame.locator('body').getAttribute('data-csp-violations');
    return v ? Number(v) : 0;
  }

  /** Switches the colour theme with "Preferences: Color Theme" (what a user does). */
  async setTheme(theme: 'Dark Modern' | 'Light Modern' | 'Dark High Contrast' | 'Light High Contrast'): Promise<void> {
    const p = this.page;
    await this.command('Preferences: Color Theme');
    const input = p.locator('.quick-input-widget .quick-input-box input[placeholder*="Color Theme"]').first();
    await input.waitFor({ state: 'visible', timeout: 15_000 });
    await input.fill(theme);
    const row = p.locator('.quick-input-widget .monaco-list-row').filter({ has: p.locator('.label-name', { hasText: exactly(theme) }) }).first();
    await row.waitFor({ state: 'visible', timeout: 15_000 });
    await row.click();
    const cls = { 'Dark Modern': 'vs-dark', 'Light Modern': 'vs', 'Dark High Contrast': 'hc-black', 'Light High Contrast': 'hc-light' }[theme];
    await p.locator(`.monaco-workbench.${cls}`).first().waitFor({ state: 'attached', timeout: 30_000 });
    log('theme:', theme);
  }

  /** Dismisses every notification toast (so that none covers a screenshot). */
  async clearNotifications(): Promise<void> {
    if (!(await this.page.locator('.notifications-toasts .notification-toast').count())) return;
    await this.command('Notifications: Clear All Notifications');
    await this.page.locator('.notifications-toasts .notification-toast').first().waitFor({ state: 'detached', timeout: 10_000 }).catch(() => undefined);
  }

  /** Screenshot of a panel: its editor area in the workbench. */
  async screenshotPanel(frame: Frame, file: string, opts: { keepPointer?: boolean } = {}): Promise<void> {
    mkdirSync(SCREENSHOTS, { recursive: true });
    await this.clearNotifications();
    const el = await frame.frameElement();
    // No workbench hover (a tab's or an editor's tooltip) over the panel: rest the pointer on the
    // panel's empty top-left padding and let any hover go.
    const box = await el.boundingBox();
    if (box && !opts.keepPointer) await this.page.mouse.move(box.x + 4, box.y + 4);
    await this.page
      .locator('.workbench-hover-container, .monaco-hover:not(.hidden)')
      .first()
      .waitFor({ state: 'hidden', timeout: 5_000 })
      .catch(() => undefined);
    // the outer webview iframe holds the inner one; shoot the outer element (what the user sees)
    const outer = await el.evaluateHandle((e) => e.ownerDocument.defaultView?.frameElement ?? e);
    const handle = outer.asElement() ?? el;
    await handle.screenshot({ path: join(SCREENSHOTS, file) });
    log('screenshot', join(SCREENSHOTS, file));
  }


  async close(): Promise<void> {
    await this.browser.close().catch(() => undefined);
  }
}

/** Polls `read` until `done` says so (a readiness signal, not a sleep); returns every distinct value seen. */
export async function pollUntil<T>(page: Page, read: () => Promise<T>, done: (v: T) => boolean, timeout: number, what: string): Promise<T[]> {
  const seen: T[] = [];
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await read();
    if (!seen.length || JSON.stringify(seen.at(-1)) !== JSON.stringify(v)) seen.push(v);
    if (done(v)) return seen;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; saw ${JSON.stringify(seen).slice(0, 500)}`);
    await page.waitForTimeout(150);
  }
}
