// The one way tests talk to the service over HTTP. Requests and answers are typed from the contract
// (the types openapi-typescript generates into src/client/schema.ts), and every request answers the
// whole reply (status, headers, body): a test asserts on a refusal's status and code as easily as on
// a result, and a success it expected but did not get fails with the status and code that came back.
import { isErrorBody, type CallRequest, type CallResponse, type ErrorBody, type Plugin } from '../src/client/client.ts';
import type { components, operations } from '../src/client/schema.ts';

export type { ErrorBody, Plugin };
type CallError = components['schemas']['CallError'];
type ExtismManifest = components['schemas']['ExtismManifest'];
/** A call's body; `logLevel` has a default on the service, so a test may leave it out. */
export type CallBody = Omit<CallRequest, 'logLevel'> & Partial<Pick<CallRequest, 'logLevel'>>;
export type PluginPage = operations['listPlugins']['responses'][200]['content']['application/json'];

type Responses<Op extends keyof operations> = operations[Op]['responses'];
type JsonOf<R> = R extends { content: { 'application/json': infer Body } } ? Body : never;
/** The error bodies an operation documents, with their codes as a union. */
type ErrorOf<Op extends keyof operations> = JsonOf<Responses<Op>[Exclude<keyof Responses<Op>, 200 | 201 | 204>]>;

/** One answer of the service, kept whole. */
export class Reply<T, E extends ErrorBody = ErrorBody> {
  readonly status: number;
  readonly headers: Headers;
  /** The body as sent: parsed JSON, else the text, or the bytes of a binary answer. */
  readonly body: unknown;
  /** The response body's bytes, as received. */
  readonly bytes: Uint8Array;

  constructor(status: number, headers: Headers, body: unknown, bytes: Uint8Array) {
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.bytes = bytes;
  }

  /** Bytes of the response body. */
  get size(): number {
    return this.bytes.length;
  }

  /** The response body as UTF-8 text, exactly as received. */
  get text(): string {
    return new TextDecoder().decode(this.bytes);
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** The success body; any other answer throws, naming its status and code. */
  get data(): T {
    if (!this.ok) throw new Error(`expected a success, got ${this.describe()}`);
    return this.body as T;
  }

  /** The error body (status, stable code, message, details); a success or a body not in that shape throws. */
  get error(): E {
    if (this.ok || !isErrorBody(this.body)) throw new Error(`expected an answer in the error shape, got ${this.describe()}`);
    return this.body as E;
  }

  /** Status and code in one value, for one assertion: `expect(reply.outcome).toEqual({ status: 404, code: 'NOT_FOUND' })`. */
  get outcome(): { status: number; code: string | undefined } {
    return { status: this.status, code: isErrorBody(this.body) ? this.body.code : undefined };
  }

  private describe(): string {
    if (isErrorBody(this.body)) return `${this.status} ${this.body.code}: ${this.body.message}`;
    const text = typeof this.body === 'string' ? this.body : JSON.stringify(this.body);
    return `${this.status}: ${String(text).slice(0, 300)}`;
  }
}

interface UploadFields {
  name?: string | undefined;
  description?: string | undefined;
  config?: Record<string, string> | undefined;
  allowedHosts?: string[] | undefined;
  /** Send a multipart form even when there are no fields but a name. */
  form?: boolean;
  /** Of a raw upload; application/wasm unless given. */
  contentType?: string;
}

interface RequestOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

interface ListQuery {
  name?: string;
  limit?: number | string;
  cursor?: string | null;
}

interface ClientOptions {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
}

export class TestClient {
  /** The service, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  private readonly options: ClientOptions;

  constructor(url: string, options: ClientOptions = {}) {
    this.url = url;
    this.options = options;
  }

  /** The same service, as the holder of `token` (undefined: anonymous). */
  as(token: string | undefined): TestClient {
    return new TestClient(this.url, { ...this.options, token });
  }

  /**
   * Uploads a module: as the raw body (its name in the query) unless it has form fields or `form`
   * is set, then as a multipart form with a `file` part.
   */
  upload(
    bytes: Uint8Array,
    fields: UploadFields = {},
    options: RequestOptions = {},
  ): Promise<Reply<Plugin, ErrorOf<'uploadPlugin'>>> {
    const { name, description, config, allowedHosts } = fields;
    if (fields.form || description !== undefined || config !== undefined || allowedHosts !== undefined) {
      const form = new FormData();
      if (name !== undefined) form.set('name', name);
      if (description !== undefined) form.set('description', description);
      if (config !== undefined) form.set('config', JSON.stringify(config));
      if (allowedHosts !== undefined) form.set('allowedHosts', JSON.stringify(allowedHosts));
      form.set('file', new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), 'plugin.wasm');
      return this.uploadForm(form, {}, options);
    }
    return this.send('POST', `/plugins${query({ name })}`, {
      ...options,
      headers: { 'content-type': fields.contentType ?? 'application/wasm', ...options.headers },
      body: bytes as Uint8Array<ArrayBuffer>,
    });
  }

  /** Uploads a module that must be stored (200 or 201): its record; a refusal throws with its status and code. */
  async uploaded(bytes: Uint8Array, fields: UploadFields = {}): Promise<Plugin> {
    return (await this.upload(bytes, fields)).data;
  }

  /** Uploads a multipart form as built by the test (a manifest with its module parts, a form missing a part). */
  uploadForm(
    form: FormData,
    q: { name?: string } = {},
    options: RequestOptions = {},
  ): Promise<Reply<Plugin, ErrorOf<'uploadPlugin'>>> {
    return this.send('POST', `/plugins${query(q)}`, { ...options, body: form });
  }

  /**
   * Uploads an Extism manifest: as a JSON body, or, when `modules` are given, as a multipart form with a
   * `manifest` part and one part per module named by its path.
   */
  uploadManifest(
    manifest: ExtismManifest | string,
    modules?: ReadonlyMap<string, Uint8Array>,
    q: { name?: string } = {},
    options: RequestOptions = {},
  ): Promise<Reply<Plugin, ErrorOf<'uploadPlugin'>>> {
    const text = typeof manifest === 'string' ? manifest : JSON.stringify(manifest);
    if (modules === undefined) {
      return this.send('POST', `/plugins${query(q)}`, {
        ...options,
        headers: { 'content-type': 'application/json', ...options.headers },
        body: text,
      });
    }
    const form = new FormData();
    form.set('manifest', text);
    for (const [path, bytes] of modules)
      form.set(path, new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), path);
    return this.uploadForm(form, q, options);
  }

  call(plugin: string, body: CallBody, options: RequestOptions = {}): Promise<Reply<CallResponse, CallError>> {
    return this.send('POST', `/plugins/${encodeURIComponent(plugin)}/call`, {
      ...options,
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify(body),
    });
  }

  /** A call whose body the contract does not allow (an unknown field, a wrong type), to see it refused. */
  callUnchecked(
    plugin: string,
    body: Record<string, unknown>,
    options: RequestOptions = {},
  ): Promise<Reply<CallResponse, CallError>> {
    return this.call(plugin, body as CallBody, options);
  }

  list(q: ListQuery = {}, options: RequestOptions = {}): Promise<Reply<PluginPage, ErrorOf<'listPlugins'>>> {
    return this.send('GET', `/plugins${query({ ...q, limit: q.limit === undefined ? undefined : String(q.limit) })}`, options);
  }

  /** Every stored plugin (or every one named `name`), newest first, a page at a time. */
  async listAll(q: { name?: string } = {}): Promise<Plugin[]> {
    const plugins: Plugin[] = [];
    let cursor: string | null = null;
    do {
      const page: PluginPage = (await this.list({ ...q, cursor })).data;
      plugins.push(...page.plugins);
      cursor = page.nextCursor;
    } while (cursor !== null);
    return plugins;
  }

  describe(plugin: string, options: RequestOptions = {}): Promise<Reply<Plugin, ErrorOf<'getPlugin'>>> {
    return this.send('GET', `/plugins/${encodeURIComponent(plugin)}`, options);
  }

  delete(plugin: string, options: RequestOptions = {}): Promise<Reply<undefined, ErrorOf<'deletePlugin'>>> {
    return this.send('DELETE', `/plugins/${encodeURIComponent(plugin)}`, options);
  }

  /** The stored module's bytes (a manifest plugin: its manifest). */
  download(plugin: string, options: RequestOptions = {}): Promise<Reply<Uint8Array, ErrorOf<'downloadPlugin'>>> {
    return this.send('GET', `/plugins/${encodeURIComponent(plugin)}/wasm`, options);
  }

  /** A request outside the typed operations: a malformed body, an unknown route, a probe of a header. */
  request<T = unknown>(method: string, path: string, init: Omit<RequestInit, 'method'> = {}): Promise<Reply<T>> {
    return this.send(method, path, init);
  }

  /**
   * The response as soon as its head arrives, its body left for the test to read: to see a download
   * arrive in chunks, or cut short.
   */
  stream(method: string, path: string, init: Omit<RequestInit, 'method'> = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.options.token !== undefined && !headers.has('authorization'))
      headers.set('authorization', `Bearer ${this.options.token}`);
    return fetch(`${this.url}${path}`, { ...init, method, headers });
  }

  private async send<T, E extends ErrorBody>(method: string, path: string, init: RequestInit): Promise<Reply<T, E>> {
    const response = await this.stream(method, path, init);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const type = response.headers.get('content-type') ?? '';
    let body: unknown = bytes;
    if (!/^application\/(wasm|octet-stream)/.test(type)) {
      const text = new TextDecoder().decode(bytes);
      body = text;
      if (type.includes('json')) {
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON after all: keep the text
        }
      }
    }
    return new Reply<T, E>(response.status, response.headers, body, bytes);
  }
}

function query(params: Record<string, string | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null) search.set(key, value);
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}
