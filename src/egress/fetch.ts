// The `fetch` a plugin's http_request goes through: the worker (engine/runtime/worker.ts) makes one
// session per call and its host function http_request (engine/runtime/host-env.ts) calls it.
// Every request and every redirect hop is checked (scheme, host patterns, resolved addresses),
// connected to the address that was checked, bounded in size, time and count, and audited.
//
// How failures reach the caller — one rule, as the Extism ABI gives no other honest option: every
// refusal AND every upstream failure (DNS, connection, timeout, body over the cap) throws an
// EgressError, which fails the host call; the Wasm code cannot catch it, so the call ends and the
// engine's result carries the error's `code` (HOST_NOT_ALLOWED, EGRESS_ERROR, EGRESS_TIMEOUT, TIMEOUT). The alternative, a synthetic response the plugin could handle, would
// need a fake HTTP status (Response cannot carry status 0) indistinguishable from a real upstream
// 502/504. The Extism reference runtime also fails the call on transport errors.
import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import type { ErrorCode } from '../errors.ts';
import { validateHostPatterns } from '../host-patterns.ts';
import { classifyAddress, isLoopbackName, isUrlAllowed, urlHost } from './policy.ts';
import type { AddressClass } from './policy.ts';

/** Plain, structured-cloneable options: a worker thread builds one session per call from a message. */
export interface EgressOptions {
  /** The call's patterns: the caller's `allowedHosts`, else the plugin's default, else [] (no egress). */
  allowedHosts: string[];
  /** Operator ceiling (config.egress.allowedHosts); a URL must match both lists. */
  ceiling: string[];
  allowPrivate: boolean;
  /** Per plugin request, covering DNS, connect, every redirect hop and reading the body. */
  timeoutMs: number;
  /** Epoch ms when the whole call must end; no request waits beyond it. */
  deadline?: number | null;
  /** Largest response body handed to the plugin; a body of exactly this size is allowed. */
  maxResponseBytes: number;
  /** Attempts per call, redirect hops included. */
  maxRequests: number;
  maxRedirects: number;
  maxRequestBodyBytes: number;
  /** Test-only static resolver (host name → address or addresses). When set, DNS is never used. */
  hosts?: Record<string, string | string[]> | null;
}

/** Injectable resolver, for tests only (e.g. DNS answers that change between lookups). */
export interface EgressDeps {
  resolve?: (host: string) => Promise<LookupAddress[]>;
  /** Extra trusted CA certificates (PEM), so tests can serve HTTPS on loopback. */
  ca?: string[];
}

/** What the SDK passes: `fetch(url, { headers, method, body? })`. */
export interface EgressRequestInit {
  method?: string;
  headers?: Record<string, string> | [string, string][] | Headers;
  body?: Uint8Array | ArrayBuffer | string | null;
  signal?: AbortSignal | null;
}

export type EgressReason =
  // refused by policy (the request never left): HOST_NOT_ALLOWED
  | 'not_in_allow_list'
  | 'private_address'
  | 'scheme'
  | 'redirect_refused'
  | 'too_many_redirects'
  // refused by a limit or a malformed request: EGRESS_ERROR
  | 'too_many_requests'
  | 'request_too_large'
  | 'invalid_request'
  // allowed, then failed upstream: EGRESS_ERROR / EGRESS_TIMEOUT / TIMEOUT
  | 'dns_failed'
  | 'connect_failed'
  | 'upstream_failed'
  | 'response_too_large'
  | 'timeout'
  | 'deadline';

export const EGRESS_REASON_CODE = {
  not_in_allow_list: 'HOST_NOT_ALLOWED',
  private_address: 'HOST_NOT_ALLOWED',
  scheme: 'HOST_NOT_ALLOWED',
  redirect_refused: 'HOST_NOT_ALLOWED',
  too_many_redirects: 'HOST_NOT_ALLOWED',
  too_many_requests: 'EGRESS_ERROR',
  request_too_large: 'EGRESS_ERROR',
  invalid_request: 'EGRESS_ERROR',
  dns_failed: 'EGRESS_ERROR',
  connect_failed: 'EGRESS_ERROR',
  upstream_failed: 'EGRESS_ERROR',
  response_too_large: 'EGRESS_ERROR',
  timeout: 'EGRESS_TIMEOUT',
  // the call's own deadline cut the request: the call timed out
  deadline: 'TIMEOUT',
} as const satisfies Record<EgressReason, ErrorCode>;

export interface EgressAuditEntry {
  method: string;
  /** Credentials redacted, query kept, fragment dropped. */
  url: string;
  /** Upstream status, or null when no response arrived. */
  status: number | null;
  /** Response body bytes received (decoded). */
  bytes: number;
  durationMs: number;
  /** False when the policy or a limit refused the attempt before anything was sent. */
  allowed: boolean;
  reason?: EgressReason;
}

/** The structured-cloneable form of an EgressError, for posting from a worker to the main thread. */
export interface EgressErrorInfo {
  reason: EgressReason;
  code: ErrorCode;
  host: string;
  url: string;
  message: string;
  /** For redirect_refused: why the redirect target was refused. */
  targetReason?: EgressReason;
}

export class EgressError extends Error {
  override name = 'EgressError';
  readonly reason: EgressReason;
  readonly code: ErrorCode;
  readonly host: string;
  readonly url: string;
  readonly targetReason: EgressReason | undefined;
  constructor(reason: EgressReason, host: string, url: string, message: string, targetReason?: EgressReason) {
    super(message);
    this.reason = reason;
    this.code = EGRESS_REASON_CODE[reason];
    this.host = host;
    this.url = url;
    this.targetReason = targetReason;
  }
  toJSON(): EgressErrorInfo {
    const info: EgressErrorInfo = { reason: this.reason, code: this.code, host: this.host, url: this.url, message: this.message };
    if (this.targetReason !== undefined) info.targetReason = this.targetReason;
    return info;
  }
}

/** Refused before anything was sent (policy or limit). */
export class EgressDenied extends EgressError {
  override name = 'EgressDenied';
}

/** Allowed, then failed: resolution, connection, timeout, or a response over the cap. */
export class EgressUpstreamError extends EgressError {
  override name = 'EgressUpstreamError';
}

export function isEgressError(err: unknown): err is EgressError {
  return err instanceof EgressError;
}

export interface EgressSession {
  /** fetch-compatible; pass as the SDK's `fetch` option. */
  fetch: (input: string | URL, init?: EgressRequestInit) => Promise<Response>;
  /** One entry per attempt (each redirect hop is an attempt), in order. */
  readonly audit: EgressAuditEntry[];
  /** The first error thrown to the plugin: the call must end with it even if something swallowed it. */
  readonly failure: EgressError | null;
  /** Closes pooled connections; call when the plugin call ends. */
  close(): Promise<void>;
}

/** `ok`: a response arrived and was handed to the plugin; `refused`: nothing was sent; `failed`: sent, then failed (incl. a body over the cap). */
export type EgressOutcome = 'ok' | 'refused' | 'failed';

/** The one classification of an audited attempt (metrics and summaries use it); a status alone does not make it ok. */
export function egressOutcome(entry: Pick<EgressAuditEntry, 'allowed' | 'reason'>): EgressOutcome {
  if (!entry.allowed) return 'refused';
  return entry.reason === undefined ? 'ok' : 'failed';
}

export interface EgressSummary {
  requests: number;
  ok: number;
  refused: number;
  failed: number;
  bytes: number;
}

/** Counts by outcome, for metrics and logs. */
export function summarizeEgress(entries: readonly Pick<EgressAuditEntry, 'allowed' | 'reason' | 'bytes'>[]): EgressSummary {
  const summary: EgressSummary = { requests: entries.length, ok: 0, refused: 0, failed: 0, bytes: 0 };
  for (const entry of entries) {
    summary[egressOutcome(entry)] += 1;
    summary.bytes += entry.bytes;
  }
  return summary;
}

const MAX_AUDIT_URL = 2048;

/** URL for audit and errors: credentials replaced, query kept, fragment dropped, length bounded. */
export function redactUrl(url: URL | string): string {
  let text: string;
  if (typeof url === 'string') {
    text = url.replace(/\/\/[^/?#]*@/, '//REDACTED@');
  } else {
    const copy = new URL(url.href);
    if (copy.username !== '') copy.username = 'REDACTED';
    if (copy.password !== '') copy.password = 'REDACTED';
    copy.hash = '';
    text = copy.href;
  }
  return text.length > MAX_AUDIT_URL ? `${text.slice(0, MAX_AUDIT_URL)}…` : text;
}

// setTimeout fires at once for longer delays (32-bit), so longer budgets are clamped (~24.8 days).
const MAX_TIMER_MS = 2 ** 31 - 1;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
// Connection management is ours; Host would let a plugin reach a virtual host the URL does not name.
const STRIPPED_REQUEST_HEADERS = [
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'content-length',
  'expect',
];
const BODY_HEADERS = ['content-type', 'content-encoding', 'content-language', 'content-location'];
const CREDENTIAL_HEADERS = ['authorization', 'cookie', 'proxy-authorization'];
const LOOPBACK_NAME_ADDRESSES: LookupAddress[] = [
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
];

type Resolver = (host: string) => Promise<LookupAddress[]>;
type UpstreamResponse = Awaited<ReturnType<typeof undiciFetch>>;

function staticResolver(hosts: Record<string, string | string[]>): Resolver {
  const table = new Map<string, LookupAddress[]>();
  for (const [name, value] of Object.entries(hosts)) {
    const addresses = (Array.isArray(value) ? value : [value]).map((address) => {
      const family = isIP(address);
      if (family === 0)
        throw new TypeError(`egress hosts: ${name} maps to ${JSON.stringify(address)}, which is not an IP address`);
      return { address, family };
    });
    table.set(name.toLowerCase().replace(/\.$/, ''), addresses);
  }
  return async (host) => {
    const found = table.get(host);
    if (found === undefined) throw Object.assign(new Error(`${host} is not in the static hosts table`), { code: 'ENOTFOUND' });
    return found;
  };
}

const systemResolver: Resolver = (host) => dnsLookup(host, { all: true, verbatim: true });

function headerPairs(headers: { forEach(cb: (value: string, name: string) => void): void }): [string, string][] {
  const pairs: [string, string][] = [];
  headers.forEach((value, name) => pairs.push([name, value]));
  return pairs;
}

function percentDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function requestBody(body: EgressRequestInit['body']): Uint8Array | null {
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('request body must be bytes or a string');
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function errorCode(err: unknown): string {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = current.cause;
  }
  return err instanceof Error ? err.message : String(err);
}

const REASON_TEXT: Record<EgressReason, string> = {
  not_in_allow_list: 'not in the allow-list',
  private_address: 'resolves to a private or reserved address',
  scheme: 'only http and https are allowed',
  redirect_refused: 'redirect to a refused target',
  too_many_redirects: 'too many redirects',
  too_many_requests: 'too many requests in this call',
  request_too_large: 'request body too large',
  invalid_request: 'invalid request',
  dns_failed: 'host name did not resolve',
  connect_failed: 'connection failed or closed before a response',
  upstream_failed: 'upstream failed',
  response_too_large: 'response body too large',
  timeout: 'timed out',
  deadline: "reached the call's deadline",
};

/** Names the operator setting that would allow what a caller cannot allow for themselves. */
function operatorHint(reason: EgressReason, targetReason?: EgressReason): string {
  return reason === 'private_address' || targetReason === 'private_address'
    ? '; only the operator can allow such addresses, with EGRESS_ALLOW_PRIVATE=true'
    : '';
}

/** Builds the per-call session. Throws InvalidHostPatternError if a pattern list is malformed. */
export function createEgressFetch(options: EgressOptions, deps: EgressDeps = {}): EgressSession {
  const callList = validateHostPatterns(options.allowedHosts);
  const ceiling = validateHostPatterns(options.ceiling);
  const resolve: Resolver = deps.resolve ?? (options.hosts ? staticResolver(options.hosts) : systemResolver);
  const deadline = options.deadline ?? Number.POSITIVE_INFINITY;

  /** Host name → the addresses checked for it; the only answers the connector may use. */
  const pinned = new Map<string, AddressClass[]>();
  const audit: EgressAuditEntry[] = [];
  let failure: EgressError | null = null;
  let attempts = 0;
  let agent: Agent | null = null;
  let closed = false;

  // net.connect calls this instead of DNS (it skips it for IP literals, which are checked as is).
  function pinnedLookup(
    hostname: string,
    lookupOptions: LookupOptions,
    callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void {
    const checked = pinned.get(hostname.toLowerCase().replace(/\.$/, ''));
    const wanted = checked?.filter((a) => !lookupOptions.family || a.family === lookupOptions.family) ?? [];
    const first = wanted[0];
    if (first === undefined) {
      callback(Object.assign(new Error(`egress: no checked address for ${hostname}`), { code: 'ENOTFOUND' }), '');
    } else if (lookupOptions.all) {
      callback(
        null,
        wanted.map((a) => ({ address: a.address, family: a.family })),
      );
    } else {
      callback(null, first.address, first.family);
    }
  }

  function dispatcher(): Agent {
    agent ??= new Agent({ connect: { lookup: pinnedLookup, ...(deps.ca ? { ca: deps.ca } : {}) }, keepAliveTimeout: 4_000 });
    return agent;
  }

  // Resolves (or reads the literal), checks every address and pins them. Refuses if ANY address is
  // refused rather than keeping the good ones: a name mixing public and private answers is a
  // rebinding tell, and the pinned set must be exactly what was checked.
  async function checkedAddresses(
    url: URL,
    signal: AbortSignal,
    refuse: (reason: EgressReason, detail: string) => never,
    fail: (reason: EgressReason, detail: string) => never,
  ): Promise<void> {
    const host = urlHost(url);
    const literal = classifyAddress(url.hostname);
    let addresses: AddressClass[];
    if (literal !== null) {
      addresses = [literal];
    } else if (pinned.has(host)) {
      return;
    } else {
      let answers: LookupAddress[];
      if (isLoopbackName(host)) {
        answers = LOOPBACK_NAME_ADDRESSES;
      } else {
        try {
          answers = await abortable(resolve(host), signal);
        } catch (err) {
          if (signal.aborted) throw err;
          return fail('dns_failed', errorCode(err));
        }
      }
      addresses = answers.map((a) => classifyAddress(a.address)).filter((a): a is AddressClass => a !== null);
      if (addresses.length === 0 || addresses.length !== answers.length) {
        return fail('dns_failed', 'no usable address');
      }
    }
    if (!options.allowPrivate) {
      const refused = addresses.find((a) => !a.public);
      if (refused !== undefined) refuse('private_address', `${refused.address} is ${refused.range}`);
    }
    if (literal === null) pinned.set(host, addresses);
  }

  async function run(input: string | URL, init: EgressRequestInit): Promise<Response> {
    const rawUrl = typeof input === 'string' ? input : input.href;
    const requestStart = performance.now();
    // What the current hop is and how far it got, for its audit entry.
    const hop = {
      method: (init.method ?? 'GET').toUpperCase(),
      url: null as URL | null,
      start: requestStart,
      status: null as number | null,
      bytes: 0,
    };
    const hopUrl = () => (hop.url === null ? redactUrl(rawUrl) : redactUrl(hop.url));
    const hopHost = () => (hop.url === null ? '' : urlHost(hop.url));
    const record = (allowed: boolean, reason?: EgressReason) => {
      const entry: EgressAuditEntry = {
        method: hop.method,
        url: hopUrl(),
        status: hop.status,
        bytes: hop.bytes,
        durationMs: roundMs(performance.now() - hop.start),
        allowed,
      };
      if (reason !== undefined) entry.reason = reason;
      audit.push(entry);
    };
    const deny = (reason: EgressReason, detail: string, targetReason?: EgressReason): never => {
      record(false, reason);
      const what = targetReason === undefined ? REASON_TEXT[reason] : `${REASON_TEXT[reason]}: ${REASON_TEXT[targetReason]}`;
      throw new EgressDenied(
        reason,
        hopHost(),
        hopUrl(),
        `request to ${hopHost() || hopUrl()} refused: ${what}${detail ? ` (${detail})` : ''}${operatorHint(reason, targetReason)}`,
        targetReason,
      );
    };
    const fail = (reason: EgressReason, detail: string): never => {
      record(true, reason);
      throw new EgressUpstreamError(
        reason,
        hopHost(),
        hopUrl(),
        `request to ${hopHost()} failed: ${REASON_TEXT[reason]} (${detail})`,
      );
    };

    const remaining = deadline - Date.now();
    const cutByDeadline = remaining <= options.timeoutMs;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new Error('egress timeout')),
      Math.max(0, Math.min(options.timeoutMs, remaining, MAX_TIMER_MS)),
    );
    const onCallerAbort = () => controller.abort(init.signal?.reason);
    init.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const signal = controller.signal;

    try {
      let current: URL;
      try {
        current = new URL(rawUrl);
      } catch {
        return deny('invalid_request', 'not a valid URL');
      }
      hop.url = current;
      if (remaining <= 0) return fail('deadline', 'no time left');
      let headers: Headers;
      let body: Uint8Array | null;
      try {
        headers = new Headers(init.headers as ConstructorParameters<typeof Headers>[0]);
        body = requestBody(init.body);
      } catch (err) {
        return deny('invalid_request', (err as Error).message);
      }
      for (const name of STRIPPED_REQUEST_HEADERS) headers.delete(name);
      if (hop.method === 'GET' || hop.method === 'HEAD') body = null;
      if (body !== null && body.byteLength > options.maxRequestBodyBytes) {
        return deny('request_too_large', `${body.byteLength} bytes, limit ${options.maxRequestBodyBytes}`);
      }

      for (let redirects = 0; ; redirects++) {
        const url = current;
        if (closed) return deny('invalid_request', 'the call has ended');
        if (attempts >= options.maxRequests) return deny('too_many_requests', `limit ${options.maxRequests} per call`);
        attempts += 1;
        const refuse = (reason: EgressReason, detail: string): never =>
          redirects > 0 ? deny('redirect_refused', detail, reason) : deny(reason, detail);

        if (url.protocol !== 'http:' && url.protocol !== 'https:') refuse('scheme', url.protocol);
        if (!isUrlAllowed(url, callList, ceiling)) refuse('not_in_allow_list', '');
        await checkedAddresses(url, signal, refuse, fail);

        // Credentials in the URL become a Basic header (fetch refuses URLs that carry them).
        const target = new URL(url.href);
        if (target.username !== '' || target.password !== '') {
          if (!headers.has('authorization')) {
            const userinfo = `${percentDecode(target.username)}:${percentDecode(target.password)}`;
            headers.set('authorization', `Basic ${Buffer.from(userinfo).toString('base64')}`);
          }
          target.username = '';
          target.password = '';
        }

        let response: UpstreamResponse;
        try {
          response = await undiciFetch(target.href, {
            method: hop.method,
            headers: headerPairs(headers),
            body,
            redirect: 'manual',
            signal,
            dispatcher: dispatcher(),
          });
        } catch (err) {
          if (signal.aborted) throw err;
          return fail('connect_failed', errorCode(err));
        }
        hop.status = response.status;

        const location = response.headers.get('location');
        if (REDIRECT_STATUSES.has(response.status) && location !== null) {
          await response.body?.cancel().catch(() => undefined);
          record(true);
          const from = url;
          hop.start = performance.now();
          hop.status = null;
          let next: URL;
          try {
            next = new URL(location, from);
          } catch {
            return deny('redirect_refused', `Location ${JSON.stringify(location.slice(0, 200))}`, 'invalid_request');
          }
          current = next;
          hop.url = next;
          if (redirects >= options.maxRedirects) return deny('too_many_redirects', `limit ${options.maxRedirects}`);
          // Method and body rewriting as in the Fetch standard (HTTP-redirect fetch).
          if (
            ((response.status === 301 || response.status === 302) && hop.method === 'POST') ||
            (response.status === 303 && hop.method !== 'GET' && hop.method !== 'HEAD')
          ) {
            hop.method = 'GET';
            body = null;
            for (const name of BODY_HEADERS) headers.delete(name);
          }
          if (next.origin !== from.origin) for (const name of CREDENTIAL_HEADERS) headers.delete(name);
          continue;
        }

        const bytes = await readCapped(response, hop, fail);
        if (response.status < 200 || response.status > 599) return fail('upstream_failed', `status ${response.status}`);
        record(true);
        const responseHeaders = new Headers(headerPairs(response.headers));
        // The body handed over is decoded and complete.
        responseHeaders.delete('content-encoding');
        responseHeaders.delete('transfer-encoding');
        const nullBody = NULL_BODY_STATUSES.has(response.status);
        if (!nullBody) responseHeaders.set('content-length', String(bytes.byteLength));
        return new Response(nullBody ? null : bytes, {
          status: response.status,
          statusText: response.statusText,
          headers: responseHeaders,
        });
      }
    } catch (err) {
      if (err instanceof EgressError) throw err;
      if (signal.aborted && !init.signal?.aborted) {
        return fail(cutByDeadline ? 'deadline' : 'timeout', `after ${Math.round(performance.now() - requestStart)} ms`);
      }
      return fail('upstream_failed', errorCode(err));
    } finally {
      clearTimeout(timer);
      init.signal?.removeEventListener('abort', onCallerAbort);
    }
  }

  /** Reads the whole body, failing as soon as it passes the cap (a body of exactly the cap is fine). */
  async function readCapped(
    response: UpstreamResponse,
    hop: { bytes: number },
    fail: (reason: EgressReason, detail: string) => never,
  ): Promise<Uint8Array<ArrayBuffer>> {
    const cap = options.maxResponseBytes;
    const declared = response.headers.get('content-length');
    // A declared size only settles it when the body is not encoded: decoded bytes are what count.
    if (declared !== null && !response.headers.has('content-encoding') && Number(declared) > cap) {
      await response.body?.cancel().catch(() => undefined);
      return fail('response_too_large', `declares ${declared} bytes, limit ${cap}`);
    }
    if (response.body === null) return new Uint8Array(0);
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hop.bytes += value.byteLength;
      if (hop.bytes > cap) {
        await reader.cancel().catch(() => undefined);
        return fail('response_too_large', `more than ${cap} bytes`);
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks, hop.bytes);
  }

  async function egressFetch(input: string | URL, init: EgressRequestInit = {}): Promise<Response> {
    try {
      return await run(input, init);
    } catch (err) {
      const egressError =
        err instanceof EgressError
          ? err
          : new EgressUpstreamError('upstream_failed', '', redactUrl(String(input)), `request failed: ${errorCode(err)}`);
      failure ??= egressError;
      throw egressError;
    }
  }

  return {
    fetch: egressFetch,
    audit,
    get failure() {
      return failure;
    },
    async close() {
      closed = true;
      const current = agent;
      agent = null;
      if (current !== null) await current.destroy();
    },
  };
}
