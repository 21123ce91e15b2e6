// PostgreSQL going away under a replica (its connections cut by a loopback proxy this test controls;
// the shared cluster itself keeps running): plugins the replica has cached still answer calls, what it
// cannot answer gets 503 STORE_UNAVAILABLE with Retry-After, /readyz names the store, and once the
// database is back the replica works again by itself, with nothing acknowledged lost.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logCapture, readPlugin, serverForTest, useServer } from './helpers.ts';
import type { Reply } from './test-client.ts';
import { msUntil } from './replica-process.ts';
import { createTestDatabase, sql } from './store-backends.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

/**
 * A test database of the describe's own, and a proxy to it that the test can cut. `url` reaches the
 * database directly (the test's own checks, the rest of a deployment); `urlViaProxy` through the proxy.
 */
function useDatabaseBehindProxy(): { readonly url: string; readonly urlViaProxy: string; readonly proxy: TcpProxy } {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let proxy: TcpProxy | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    const direct = new URL(db.url);
    proxy = await startTcpProxy(Number(direct.port || 5432), direct.hostname);
  });
  afterAll(async () => {
    await proxy?.close();
    await db?.drop();
  });
  // Read inside tests and hooks: both exist from beforeAll on.
  return {
    get url() {
      return db!.url;
    },
    get urlViaProxy() {
      const viaProxy = new URL(db!.url);
      viaProxy.port = String(proxy!.port);
      return viaProxy.toString();
    },
    get proxy() {
      return proxy!;
    },
  };
}

describe('a replica whose PostgreSQL connection is cut', () => {
  const db = useDatabaseBehindProxy();
  // No shedding on event-loop lag: this machine is shared and busy; what is checked is the store's answers.
  const env = {
    STORE: 'postgres',
    PG_CONNECT_TIMEOUT_MS: '500',
    PG_STATEMENT_TIMEOUT_MS: '1000',
    STORE_POLL_MS: '100',
    MAX_EVENT_LOOP_DELAY_MS: '0',
  };

  /** Reaches PostgreSQL through the proxy. */
  const cutOff = useServer(() => ({ env: { ...env, DATABASE_URL: db.urlViaProxy } }));
  /** Reaches it directly: the rest of the deployment, still working. */
  const other = useServer(() => ({ env: { ...env, DATABASE_URL: db.url } }));

  it('keeps answering calls of cached plugins, refuses what needs the database with 503 STORE_UNAVAILABLE, and recovers by itself', async () => {
    expect((await cutOff.api.upload(await readPlugin('count_vowels'), { name: 'vowels' })).status).toBe(201);
    expect((await other.api.upload(await readPlugin('echo'), { name: 'echo' })).status).toBe(201);
    // Both plugins are known and prepared on the cut-off replica before the outage.
    expect((await cutOff.api.call('vowels', { function: 'count_vowels', input: 'aaa', timeoutMs: 30_000 })).status).toBe(200);
    expect((await cutOff.api.call('echo', { function: 'echo', input: 'x', timeoutMs: 30_000 })).status).toBe(200);

    await db.proxy.cut();

    for (const [name, fn] of [
      ['vowels', 'count_vowels'],
      ['echo', 'echo'],
    ] as const) {
      const res = await cutOff.api.call(name, { function: fn, input: 'during the outage', timeoutMs: 30_000 });
      expect({ name, status: res.status, body: res.body }).toMatchObject({ name, status: 200 });
    }

    const hello = await readPlugin('hello');
    const refused: [string, string, () => Promise<Reply<unknown>>][] = [
      ['POST', '/plugins?name=hello', () => cutOff.api.upload(hello, { name: 'hello' })],
      ['GET', '/plugins', () => cutOff.api.list()],
      ['GET', '/plugins/not-cached-here', () => cutOff.api.describe('not-cached-here')],
      ['DELETE', '/plugins/vowels', () => cutOff.api.delete('vowels')],
      [
        'POST',
        '/plugins/not-cached-here/call',
        () => cutOff.api.call('not-cached-here', { function: 'run', input: '', timeoutMs: 30_000 }),
      ],
    ];
    for (const [method, url, send] of refused) {
      const res = await send();
      expect({
        request: `${method} ${url}`,
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: res.body,
      }).toMatchObject({
        request: `${method} ${url}`,
        status: 503,
        retryAfter: expect.stringMatching(/^\d+$/),
        body: { code: 'STORE_UNAVAILABLE' },
      });
    }

    const ready = await cutOff.api.request('GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ code: 'NOT_READY', checks: { store: 'failed' } });
    const metrics = await (await fetch(`${cutOff.url}/metrics`)).text();
    expect(metrics).toMatch(/^wasmhost_store_up 0$/m);
    expect(metrics).toMatch(/^wasmhost_store_operation_duration_seconds_count\{operation="put",outcome="unavailable"\} [1-9]/m);

    // The rest of the deployment goes on meanwhile: an upload acknowledged there must reach this replica later.
    expect((await other.api.upload(await readPlugin('rust_vowels'), { name: 'later' })).status).toBe(201);

    await db.proxy.restore();
    const recovered = await msUntil(async () => (await fetch(`${cutOff.url}/readyz`)).status === 200, 20_000);
    expect(recovered).toBeLessThan(Infinity);
    expect(
      (await cutOff.api.call('later', { function: 'count_vowels', input: 'after the outage', timeoutMs: 30_000 })).status,
    ).toBe(200);
    const again = await cutOff.api.upload(await readPlugin('count_vowels'), { name: 'vowels-again' });
    expect(again.status).toBe(200);
    const listed = (await cutOff.api.list()).data;
    expect(listed.plugins.map((p) => p.name).sort()).toEqual(['echo', 'later', 'vowels-again']);
    expect((await (await fetch(`${cutOff.url}/metrics`)).text()).match(/^wasmhost_store_up 1$/m)).not.toBeNull();
  });
});

describe('a manifest upload whose PostgreSQL connection is cut while it is being stored', () => {
  const db = useDatabaseBehindProxy();

  const server = useServer(() => {
    // Statements may take long here: the outage, not a timeout, must end the manifest's.
    return {
      env: {
        STORE: 'postgres',
        DATABASE_URL: db.urlViaProxy,
        PG_CONNECT_TIMEOUT_MS: '500',
        PG_STATEMENT_TIMEOUT_MS: '30000',
        MAX_EVENT_LOOP_DELAY_MS: '0',
      },
    };
  });

  it('stores none of its modules (503 STORE_UNAVAILABLE): modules and manifest are one commit', async () => {
    // The manifest's row waits in the database (a trigger in this test's own database), so the outage
    // comes after its modules went to the store and before the manifest did.
    await sql(
      db.url,
      `CREATE FUNCTION test_slow_manifest() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.record ? 'manifest' THEN PERFORM pg_sleep(20); END IF; RETURN NEW; END $$`,
    );
    await sql(
      db.url,
      'CREATE TRIGGER test_slow_manifest BEFORE INSERT ON wasmhost_plugins FOR EACH ROW EXECUTE FUNCTION test_slow_manifest()',
    );
    const wasm = [
      { data: (await readPlugin('link_circular_lhs')).toString('base64'), name: 'lhs' },
      { data: (await readPlugin('link_circular_main')).toString('base64') },
    ];
    const upload = server.api.uploadManifest({ wasm }, undefined, { name: 'linked' });
    const sleeping = await msUntil(
      async () =>
        (
          await sql<{ n: number }>(
            db.url,
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'",
          )
        )[0]!.n > 0,
      15_000,
    );
    expect(sleeping).toBeLessThan(Infinity);
    await db.proxy.cut();
    const answer = await upload;
    expect([answer.status, answer.error.code]).toEqual([503, 'STORE_UNAVAILABLE']);
    // Straight from the database (the service cannot reach it): no module and no manifest was committed.
    expect(await sql(db.url, 'SELECT id FROM wasmhost_plugins')).toEqual([]);

    // Its session is gone for the database too (else it holds the store's lock until the sleep ends).
    await sql(
      db.url,
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'",
    );
    await db.proxy.restore();
    await sql(db.url, 'DROP TRIGGER test_slow_manifest ON wasmhost_plugins');
    const recovered = await msUntil(async () => (await fetch(`${server.url}/readyz`)).status === 200, 20_000);
    expect(recovered).toBeLessThan(Infinity);
    expect((await server.api.listAll()).map((p) => p.id)).toEqual([]);
    // The same upload again goes through whole.
    const again = await server.api.uploadManifest({ wasm }, undefined, { name: 'linked' });
    expect(again.status).toBe(201);
    expect((await server.api.listAll()).length).toBe(3);
    const call = await server.api.call('linked', { function: 'run', input: 'abc', timeoutMs: 30_000 });
    expect([call.status, call.ok ? call.data.output : call.error.message]).toEqual([200, '10']);
  });
});

describe('the log of a replica losing PostgreSQL', () => {
  const db = useDatabaseBehindProxy();

  it("says why the store cannot be reached (the driver's message), not [object Object]", async () => {
    const log = logCapture();
    const server = await serverForTest({
      env: { STORE: 'postgres', DATABASE_URL: db.urlViaProxy, PG_CONNECT_TIMEOUT_MS: '500', LOG_LEVEL: 'info' },
      appOptions: { logStream: log.stream },
    });
    await db.proxy.cut();
    expect((await server.api.describe('not-cached-here')).status).toBe(503);
    const unreachable = log.lines().find((line) => line.msg === 'store: PostgreSQL cannot be reached');
    expect(unreachable?.err).toMatchObject({ message: expect.stringMatching(/ECONNREFUSED|Connection terminated/) });
    expect(log.text()).not.toContain('[object Object]');
  });
});

describe('a replica whose PostgreSQL connections are all busy', () => {
  it('answers the overflow 503 OVERLOADED, stays ready and up, and never logs the database as unreachable', async () => {
    const db = await createTestDatabase();
    const log = logCapture();
    const server = await serverForTest({
      env: {
        STORE: 'postgres',
        DATABASE_URL: db.url,
        PG_POOL_MAX: '2',
        PG_STATEMENT_TIMEOUT_MS: '60000',
        LOG_LEVEL: 'info',
      },
      appOptions: { logStream: log.stream },
    });
    // Lookups of names this replica does not know ask the database; a lock held elsewhere makes them wait there.
    const lock = new pg.Client({ connectionString: db.url });
    await lock.connect();
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE wasmhost_plugins IN ACCESS EXCLUSIVE MODE');
      let answered = 0;
      const lookups = Array.from({ length: 40 }, (_, i) => server.api.describe(`unknown-${i}`).finally(() => answered++));
      // Two hold the pool's connections, waiting on the lock; the rest are refused.
      expect(await msUntil(async () => answered === 38, 20_000)).toBeLessThan(Infinity);
      // Readiness has a connection of its own: it does not queue behind the flood, nor fail for it.
      const ready = await server.api.request('GET', '/readyz');
      expect({ status: ready.status, body: ready.body }).toMatchObject({ status: 200, body: { checks: { store: 'ok' } } });
      await lock.query('COMMIT');
      const answers = (await Promise.all(lookups)).map((res) => ({
        status: res.status,
        code: (res.body as { code?: string }).code,
        retryAfter: res.headers.get('retry-after'),
      }));
      expect(answers.filter((a) => a.status === 404)).toHaveLength(2);
      for (const answer of answers.filter((a) => a.status !== 404)) {
        expect(answer).toEqual({ status: 503, code: 'OVERLOADED', retryAfter: expect.stringMatching(/^\d+$/) });
      }
    } finally {
      await lock.end();
    }
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^wasmhost_store_up 1$/m);
    expect(metrics).toMatch(/^wasmhost_store_operation_duration_seconds_count\{operation="get",outcome="busy"\} [1-9]/m);
    expect(log.text()).not.toContain('cannot be reached');
    await server.close();
    await db.drop();
  });
});
