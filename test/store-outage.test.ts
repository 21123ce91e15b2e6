// PostgreSQL going away under a replica (its connections cut by a loopback proxy this test controls;
// the shared cluster itself keeps running): plugins the replica has cached still answer calls, what it
// cannot answer gets 503 STORE_UNAVAILABLE with Retry-After, /readyz names the store, and once the
// database is back the replica works again by itself, with nothing acknowledged lost.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectContract } from './openapi-contract.ts';
import { readPlugin, removeDir, startServer, type TestServer } from './helpers.ts';
import { msUntil } from './replica-process.ts';
import { createTestDatabase } from './store-backends.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

async function upload(server: TestServer, plugin: string, name: string): Promise<Response> {
  return fetch(`${server.url}/plugins?name=${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: new Uint8Array(await readPlugin(plugin)),
  });
}

async function call(server: TestServer, name: string, fn: string, input: string): Promise<Response> {
  return fetch(`${server.url}/plugins/${name}/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ function: fn, input, timeoutMs: 30_000 }),
  });
}

describe('a replica whose PostgreSQL connection is cut', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let proxy: TcpProxy;
  /** Reaches PostgreSQL through the proxy. */
  let cutOff: TestServer;
  /** Reaches it directly: the rest of the deployment, still working. */
  let other: TestServer;

  beforeAll(async () => {
    db = await createTestDatabase();
    const direct = new URL(db.url);
    proxy = await startTcpProxy(Number(direct.port || 5432), direct.hostname);
    const viaProxy = new URL(db.url);
    viaProxy.port = String(proxy.port);
    // No shedding on event-loop lag: this machine is shared and busy; what is checked is the store's answers.
    const env = {
      STORE: 'postgres',
      PG_CONNECT_TIMEOUT_MS: '500',
      PG_STATEMENT_TIMEOUT_MS: '1000',
      STORE_POLL_MS: '100',
      MAX_EVENT_LOOP_DELAY_MS: '0',
    };
    cutOff = await startServer({ env: { ...env, DATABASE_URL: viaProxy.toString() } });
    other = await startServer({ env: { ...env, DATABASE_URL: db.url } });
  });

  afterAll(async () => {
    for (const server of [cutOff, other]) {
      await server?.close();
      if (server) await removeDir(server.dataDir);
    }
    await proxy?.close();
    await db?.drop();
  });

  it('keeps answering calls of cached plugins, refuses what needs the database with 503 STORE_UNAVAILABLE, and recovers by itself', async () => {
    expect((await upload(cutOff, 'count_vowels', 'vowels')).status).toBe(201);
    expect((await upload(other, 'echo', 'echo')).status).toBe(201);
    // Both plugins are known and prepared on the cut-off replica before the outage.
    expect((await call(cutOff, 'vowels', 'count_vowels', 'aaa')).status).toBe(200);
    expect((await call(cutOff, 'echo', 'echo', 'x')).status).toBe(200);

    await proxy.cut();

    for (const [name, fn] of [
      ['vowels', 'count_vowels'],
      ['echo', 'echo'],
    ] as const) {
      const res = await call(cutOff, name, fn, 'during the outage');
      expect({ name, status: res.status, body: await res.json() }).toMatchObject({ name, status: 200 });
    }

    const refused: [string, string, () => Promise<Response>][] = [
      ['POST', '/plugins?name=hello', () => upload(cutOff, 'hello', 'hello')],
      ['GET', '/plugins', () => fetch(`${cutOff.url}/plugins`)],
      ['GET', '/plugins/not-cached-here', () => fetch(`${cutOff.url}/plugins/not-cached-here`)],
      ['DELETE', '/plugins/vowels', () => fetch(`${cutOff.url}/plugins/vowels`, { method: 'DELETE' })],
      ['POST', '/plugins/not-cached-here/call', () => call(cutOff, 'not-cached-here', 'run', '')],
    ];
    for (const [method, url, send] of refused) {
      const res = await send();
      await expectContract(method, url, res);
      expect({
        request: `${method} ${url}`,
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: await res.json(),
      }).toMatchObject({
        request: `${method} ${url}`,
        status: 503,
        retryAfter: expect.stringMatching(/^\d+$/),
        body: { code: 'STORE_UNAVAILABLE' },
      });
    }

    const ready = await fetch(`${cutOff.url}/readyz`);
    await expectContract('GET', '/readyz', ready);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ code: 'NOT_READY', checks: { store: 'failed' } });
    const metrics = await (await fetch(`${cutOff.url}/metrics`)).text();
    expect(metrics).toMatch(/^wasmhost_store_up 0$/m);
    expect(metrics).toMatch(/^wasmhost_store_operation_duration_seconds_count\{operation="put",outcome="unavailable"\} [1-9]/m);

    // The rest of the deployment goes on meanwhile: an upload acknowledged there must reach this replica later.
    expect((await upload(other, 'rust_vowels', 'later')).status).toBe(201);

    await proxy.restore();
    const recovered = await msUntil(async () => (await fetch(`${cutOff.url}/readyz`)).status === 200, 20_000);
    expect(recovered).toBeLessThan(Infinity);
    expect((await call(cutOff, 'later', 'count_vowels', 'after the outage')).status).toBe(200);
    const again = await upload(cutOff, 'count_vowels', 'vowels-again');
    expect(again.status).toBe(200);
    const listed = (await (await fetch(`${cutOff.url}/plugins`)).json()) as { plugins: { name: string }[] };
    expect(listed.plugins.map((p) => p.name).sort()).toEqual(['echo', 'later', 'vowels-again']);
    expect((await (await fetch(`${cutOff.url}/metrics`)).text()).match(/^wasmhost_store_up 1$/m)).not.toBeNull();
  });
});
