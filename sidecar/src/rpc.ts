/**
 * Typed helpers over a JSON-RPC endpoint, driven by the protocol's `RequestDef` / `NotificationDef`.
 *
 * Written against a minimal structural interface (`RpcEndpoint`) that both a vscode-jsonrpc
 * `MessageConnection` (the sidecar, tests) and a vscode-languageclient `LanguageClient` (the
 * extension) satisfy, so this file imports no runtime library and can be compiled into either side.
 *
 *   onRequest(conn, Status, () => status());            // handler typed (params: {}) => StatusResult
 *   const { id } = await sendRequest(conn, StartJob, { kind: 'selftest', steps: 10 });
 */
import type { NotificationDef, RequestDef } from '../../src/protocol';

export interface DisposableLike {
  dispose(): void;
}

/** The parts of vscode-jsonrpc's `CancellationToken` (and `vscode.CancellationToken`) used here. */
export interface CancellationTokenLike {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): DisposableLike;
}

/**
 * The method shapes shared by `MessageConnection` and `LanguageClient` (string-method overloads).
 * Method syntax on purpose: both libraries type handler arguments as `any[]`, and method
 * parameters are compared bivariantly, so both classes are assignable without casts.
 */
export interface RpcEndpoint {
  sendRequest<R>(method: string, param: unknown, token?: CancellationTokenLike): Promise<R>;
  onRequest(method: string, handler: (...args: unknown[]) => unknown): DisposableLike;
  sendNotification(method: string, params: unknown): Promise<void>;
  onNotification(method: string, handler: (...args: unknown[]) => void): DisposableLike;
}

export type RequestHandlerOf<P, R> = (params: P, token: CancellationTokenLike | undefined) => R | Promise<R>;

/**
 * Registers a typed handler. The protocol's requests carry one by-name params object; a request
 * sent with no params reaches the handler as `undefined` (the runtime only passes the token), so
 * handlers of requests that take input should still validate it: the other side is a process.
 */
export function onRequest<P, R>(conn: RpcEndpoint, def: RequestDef<P, R>, handler: RequestHandlerOf<P, R>): DisposableLike {
  return conn.onRequest(def.method, (...args: unknown[]) => {
    const [params, token] = splitArgs(args);
    return handler(params as P, token);
  });
}

export function sendRequest<P, R>(conn: RpcEndpoint, def: RequestDef<P, R>, params: P, token?: CancellationTokenLike): Promise<R> {
  return token ? conn.sendRequest<R>(def.method, params, token) : conn.sendRequest<R>(def.method, params);
}

export function onNotification<P>(conn: RpcEndpoint, def: NotificationDef<P>, handler: (params: P) => void): DisposableLike {
  return conn.onNotification(def.method, (...args: unknown[]) => handler(args[0] as P));
}

export function sendNotification<P>(conn: RpcEndpoint, def: NotificationDef<P>, params: P): Promise<void> {
  return conn.sendNotification(def.method, params);
}

/** vscode-jsonrpc calls a string-method request handler as `(params, token)`, or `(token)` when params are absent. */
function splitArgs(args: unknown[]): [unknown, CancellationTokenLike | undefined] {
  const last = args[args.length - 1];
  const token = isToken(last) ? last : undefined;
  const rest = token ? args.slice(0, -1) : args;
  return [rest[0], token];
}

function isToken(v: unknown): v is CancellationTokenLike {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as Partial<CancellationTokenLike>).isCancellationRequested === 'boolean' &&
    typeof (v as Partial<CancellationTokenLike>).onCancellationRequested === 'function'
  );
}
