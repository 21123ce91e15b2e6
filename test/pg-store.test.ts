// What only the PostgreSQL store has to show: another replica's changes reach this one by notification,
// or by the fallback poll when a notification is lost; blobs of uploads that never completed are swept;
// a replica whose change log fell too far behind reloads everything.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PgPluginStore } from '../src/store/pg/pg-store.ts';
import type { ChangeSource } from '../src/store/store.ts';
import { makeTempDir, removeDir, tinyNewPlugin } from './helpers.ts';
import { msUntil } from './replica-process.ts';
import { createTestDatabase, sql } from './store-backends.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

describe('PgPluginStore across replicas', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  const stores: PgPluginStore[] = [];
  const dirs: string[] = [];

  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    for (const dir of dirs.splice(0)) await removeDir(dir);
    await db.drop();
  });

  async function open(pollMs: number, applied: ChangeSource[] = []): Promise<PgPluginStore> {
    const cacheDir = await makeTempDir('wasmhost-pg-cache-');
    dirs.push(cacheDir);
    const store = await PgPluginStore.open({
      url: db.url,
      poolMax: 3,
      statementTimeoutMs: 5_000,
      connectTimeoutMs: 2_000,
      pollMs,
      cacheDir,
      blobCacheBytes: 1024 * 1024,
      log: quiet,
      observer: { onChangeApplied: (source) => applied.push(source) },
    });
    stores.push(store);
    return store;
  }

  it('finds the manifests naming a module (the delete check) through the index, not a scan of every record', async () => {
    await open(60_000);
    const modules = JSON.stringify([{ id: 'a'.repeat(64) }]);
    // The planner prefers a scan of a near-empty table; told not to, it must have an index to use.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('SET enable_seqscan = off');
      const plan = await client.query(
        `EXPLAIN (FORMAT JSON) SELECT id FROM wasmhost_plugins WHERE record->'manifest'->'modules' @> $1::jsonb ORDER BY seq`,
        [modules],
      );
      expect(JSON.stringify(plan.rows)).toContain('"Index Name":"wasmhost_plugins_manifest_modules"');
    } finally {
      await client.end();
    }
  });

  it("applies another replica's delete and name move by notification, and tells its delete listeners", async () => {
    const applied: ChangeSource[] = [];
    const here = await open(60_000, applied);
    const elsewhere = await open(60_000);
    expect(await msUntil(async () => here.health().listening)).toBeLessThan(Infinity);
    const deleted: string[] = [];
    here.onDelete((id) => deleted.push(id));
    const a = await elsewhere.put(await tinyNewPlugin(1, { name: 'x' }));
    expect(await msUntil(async () => (await here.get('x'))?.id === a.meta.id)).toBeLessThan(Infinity);

    const b = await elsewhere.put(await tinyNewPlugin(2, { name: 'x' }));
    await elsewhere.delete(a.meta.id);
    // The poll is a minute away: only the notifications can have brought these.
    expect(await msUntil(async () => deleted.includes(a.meta.id) && (await here.get('x'))?.id === b.meta.id)).toBeLessThan(
      Infinity,
    );
    expect(here.known().map((p) => p.id)).toEqual([b.meta.id]);
    expect(new Set(applied)).toEqual(new Set(['notify']));
  });

  it('catches a change whose notification was lost with the poll', async () => {
    const applied: ChangeSource[] = [];
    const here = await open(100, applied);
    // Listening, so no reconnect catch-up can bring the quiet change instead of the poll.
    expect(await msUntil(async () => here.health().listening)).toBeLessThan(Infinity);
    const { meta } = await here.put(await tinyNewPlugin(1, { name: 'renamed-quietly' }));
    // Its own change has come back (by notification or poll) before the quiet one is made.
    expect(await msUntil(async () => applied.length > 0)).toBeLessThan(Infinity);
    applied.length = 0;
    // Another writer changes the name the way the store does, but its NOTIFY never arrives.
    await sql(
      db.url,
      `WITH v AS (UPDATE wasmhost_state SET version = version + 1 RETURNING version)
       , renamed AS (UPDATE wasmhost_plugins SET name = 'quiet' WHERE id = $1)
       INSERT INTO wasmhost_changes (version, plugin_id) SELECT version, $1 FROM v`,
      [meta.id],
    );
    // known(): the replica's own copy (get() would ask the database on a miss).
    const seen = await msUntil(async () => here.known().some((p) => p.id === meta.id && p.name === 'quiet'));
    expect(seen).toBeLessThan(Infinity);
    expect(applied).toEqual(['poll']);
    expect(await here.get('renamed-quietly')).toBeNull();
  });

  it('reloads everything when the change log was pruned past what it has applied', async () => {
    const here = await open(100);
    const kept = await here.put(await tinyNewPlugin(1));
    const gone = await here.put(await tinyNewPlugin(2));
    // Behind its back: one plugin deleted and the change log pruned beyond this replica's version.
    await sql(
      db.url,
      `WITH d AS (DELETE FROM wasmhost_plugins WHERE id = $1)
       UPDATE wasmhost_state SET version = version + 20000, pruned_through = version + 19999`,
      [gone.meta.id],
    );
    expect(await msUntil(async () => here.known().length === 1)).toBeLessThan(Infinity);
    expect(here.known()[0]!.id).toBe(kept.meta.id);
  });

  it('stores an upload whose bytes another upload writes between its check for them and its own write (no duplicate key)', async () => {
    const store = await open(60_000);
    const plugin = await tinyNewPlugin(7);
    const { id } = plugin.meta;
    // The blob is there when the upload looks first (its step outside the lock), gone once it holds the
    // lock (a delete), and written again by a third party right after it looked there again.
    const lock = new pg.Client({ connectionString: db.url });
    const writer = new pg.Client({ connectionString: db.url });
    await lock.connect();
    await writer.connect();
    try {
      await sql(db.url, 'INSERT INTO wasmhost_blobs (id, bytes) VALUES ($1, $2)', [id, Buffer.from(plugin.bytes)]);
      await lock.query('BEGIN');
      await lock.query('UPDATE wasmhost_state SET version = version');
      const waitingIn = (statement: string) =>
        msUntil(
          async () =>
            (
              await sql(
                db.url,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'wasmhost' AND wait_event_type = 'Lock' AND query LIKE $1",
                [`${statement}%`],
              )
            ).length > 0,
        );
      const put = store.put(plugin);
      expect(await waitingIn('UPDATE wasmhost_state')).toBeLessThan(Infinity);
      await sql(db.url, 'DELETE FROM wasmhost_blobs WHERE id = $1', [id]);
      await writer.query('BEGIN');
      await writer.query('INSERT INTO wasmhost_blobs (id, bytes) VALUES ($1, $2)', [id, Buffer.from(plugin.bytes)]);
      await lock.query('COMMIT');
      // The upload found no blob and now waits on the third party's row.
      expect(await waitingIn('INSERT INTO wasmhost_blobs')).toBeLessThan(Infinity);
      await writer.query('COMMIT');
      expect(await put).toMatchObject({ created: true, meta: { id } });
    } finally {
      await lock.end();
      await writer.end();
    }
    expect(Buffer.from((await store.getBytes(id))!)).toEqual(Buffer.from(plugin.bytes));
    expect(await sql(db.url, 'SELECT id FROM wasmhost_blobs')).toEqual([{ id }]);
  });

  it('sweeps blobs no plugin references once they are old (an upload that died between its two steps)', async () => {
    const orphan = Buffer.from('not a plugin row');
    await open(60_000);
    await sql(db.url, "INSERT INTO wasmhost_blobs (id, bytes, stored_at) VALUES ($1, $2, now() - interval '1 hour')", [
      createHash('sha256').update(orphan).digest('hex'),
      orphan,
    ]);
    await sql(db.url, 'INSERT INTO wasmhost_blobs (id, bytes) VALUES ($1, $2)', ['a'.repeat(64), orphan]);
    await open(60_000);
    // The young one may belong to an upload still in progress: kept.
    expect(await sql(db.url, 'SELECT id FROM wasmhost_blobs')).toEqual([{ id: 'a'.repeat(64) }]);
  });
});
