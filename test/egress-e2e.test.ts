// Plugin egress end to end: real plugins (plugins/dist/http.wasm, hello.wasm) called over HTTP on a
// listening server, making requests through the engine's egress fetch to upstream servers on
// 127.0.0.1 and ::1. Public-looking names reach loopback only through the app's egressHosts table
// (no DNS); no request is ever aimed at any other address. Every call response is checked against
// openapi.yaml.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, useServer, type TestServer } from './helpers.ts';
import type { CallBody } from './test-client.ts';
import { closedPort, startUpstream, type Upstream } from './upstream.ts';

/** Asks the http plugin to GET one URL. */
function fetchOne(server: TestServer, plugin: string, url: string, extra: Partial<CallBody> = {}) {
  return server.api.call(plugin, { function: 'fetch', input: JSON.stringify({ url }), ...extra });
}

function resetCounts(...upstreams: Upstream[]): void {
  for (const u of upstreams) {
    u.connections = 0;
    u.received.length = 0;
  }
}

function expectPoolHealthy(server: TestServer): void {
  const stats = server.app.engine.stats();
  expect(stats.size).toBe(server.config.engine.workers);
  expect(stats.restarts).toEqual({ timeout: 0, stuck: 0, out_of_memory: 0, crash: 0, exit: 0 });
}

describe('with EGRESS_ALLOW_PRIVATE=false', () => {
  const server = useServer({
    env: { WORKERS: '2', EGRESS_ALLOW_PRIVATE: 'false', RATE_LIMIT_MAX: '0', MAX_EVENT_LOOP_DELAY_MS: '0' },
    appOptions: { egressHosts: { 'api.public-example.com': '127.0.0.1', 'v6.public-example.com': '::1' } },
  });
  let v4: Upstream;
  let v6: Upstream;
  let http: string;
  let hello: string;

  beforeAll(async () => {
    v4 = await startUpstream('127.0.0.1');
    v6 = await startUpstream('::1');
    http = (await server.api.uploaded(await readPlugin('http'), { form: true })).id;
    hello = (await server.api.uploaded(await readPlugin('hello'), { form: true })).id;
  });

  afterAll(async () => {
    await v4?.close();
    await v6?.close();
  });

  afterEach(() => resetCounts(v4, v6));

  const targets: [string, (v4: Upstream, v6: Upstream) => string, string][] = [
    ['127.0.0.1', (u) => `http://127.0.0.1:${u.port}/ok`, '127.0.0.1'],
    ['localhost', (u) => `http://localhost:${u.port}/ok`, 'localhost'],
    ['[::1]', (_, u6) => `http://[::1]:${u6.port}/ok`, '[::1]'],
    ['[::ffff:127.0.0.1] (IPv4-mapped IPv6)', (u) => `http://[::ffff:127.0.0.1]:${u.port}/ok`, '[::ffff:7f00:1]'],
    ['0x7f000001 (hex IPv4)', (u) => `http://0x7f000001:${u.port}/ok`, '127.0.0.1'],
    ['2130706433 (decimal IPv4)', (u) => `http://2130706433:${u.port}/ok`, '127.0.0.1'],
    [
      'a public-looking name that resolves to 127.0.0.1',
      (u) => `http://api.public-example.com:${u.port}/ok`,
      'api.public-example.com',
    ],
    [
      'a public-looking name that resolves to ::1',
      (_, u6) => `http://v6.public-example.com:${u6.port}/ok`,
      'v6.public-example.com',
    ],
  ];

  it.each(targets)(
    'refuses %s with 422 HOST_NOT_ALLOWED (private address) even with allowedHosts ["*"], and the upstream sees no connection',
    async (_, target, host) => {
      const url = target(v4, v6);
      const { status, error: body } = await fetchOne(server, http, url, { allowedHosts: ['*'] });
      expect(status).toBe(422);
      expect(body.code).toBe('HOST_NOT_ALLOWED');
      expect(body.reason).toBe('private_address');
      expect(body.host).toBe(host);
      expect(body.message).toContain(host);
      expect(body.message).toContain('private or reserved address');
      expect(body.message).toContain('EGRESS_ALLOW_PRIVATE=true');
      expect(body.egress).toHaveLength(1);
      expect(body.egress[0]).toMatchObject({ method: 'GET', status: null, bytes: 0, allowed: false, reason: 'private_address' });
      expect(new URL(body.egress[0]!.url).port).toBe(new URL(url).port);
      expect(v4.connections + v6.connections).toBe(0);
      expect(v4.received.length + v6.received.length).toBe(0);
    },
  );

  it('refuses the same way from the hello plugin (config route), and keeps the plugin logs', async () => {
    const route = `http://api.public-example.com:${v4.port}/todo`;
    const { status, error: body } = await server.api.call(hello, {
      function: 'say_hello',
      input: 'x',
      config: { route },
      allowedHosts: ['api.public-example.com'],
    });
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'private_address', host: 'api.public-example.com' });
    expect(v4.connections).toBe(0);
  });

  it('stays healthy after refusals: the next calls work and no worker was replaced', async () => {
    for (let i = 0; i < 6; i++) {
      const refused = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/ok`, { allowedHosts: ['*'] });
      expect(refused.status).toBe(422);
    }
    // A request that needs no network: refused as outside the allow-list, answered by the plugin's worker.
    const unlisted = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/ok`, { allowedHosts: ['other.example.com'] });
    expect(unlisted.body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'not_in_allow_list' });
    expectPoolHealthy(server);
    expect(v4.connections).toBe(0);
  });
});

describe('with private addresses allowed (the test default)', () => {
  const EGRESS_TIMEOUT_MS = 1500;
  const server = useServer({
    env: {
      WORKERS: '2',
      EGRESS_ALLOW_PRIVATE: 'true',
      // The ceiling: loopback by address and name, plus the test's own domain; not outside.test.
      EGRESS_ALLOWED_HOSTS: '127.0.0.1,[::1],localhost,*.inside.test',
      EGRESS_TIMEOUT_MS: String(EGRESS_TIMEOUT_MS),
      EGRESS_MAX_REQUESTS: '4',
      RATE_LIMIT_MAX: '0',
      // Load shedding off: a busy test machine must not turn calls into 503 UNDER_PRESSURE.
      MAX_EVENT_LOOP_DELAY_MS: '0',
    },
    appOptions: { egressHosts: { 'api.inside.test': '127.0.0.1', 'api.outside.test': '127.0.0.1' } },
  });
  let v4: Upstream;
  let v6: Upstream;
  let other: Upstream;
  let http: string;
  let helloWithDefault: string;

  beforeAll(async () => {
    v4 = await startUpstream('127.0.0.1');
    v6 = await startUpstream('::1');
    other = await startUpstream('127.0.0.1');
    http = (await server.api.uploaded(await readPlugin('http'), { form: true })).id;
    helloWithDefault = (
      await server.api.uploaded(await readPlugin('hello'), { name: 'hello-local', allowedHosts: [`localhost:${v4.port}`] })
    ).id;
  });

  afterAll(async () => {
    for (const u of [v4, v6, other]) await u?.close();
  });

  afterEach(() => resetCounts(v4, v6, other));

  it('lets an allowed host through and audits the request', async () => {
    const url = `http://127.0.0.1:${v4.port}/ok`;
    const { status, data: body } = await fetchOne(server, http, url, { allowedHosts: ['127.0.0.1'] });
    expect(status).toBe(200);
    expect(JSON.parse(body.output!)).toEqual({ status: 200, body: 'ok' });
    expect(body.egress).toHaveLength(1);
    expect(body.egress[0]).toMatchObject({ method: 'GET', url, status: 200, bytes: 2, allowed: true });
    expect(body.egress[0]).not.toHaveProperty('reason');
    expect(body.egress[0]!.durationMs).toBeGreaterThanOrEqual(0);
    expect(v4.received.map((r) => r.url)).toEqual(['/ok']);
  });

  it("uses the plugin's stored allowedHosts when the call gives none", async () => {
    const ok = await server.api.call(helloWithDefault, {
      function: 'say_hello',
      input: 'Benjamin',
      config: { route: `http://localhost:${v4.port}/todo?title=stored` },
    });
    expect(ok.status).toBe(200);
    expect(ok.data.output).toBe('param: Benjamin title: stored');
    const refused = await server.api.call(helloWithDefault, {
      function: 'say_hello',
      input: 'x',
      config: { route: `http://127.0.0.1:${v4.port}/todo` },
    });
    expect(refused.status).toBe(422);
    expect(refused.body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'not_in_allow_list', host: '127.0.0.1' });
    expect(refused.error.message).toContain('not in the allow-list');
    expect(v4.received).toHaveLength(1);
  });

  it('allows no egress when neither the call nor the plugin lists hosts', async () => {
    const { status, error: body } = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/ok`);
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'not_in_allow_list' });
    expect(v4.connections).toBe(0);
  });

  it('refuses a redirect from an allowed host to a host outside the allow-list; the second server receives nothing', async () => {
    const target = `http://localhost:${other.port}/ok`;
    const first = `http://127.0.0.1:${v4.port}/redirect?to=${encodeURIComponent(target)}`;
    const { status, error: body } = await fetchOne(server, http, first, { allowedHosts: [`127.0.0.1:${v4.port}`] });
    expect(status).toBe(422);
    expect(body).toMatchObject({
      code: 'HOST_NOT_ALLOWED',
      reason: 'redirect_refused',
      targetReason: 'not_in_allow_list',
      host: 'localhost',
    });
    expect(body.message).toContain('redirect to a refused target');
    expect(body.egress).toEqual([
      expect.objectContaining({ url: first, status: 302, allowed: true }),
      expect.objectContaining({ url: target, status: null, allowed: false, reason: 'redirect_refused' }),
    ]);
    expect(body.egress[0]).not.toHaveProperty('reason');
    expect(v4.received).toHaveLength(1);
    expect(other.connections).toBe(0);
  });

  it('follows a redirect chain that stays within the allow-list (127.0.0.1 → [::1] → a mapped name)', async () => {
    const last = `http://api.inside.test:${other.port}/ok`;
    const middle = `http://[::1]:${v6.port}/redirect?status=307&to=${encodeURIComponent(last)}`;
    const first = `http://127.0.0.1:${v4.port}/redirect?to=${encodeURIComponent(middle)}`;
    const { status, data: body } = await fetchOne(server, http, first, { allowedHosts: ['127.0.0.1', '[::1]', '*.inside.test'] });
    expect(status).toBe(200);
    expect(JSON.parse(body.output!)).toEqual({ status: 200, body: 'ok' });
    expect(body.egress.map((e) => [e.url, e.status, e.allowed, e.reason])).toEqual([
      [first, 302, true, undefined],
      [middle, 307, true, undefined],
      [last, 200, true, undefined],
    ]);
    expect([v4.received.length, v6.received.length, other.received.length]).toEqual([1, 1, 1]);
  });

  it('narrows a caller list wider than the ceiling: a host outside EGRESS_ALLOWED_HOSTS is refused even when the caller allows it', async () => {
    for (const allowedHosts of [['*'], ['api.outside.test'], ['*.outside.test']]) {
      const { status, error: body } = await fetchOne(server, http, `http://api.outside.test:${v4.port}/ok`, { allowedHosts });
      expect(status).toBe(422);
      expect(body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'not_in_allow_list', host: 'api.outside.test' });
    }
    expect(v4.connections).toBe(0);
    // Within the ceiling, "*" reaches the mapped name.
    const inside = await fetchOne(server, http, `http://api.inside.test:${v4.port}/ok`, { allowedHosts: ['*'] });
    expect(inside.status).toBe(200);
    expect(v4.received).toHaveLength(1);
  });

  it('refuses a scheme other than http and https', async () => {
    const { status, error: body } = await fetchOne(server, http, `file:///etc/passwd`, { allowedHosts: ['*'] });
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'scheme' });
    expect(body.message).toContain('only http and https');
  });

  it('rejects an invalid allowedHosts pattern with 400 INVALID_ALLOWED_HOSTS naming the pattern and the problem', async () => {
    for (const bad of ['!127.0.0.1', 'a.*.com', 'http://x/path']) {
      const { status, error: body } = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/ok`, {
        allowedHosts: ['127.0.0.1', bad],
      });
      expect(status).toBe(400);
      expect(body.code).toBe('INVALID_ALLOWED_HOSTS');
      expect(body.pattern).toBe(bad);
      expect(typeof body.problem).toBe('string');
      expect(body.message).toContain(bad);
      expect(body.egress).toEqual([]);
    }
    expect(v4.connections).toBe(0);
  });

  it('answers errors of calls that never started with an empty egress list too', async () => {
    const unknownPlugin = await fetchOne(server, 'no-such-plugin', `http://127.0.0.1:${v4.port}/ok`, {
      allowedHosts: ['127.0.0.1'],
    });
    expect(unknownPlugin.status).toBe(404);
    expect(unknownPlugin.body).toMatchObject({ code: 'PLUGIN_NOT_FOUND', egress: [] });
    const badBody = await server.api.callUnchecked(http, { function: 'fetch', allowedHost: ['127.0.0.1'] });
    expect(badBody.status).toBe(400);
    expect(badBody.body).toMatchObject({ code: 'INVALID_REQUEST', egress: [] });
    const overCeiling = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/ok`, {
      allowedHosts: ['127.0.0.1'],
      maxHttpResponseBytes: server.config.engine.limits.httpResponseBytes.ceiling + 1,
    });
    expect(overCeiling.status).toBe(400);
    expect(overCeiling.body).toMatchObject({ code: 'LIMIT_ABOVE_CEILING', field: 'maxHttpResponseBytes', egress: [] });
    expect(v4.connections).toBe(0);
  });

  it('passes a body exactly at maxHttpResponseBytes and fails one byte over with 422 EGRESS_ERROR (response_too_large)', async () => {
    const cap = 1000;
    for (const chunked of ['', '&chunked=1']) {
      const atCap = `http://127.0.0.1:${v4.port}/bytes?n=${cap}${chunked}`;
      const ok = await fetchOne(server, http, atCap, { allowedHosts: ['127.0.0.1'], maxHttpResponseBytes: cap });
      expect(ok.status).toBe(200);
      expect((JSON.parse(ok.data.output!) as { body: string }).body).toBe('x'.repeat(cap));
      expect(ok.data.egress[0]).toMatchObject({ status: 200, bytes: cap, allowed: true });

      const over = `http://127.0.0.1:${v4.port}/bytes?n=${cap + 1}${chunked}`;
      const tooBig = await fetchOne(server, http, over, { allowedHosts: ['127.0.0.1'], maxHttpResponseBytes: cap });
      expect(tooBig.status).toBe(422);
      expect(tooBig.body).toMatchObject({ code: 'EGRESS_ERROR', reason: 'response_too_large', host: '127.0.0.1' });
      expect(tooBig.error.message).toContain('response body too large');
      expect(tooBig.error.egress[0]).toMatchObject({ url: over, status: 200, allowed: true, reason: 'response_too_large' });
    }
  });

  it('fails a refused connection with 422 EGRESS_ERROR (connect_failed)', async () => {
    const port = await closedPort();
    const { status, error: body } = await fetchOne(server, http, `http://127.0.0.1:${port}/ok`, { allowedHosts: ['127.0.0.1'] });
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'EGRESS_ERROR', reason: 'connect_failed', host: '127.0.0.1' });
    expect(body.egress[0]).toMatchObject({ status: null, allowed: true, reason: 'connect_failed' });
  });

  it('cuts an upstream that never answers at EGRESS_TIMEOUT_MS with 504 EGRESS_TIMEOUT, well before the call deadline', async () => {
    const { status, error: body } = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/hang`, {
      allowedHosts: ['127.0.0.1'],
      timeoutMs: 10_000,
    });
    expect(status).toBe(504);
    expect(body).toMatchObject({ code: 'EGRESS_TIMEOUT', reason: 'timeout', host: '127.0.0.1' });
    expect(body.egress[0]).toMatchObject({ status: null, allowed: true, reason: 'timeout' });
    expect(v4.received).toHaveLength(1);
  });

  it('cuts a request at the call deadline when that comes first: 504 TIMEOUT with the audit, the worker kept', async () => {
    const timeoutMs = 600;
    const { status, error: body } = await fetchOne(server, http, `http://127.0.0.1:${v4.port}/hang`, {
      allowedHosts: ['127.0.0.1'],
      timeoutMs,
    });
    expect(status).toBe(504);
    expect(body).toMatchObject({ code: 'TIMEOUT', reason: 'deadline', host: '127.0.0.1' });
    expect(body.egress[0]).toMatchObject({ status: null, allowed: true, reason: 'deadline' });
    expect(server.app.engine.stats().restarts.timeout).toBe(0);
  });

  it('fails the request after EGRESS_MAX_REQUESTS with 422 EGRESS_ERROR (too_many_requests); the extra one is never sent', async () => {
    const requests = Array.from({ length: 5 }, (_, i) => ({ url: `http://127.0.0.1:${v4.port}/ok?i=${i}` }));
    const { status, error: body } = await server.api.call(http, {
      function: 'fetch_all',
      input: JSON.stringify(requests),
      allowedHosts: ['127.0.0.1'],
    });
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'EGRESS_ERROR', reason: 'too_many_requests' });
    expect(body.egress.map((e) => [e.allowed, e.reason ?? null])).toEqual([
      [true, null],
      [true, null],
      [true, null],
      [true, null],
      [false, 'too_many_requests'],
    ]);
    expect(v4.received.map((r) => r.url)).toEqual(['/ok?i=0', '/ok?i=1', '/ok?i=2', '/ok?i=3']);
  });

  it('audits every attempt in order: methods, statuses, bytes, queries kept and URL credentials redacted', async () => {
    const requests = [
      { url: `http://user:s3cret@127.0.0.1:${v4.port}/echo?token=abc&x=1#frag`, method: 'POST', body: 'hi' },
      { url: `http://[::1]:${v6.port}/bytes?n=7` },
      { url: `http://api.outside.test:${other.port}/ok` },
    ];
    const { status, error: body } = await server.api.call(http, {
      function: 'fetch_all',
      input: JSON.stringify(requests),
      allowedHosts: ['*'],
    });
    expect(status).toBe(422);
    expect(body).toMatchObject({ code: 'HOST_NOT_ALLOWED', reason: 'not_in_allow_list', host: 'api.outside.test' });
    expect(body.egress).toHaveLength(3);
    expect(body.egress[0]).toMatchObject({
      method: 'POST',
      url: `http://REDACTED:REDACTED@127.0.0.1:${v4.port}/echo?token=abc&x=1`,
      status: 200,
      allowed: true,
    });
    expect(body.egress[0]!.bytes).toBeGreaterThan(0);
    expect(body.egress[1]).toMatchObject({
      method: 'GET',
      url: `http://[::1]:${v6.port}/bytes?n=7`,
      status: 200,
      bytes: 7,
      allowed: true,
    });
    expect(body.egress[2]).toMatchObject({
      method: 'GET',
      url: `http://api.outside.test:${other.port}/ok`,
      status: null,
      bytes: 0,
      allowed: false,
      reason: 'not_in_allow_list',
    });
    expect(JSON.stringify(body)).not.toContain('s3cret');
    // The credentials travelled as a Basic header, not in the URL.
    expect(v4.received[0]).toMatchObject({ method: 'POST', url: '/echo?token=abc&x=1', body: 'hi' });
    expect(v4.received[0]!.headers.authorization).toBe(`Basic ${Buffer.from('user:s3cret').toString('base64')}`);
    expect(other.connections).toBe(0);
  });

  it('returns an empty egress list for a call that made no request', async () => {
    const { status, data: body } = await server.api.call(http, {
      function: 'fetch_all',
      input: '[]',
      allowedHosts: ['127.0.0.1'],
    });
    expect(status).toBe(200);
    expect(body.output).toBe('[]');
    expect(body.egress).toEqual([]);
  });

  it('keeps the workers: after every refusal and upstream failure above, calls work and no worker was replaced', async () => {
    const { status } = await fetchOne(server, http, `http://localhost:${v4.port}/ok`, { allowedHosts: ['localhost'] });
    expect(status).toBe(200);
    expectPoolHealthy(server);
  });
});
