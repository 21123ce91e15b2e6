// A typed client of the wasmhost API: openapi-fetch over the types openapi-typescript generates from
// openapi.yaml, itself generated from the routes (schema.ts: generated output, `npm run generate:client`,
// never edited by hand). Used by the CLI (src/cli/) and the playground (playground/), and usable by
// any service: it runs wherever `fetch` does (Node ≥ 18, browsers).
import createClient, { type Client } from 'openapi-fetch';
import type { components, paths } from './schema.ts';

export type { paths, components };
export type Plugin = components['schemas']['Plugin'];
export type CallRequest = components['schemas']['CallRequest'];
export type CallResponse = components['schemas']['CallResponse'];
export type LogEntry = components['schemas']['LogEntry'];
export type EgressAttempt = components['schemas']['EgressAttempt'];
export type ErrorBody = components['schemas']['Error'];
export type WasmhostClient = Client<paths>;

export interface WasmhostClientOptions {
  /** The service, e.g. http://127.0.0.1:8080 (no trailing path). */
  baseUrl: string;
  /** Bearer token, or a function asked before each request (the playground's token field). */
  token?: string | null | (() => string | null | undefined);
  fetch?: typeof fetch;
}

export function createWasmhostClient(options: WasmhostClientOptions): WasmhostClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ''),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const { token } = options;
  if (token) {
    client.use({
      onRequest({ request }) {
        const value = typeof token === 'function' ? token() : token;
        if (value) request.headers.set('authorization', `Bearer ${value}`);
        return request;
      },
    });
  }
  return client;
}

/** An answer in the service's error shape `{statusCode, code, error, message, ...details}`. */
export class WasmhostError extends Error {
  override name = 'WasmhostError';
  readonly statusCode: number;
  readonly code: string;
  /** The whole error body: details such as `logs`, `egress`, `exports`, `reason`. */
  readonly body: ErrorBody;

  constructor(body: ErrorBody) {
    super(body.message);
    this.statusCode = body.statusCode;
    this.code = body.code;
    this.body = body;
  }

  get logs(): LogEntry[] {
    return Array.isArray(this.body.logs) ? (this.body.logs as LogEntry[]) : [];
  }

  get egress(): EgressAttempt[] {
    return Array.isArray(this.body.egress) ? (this.body.egress as EgressAttempt[]) : [];
  }
}

/**
 * The data of an openapi-fetch result, or its error thrown as a WasmhostError. An answer that is
 * not in the error shape (a proxy's HTML page, say) still becomes one, with code HTTP_<status>.
 */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  const { data, error, response } = result;
  if (response.ok) return data as T;
  if (isErrorBody(error)) throw new WasmhostError(error);
  const text = typeof error === 'string' ? error : JSON.stringify(error ?? '');
  throw new WasmhostError({
    statusCode: response.status,
    code: `HTTP_${response.status}`,
    error: response.statusText,
    message: `unexpected answer ${response.status} ${response.statusText}: ${text.slice(0, 200)}`,
  });
}

export function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== 'object' || value === null) return false;
  const body = value as Record<string, unknown>;
  return typeof body.code === 'string' && typeof body.message === 'string' && typeof body.statusCode === 'number';
}

/** The output bytes of a call, whichever encoding the service chose (`output` or `outputBase64`). */
export function outputBytes(response: CallResponse): Uint8Array {
  if (typeof response.outputBase64 === 'string') return base64ToBytes(response.outputBase64);
  return new TextEncoder().encode(response.output ?? '');
}

export function base64ToBytes(base64: string): Uint8Array {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let binary = '';
  // In slices: String.fromCharCode takes its arguments on the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** Hex of the sha256 of some bytes: a plugin's id (Web Crypto, so browsers and Node alike). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export interface PluginPage {
  plugins: Plugin[];
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

/** One page of GET /plugins (newest first); `cursor` is the previous page's nextCursor. */
export async function listPluginPage(
  client: WasmhostClient,
  query: { name?: string | undefined; limit?: number | undefined; cursor?: string | null | undefined } = {},
): Promise<PluginPage> {
  const params: { name?: string; limit?: string; cursor?: string } = {};
  if (query.name !== undefined) params.name = query.name;
  if (query.limit !== undefined) params.limit = String(query.limit);
  if (query.cursor) params.cursor = query.cursor;
  return unwrap(await client.GET('/plugins', { params: { query: params } }));
}

/** Every stored plugin (or every one named `name`), newest first, a page at a time. */
export async function listAllPlugins(client: WasmhostClient, query: { name?: string | undefined } = {}): Promise<Plugin[]> {
  const plugins: Plugin[] = [];
  let cursor: string | null = null;
  do {
    const page = await listPluginPage(client, { ...query, cursor });
    plugins.push(...page.plugins);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return plugins;
}

export interface UploadFields {
  name?: string | undefined;
  description?: string | undefined;
  config?: Record<string, string> | undefined;
  allowedHosts?: string[] | undefined;
}

/** Uploads a module: as the raw body when it has no fields but a name, else as a form. */
export async function uploadPlugin(
  client: WasmhostClient,
  bytes: Uint8Array,
  fields: UploadFields = {},
): Promise<{ plugin: Plugin; created: boolean }> {
  const { name, description, config, allowedHosts } = fields;
  const form = description !== undefined || config !== undefined || allowedHosts !== undefined;
  const blob = new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' });
  const result = form
    ? await client.POST('/plugins', {
        body: uploadForm(blob, fields) as unknown as { file: string },
        bodySerializer: (body) => body as unknown as FormData,
      })
    : await client.POST('/plugins', {
        params: { query: name === undefined ? {} : { name } },
        body: blob as unknown as string,
        bodySerializer: (body) => body,
        headers: { 'content-type': 'application/wasm' },
      });
  const plugin = unwrap(result);
  return { plugin, created: result.response.status === 201 };
}

/**
 * Uploads an Extism manifest (its JSON text) with the modules its `path` entries name, as parts named
 * by those paths. The same manifest and modules answer the stored plugin (200).
 */
export async function uploadManifest(
  client: WasmhostClient,
  manifest: string,
  modules: ReadonlyMap<string, Uint8Array>,
): Promise<{ plugin: Plugin; created: boolean }> {
  const form = new FormData();
  form.set('manifest', manifest);
  for (const [path, bytes] of modules) {
    form.set(path, new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), path);
  }
  const result = await client.POST('/plugins', {
    body: form as unknown as { manifest: string },
    bodySerializer: (body) => body as unknown as FormData,
  });
  const plugin = unwrap(result);
  return { plugin, created: result.response.status === 201 };
}

function uploadForm(blob: Blob, fields: UploadFields): FormData {
  const form = new FormData();
  if (fields.name !== undefined) form.set('name', fields.name);
  if (fields.description !== undefined) form.set('description', fields.description);
  if (fields.config !== undefined) form.set('config', JSON.stringify(fields.config));
  if (fields.allowedHosts !== undefined) form.set('allowedHosts', JSON.stringify(fields.allowedHosts));
  form.set('file', blob, 'plugin.wasm');
  return form;
}
