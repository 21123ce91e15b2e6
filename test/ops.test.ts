// Operability without the call engine: health and readiness, request ids, access tokens, rate limits,
// the /metrics exposition, and secrets kept out of the logs. Real servers on 127.0.0.1.
import { ROUTE_POLICIES } from '../src/api/route-policy.ts';
import { timingSafeEqual } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { describe, expect, it, vi } from 'vitest';
import { TokenVerifier, compareDigests } from '../src/api/auth.ts';
import { buildApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { AppError } from '../src/errors.ts';
import { logCapture, makeTempDir, readPlugin, removeDir, serverForTest, tinyPluginWat, wat, type TestServer } from './helpers.ts';
import { parsePrometheusText, sampleValue } from './prom-text.ts';
import type { Reply } from './test-client.ts';
import { startUpstream } from './upstream.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const INVOKE = 'invoke-token-0123456789abcdef';
const METRICS = 'metrics-token-0123456789abcdef';
const TOKENS_ENV = { AUTH_TOKENS: `${ADMIN}:admin,${INVOKE}:invoke`, METRICS_TOKEN: METRICS };

function bearer(token: string | undefined): Record<string, string> {
  return token === undefined ? {} : { authorization: `Bearer ${token}` };
}

let marker = 1000;
/** A tiny plugin with new bytes each time (so a new id). */
const freshPlugin = (): Promise<Uint8Array> => wat(tinyPluginWat(marker++));

/** Collects pino's JSON lines. */

describe('health and readiness', () => {
  it('answers /healthz and /readyz with 200 when the store is usable', async () => {
    const server = await serverForTest();
    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ok', checks: { store: 'ok' } });
  });

  it('turns /readyz 503 NOT_READY naming the store when DATA_DIR stops being a writable directory, and back to 200', async () => {
    const logs = logCapture();
    const server = await serverForTest({ env: { LOG_LEVEL: 'info' }, appOptions: { logStream: logs.stream } });
    // Tests run as root, and root ignores permission bits (chmod would not make the store fail):
    // instead DATA_DIR is swapped for a regular file, so the store's write probe really fails.
    const away = `${server.dataDir}.away`;
    await rename(server.dataDir, away);
    await writeFile(server.dataDir, 'not a directory');
    try {
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(503);
      const body = (await ready.json()) as { code: string; message: string; checks: Record<string, string> };
      expect(body.code).toBe('NOT_READY');
      expect(body.message).toMatch(/store/);
      expect(body.checks).toEqual({ store: 'failed', workers: 'ok' });
      // The reason (it names internal paths) goes to the log, not to this open route.
      expect(body.message).not.toContain(server.dataDir);
      const notReady = logs.lines().find((l) => l.msg === 'not ready') as { reasons?: { store?: string } } | undefined;
      expect(notReady?.reasons?.store).toMatch(/ENOTDIR/);
      // Liveness does not depend on the store.
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    } finally {
      await rm(server.dataDir);
      await rename(away, server.dataDir);
    }
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  });

  it('turns /readyz 503 SHUTTING_DOWN and refuses new API requests once shutdown began', async () => {
    const server = await serverForTest();
    server.app.lifecycle.beginShutdown();
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ code: 'SHUTTING_DOWN' });
    const list = await fetch(`${server.url}/plugins`);
    expect(list.status).toBe(503);
    expect(list.headers.get('connection')).toBe('close');
    expect(await list.json()).toMatchObject({ code: 'SHUTTING_DOWN' });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});

describe('request ids', () => {
  it('echoes a sane X-Request-Id, replaces an unsafe one, and generates one when absent', async () => {
    const server = await serverForTest();
    const given = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'abc-123.XYZ:9' } });
    expect(given.headers.get('x-request-id')).toBe('abc-123.XYZ:9');

    const unsafe = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'x'.repeat(200) } });
    expect(unsafe.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    const a = (await fetch(`${server.url}/plugins`)).headers.get('x-request-id');
    const b = (await fetch(`${server.url}/nope`)).headers.get('x-request-id');
    expect(a).toMatch(/^[0-9a-f-]{36}$/);
    expect(b).toMatch(/^[0-9a-f-]{36}$/);
    expect(a).not.toBe(b);
  });

  it('logs one JSON line per request with request id, route template, status and duration', async () => {
    const logs = logCapture();
    const server = await serverForTest({ env: { LOG_LEVEL: 'info' }, appOptions: { logStream: logs.stream } });
    const created = await server.api.upload(await freshPlugin());
    const { id } = created.data;
    await fetch(`${server.url}/plugins/${id}`, { headers: { 'x-request-id': 'req-describe-1' } });

    const lines = logs.lines().filter((l) => l.reqId === 'req-describe-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: 'request completed',
      method: 'GET',
      route: '/plugins/:id',
      url: `/plugins/${id}`,
      remoteAddress: '127.0.0.1',
      statusCode: 200,
    });
    expect(typeof lines[0]!.durationMs).toBe('number');
  });
});

describe('error logs', () => {
  it("carry an internal error's code, message, stack and cause, never its details (plugin logs, egress audit)", async () => {
    const logs = logCapture();
    const dataDir = await makeTempDir();
    const app = await buildApp(loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'info' }), { logStream: logs.stream });
    try {
      // What the engine throws when a worker is lost mid-call: an INTERNAL_ERROR carrying the call's logs and egress.
      // Routes declare their policy or the app does not start.
      app.get('/test-only/internal-error', { config: { policy: ROUTE_POLICIES.open } }, async () => {
        throw new AppError('INTERNAL_ERROR', 'the worker running the call was lost', {
          cause: new Error('worker exited with code 1'),
          details: {
            logs: [{ level: 'info', message: 'plugin-log-line-secret-42', time: '2026-01-01T00:00:00.000Z' }],
            egress: [
              {
                method: 'GET',
                url: 'http://upstream.invalid/egress-url-secret-43',
                status: 200,
                bytes: 1,
                durationMs: 1,
                allowed: true,
              },
            ],
          },
        });
      });
      const res = await app.inject({
        method: 'GET',
        url: '/test-only/internal-error',
        headers: { 'x-request-id': 'req-internal-1' },
      });
      expect(res.statusCode).toBe(500);
      // The caller still gets its call's logs back.
      expect(res.json()).toMatchObject({ code: 'INTERNAL_ERROR', logs: [{ message: 'plugin-log-line-secret-42' }] });

      const logged = logs.lines().find((l) => l.reqId === 'req-internal-1' && l.msg === 'unhandled error');
      expect(logged?.err).toMatchObject({
        type: 'AppError',
        code: 'INTERNAL_ERROR',
        message: 'the worker running the call was lost',
        cause: { type: 'Error', message: 'worker exited with code 1' },
      });
      expect(typeof (logged?.err as { stack?: unknown }).stack).toBe('string');
      expect(Object.keys(logged!.err as object).sort()).toEqual(['cause', 'code', 'message', 'stack', 'type']);
      expect(logs.text()).not.toContain('plugin-log-line-secret-42');
      expect(logs.text()).not.toContain('egress-url-secret-43');
    } finally {
      await app.close();
      await removeDir(dataDir);
    }
  });
});

describe('access tokens', () => {
  it('compares tokens in constant time over sha256 digests, and tells roles apart', () => {
    const verifier = new TokenVerifier(
      new Map([
        [ADMIN, 'admin'],
        [INVOKE, 'invoke'],
      ]),
      METRICS,
    );
    expect(verifier.verify(ADMIN)?.grant).toBe('admin');
    expect(verifier.verify(INVOKE)?.grant).toBe('invoke');
    expect(verifier.verify(METRICS)?.grant).toBe('metrics');
    expect(verifier.verify(`${ADMIN}x`)).toBeNull();
    expect(verifier.verify('')).toBeNull();
    // Ids are digests, never the token itself.
    expect(verifier.verify(ADMIN)?.tokenId).toMatch(/^[0-9a-f]{12}$/);
    expect(verifier.verify(ADMIN)?.tokenId).not.toBe(verifier.verify(INVOKE)?.tokenId);
  });

  it('checks every token through crypto.timingSafeEqual on equal-length digests, against every known token', () => {
    // The default comparison is crypto's constant-time one, not ===.
    expect(compareDigests).toBe(timingSafeEqual);
    const compare = vi.fn(timingSafeEqual);
    const verifier = new TokenVerifier(
      new Map([
        [ADMIN, 'admin'],
        [INVOKE, 'invoke'],
      ]),
      METRICS,
      compare,
    );
    for (const presented of [ADMIN, INVOKE, METRICS, `${ADMIN}x`, 'short', '']) {
      compare.mockClear();
      verifier.verify(presented);
      // No early exit: a match on the first token still compares the rest; a miss compares all.
      expect(compare).toHaveBeenCalledTimes(3);
      for (const [a, b] of compare.mock.calls) {
        expect(a).toHaveLength(32);
        expect(b).toHaveLength(32);
      }
    }
    expect(verifier.verify(ADMIN)?.grant).toBe('admin');
  });

  it('answers the 401/403/2xx matrix for every plugin route and role', async () => {
    const server = await serverForTest({ env: TOKENS_ENV });
    const seeded = await server.api.as(ADMIN).upload(await readPlugin('count_vowels'), { name: 'seed' });
    expect(seeded.status).toBe(201);
    const { id } = seeded.data;

    type Case = { method: string; path: string; ok: number; needs: 'invoke' | 'admin' };
    const cases: Case[] = [
      { method: 'GET', path: '/plugins', ok: 200, needs: 'invoke' },
      { method: 'GET', path: `/plugins/${id}`, ok: 200, needs: 'invoke' },
      { method: 'GET', path: '/plugins/seed', ok: 200, needs: 'invoke' },
      { method: 'GET', path: `/plugins/${id}/wasm`, ok: 200, needs: 'invoke' },
      { method: 'POST', path: '/plugins', ok: 201, needs: 'admin' },
      { method: 'POST', path: `/plugins/${id}/call`, ok: 200, needs: 'invoke' },
      { method: 'DELETE', path: '/plugins/:fresh', ok: 204, needs: 'admin' },
    ];
    const tokens: [string, string | undefined][] = [
      ['none', undefined],
      ['unknown', 'not-a-token-0123456789abcdef'],
      ['metrics', METRICS],
      ['invoke', INVOKE],
      ['admin', ADMIN],
    ];
    for (const c of cases) {
      for (const [who, token] of tokens) {
        let res: Reply<unknown>;
        if (c.method === 'POST' && c.path === '/plugins') {
          res = await server.api.as(token).upload(await freshPlugin());
        } else if (c.method === 'POST') {
          res = await server.api.as(token).call(id, { function: 'count_vowels', input: 'abc' });
        } else {
          let path = c.path;
          if (path === '/plugins/:fresh') {
            const fresh = (await server.api.as(ADMIN).upload(await freshPlugin())).data;
            path = `/plugins/${fresh.id}`;
          }
          res = await server.api.as(token).request(c.method, path);
        }
        const allowed = who === 'admin' || (who === 'invoke' && c.needs === 'invoke');
        const expected = who === 'none' || who === 'unknown' ? 401 : allowed ? c.ok : 403;
        expect({ route: `${c.method} ${c.path}`, who, status: res.status }).toEqual({
          route: `${c.method} ${c.path}`,
          who,
          status: expected,
        });
        if (expected === 401) {
          expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
          expect(res.body).toMatchObject({ statusCode: 401, code: 'UNAUTHORIZED' });
        } else if (expected === 403) {
          expect(res.body).toMatchObject({ statusCode: 403, code: 'FORBIDDEN' });
        }
      }
    }
  });

  it('keeps /healthz and /readyz open and protects /metrics with METRICS_TOKEN (or an admin token)', async () => {
    const server = await serverForTest({ env: TOKENS_ENV });
    for (const path of ['/healthz', '/readyz']) {
      expect((await fetch(`${server.url}${path}`)).status).toBe(200);
      expect((await fetch(`${server.url}${path}`, { headers: bearer('bogus-token-0123456789') })).status).toBe(200);
    }
    const none = await fetch(`${server.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    expect((await fetch(`${server.url}/metrics`, { headers: bearer('bogus-token-0123456789') })).status).toBe(401);
    expect((await fetch(`${server.url}/metrics`, { headers: bearer(INVOKE) })).status).toBe(403);
    expect((await fetch(`${server.url}/metrics`, { headers: bearer(METRICS) })).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`, { headers: bearer(ADMIN) })).status).toBe(200);
  });

  it('reads tokens and roles from AUTH_TOKENS_FILE (comments and blank lines allowed)', () => {
    const config = loadConfig(
      { AUTH_TOKENS_FILE: '/run/secrets/tokens' },
      { readFile: () => `# operators\n${ADMIN}:admin\n\n${INVOKE}:invoke\n` },
    );
    expect([...config.ops.authTokens.entries()]).toEqual([
      [ADMIN, 'admin'],
      [INVOKE, 'invoke'],
    ]);
    expect(() => loadConfig({ AUTH_TOKENS: 'short:admin' })).toThrow(/16\+ chars/);
  });

  it('runs open with one clear warning when no tokens are configured, /metrics included', async () => {
    const logs = logCapture();
    const server = await serverForTest({ env: { LOG_LEVEL: 'info' }, appOptions: { logStream: logs.stream } });
    expect((await server.api.upload(await freshPlugin())).status).toBe(201);
    expect((await fetch(`${server.url}/plugins`)).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
    const warnings = logs.lines().filter((l) => l.level === 40 && String(l.msg).includes('AUTH_TOKENS'));
    expect(warnings).toHaveLength(1);
  });

  it('never writes a token into the log', async () => {
    const logs = logCapture();
    const server = await serverForTest({ env: { ...TOKENS_ENV, LOG_LEVEL: 'trace' }, appOptions: { logStream: logs.stream } });
    await server.api.as(ADMIN).upload(await freshPlugin());
    await fetch(`${server.url}/plugins`, { headers: bearer(INVOKE) });
    await fetch(`${server.url}/plugins`, { headers: bearer('wrong-token-0123456789abcdef') });
    await fetch(`${server.url}/metrics`, { headers: bearer(METRICS) });
    const text = logs.text();
    expect(text).toContain('request completed');
    for (const secret of [ADMIN, INVOKE, METRICS, 'wrong-token-0123456789abcdef']) expect(text).not.toContain(secret);
  });
});

describe('rate limits', () => {
  it('does not throttle one client on the embedded defaults: 1,000 calls in a burst all succeed', async () => {
    const server = await serverForTest();
    const uploaded = await server.api.upload(await readPlugin('echo'), { name: 'echo' });
    expect(uploaded.status).toBe(201);
    const statuses = new Map<number, number>();
    for (let round = 0; round < 50; round++) {
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => server.api.call('echo', { function: 'echo', input: `call ${round}.${i}` })),
      );
      for (const answer of answers) {
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      }
    }
    expect(Object.fromEntries(statuses)).toEqual({ 200: 1000 });
  });

  it('limits uploads per token with 429 RATE_LIMITED and Retry-After, and leaves reads and other tokens alone', async () => {
    const dataDir = await makeTempDir();
    const server = await serverForTest({
      dataDir,
      env: {
        AUTH_TOKENS: `${ADMIN}:admin,other-admin-0123456789abcdef:admin`,
        RATE_LIMIT_MAX: '2',
        RATE_LIMIT_WINDOW_MS: '60000',
      },
    });
    expect((await server.api.as(ADMIN).upload(await freshPlugin())).status).toBe(201);
    expect((await server.api.as(ADMIN).upload(await freshPlugin())).status).toBe(201);
    const limited = await server.api.as(ADMIN).upload(await freshPlugin());
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.body).toMatchObject({ statusCode: 429, code: 'RATE_LIMITED' });

    expect((await server.api.as('other-admin-0123456789abcdef').upload(await freshPlugin())).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await fetch(`${server.url}/plugins`, { headers: bearer(ADMIN) })).status).toBe(200);
    const list = (await (await fetch(`${server.url}/plugins`, { headers: bearer(ADMIN) })).json()) as {
      plugins: { id: string }[];
    };
    expect(list.plugins).toHaveLength(3);

    // Calls have a bucket of their own: spent uploads do not block them, and they run out the same way.
    const callOnce = () => server.api.as(ADMIN).call(list.plugins[0]!.id, { function: 'nope' });
    expect((await callOnce()).status).toBe(404);
    expect((await callOnce()).status).toBe(404);
    const callLimited = await callOnce();
    expect(callLimited.status).toBe(429);
    expect(callLimited.body).toMatchObject({ code: 'RATE_LIMITED' });
  });
});

describe('stored plugin config', () => {
  const SECRET_CONFIG = { apiKey: 'secret-api-key-value-77', vowels: 'xyz' };

  /** Stores count_vowels as `configured` with SECRET_CONFIG, as the holder of `token`; its id. */
  async function storeConfigured(server: TestServer, token?: string): Promise<string> {
    const res = await server.api
      .as(token)
      .upload(await readPlugin('count_vowels'), { name: 'configured', config: SECRET_CONFIG });
    expect(res.status).toBe(201);
    // The uploader (admin, or anyone when open) gets back what it stored.
    expect(res.data.config).toEqual(SECRET_CONFIG);
    return res.data.id;
  }

  async function configsSeen(server: TestServer, token: string | undefined, id: string): Promise<Record<string, string>[]> {
    const seen: Record<string, string>[] = [];
    for (const path of [`/plugins/${id}`, '/plugins/configured', '/plugins', '/plugins?name=configured']) {
      const res = await fetch(`${server.url}${path}`, { headers: bearer(token) });
      expect(res.status, path).toBe(200);
      const body = (await res.json()) as { config?: Record<string, string>; plugins?: { config: Record<string, string> }[] };
      if (body.plugins) seen.push(...body.plugins.map((p) => p.config));
      else seen.push(body.config!);
    }
    return seen;
  }

  it('shows its values to admin tokens only; invoke tokens see the keys with values redacted', async () => {
    const server = await serverForTest({ env: TOKENS_ENV });
    const id = await storeConfigured(server, ADMIN);

    const byAdmin = await configsSeen(server, ADMIN, id);
    expect(byAdmin).toHaveLength(4);
    for (const config of byAdmin) expect(config).toEqual(SECRET_CONFIG);

    const byInvoke = await configsSeen(server, INVOKE, id);
    expect(byInvoke).toHaveLength(4);
    for (const config of byInvoke) expect(config).toEqual({ apiKey: '[REDACTED]', vowels: '[REDACTED]' });
    const asInvoke = await fetch(`${server.url}/plugins/${id}`, { headers: bearer(INVOKE) });
    expect(await asInvoke.text()).not.toContain('secret-api-key-value-77');
    // The metrics token may not read plugins at all.
    expect((await fetch(`${server.url}/plugins/${id}`, { headers: bearer(METRICS) })).status).toBe(403);

    // The stored values still reach the plugin on an invoke token's call (count_vowels counts the configured vowels).
    const called = await server.api.as(INVOKE).call(id, { function: 'count_vowels', input: 'xxyyzz aeiou' });
    expect(called.status).toBe(200);
    expect(JSON.parse(called.data.output!)).toMatchObject({ count: 6, vowels: 'xyz' });
  });

  it("redacts a manifest's config values in its download for invoke tokens (they read it whole), and no shared cache may keep it", async () => {
    const server = await serverForTest({ env: TOKENS_ENV });
    const manifest = { wasm: [{ data: (await readPlugin('count_vowels')).toString('base64') }], config: SECRET_CONFIG };
    const stored = await server.api.as(ADMIN).uploadManifest(manifest, undefined, { name: 'configured-manifest' });
    expect(stored.status).toBe(201);
    const download = (token: string, path: string) => fetch(`${server.url}${path}`, { headers: bearer(token) });

    const byAdmin = await download(ADMIN, `/plugins/${stored.data.id}/wasm`);
    expect(byAdmin.status).toBe(200);
    expect((JSON.parse(await byAdmin.text()) as { config: unknown }).config).toEqual(SECRET_CONFIG);
    expect(byAdmin.headers.get('cache-control')).toBe('private, max-age=31536000, immutable');

    for (const path of [`/plugins/${stored.data.id}/wasm`, '/plugins/configured-manifest/wasm']) {
      const byInvoke = await download(INVOKE, path);
      expect(byInvoke.status, path).toBe(200);
      const text = await byInvoke.text();
      expect(text, path).not.toContain('secret-api-key-value-77');
      expect((JSON.parse(text) as { config: unknown }).config).toEqual({ apiKey: '[REDACTED]', vowels: '[REDACTED]' });
      expect(byInvoke.headers.get('etag')).toBe(`"${stored.data.id}.redacted"`);
      expect(byInvoke.headers.get('cache-control')).not.toMatch(/public/);
    }
    // The admin's ETag does not revalidate the redacted body, nor the other way round.
    const revalidated = await fetch(`${server.url}/plugins/${stored.data.id}/wasm`, {
      headers: { ...bearer(INVOKE), 'if-none-match': `"${stored.data.id}"` },
    });
    expect(revalidated.status).toBe(200);
  });

  it("keeps stored config values out of an invoke caller's egress audit and error messages (a secret in a URL)", async () => {
    const upstream = await startUpstream('127.0.0.1');
    try {
      const server = await serverForTest({ env: { ...TOKENS_ENV, EGRESS_ALLOW_PRIVATE: 'true' } });
      // hello GETs its config `route`: here a URL carrying a key in its query, stored as a secret.
      const secretKey = 'key-5f2e9a-secret';
      const route = `http://127.0.0.1:${upstream.port}/todo?title=t&api_key=${secretKey}`;
      const missing = `http://127.0.0.1:${upstream.port}/missing?api_key=${secretKey}`;
      const hello = await readPlugin('hello');
      const stored = await server.api
        .as(ADMIN)
        .upload(hello, { name: 'hello-secret', config: { route, key: secretKey }, allowedHosts: ['127.0.0.1'] });
      expect(stored.status).toBe(201);
      const call = (token: string) => server.api.as(token).call('hello-secret', { function: 'say_hello', input: 'x' });

      const byAdmin = await call(ADMIN);
      expect(byAdmin.status, JSON.stringify(byAdmin.body)).toBe(200);
      expect(byAdmin.data.egress[0]!.url).toContain(secretKey);
      const byInvoke = await call(INVOKE);
      expect(byInvoke.status).toBe(200);
      expect(JSON.stringify(byInvoke.data.egress)).not.toContain(secretKey);
      expect(byInvoke.data.egress[0]!.url).toContain('[REDACTED]');
      // A failure names the URL in its message, details and audit: redacted for the invoke caller too.
      // The same module with a custom section appended: another plugin.
      const failing = await server.api.as(ADMIN).upload(new Uint8Array([...hello, 0, 2, 1, 0x61]), {
        name: 'hello-failing',
        config: { route: missing, key: secretKey },
        allowedHosts: ['127.0.0.1'],
      });
      expect(failing.status).toBe(201);
      const failed = await server.api.as(INVOKE).call('hello-failing', { function: 'say_hello', input: 'x' });
      expect(failed.status).toBeGreaterThanOrEqual(400);
      expect(failed.text).not.toContain(secretKey);
      // The caller's own config is its own: a value it passes itself is not hidden from it.
      const own = await server.api
        .as(INVOKE)
        .call('hello-secret', { function: 'say_hello', input: 'x', config: { route, key: secretKey } });
      expect(own.status).toBe(200);
      expect(own.data.egress[0]!.url).toContain(secretKey);
    } finally {
      await upstream.close();
    }
  });

  it('shows its values to anyone while the service runs open (anyone may then upload and delete too)', async () => {
    const server = await serverForTest();
    const id = await storeConfigured(server);
    for (const config of await configsSeen(server, undefined, id)) expect(config).toEqual(SECRET_CONFIG);
  });
});

describe('failed token attempts', () => {
  it('are limited per address: after AUTH_FAILURE_MAX wrong tokens every request needing a token gets 429 with Retry-After until the window ends', async () => {
    const windowMs = 1500;
    const server = await serverForTest({ env: { ...TOKENS_ENV, AUTH_FAILURE_MAX: '3', RATE_LIMIT_WINDOW_MS: String(windowMs) } });
    const list = (token?: string) => fetch(`${server.url}/plugins`, { headers: bearer(token) });
    // Asking without a token is no guess: it does not count.
    for (let i = 0; i < 5; i++) expect((await list()).status).toBe(401);
    const started = Date.now();
    for (let i = 0; i < 3; i++) expect((await list(`wrong-guess-${i}-0123456789`)).status).toBe(401);

    const limited = await list('wrong-guess-3-0123456789');
    expect(limited.status).toBe(429);
    expect(await limited.json()).toMatchObject({ statusCode: 429, code: 'RATE_LIMITED' });
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(Math.ceil(windowMs / 1000));
    // A right guess now looks like any other: refused too, so guessing gains nothing. So do the metrics token and uploads.
    expect((await list(ADMIN)).status).toBe(429);
    expect((await list()).status).toBe(429);
    expect((await fetch(`${server.url}/metrics`, { headers: bearer(METRICS) })).status).toBe(429);
    expect((await server.api.as(ADMIN).upload(await freshPlugin())).status).toBe(429);
    // Open routes stay open.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + windowMs + 100 - Date.now())));
    expect((await list(ADMIN)).status).toBe(200);
    expect((await list('wrong-guess-4-0123456789')).status).toBe(401);
  });

  it('count per client behind a trusted proxy (TRUST_PROXY), and X-Forwarded-For is ignored from anyone else', async () => {
    // Addresses from TEST-NET-1 (192.0.2.0/24): header values only, no traffic goes to them.
    const guess = (server: TestServer, client: string, i: number) =>
      fetch(`${server.url}/plugins`, { headers: { ...bearer(`wrong-guess-${i}-0123456789`), 'x-forwarded-for': client } });
    const logs = logCapture();
    const behindProxy = await serverForTest({
      env: { ...TOKENS_ENV, AUTH_FAILURE_MAX: '2', TRUST_PROXY: '127.0.0.1', LOG_LEVEL: 'info' },
      appOptions: { logStream: logs.stream },
    });
    for (let i = 0; i < 2; i++) expect((await guess(behindProxy, '192.0.2.1', i)).status).toBe(401);
    expect((await guess(behindProxy, '192.0.2.1', 2)).status).toBe(429);
    expect((await guess(behindProxy, '192.0.2.2', 3)).status).toBe(401);
    expect(
      logs
        .lines()
        .filter((l) => l.msg === 'request completed')
        .map((l) => l.remoteAddress),
    ).toEqual(['192.0.2.1', '192.0.2.1', '192.0.2.1', '192.0.2.2']);

    const direct = await serverForTest({ env: { ...TOKENS_ENV, AUTH_FAILURE_MAX: '2' } });
    for (let i = 0; i < 2; i++) expect((await guess(direct, `192.0.2.${10 + i}`, i)).status).toBe(401);
    // Another forged address does not buy more guesses.
    expect((await guess(direct, '192.0.2.99', 2)).status).toBe(429);
  });

  it('are not limited with AUTH_FAILURE_MAX=0', async () => {
    const server = await serverForTest({ env: { ...TOKENS_ENV, AUTH_FAILURE_MAX: '0' } });
    for (let i = 0; i < 30; i++) {
      expect((await fetch(`${server.url}/plugins`, { headers: bearer(`wrong-guess-${i}-0123456789`) })).status).toBe(401);
    }
    expect((await fetch(`${server.url}/plugins`, { headers: bearer(ADMIN) })).status).toBe(200);
  });
});

describe('/metrics', () => {
  it('serves valid Prometheus text with process defaults, HTTP metrics per route template and store gauges', async () => {
    const server = await serverForTest();
    await server.api.upload(await freshPlugin());
    const second = (await server.api.upload(await freshPlugin())).data;
    await fetch(`${server.url}/plugins/${second.id}`);
    await fetch(`${server.url}/plugins/${'0'.repeat(64)}`);
    for (let i = 0; i < 3; i++) await fetch(`${server.url}/no/such/route/${i}`);

    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusText(await res.text());

    expect(families.get('process_cpu_user_seconds_total')?.type).toBe('counter');
    expect(families.get('nodejs_eventloop_lag_seconds')?.type).toBe('gauge');
    const http = 'wasmhost_http_request_duration_seconds_count';
    expect(families.get('wasmhost_http_request_duration_seconds')?.type).toBe('histogram');
    expect(sampleValue(families, http, { method: 'POST', route: '/plugins', status_class: '2xx' })).toBe(2);
    expect(sampleValue(families, http, { method: 'GET', route: '/plugins/:id', status_class: '2xx' })).toBe(1);
    expect(sampleValue(families, http, { method: 'GET', route: '/plugins/:id', status_class: '4xx' })).toBe(1);
    // Unknown paths share one series: a caller cannot mint label values.
    expect(sampleValue(families, http, { method: 'GET', route: '(unmatched)', status_class: '4xx' })).toBe(3);

    expect(sampleValue(families, 'wasmhost_plugins_stored')).toBe(2);
    expect(sampleValue(families, 'wasmhost_plugins_stored_bytes')).toBeGreaterThanOrEqual(second.size * 2 - 2);
    for (const name of ['wasmhost_module_cache_entries', 'wasmhost_module_cache_bytes', 'wasmhost_module_cache_hits_total']) {
      expect(families.has(name)).toBe(true);
    }
  });

  it('keeps one registry per app, so two apps in one process count separately', async () => {
    const a = await serverForTest();
    const b = await serverForTest();
    await a.api.upload(await freshPlugin());
    const scrape = async (s: TestServer) => parsePrometheusText(await (await fetch(`${s.url}/metrics`)).text());
    expect(sampleValue(await scrape(a), 'wasmhost_plugins_stored')).toBe(1);
    expect(sampleValue(await scrape(b), 'wasmhost_plugins_stored')).toBe(0);
  });
});
