// The PluginStore contract, one suite run against both backends (filesystem, PostgreSQL), then what
// only one of them has to show (files on disk; migrations, the local blob cache, other replicas).
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsPluginStore } from '../src/store/fs-store.ts';
import { PgPluginStore } from '../src/store/pg/pg-store.ts';
import { canonicalManifest } from '../src/manifest.ts';
import {
  PluginInUseError,
  StoredBytesCorruptError,
  type NewPlugin,
  type PluginMeta,
  type PluginStore,
} from '../src/store/store.ts';
import { listFiles, makeTempDir, newPluginOf, removeDir, tinyNewPlugin } from './helpers.ts';
import { createTestDatabase, sql } from './store-backends.ts';

/** Every stored plugin, newest first (one page as large as needed). */
async function listAll(store: PluginStore, filter: { name?: string } = {}): Promise<PluginMeta[]> {
  return (await store.list({ ...filter, limit: Number.MAX_SAFE_INTEGER })).plugins;
}

/** Every optional field set (from `marker`), so a backend that loses one shows it. */
function fieldsOf(marker: number, name: string | null) {
  return { name, description: `plugin ${marker}`, config: { k: `v${marker}` }, allowedHosts: ['example.test'] };
}

function newPlugin(marker: number, name: string | null = null): Promise<NewPlugin> {
  return tinyNewPlugin(marker, fieldsOf(marker, name));
}

function withBytes(bytes: Uint8Array, marker: number, name: string | null = null): NewPlugin {
  return newPluginOf(bytes, fieldsOf(marker, name));
}

interface Logged {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  obj: object;
}

/** One backend as the contract suite drives it: open (again, as after a restart) and damage stored bytes. */
interface Harness {
  name: string;
  /** Called before each test: an empty store's home. */
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  /** A store over the current home; opening again is a restart. */
  open(logged?: Logged[]): Promise<PluginStore>;
  /** Replaces the stored bytes of `id` with `bytes` (which no longer hash to it), behind the store's back. */
  damage(id: string, bytes: Buffer): Promise<void>;
}

const logInto = (logged: Logged[]) => ({
  debug: (obj: object, msg: string) => logged.push({ level: 'debug', obj, msg }),
  info: (obj: object, msg: string) => logged.push({ level: 'info', obj, msg }),
  warn: (obj: object, msg: string) => logged.push({ level: 'warn', obj, msg }),
  error: (obj: object, msg: string) => logged.push({ level: 'error', obj, msg }),
});

function fsHarness(): Harness {
  let dir = '';
  return {
    name: 'filesystem',
    setUp: async () => {
      dir = await makeTempDir('wasmhost-store-');
    },
    tearDown: () => removeDir(dir),
    open: (logged = []) => FsPluginStore.open(dir, logInto(logged)),
    damage: (id, bytes) => writeFile(path.join(dir, 'blobs', `${id}.wasm`), bytes),
  };
}

function pgHarness(): Harness {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | null = null;
  let cacheDir = '';
  const opened: PluginStore[] = [];
  return {
    name: 'postgres',
    setUp: async () => {
      db = await createTestDatabase();
      cacheDir = await makeTempDir('wasmhost-blob-cache-');
    },
    tearDown: async () => {
      for (const store of opened.splice(0)) await store.close();
      await db?.drop();
      await removeDir(cacheDir);
    },
    open: async (logged = []) => {
      const store = await PgPluginStore.open({
        url: db!.url,
        poolMax: 4,
        statementTimeoutMs: 5_000,
        connectTimeoutMs: 2_000,
        pollMs: 100,
        cacheDir,
        blobCacheBytes: 64 * 1024 * 1024,
        log: logInto(logged),
      });
      opened.push(store);
      return store;
    },
    // The database's copy; the replica's cached copy goes too (else it would rightly be used).
    damage: async (id, bytes) => {
      await sql(db!.url, 'UPDATE wasmhost_blobs SET bytes = $2 WHERE id = $1', [id, bytes]);
      await rm(path.join(cacheDir, `${id}.wasm`), { force: true });
    },
  };
}

describe.each([fsHarness(), pgHarness()])('PluginStore contract ($name)', (harness: Harness) => {
  beforeEach(() => harness.setUp());
  afterEach(() => harness.tearDown());

  it('stores bytes and metadata, and the same bytes again are not stored twice', async () => {
    const store = await harness.open();
    const plugin = await newPlugin(1);
    const first = await store.put(plugin);
    expect(first.created).toBe(true);
    expect(first.meta).toEqual(plugin.meta);
    const again = await store.put({ ...plugin, meta: { ...plugin.meta, createdAt: new Date(0).toISOString() } });
    expect(again.created).toBe(false);
    expect(again.meta).toEqual(first.meta);
    expect(await listAll(store)).toHaveLength(1);
    expect(Buffer.from((await store.getBytes(plugin.meta.id))!)).toEqual(Buffer.from(plugin.bytes));
    expect(await store.get(plugin.meta.id)).toEqual(plugin.meta);
    expect(store.stats()).toEqual({ plugins: 1, bytes: plugin.bytes.length, damaged: 0 });
  });

  it('hands out immutable records', async () => {
    const store = await harness.open();
    const { meta } = await store.put(await newPlugin(1));
    expect(Object.isFrozen(meta)).toBe(true);
    expect(Object.isFrozen(meta.config)).toBe(true);
    expect(Object.isFrozen(meta.exports)).toBe(true);
  });

  it('lists newest first and filters by name', async () => {
    const store = await harness.open();
    const a = await store.put(await newPlugin(1, 'a'));
    const b = await store.put(await newPlugin(2));
    const c = await store.put(await newPlugin(3, 'c'));
    expect((await listAll(store)).map((m) => m.id)).toEqual([c.meta.id, b.meta.id, a.meta.id]);
    expect((await listAll(store, { name: 'a' })).map((m) => m.id)).toEqual([a.meta.id]);
    expect(await listAll(store, { name: 'nope' })).toEqual([]);
  });

  it('lists a page at a time: limit, then the cursor continues below the last plugin shown, and a forged cursor is refused', async () => {
    const store = await harness.open();
    const ids: string[] = [];
    for (let marker = 1; marker <= 5; marker++) ids.unshift((await store.put(await newPlugin(marker))).meta.id);
    const first = await store.list({ limit: 2 });
    expect(first.plugins.map((m) => m.id)).toEqual(ids.slice(0, 2));
    // An upload between pages comes before the first page, never in a later one.
    await store.put(await newPlugin(6));
    const second = await store.list({ limit: 2, cursor: first.nextCursor! });
    expect(second.plugins.map((m) => m.id)).toEqual(ids.slice(2, 4));
    const last = await store.list({ limit: 2, cursor: second.nextCursor! });
    expect(last).toEqual({ plugins: [expect.objectContaining({ id: ids[4] })], nextCursor: null });
    await expect(store.list({ limit: 2, cursor: 'bm9wZQ' })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  it('moves a name to the newest upload carrying it, and frees it on delete, telling delete listeners', async () => {
    const store = await harness.open();
    const deletedIds: string[] = [];
    store.onDelete((id) => deletedIds.push(id));
    const a = await store.put(await newPlugin(1, 'tool'));
    const b = await store.put(await newPlugin(2, 'tool'));
    expect((await store.get('tool'))!.id).toBe(b.meta.id);
    expect((await store.get(a.meta.id))!.name).toBeNull();

    // Re-uploading A's bytes with the name moves it back, without a new plugin.
    const again = await store.put(await newPlugin(1, 'tool'));
    expect(again.created).toBe(false);
    expect(again.meta.name).toBe('tool');
    expect((await store.get('tool'))!.id).toBe(a.meta.id);
    expect((await store.get(b.meta.id))!.name).toBeNull();

    // A plugin holds one name: a new one replaces the old, which is freed.
    await store.put(await newPlugin(1, 'renamed'));
    expect(await store.get('tool')).toBeNull();
    expect((await store.get('renamed'))!.id).toBe(a.meta.id);

    const deleted = await store.delete('renamed');
    expect(deleted!.id).toBe(a.meta.id);
    expect(await store.get('renamed')).toBeNull();
    expect(await store.get(a.meta.id)).toBeNull();
    expect(await store.getBytes(a.meta.id)).toBeNull();
    expect(await store.delete('renamed')).toBeNull();
    expect(deletedIds).toEqual([a.meta.id]);
    expect(store.known().map((m) => m.id)).toEqual([b.meta.id]);
  });

  it('streams a blob in chunks, to the end even when the plugin is deleted meanwhile', async () => {
    const store = await harness.open();
    const bytes = randomBytes(3 * 1024 * 1024);
    const { meta } = await store.put(withBytes(bytes, 5));

    const blob = await store.openBytesStream(meta.id);
    expect(blob!.size).toBe(bytes.length);
    await store.delete(meta.id);
    expect(await store.openBytesStream(meta.id)).toBeNull();
    const chunks: Buffer[] = [];
    for await (const chunk of blob!.stream) chunks.push(chunk as Buffer);
    // Read piece by piece (64 KiB), never the whole file at once.
    expect(chunks.length).toBeGreaterThan(10);
    expect(Math.max(...chunks.map((c) => c.length))).toBeLessThanOrEqual(64 * 1024);
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    expect(await store.openBytesStream('f'.repeat(64))).toBeNull();
  });

  it('finds every stored plugin, name and order again after a restart', async () => {
    const store = await harness.open();
    await store.put(await newPlugin(1, 'one'));
    await store.put(await newPlugin(2, 'one'));
    await store.put(await newPlugin(3));
    const before = await listAll(store);
    await store.close();

    const reopened = await harness.open();
    expect(await listAll(reopened)).toEqual(before);
    expect((await reopened.get('one'))!.id).toBe(before[1]!.id);
    for (const meta of before) {
      const bytes = await reopened.getBytes(meta.id);
      expect(createHash('sha256').update(bytes!).digest('hex')).toBe(meta.id);
    }
    expect(reopened.stats()).toEqual(store.stats());
    // Upload order continues after the restart.
    const next = await reopened.put(await newPlugin(4));
    expect((await listAll(reopened))[0]!.id).toBe(next.meta.id);
  });

  it('refuses damaged stored bytes (sha256 no longer the id), whole or streamed, reports it, and a re-upload repairs them', async () => {
    const logged: Logged[] = [];
    const store = await harness.open(logged);
    const original = await newPlugin(1);
    const { meta } = await store.put(original);
    const damaged = Buffer.from(original.bytes);
    damaged[damaged.length - 1]! ^= 0xff;
    await harness.damage(meta.id, damaged);

    const err = await store.getBytes(meta.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoredBytesCorruptError);
    expect((err as StoredBytesCorruptError).actualSha256).toBe(createHash('sha256').update(damaged).digest('hex'));
    expect(err).toMatchObject({ code: 'STORE_ERROR' });

    // A stream never hands out the whole damaged module.
    const streamed = await (async () => {
      const opened = await store.openBytesStream(meta.id);
      let received = 0;
      for await (const chunk of opened!.stream) received += (chunk as Buffer).length;
      return received;
    })().catch((e: unknown) => e);
    expect(streamed).toBeInstanceOf(StoredBytesCorruptError);
    const errors = logged.filter((l) => l.level === 'error');
    expect(errors[0]).toMatchObject({ msg: 'store: the stored bytes of a plugin are damaged', obj: { plugin: meta.id } });

    // Uploading the same bytes again repairs the stored copy.
    expect((await store.put(original)).created).toBe(false);
    expect(Buffer.from((await store.getBytes(meta.id))!).equals(Buffer.from(original.bytes))).toBe(true);
  });

  it('serializes concurrent uploads of the same bytes into one plugin', async () => {
    const store = await harness.open();
    const plugin = await newPlugin(7);
    const results = await Promise.all(Array.from({ length: 5 }, () => store.put(plugin)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(await listAll(store)).toHaveLength(1);
  });

  it('stores a manifest over stored modules, keeps it after a restart, and refuses to delete a module it names', async () => {
    const store = await harness.open();
    const module = await newPlugin(1, 'lib');
    await store.put(module);
    const bytes = canonicalManifest([{ id: module.meta.id, name: 'main' }], { a: '1' }, [], { timeoutMs: 100 });
    const manifest = withBytes(bytes, 2, 'app');
    const meta: PluginMeta = {
      ...manifest.meta,
      manifest: { modules: [{ id: module.meta.id, name: 'main' }], main: module.meta.id, limits: { timeoutMs: 100 } },
    };
    expect((await store.put({ bytes, meta })).meta).toEqual(meta);

    const refused = await store.delete('lib').catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(PluginInUseError);
    expect(refused).toMatchObject({ code: 'PLUGIN_IN_USE', details: { referrers: [meta.id] } });
    expect(await store.get('lib')).not.toBeNull();
    await store.close();

    const reopened = await harness.open();
    expect(await reopened.get('app')).toEqual(meta);
    expect(Buffer.from((await reopened.getBytes(meta.id))!)).toEqual(Buffer.from(bytes));
    expect((await reopened.delete('app'))!.id).toBe(meta.id);
    expect((await reopened.delete('lib'))!.id).toBe(module.meta.id);
  });

  it('stores a module a delete took again with a manifest whose put brings its bytes (an upload carrying it inline)', async () => {
    const store = await harness.open();
    const module = await newPlugin(4);
    const side = await newPlugin(5);
    const modules = [
      { id: module.meta.id, name: 'main' },
      { id: side.meta.id, name: 'side' },
    ];
    const bytes = canonicalManifest(modules, {}, [], {});
    const meta: PluginMeta = {
      ...withBytes(bytes, 6, 'app').meta,
      manifest: { modules, main: module.meta.id, limits: {} },
    };
    // The upload stored its modules; then a delete took one before the manifest went in.
    await store.put(module);
    await store.put(side);
    expect((await store.delete(module.meta.id))!.id).toBe(module.meta.id);

    expect(await store.put({ bytes, meta, modules: [module, side] })).toMatchObject({ created: true, meta });
    expect(await store.get(module.meta.id)).toMatchObject({ id: module.meta.id, name: null });
    expect(Buffer.from((await store.getBytes(module.meta.id))!)).toEqual(Buffer.from(module.bytes));
    expect((await listAll(store)).map((p) => p.id).sort()).toEqual([meta.id, module.meta.id, side.meta.id].sort());
    await expect(store.delete(module.meta.id)).rejects.toBeInstanceOf(PluginInUseError);
    await store.close();
    const reopened = await harness.open();
    expect((await listAll(reopened)).map((p) => p.id).sort()).toEqual([meta.id, module.meta.id, side.meta.id].sort());
  });

  it('refuses a manifest naming a module that is not stored, and stores nothing', async () => {
    const store = await harness.open();
    const missing = 'a'.repeat(64);
    const bytes = canonicalManifest([{ id: missing, name: null }], {}, [], {});
    const manifest = withBytes(bytes, 3);
    const meta: PluginMeta = {
      ...manifest.meta,
      manifest: { modules: [{ id: missing, name: null }], main: missing, limits: {} },
    };
    await expect(store.put({ bytes, meta })).rejects.toMatchObject({ code: 'INVALID_MANIFEST' });
    expect(await listAll(store)).toEqual([]);
  });

  it('stores a manifest with the modules it brings in one put, and none of them when the manifest is refused', async () => {
    const store = await harness.open();
    const stored = await newPlugin(10);
    await store.put(stored);
    const [brought, other] = [await newPlugin(11), await newPlugin(12)];
    const manifestOf = (modules: NewPlugin[], extra: string[] = []): NewPlugin => {
      const refs = [...modules.map((m) => m.meta.id), ...extra].map((id, i) => ({ id, name: i === 0 ? 'main' : `m${i}` }));
      const bytes = canonicalManifest(refs, {}, [], {});
      const plugin = withBytes(bytes, 13, 'app');
      return { ...plugin, meta: { ...plugin.meta, manifest: { modules: refs, main: refs[0]!.id, limits: {} } }, modules };
    };
    // Refused part-way: a module it names is neither stored nor brought; the modules it brought go too.
    const refused = manifestOf([brought, stored, other], ['b'.repeat(64)]);
    await expect(store.put(refused)).rejects.toMatchObject({ code: 'INVALID_MANIFEST' });
    expect((await listAll(store)).map((p) => p.id)).toEqual([stored.meta.id]);
    expect(await store.get(brought.meta.id)).toBeNull();

    const accepted = manifestOf([brought, stored]);
    expect(await store.put(accepted)).toMatchObject({ created: true, meta: { name: 'app' } });
    expect((await listAll(store)).map((p) => p.id)).toEqual([accepted.meta.id, brought.meta.id, stored.meta.id]);
    expect(Buffer.from((await store.getBytes(brought.meta.id))!)).toEqual(Buffer.from(brought.bytes));
    // Again: already stored, nothing changes.
    expect(await store.put(accepted)).toMatchObject({ created: false, meta: { id: accepted.meta.id } });
    expect(await listAll(store)).toHaveLength(3);
  });

  it('passes its readiness check', async () => {
    const store = await harness.open();
    await expect(store.check()).resolves.toBeUndefined();
  });
});

describe('FsPluginStore on disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await makeTempDir('wasmhost-store-');
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  it('keeps one blob and one metadata file per plugin', async () => {
    const store = await FsPluginStore.open(dir);
    const plugin = await newPlugin(1);
    await store.put(plugin);
    await store.put(plugin);
    expect(await listFiles(dir)).toEqual([`blobs/${plugin.meta.id}.wasm`, `meta/${plugin.meta.id}.json`]);
    await store.put(await newPlugin(2));
    await store.delete(plugin.meta.id);
    expect(await listFiles(dir)).toHaveLength(2);
  });

  it('cleans up what an interrupted write left and never shows a half-written plugin', async () => {
    const store = await FsPluginStore.open(dir);
    const kept = await store.put(await newPlugin(1));
    const orphan = await newPlugin(2);
    // A crash after the blob was renamed into place but before its metadata: not acknowledged.
    await writeFile(path.join(dir, 'blobs', `${orphan.meta.id}.wasm`), orphan.bytes);
    // Crashes before a rename leave temp files.
    await writeFile(path.join(dir, 'blobs', '.tmp-0123456789abcdef'), Buffer.alloc(1000));
    await writeFile(path.join(dir, 'meta', '.tmp-fedcba9876543210'), '{"version":1');

    const reopened = await FsPluginStore.open(dir);
    expect((await listAll(reopened)).map((m) => m.id)).toEqual([kept.meta.id]);
    expect(await reopened.get(orphan.meta.id)).toBeNull();
    expect(await listFiles(dir)).toEqual([`blobs/${kept.meta.id}.wasm`, `meta/${kept.meta.id}.json`]);
  });

  it('keeps a plugin whose blob is missing listed (its calls answer STORE_ERROR) and skips an unreadable metadata file', async () => {
    const store = await FsPluginStore.open(dir);
    const a = await store.put(await newPlugin(1));
    const b = await store.put(await newPlugin(2));
    await rm(path.join(dir, 'blobs', `${a.meta.id}.wasm`));
    await writeFile(path.join(dir, 'meta', `${'e'.repeat(64)}.json`), 'not json');
    const warnings: string[] = [];
    const reopened = await FsPluginStore.open(dir, {
      warn: (_obj, msg) => warnings.push(msg),
      error: (_obj, msg) => warnings.push(msg),
    });
    expect((await listAll(reopened)).map((m) => m.id)).toEqual([b.meta.id, a.meta.id]);
    const missing = await reopened.getBytes(a.meta.id).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(StoredBytesCorruptError);
    expect((missing as StoredBytesCorruptError).actualSha256).toBeNull();
    await expect(reopened.openBytesStream(a.meta.id)).rejects.toThrow(/are missing/);
    expect(warnings.sort()).toEqual([
      'store: a stored plugin has lost its Wasm blob',
      'store: the stored bytes of a plugin are damaged',
      'store: the stored bytes of a plugin are damaged',
      'store: unreadable metadata file skipped',
    ]);
    // The same bytes uploaded again bring it back.
    expect((await reopened.put(await newPlugin(1))).created).toBe(false);
    expect((await reopened.getBytes(a.meta.id))!.length).toBe(a.meta.size);
  });

  it('resolves a name left on two plugins by a crash mid-move to the later assignment', async () => {
    const store = await FsPluginStore.open(dir);
    const a = await store.put(await newPlugin(1, 'x'));
    const b = await store.put(await newPlugin(2, 'x'));
    // Simulate the crash: B's record (written first) has the name, A's old record still has it too.
    const aFile = path.join(dir, 'meta', `${a.meta.id}.json`);
    const onDisk = JSON.parse(await readFile(aFile, 'utf8'));
    onDisk.plugin.name = 'x';
    await writeFile(aFile, JSON.stringify(onDisk));

    const reopened = await FsPluginStore.open(dir);
    expect((await reopened.get('x'))!.id).toBe(b.meta.id);
    expect((await reopened.get(a.meta.id))!.name).toBeNull();
    // The loser was rewritten, so the next start reads a consistent state.
    expect(JSON.parse(await readFile(aFile, 'utf8')).plugin.name).toBeNull();
  });

  it('succeeds when a name moved but its previous holder cannot be rewritten, and a restart agrees', async () => {
    const warnings: string[] = [];
    const store = await FsPluginStore.open(dir, {
      warn: (_obj, msg) => warnings.push(msg),
      error: (_obj, msg) => warnings.push(msg),
    });
    const a = await store.put(await newPlugin(1, 'x'));
    // Make A's record impossible to replace: a rename onto a non-empty directory fails (EISDIR).
    const aFile = path.join(dir, 'meta', `${a.meta.id}.json`);
    const aRecord = await readFile(aFile, 'utf8');
    await rm(aFile);
    await mkdir(aFile);
    await writeFile(path.join(aFile, 'keep'), '');

    const b = await store.put(await newPlugin(2, 'x'));
    expect(b).toMatchObject({ created: true, meta: { name: 'x' } });
    expect((await store.get('x'))!.id).toBe(b.meta.id);
    expect((await store.get(a.meta.id))!.name).toBeNull();
    expect(warnings).toEqual([expect.stringContaining('previous holder')]);

    // On disk A still carries the name (its old record); the later assignment wins at the next start.
    await rm(aFile, { recursive: true });
    await writeFile(aFile, aRecord);
    const reopened = await FsPluginStore.open(dir);
    expect((await reopened.get('x'))!.id).toBe(b.meta.id);
    expect((await reopened.get(a.meta.id))!.name).toBeNull();
  });

  it('check() writes, reads and deletes a probe, and fails when the directory is gone', async () => {
    const store = await FsPluginStore.open(dir);
    await store.check();
    expect(await listFiles(dir)).toEqual([]);
    await removeDir(dir);
    await expect(store.check()).rejects.toThrow();
  });
});
