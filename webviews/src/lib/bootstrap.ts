/**
 * The one webview-side bootstrap every panel uses: the VS Code API handle, typed and validated
 * messages both ways, persisted state (sources + UI settings, restored after a reload), theme
 * colours with change notifications, and error/CSP-violation reporting to the host's log. A
 * message from the host that does not match the protocol is dropped, logged, and said in a
 * visible error box (what it would have shown is missing, so the page must not look complete).
 */
import {
  HOST_TO_WEBVIEW,
  panelStateSchema,
  validateMessage,
  WEBVIEW_TO_HOST,
  type HostToWebview,
  type PanelKind,
  type PanelState,
  type WebviewToHost,
} from '../../../src/protocol/webview';
import { mergeUI } from '../shared/state';
import { readTheme, watchTheme, type Theme } from './theme';

type Handler<K extends keyof HostToWebview> = (payload: HostToWebview[K]) => void;

export interface Panel<UI extends object> {
  readonly kind: PanelKind;
  /** UI settings: the defaults, overlaid with what was saved (keys of the right type only). */
  readonly ui: Readonly<UI>;
  readonly sources: readonly string[];
  readonly theme: Theme;
  setUI(patch: Partial<UI>): void;
  setSources(sources: readonly string[]): void;
  post<K extends keyof WebviewToHost>(type: K, payload: WebviewToHost[K]): void;
  on<K extends keyof HostToWebview>(type: K, handler: Handler<K>): void;
  onTheme(handler: (t: Theme) => void): void;
  log(level: 'info' | 'warn' | 'error', message: string): void;
  /** Tells the host the panel listens; call after registering the handlers. */
  ready(): void;
}

export function bootstrap<UI extends object>(kind: PanelKind, defaults: UI): Panel<UI> {
  const api = acquireVsCodeApi();
  const saved = api.getState();
  const state: PanelState = panelStateSchema.check(saved, 'state') === undefined ? (saved as PanelState) : { sources: [] };
  let ui = mergeUI(defaults, state.ui);
  let sources: string[] = [...state.sources];
  let theme = readTheme();
  const handlers = new Map<string, Handler<never>[]>();
  const themeHandlers: ((t: Theme) => void)[] = [];
  let dropped = 0;
  let droppedBox: HTMLDivElement | undefined;
  const showDropped = (problem: string) => {
    if (!droppedBox) {
      // Above #app, which the panels fill (and refill) themselves; .error-box takes the theme's error colours.
      droppedBox = Object.assign(document.createElement('div'), { id: 'dropped-message', className: 'error-box dropped' });
      droppedBox.setAttribute('role', 'alert');
      document.body.insertBefore(droppedBox, document.body.firstChild);
    }
    droppedBox.textContent = `${dropped === 1 ? 'An update' : `${dropped} updates`} from PEFT Lab could not be shown (not in the panel's protocol): ${problem}. Close and reopen the panel; the PEFT Lab output has details.`;
  };

  const persist = () => api.setState({ sources, ui: { ...ui } as Record<string, unknown> } satisfies PanelState);
  const post = <K extends keyof WebviewToHost>(type: K, payload: WebviewToHost[K]) => {
    const v = validateMessage(WEBVIEW_TO_HOST, { type, payload });
    if (!v.ok) {
      console.error(`peft-lab: not sending an invalid message: ${v.problem}`);
      return;
    }
    api.postMessage({ type, payload });
  };
  const log = (level: 'info' | 'warn' | 'error', message: string) => post('panel/log', { level, message: `[${kind}] ${message}` });

  window.addEventListener('message', (event: MessageEvent<unknown>) => {
    const v = validateMessage(HOST_TO_WEBVIEW, event.data);
    if (!v.ok) {
      dropped++;
      document.body.dataset.droppedMessages = String(dropped);
      showDropped(v.problem);
      log('warn', `dropped a message that does not match the protocol: ${v.problem}`);
      return;
    }
    for (const h of handlers.get(v.message.type) ?? []) {
      try {
        (h as (p: unknown) => void)(v.message.payload);
      } catch (err) {
        log('error', `handling ${v.message.type}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  });
  window.addEventListener('error', (e) => log('error', `${e.message} (${e.filename}:${e.lineno})`));
  window.addEventListener('unhandledrejection', (e) => log('error', `unhandled rejection: ${String(e.reason)}`));
  let violations = 0;
  document.addEventListener('securitypolicyviolation', (e) => {
    violations++;
    document.body.dataset.cspViolations = String(violations);
    log('error', `CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
  });
  watchTheme((t) => {
    theme = t;
    document.body.dataset.theme = t.kind;
    for (const h of themeHandlers) h(t);
  });
  document.body.dataset.theme = theme.kind;
  // An error names the panel's inputs: kept, so that a reload re-reads them instead of opening empty.
  const keepSources: Handler<'panel/error'> = ({ sources: named }) => {
    if (!named) return;
    sources = [...named];
    persist();
  };
  handlers.set('panel/error', [keepSources as Handler<never>]);

  return {
    kind,
    get ui() {
      return ui;
    },
    get sources() {
      return sources;
    },
    get theme() {
      return theme;
    },
    setUI(patch) {
      ui = { ...ui, ...patch };
      persist();
    },
    setSources(next) {
      sources = [...next];
      persist();
    },
    post,
    on(type, handler) {
      const list = handlers.get(type) ?? [];
      list.push(handler as Handler<never>);
      handlers.set(type, list);
    },
    onTheme(handler) {
      themeHandlers.push(handler);
    },
    log,
    ready() {
      persist();
      post('panel/ready', { kind });
    },
  };
}

/**
 * The panel's error line (role alert): shows the host's `panel/error` message until clear() (a
 * panel calls it when good data arrives). `id` for panels whose tests address it.
 */
export function errorLine(panel: Panel<object>, id?: string): HTMLDivElement & { clear(): void } {
  const box = Object.assign(document.createElement('div'), { className: 'error-box', hidden: true });
  box.setAttribute('role', 'alert');
  if (id) box.id = id;
  panel.on('panel/error', ({ message }) => {
    box.textContent = message;
    box.hidden = false;
  });
  return Object.assign(box, { clear: () => void (box.hidden = true) });
}
