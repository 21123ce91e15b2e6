// The egress fetch against real HTTP servers on 127.0.0.1 and ::1. Every name used here resolves
// through the session's static `hosts` table (or an injected resolver), so nothing reaches real DNS,
// and every address connected to is loopback.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import wabtInit from 'wabt';
import createPlugin from '@extism/extism';
import {
  EgressDenied,
  EgressError,
  EgressUpstreamError,
  createEgressFetch,
  redactUrl,
  summarizeEgress,
} from '../src/egress/fetch.ts';
import type { EgressOptions, EgressSession } from '../src/egress/fetch.ts';
import { InvalidHostPatternError } from '../src/host-patterns.ts';
import { closedPort, startUpstream } from './upstream.ts';
import type { Upstream } from './upstream.ts';

let v4: Upstream;
let v6: Upstream;
const sessions: EgressSession[] = [];

beforeAll(async () => {
  v4 = await startUpstream('127.0.0.1');
  v6 = await startUpstream('::1');
});

afterAll(async () => {
  await v4.close();
  await v6.close();
});

afterEach(async () => {
  for (const s of sessions.splice(0)) await s.close();
  for (const u of [v4, v6]) {
    u.connections = 0;
    u.received.length = 0;
  }
});

/** Names the tests use; all map to loopback. */
const HOSTS = {
  'a.example.test': '127.0.0.1',
  'b.example.test': '127.0.0.1',
  'c.example.test': '127.0.0.1',
  'six.example.test': '::1',
  'api.example.com': '127.0.0.1',
};

function session(overrides: Partial<EgressOptions> = {}, deps = {}): EgressSession {
  const options: EgressOptions = {
    allowedHosts: ['*'],
    ceiling: ['*'],
    allowPrivate: true,
    timeoutMs: 5_000,
    deadline: null,
    maxResponseBytes: 1_000_000,
    maxRequests: 32,
    maxRedirects: 5,
    maxRequestBodyBytes: 1_000_000,
    hosts: HOSTS,
    ...overrides,
  };
  const s = createEgressFetch(options, deps);
  sessions.push(s);
  return s;
}

async function rejection(promise: Promise<unknown>): Promise<EgressError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(EgressError);
    return err as EgressError;
  }
  throw new Error('expected the request to be rejected');
}

describe('private and loopback targets with allowPrivate=false', () => {
  it.each([
    ['http://127.0.0.1:PORT/ok', '127.0.0.1'],
    ['http://localhost:PORT/ok', 'localhost'],
    ['http://[::1]:PORT6/ok', '[::1]'],
    ['http://[::ffff:127.0.0.1]:PORT/ok', '[::ffff:7f00:1]'],
    ['http://0x7f000001:PORT/ok', '127.0.0.1'],
    ['http://2130706433:PORT/ok', '127.0.0.1'],
    ['http://api.example.com:PORT/ok', 'api.example.com'],
    ['http://six.example.test:PORT6/ok', 'six.example.test'],
    ['http://app.localhost:PORT/ok', 'app.localhost'],
  ])('refuses %s even with allowedHosts ["*"], and the upstream sees nothing', async (template, host) => {
    const s = session({ allowPrivate: false, allowedHosts: ['*'], ceiling: ['*'] });
    const url = template.replace('PORT6', String(v6.port)).replace('PORT', String(v4.port));
    const err = await rejection(s.fetch(url));
    expect(err).toBeInstanceOf(EgressDenied);
    expect(err).toMatchObject({ reason: 'private_address', code: 'HOST_NOT_ALLOWED', host });
    expect(err.message).toMatch(/loopback/);
    expect(s.audit).toEqual([
      expect.objectContaining({ method: 'GET', status: null, bytes: 0, allowed: false, reason: 'private_address' }),
    ]);
    expect(s.failure).toBe(err);
    expect(v4.connections + v6.connections).toBe(0);
  });

  it('refuses a name when any one of its addresses is private', async () => {
    const s = session({ allowPrivate: false, hosts: { 'mixed.example.test': ['93.184.216.34', '127.0.0.1'] } });
    const err = await rejection(s.fetch(`http://mixed.example.test:${v4.port}/ok`));
    expect(err).toMatchObject({ reason: 'private_address' });
    expect(err.message).toContain('127.0.0.1');
    expect(v4.connections).toBe(0);
  });
});

describe('allowed requests (allowPrivate=true, as in the test default)', () => {
  it('fetches from an allowed host and returns status, headers and body', async () => {
    const s = session({ allowedHosts: ['a.example.test'] });
    const res = await s.fetch(`${v4.urlAs('a.example.test')}/ok`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok');
    expect(res.headers.get('content-length')).toBe('2');
    expect(v4.received).toHaveLength(1);
    expect(v4.received[0]?.headers.host).toBe(`a.example.test:${v4.port}`);
    expect(s.audit).toEqual([
      {
        method: 'GET',
        url: `${v4.urlAs('a.example.test')}/ok`,
        status: 200,
        bytes: 2,
        durationMs: expect.any(Number),
        allowed: true,
      },
    ]);
    expect(s.failure).toBeNull();
  });

  it('reaches IPv6 loopback by literal and by name', async () => {
    const s = session();
    expect(await (await s.fetch(`${v6.url}/ok`)).text()).toBe('ok');
    expect(await (await s.fetch(`${v6.urlAs('six.example.test')}/ok`)).text()).toBe('ok');
    expect(v6.received).toHaveLength(2);
  });

  it('passes method, headers and body through, and returns upstream error statuses to the plugin', async () => {
    const s = session();
    const res = await s.fetch(`${v4.urlAs('a.example.test')}/echo`, {
      method: 'put',
      headers: { 'x-plugin': 'yes', 'content-type': 'text/plain', host: 'metadata.internal' },
      body: new TextEncoder().encode('payload'),
    });
    const echoed = (await res.json()) as { method: string; headers: Record<string, string>; body: string };
    expect(echoed.method).toBe('PUT');
    expect(echoed.body).toBe('payload');
    expect(echoed.headers['x-plugin']).toBe('yes');
    // A plugin cannot pick another virtual host than the URL names.
    expect(echoed.headers.host).toBe(`a.example.test:${v4.port}`);

    const missing = await s.fetch(`${v4.urlAs('a.example.test')}/nope`);
    expect(missing.status).toBe(404);
    expect(s.audit.map((e) => [e.status, e.allowed, e.reason])).toEqual([
      [200, true, undefined],
      [404, true, undefined],
    ]);
  });

  it('connects to the pinned address: one resolution per host per call, never re-resolved', async () => {
    // A rebinding resolver: first answer 127.0.0.1, every later one ::1, on the same port.
    const v6Same = await startUpstream('::1', v4.port).catch(() => null);
    if (v6Same === null) return expect.fail('could not bind ::1 on the same port as 127.0.0.1');
    try {
      let lookups = 0;
      const resolve = async (host: string) => {
        expect(host).toBe('rebind.example.test');
        lookups += 1;
        return lookups === 1 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '::1', family: 6 }];
      };
      const s = session({ hosts: null }, { resolve });
      for (let i = 0; i < 3; i++) expect((await s.fetch(`${v4.urlAs('rebind.example.test')}/ok`)).status).toBe(200);
      expect(lookups).toBe(1);
      expect(v4.received).toHaveLength(3);
      expect(v6Same.connections).toBe(0);
    } finally {
      await v6Same.close();
    }
  });

  it('connects to the address the static table gives, not to another server on the same port', async () => {
    const v6Same = await startUpstream('::1', v4.port).catch(() => null);
    if (v6Same === null) return expect.fail('could not bind ::1 on the same port as 127.0.0.1');
    try {
      const s = session({ hosts: { 'pinned.example.test': '::1' } });
      expect((await s.fetch(`${v4.urlAs('pinned.example.test')}/ok`)).status).toBe(200);
      expect(v6Same.received).toHaveLength(1);
      expect(v4.connections).toBe(0);
    } finally {
      await v6Same.close();
    }
  });

  it('converts URL credentials to a Basic header and redacts them in the audit, keeping the query', async () => {
    const s = session();
    const res = await s.fetch(`http://user:s3cret@a.example.test:${v4.port}/echo?q=1&x=2#frag`);
    const echoed = (await res.json()) as { headers: Record<string, string> };
    expect(echoed.headers.authorization).toBe(`Basic ${Buffer.from('user:s3cret').toString('base64')}`);
    expect(s.audit[0]?.url).toBe(`http://REDACTED:REDACTED@a.example.test:${v4.port}/echo?q=1&x=2`);
    expect(JSON.stringify(s.audit)).not.toContain('s3cret');
  });
});

describe('HTTPS through the pinned connection', () => {
  const tlsDir = fileURLToPath(new URL('./fixtures/tls/', import.meta.url));
  let server: https.Server;
  let port: number;
  let ca: string;

  beforeAll(async () => {
    ca = readFileSync(`${tlsDir}cert.pem`, 'utf8');
    server = https.createServer({ cert: ca, key: readFileSync(`${tlsDir}key.pem`) }, (_req, res) => res.end('secure'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });

  const hosts = { 'secure.example.test': '127.0.0.1', 'other.example.test': '127.0.0.1' };

  it('verifies the certificate against the URL host name, not the pinned IP', async () => {
    const s = session({ hosts }, { ca: [ca] });
    const res = await s.fetch(`https://secure.example.test:${port}/`);
    expect(await res.text()).toBe('secure');
    // Same address, other name: the certificate does not cover it, so the TLS handshake fails.
    const err = await rejection(s.fetch(`https://other.example.test:${port}/`));
    expect(err).toMatchObject({ reason: 'connect_failed', code: 'EGRESS_ERROR' });
    expect(err.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
  });

  it('refuses an untrusted certificate', async () => {
    const s = session({ hosts });
    expect((await rejection(s.fetch(`https://secure.example.test:${port}/`))).reason).toBe('connect_failed');
  });
});

describe('allow-list and ceiling', () => {
  it('refuses a host outside the call list, and the upstream sees nothing', async () => {
    const s = session({ allowedHosts: ['a.example.test'] });
    const err = await rejection(s.fetch(`${v4.urlAs('b.example.test')}/ok`));
    expect(err).toMatchObject({ reason: 'not_in_allow_list', code: 'HOST_NOT_ALLOWED', host: 'b.example.test' });
    expect(err.message).toContain('b.example.test');
    expect(v4.connections).toBe(0);
  });

  it('narrows a caller list wider than the ceiling', async () => {
    const s = session({ allowedHosts: ['a.example.test', 'b.example.test'], ceiling: ['a.example.test'] });
    expect((await s.fetch(`${v4.urlAs('a.example.test')}/ok`)).status).toBe(200);
    const err = await rejection(s.fetch(`${v4.urlAs('b.example.test')}/ok`));
    expect(err.reason).toBe('not_in_allow_list');
    expect(v4.received).toHaveLength(1);
  });

  it('refuses everything when the call has no allow-list', async () => {
    const s = session({ allowedHosts: [] });
    expect((await rejection(s.fetch(`${v4.urlAs('a.example.test')}/ok`))).reason).toBe('not_in_allow_list');
    expect(v4.connections).toBe(0);
  });

  it('matches port and scheme prefixes of patterns', async () => {
    const s = session({ allowedHosts: [`http://a.example.test:${v4.port}`] });
    expect((await s.fetch(`${v4.urlAs('a.example.test')}/ok`)).status).toBe(200);
    expect((await rejection(s.fetch(`http://a.example.test:${v6.port}/ok`))).reason).toBe('not_in_allow_list');
    expect((await rejection(s.fetch(`https://a.example.test:${v4.port}/ok`))).reason).toBe('not_in_allow_list');
  });

  it('refuses schemes other than http and https', async () => {
    const s = session();
    for (const url of ['ftp://a.example.test/x', 'ws://a.example.test/x', 'file:///etc/passwd']) {
      expect(await rejection(s.fetch(url))).toMatchObject({ reason: 'scheme', code: 'HOST_NOT_ALLOWED' });
    }
  });

  it('rejects malformed pattern lists when the session is built', () => {
    expect(() => createEgressFetch({ ...baseOptions(), allowedHosts: ['!evil.test'] })).toThrow(InvalidHostPatternError);
    expect(() => createEgressFetch({ ...baseOptions(), ceiling: ['*.'] })).toThrow(InvalidHostPatternError);
  });
});

function baseOptions(): EgressOptions {
  return {
    allowedHosts: ['*'],
    ceiling: ['*'],
    allowPrivate: true,
    timeoutMs: 5_000,
    deadline: null,
    maxResponseBytes: 1000,
    maxRequests: 32,
    maxRedirects: 5,
    maxRequestBodyBytes: 1000,
    hosts: HOSTS,
  };
}

describe('redirects', () => {
  const redirect = (from: string, to: string, status = 302) => `${from}/redirect?status=${status}&to=${encodeURIComponent(to)}`;

  it('refuses a redirect from an allowed host to a disallowed one, and the second server gets nothing', async () => {
    const s = session({ allowedHosts: ['a.example.test'] });
    const target = `${v6.urlAs('six.example.test')}/ok`;
    const err = await rejection(s.fetch(redirect(v4.urlAs('a.example.test'), target)));
    expect(err).toMatchObject({
      reason: 'redirect_refused',
      targetReason: 'not_in_allow_list',
      code: 'HOST_NOT_ALLOWED',
      host: 'six.example.test',
    });
    expect(v4.received).toHaveLength(1);
    expect(v6.connections).toBe(0);
    expect(s.audit.map((e) => [e.url, e.status, e.allowed, e.reason])).toEqual([
      [redirect(v4.urlAs('a.example.test'), target), 302, true, undefined],
      [target, null, false, 'redirect_refused'],
    ]);
  });

  it('refuses a redirect to a scheme other than http/https, naming the target reason', async () => {
    const s = session();
    const err = await rejection(s.fetch(redirect(v4.urlAs('a.example.test'), 'ftp://a.example.test/file')));
    expect(err).toMatchObject({ reason: 'redirect_refused', targetReason: 'scheme' });
  });

  it('follows a redirect chain within the allow-list, re-checking every hop', async () => {
    const s = session({ allowedHosts: ['*.example.test'] });
    const end = `${v6.urlAs('six.example.test')}/ok`;
    const mid = redirect(v4.urlAs('b.example.test'), end, 307);
    const start = redirect(v4.urlAs('a.example.test'), mid, 301);
    const res = await s.fetch(start);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok');
    expect(s.audit.map((e) => [e.url, e.status, e.allowed])).toEqual([
      [start, 301, true],
      [mid, 307, true],
      [end, 200, true],
    ]);
    expect(v4.received.map((r) => r.headers.host)).toEqual([`a.example.test:${v4.port}`, `b.example.test:${v4.port}`]);
    expect(v6.received).toHaveLength(1);
  });

  it('stops after maxRedirects hops as not allowed', async () => {
    const s = session({ maxRedirects: 1 });
    const end = `${v6.url}/ok`;
    const err = await rejection(s.fetch(redirect(v4.url, redirect(v4.url, end))));
    expect(err).toMatchObject({ reason: 'too_many_redirects', code: 'HOST_NOT_ALLOWED' });
    expect(v4.received).toHaveLength(2);
    expect(v6.connections).toBe(0);
  });

  it('turns POST into GET on 303 and keeps method and body on 307, dropping credentials across origins', async () => {
    const s = session();
    const init = { method: 'POST', headers: { authorization: 'Bearer t', 'content-type': 'text/plain' }, body: 'data' };
    const r303 = (await (await s.fetch(redirect(v4.url, `${v4.urlAs('a.example.test')}/echo`, 303), init)).json()) as Record<
      string,
      unknown
    >;
    expect(r303).toMatchObject({ method: 'GET', body: '' });
    expect((r303.headers as Record<string, string>).authorization).toBeUndefined();
    expect((r303.headers as Record<string, string>)['content-type']).toBeUndefined();
    const r307 = (await (await s.fetch(redirect(v4.url, `${v4.url}/echo`, 307), init)).json()) as Record<string, unknown>;
    expect(r307).toMatchObject({ method: 'POST', body: 'data' });
    expect((r307.headers as Record<string, string>).authorization).toBe('Bearer t');
  });
});

describe('limits', () => {
  it('passes a body exactly at the cap and fails one byte over (with and without content-length)', async () => {
    const s = session({ maxResponseBytes: 1000 });
    for (const mode of ['', '&chunked=1']) {
      const ok = await s.fetch(`${v4.url}/bytes?n=1000${mode}`);
      expect((await ok.arrayBuffer()).byteLength).toBe(1000);
      const err = await rejection(s.fetch(`${v4.url}/bytes?n=1001${mode}`));
      expect(err).toBeInstanceOf(EgressUpstreamError);
      expect(err).toMatchObject({ reason: 'response_too_large', code: 'EGRESS_ERROR', host: '127.0.0.1' });
    }
    expect(s.audit.map((e) => [e.status, e.allowed, e.reason])).toEqual([
      [200, true, undefined],
      [200, true, 'response_too_large'],
      [200, true, undefined],
      [200, true, 'response_too_large'],
    ]);
    expect(s.audit[2]?.bytes).toBe(1000);
  });

  it('counts a compressed body by its decoded size', async () => {
    const s = session({ maxResponseBytes: 1000 });
    const ok = await s.fetch(`${v4.url}/bytes?n=1000&gzip=1`);
    expect(await ok.text()).toBe('x'.repeat(1000));
    expect(ok.headers.get('content-encoding')).toBeNull();
    expect((await rejection(s.fetch(`${v4.url}/bytes?n=100000&gzip=1`))).reason).toBe('response_too_large');
  });

  it('cuts an upstream that never answers at the egress timeout', async () => {
    const s = session({ timeoutMs: 300 });
    const err = await rejection(s.fetch(`${v4.url}/hang`));
    expect(err).toMatchObject({ reason: 'timeout', code: 'EGRESS_TIMEOUT' });
    expect(s.audit).toEqual([expect.objectContaining({ status: null, allowed: true, reason: 'timeout' })]);
  });

  it('cuts a body that stalls at the egress timeout', async () => {
    const s = session({ timeoutMs: 300 });
    const err = await rejection(s.fetch(`${v4.url}/hang-body`));
    expect(err.reason).toBe('timeout');
    expect(s.audit[0]).toMatchObject({ status: 200, bytes: 7, reason: 'timeout' });
  });

  it("never waits beyond the call's deadline, even with a longer egress timeout", async () => {
    const s = session({ timeoutMs: 10_000, deadline: Date.now() + 300 });
    const err = await rejection(s.fetch(`${v4.url}/hang`));
    // The deadline, not the egress timeout, ended it.
    expect(err).toMatchObject({ reason: 'deadline', code: 'TIMEOUT' });
  });

  it('sends nothing once the deadline has passed', async () => {
    const s = session({ deadline: Date.now() - 1 });
    expect((await rejection(s.fetch(`${v4.url}/ok`))).reason).toBe('deadline');
    expect(v4.connections).toBe(0);
  });

  it('refuses requests beyond maxRequests per call (redirect hops count)', async () => {
    const s = session({ maxRequests: 3 });
    await s.fetch(`${v4.url}/ok`);
    await s.fetch(`${v4.url}/redirect?to=/ok`);
    const err = await rejection(s.fetch(`${v4.url}/ok`));
    expect(err).toMatchObject({ reason: 'too_many_requests', code: 'EGRESS_ERROR' });
    expect(v4.received).toHaveLength(3);
    expect(s.audit.at(-1)).toMatchObject({ allowed: false, reason: 'too_many_requests' });
  });

  it('refuses a request body over the cap without sending it', async () => {
    const s = session({ maxRequestBodyBytes: 10 });
    expect(await (await s.fetch(`${v4.url}/echo`, { method: 'POST', body: 'x'.repeat(10) })).json()).toMatchObject({
      body: 'x'.repeat(10),
    });
    const err = await rejection(s.fetch(`${v4.url}/echo`, { method: 'POST', body: 'x'.repeat(11) }));
    expect(err).toMatchObject({ reason: 'request_too_large', code: 'EGRESS_ERROR' });
    expect(v4.received).toHaveLength(1);
  });
});

describe('upstream failures', () => {
  it('reports a refused connection as EGRESS_ERROR connect_failed', async () => {
    const port = await closedPort();
    const s = session();
    const err = await rejection(s.fetch(`http://a.example.test:${port}/ok`));
    expect(err).toMatchObject({ reason: 'connect_failed', code: 'EGRESS_ERROR', host: 'a.example.test' });
    expect(err.message).toContain('ECONNREFUSED');
    expect(s.audit).toEqual([expect.objectContaining({ status: null, allowed: true, reason: 'connect_failed' })]);
  });

  it('never falls back to DNS for a name missing from the static table', async () => {
    const s = session({ hosts: {} });
    const err = await rejection(s.fetch('http://unknown.example.test/ok'));
    expect(err).toMatchObject({ reason: 'dns_failed', code: 'EGRESS_ERROR' });
  });

  it('ends the session: later requests are refused and pooled connections closed', async () => {
    const s = session();
    await s.fetch(`${v4.url}/ok`);
    await s.close();
    expect((await rejection(s.fetch(`${v4.url}/ok`))).reason).toBe('invalid_request');
    expect(v4.received).toHaveLength(1);
  });
});

describe('audit summary and error transport', () => {
  it('counts attempts by outcome', async () => {
    const s = session({ allowedHosts: ['a.example.test'], maxResponseBytes: 5 });
    await s.fetch(`${v4.urlAs('a.example.test')}/ok`);
    await rejection(s.fetch(`${v4.urlAs('b.example.test')}/ok`));
    await rejection(s.fetch(`${v4.urlAs('a.example.test')}/bytes?n=6&chunked=1`));
    // 2 bytes delivered + 6 read before the cap cut the stream
    expect(summarizeEgress(s.audit)).toEqual({ requests: 3, ok: 1, refused: 1, failed: 1, bytes: 8 });
  });

  it('turns an egress error into plain data that survives structuredClone (worker → main thread)', async () => {
    const s = session({ allowedHosts: ['a.example.test'] });
    const err = await rejection(s.fetch(`${v4.urlAs('b.example.test')}/x?token=1`));
    const info = structuredClone(err.toJSON());
    expect(info).toEqual({
      reason: 'not_in_allow_list',
      code: 'HOST_NOT_ALLOWED',
      host: 'b.example.test',
      url: `${v4.urlAs('b.example.test')}/x?token=1`,
      message: expect.stringContaining('b.example.test'),
    });
    expect(structuredClone(s.audit)).toEqual(s.audit);
  });

  it('redacts credentials in unparseable URLs too', () => {
    expect(redactUrl('http://user:pw@[bad/x')).toBe('http://REDACTED@[bad/x');
  });
});

describe('inside the Extism SDK (foreground plugin, JSPI)', () => {
  // A minimal plugin: its input is the http_request JSON; its output is the response body.
  const WAT = `(module
    (import "extism:host/env" "input_length" (func $input_length (result i64)))
    (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
    (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
    (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
    (import "extism:host/env" "length" (func $length (param i64) (result i64)))
    (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
    (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
    (memory (export "memory") 1)
    (func (export "fetch") (result i32)
      (local $n i64) (local $i i64) (local $req i64) (local $resp i64)
      (local.set $n (call $input_length))
      (local.set $req (call $alloc (local.get $n)))
      (block $done (loop $copy
        (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8 (i64.add (local.get $req) (local.get $i)) (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $copy)))
      (local.set $resp (call $http_request (local.get $req) (i64.const 0)))
      (if (i64.ne (local.get $resp) (i64.const 0))
        (then (call $output_set (local.get $resp) (call $length (local.get $resp)))))
      (i32.const 0)))`;
  let module: WebAssembly.Module;

  beforeAll(async () => {
    const wabt = await wabtInit();
    const parsed = wabt.parseWat('http.wat', WAT);
    module = await WebAssembly.compile(parsed.toBinary({}).buffer as Uint8Array<ArrayBuffer>);
    parsed.destroy();
  });

  async function callPlugin(s: EgressSession, url: string) {
    const plugin = await createPlugin({ wasm: [{ module }] }, { allowedHosts: ['*'], fetch: s.fetch as typeof fetch });
    try {
      return await plugin.call('fetch', JSON.stringify({ url, method: 'GET' }));
    } finally {
      await plugin.close();
    }
  }

  it('hands the plugin a body exactly at the cap (the SDK must not get its own >= cap)', async () => {
    const s = session({ maxResponseBytes: 1000 });
    const out = await callPlugin(s, `${v4.url}/bytes?n=1000`);
    expect(out?.text()).toBe('x'.repeat(1000));
  });

  it('ends the call with the very EgressDenied the fetch threw, and the upstream sees nothing', async () => {
    const s = session({ allowPrivate: false });
    let caught: unknown;
    try {
      await callPlugin(s, `${v4.url}/ok`);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBe(s.failure);
    expect(caught).toBeInstanceOf(EgressDenied);
    expect(v4.connections).toBe(0);
  });
});
