// PostgreSQL PluginStore, shared by replicas. The database holds metadata, names and bytes; each
// replica keeps a copy of the metadata in memory (lookups and calls never wait on the database) and
// the bytes on local disk by content id (BlobCache). Content ids never go stale, so only names,
// metadata and deletions need to reach the other replicas: every mutation bumps one version row
// (its row lock orders them), lists the plugins it touched in wasmhost_changes and NOTIFYs; a replica
// re-reads the touched rows on a notification, and a poll of the version every STORE_POLL_MS catches
// what a lost notification or a reconnect missed.
import { Readable, pipeline } from 'node:stream';
import pg from 'pg';
import type { StoreConfig } from '../../config.ts';
import { AppError } from '../../errors.ts';
import { verifyingStream } from '../blob-files.ts';
import { decodeCursor, pageOf } from '../cursor.ts';
import {
  freezeMeta,
  ID_PATTERN,
  manifestModuleMissing,
  PluginInUseError,
  pluginIdOf,
  StoredBytesCorruptError,
  type BytesStream,
  type ChangeSource,
  type ListPage,
  type ListQuery,
  type NewPlugin,
  type PluginMeta,
  type PluginRef,
  type PluginStore,
  type PutResult,
  type StoreHealth,
  type StoreObserver,
  type StoreOperation,
  type StoreStats,
} from '../store.ts';
import { PluginIndex } from '../plugin-index.ts';
import { BlobCache } from './blob-cache.ts';
import { migrate } from './migrations.ts';
import { isPoolWait, isUnavailable } from './unavailable.ts';

const CHANNEL = 'wasmhost_store';
const RETRY_AFTER_MS = 2_000;
/** Change-log entries kept; a replica further behind than this reloads everything. */
const CHANGES_KEPT = 10_000;
const PRUNE_EVERY = 100;
/** An unreferenced blob younger than this may belong to an upload still in progress. */
const ORPHAN_MIN_AGE = '10 minutes';
const LISTEN_RETRY_MIN_MS = 100;
const LISTEN_RETRY_MAX_MS = 2_000;
const DOWNLOAD_CHUNK_BYTES = 64 * 1024;
/**
 * Queries that may wait for a pooled connection, per connection (PG_POOL_MAX); more are refused at
 * once: a flood waits in a bounded queue and fails fast instead of each waiting PG_CONNECT_TIMEOUT_MS.
 */
const WAITING_PER_CONNECTION = 4;
const BUSY_RETRY_AFTER_MS = 1_000;

export interface PgStoreLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The PostgreSQL settings of the config, and where the local blob cache lives (blobCacheBytes 0: no disk cache). */
export type PgStoreOptions = Omit<Extract<StoreConfig, { kind: 'postgres' }>, 'kind'> & {
  cacheDir: string;
  log: PgStoreLogger;
  observer?: StoreObserver;
};

/** The metadata besides id, name and size, as stored in wasmhost_plugins.record. */
type StoredRecord = Omit<PluginMeta, 'id' | 'name' | 'size'>;

interface PluginRow {
  id: string;
  /** bigint arrives as text. */
  seq: string;
  name: string | null;
  size: number;
  record: StoredRecord;
}

interface Entry {
  meta: PluginMeta;
  seq: number;
}

const COLUMNS = 'id, seq, name, size, record';

function toEntry(row: PluginRow): Entry {
  const { description, createdAt, exports, imports, wasi, config, allowedHosts, manifest } = row.record;
  const meta = freezeMeta({
    id: row.id,
    name: row.name,
    description,
    size: row.size,
    createdAt,
    exports,
    imports,
    wasi,
    config,
    allowedHosts,
    ...(manifest ? { manifest } : {}),
  });
  return { meta, seq: Number(row.seq) };
}

function toRecord(meta: PluginMeta): StoredRecord {
  const { description, createdAt, exports, imports, wasi, config, allowedHosts, manifest } = meta;
  return { description, createdAt, exports, imports, wasi, config, allowedHosts, ...(manifest ? { manifest } : {}) };
}

/** A transaction's result that changed nothing: rolled back, and the value returned. */
class NoChange<T> {
  readonly value: T;
  constructor(value: T) {
    this.value = value;
  }
}

/** What a committed mutation touched, as it left those rows (absent: deleted). */
interface Committed {
  version: number;
  touched: string[];
  rows: PluginRow[];
}

export class PgPluginStore implements PluginStore {
  readonly #opts: PgStoreOptions;
  readonly #pool: pg.Pool;
  readonly #cache: BlobCache;
  readonly #log: PgStoreLogger;
  readonly #plugins = new PluginIndex<Entry>();
  readonly #fetching = new Map<string, Promise<Buffer | null>>();
  /** The mirror holds every change up to this version. */
  #version = -1;
  /** Mirror updates run one at a time, in order. */
  #mirrorQueue: Promise<unknown> = Promise.resolve();
  /** A refresh queued and not yet started: later triggers share it. */
  #queuedRefresh: Promise<void> | null = null;
  #listener: pg.Client | null = null;
  #probe: Promise<pg.Client> | null = null;
  #listenRetryMs = LISTEN_RETRY_MIN_MS;
  #listenTimer: NodeJS.Timeout | null = null;
  #pollTimer: NodeJS.Timeout | null = null;
  #polling = false;
  #up = true;
  #closed = false;

  private constructor(opts: PgStoreOptions, cache: BlobCache) {
    this.#opts = opts;
    this.#cache = cache;
    this.#log = opts.log;
    this.#pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolMax,
      connectionTimeoutMillis: opts.connectTimeoutMs,
      statement_timeout: opts.statementTimeoutMs,
      // The server ends a transaction left idle (a replica frozen mid-upload must not hold the version lock).
      idle_in_transaction_session_timeout: Math.max(10_000, 2 * opts.statementTimeoutMs),
      // A connection that went silent (no reset, no answer) fails the query instead of hanging it.
      query_timeout: opts.statementTimeoutMs + 1_000,
      keepAlive: true,
      application_name: 'wasmhost',
    });
    // An idle connection the server or the network dropped: the next query opens a new one.
    this.#pool.on('error', (err) => this.#log.warn({ err }, 'store: an idle PostgreSQL connection failed'));
  }

  /** Applies the migrations, loads the metadata and starts following changes. */
  static async open(opts: PgStoreOptions): Promise<PgPluginStore> {
    const cache = await BlobCache.open(opts.cacheDir, opts.blobCacheBytes, opts.log);
    const store = new PgPluginStore(opts, cache);
    try {
      const applied = await store.#db('migrate', () => migrate(store.#pool));
      if (applied.length > 0) opts.log.info({ migrations: applied }, 'store: database migrations applied');
      // Housekeeping: a replica that cannot do it now (the version lock is busy) starts anyway.
      await store
        .#sweepOrphans()
        .catch((err: unknown) =>
          opts.log.warn({ err }, 'store: unreferenced blobs could not be swept; the next start tries again'),
        );
      await store.#refresh(null);
    } catch (err) {
      await store.close();
      throw err;
    }
    store.#pollTimer = setInterval(() => void store.#poll(), opts.pollMs);
    store.#pollTimer.unref();
    void store.#listen();
    return store;
  }

  // ---- database access ----------------------------------------------------------------------

  /**
   * Times `work` for metrics; an unreachable database becomes STORE_UNAVAILABLE, a pool with every
   * connection busy OVERLOADED (both 503 with Retry-After).
   */
  async #db<T>(operation: StoreOperation, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    if (operation !== 'check' && this.#pool.waitingCount >= this.#opts.poolMax * WAITING_PER_CONNECTION) {
      this.#opts.observer?.onQuery?.(operation, 'busy', seconds());
      throw this.#busy();
    }
    try {
      const result = await work();
      this.#markUp(true);
      this.#opts.observer?.onQuery?.(operation, 'ok', seconds());
      return result;
    } catch (err) {
      if (err instanceof AppError) throw err;
      if (isPoolWait(err)) {
        this.#opts.observer?.onQuery?.(operation, 'busy', seconds());
        throw this.#busy(err);
      }
      if (!isUnavailable(err)) {
        this.#opts.observer?.onQuery?.(operation, 'error', seconds());
        throw err;
      }
      this.#markUp(false, err);
      this.#opts.observer?.onQuery?.(operation, 'unavailable', seconds());
      throw new AppError('STORE_UNAVAILABLE', 'the plugin store (PostgreSQL) cannot be reached; retry later', {
        retryAfterMs: RETRY_AFTER_MS,
        cause: err,
      });
    }
  }

  /** Every pooled connection is in use and enough queries wait for one: overload (503 OVERLOADED), not an outage. */
  #busy(cause?: unknown): AppError {
    return new AppError(
      'OVERLOADED',
      `the plugin store is busy: every PostgreSQL connection of this replica (PG_POOL_MAX ${this.#opts.poolMax}) is in use; retry shortly`,
      { retryAfterMs: BUSY_RETRY_AFTER_MS, ...(cause === undefined ? {} : { cause }) },
    );
  }

  #markUp(up: boolean, err?: unknown): void {
    if (up === this.#up) return;
    this.#up = up;
    if (up) this.#log.info({}, 'store: PostgreSQL reachable again');
    else this.#log.error({ err }, 'store: PostgreSQL cannot be reached');
  }

  /**
   * A connection of our own for several statements. The server may end it between two of them (idle
   * in a transaction too long, shutdown): pg then emits 'error' on the client, which must be heard or
   * it would end the process; the statement after fails and the connection is discarded.
   */
  async #checkout(): Promise<{ client: pg.PoolClient; release: (broken: boolean) => void }> {
    const client = await this.#pool.connect();
    const onError = (err: Error) => this.#log.warn({ err }, 'store: a PostgreSQL connection in use failed');
    client.on('error', onError);
    return {
      client,
      release: (broken) => {
        client.off('error', onError);
        client.release(broken || undefined);
      },
    };
  }

  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T | NoChange<T>>): Promise<T> {
    const { client, release } = await this.#checkout();
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      if (result instanceof NoChange) {
        await client.query('ROLLBACK');
        return result.value;
      }
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => (broken = true));
      throw err;
    } finally {
      release(broken);
    }
  }

  /** Takes the version row's lock (held to commit: mutations run one at a time) and the next version. */
  async #nextVersion(client: pg.PoolClient): Promise<number> {
    const { rows } = await client.query<{ version: string }>('UPDATE wasmhost_state SET version = version + 1 RETURNING version');
    return Number(rows[0]!.version);
  }

  /** Records which plugins `version` touched, tells the replicas, and prunes the change log now and then. */
  async #publish(client: pg.PoolClient, version: number, touched: string[]): Promise<Committed> {
    await client.query('INSERT INTO wasmhost_changes (version, plugin_id) SELECT $1, unnest($2::text[])', [version, touched]);
    await client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(version)]);
    if (version % PRUNE_EVERY === 0 && version > CHANGES_KEPT) {
      await client.query('DELETE FROM wasmhost_changes WHERE version <= $1', [version - CHANGES_KEPT]);
      await client.query('UPDATE wasmhost_state SET pruned_through = $1', [version - CHANGES_KEPT]);
    }
    const { rows } = await client.query<PluginRow>(`SELECT ${COLUMNS} FROM wasmhost_plugins WHERE id = ANY($1)`, [touched]);
    return { version, touched, rows };
  }

  /** Gives `name` to `id`, taking it from whoever held it; returns the ids whose name changed. */
  async #moveName(client: pg.PoolClient, id: string, name: string): Promise<string[]> {
    const freed = await client.query<{ id: string }>(
      'UPDATE wasmhost_plugins SET name = NULL WHERE name = $1 AND id <> $2 RETURNING id',
      [name, id],
    );
    await client.query('UPDATE wasmhost_plugins SET name = $1 WHERE id = $2', [name, id]);
    return [id, ...freed.rows.map((r) => r.id)];
  }

  /** Blobs no plugin references, left by uploads that died between their two steps. */
  async #sweepOrphans(): Promise<void> {
    const swept = await this.#db('put', () =>
      this.#transaction(async (client) => {
        await client.query('SELECT version FROM wasmhost_state FOR UPDATE');
        const { rowCount } = await client.query(
          `DELETE FROM wasmhost_blobs b WHERE b.stored_at < now() - interval '${ORPHAN_MIN_AGE}'
             AND NOT EXISTS (SELECT 1 FROM wasmhost_plugins p WHERE p.id = b.id)`,
        );
        return rowCount ?? 0;
      }),
    );
    if (swept > 0) this.#log.info({ blobs: swept }, 'store: removed blobs of uploads that never completed');
  }

  // ---- the in-memory mirror -----------------------------------------------------------------

  #applyRows(touched: Iterable<string>, rows: PluginRow[]): void {
    const found = new Map(rows.map((row) => [row.id, row]));
    for (const id of touched) {
      const row = found.get(id);
      if (row) {
        // A re-read row replaces its entry whole, damage mark included. A holder that lost the name to
        // it is in the same version: it is re-read too.
        this.#plugins.drop(id);
        this.#plugins.set(toEntry(row));
      } else if (this.#plugins.drop(id)) {
        this.#cache.drop(id);
        this.#plugins.notifyDeleted(id);
      }
    }
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#mirrorQueue.then(task, task);
    this.#mirrorQueue = run.catch(() => undefined);
    return run;
  }

  /** After a local commit: the mirror shows it before the caller is answered (read your writes). */
  #applyCommitted(committed: Committed): Promise<void> {
    return this.#enqueue(async () => {
      // A refresh that already ran past this version read these rows as they are now, or newer.
      if (this.#version >= committed.version) return;
      this.#applyRows(committed.touched, committed.rows);
    });
  }

  /**
   * Brings the mirror up to the database's version: the rows of every plugin changed since (or all of
   * them when the change log no longer reaches back that far), read in one snapshot. `source` null: the
   * initial load. Refreshes run in the mirror queue; triggers while one waits there share it.
   */
  #refresh(source: ChangeSource | null): Promise<void> {
    if (this.#queuedRefresh) return this.#queuedRefresh;
    const run = this.#enqueue(async () => {
      this.#queuedRefresh = null;
      await this.#db('sync', () => this.#readChanges(source));
    });
    this.#queuedRefresh = run;
    return run;
  }

  async #readChanges(source: ChangeSource | null): Promise<void> {
    const { client, release } = await this.#checkout();
    let broken = false;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const state = (
        await client.query<{ version: string; pruned_through: string }>('SELECT version, pruned_through FROM wasmhost_state')
      ).rows[0]!;
      const version = Number(state.version);
      if (version <= this.#version) {
        await client.query('COMMIT');
        return;
      }
      if (source === null || this.#version < Number(state.pruned_through)) {
        const { rows } = await client.query<PluginRow>(`SELECT ${COLUMNS} FROM wasmhost_plugins`);
        await client.query('COMMIT');
        const present = new Set(rows.map((row) => row.id));
        const gone = [...this.#plugins.ids()].filter((id) => !present.has(id));
        this.#applyRows([...gone, ...rows.map((row) => row.id)], rows);
        this.#version = version;
        return;
      }
      const changes = await client.query<{ plugin_id: string; lag_seconds: number }>(
        `SELECT plugin_id, extract(epoch FROM clock_timestamp() - min(committed_at))::float8 AS lag_seconds
           FROM wasmhost_changes WHERE version > $1 GROUP BY plugin_id`,
        [this.#version],
      );
      const touched = changes.rows.map((c) => c.plugin_id);
      const { rows } = await client.query<PluginRow>(`SELECT ${COLUMNS} FROM wasmhost_plugins WHERE id = ANY($1)`, [touched]);
      await client.query('COMMIT');
      this.#applyRows(touched, rows);
      this.#version = version;
      for (const change of changes.rows) this.#opts.observer?.onChangeApplied?.(source, Math.max(0, change.lag_seconds));
    } catch (err) {
      broken = true;
      throw err;
    } finally {
      release(broken);
    }
  }

  /** The fallback: a lost notification or a listener that is down costs at most one poll interval. */
  async #poll(): Promise<void> {
    if (this.#polling || this.#closed || this.#queuedRefresh) return;
    this.#polling = true;
    try {
      const { rows } = await this.#db('poll', () => this.#pool.query<{ version: string }>('SELECT version FROM wasmhost_state'));
      if (Number(rows[0]!.version) > this.#version) await this.#refresh('poll');
    } catch (err) {
      this.#log.debug({ err }, 'store: change poll failed');
    } finally {
      this.#polling = false;
    }
  }

  /** A dedicated connection LISTENing for changes; reconnects with backoff and then catches up. */
  async #listen(): Promise<void> {
    this.#listenTimer = null;
    if (this.#closed) return;
    const client = new pg.Client({
      connectionString: this.#opts.url,
      connectionTimeoutMillis: this.#opts.connectTimeoutMs,
      keepAlive: true,
      application_name: 'wasmhost-listen',
    });
    let failed = false;
    const retry = (err?: unknown): void => {
      if (failed) return;
      failed = true;
      if (this.#listener === client) this.#listener = null;
      client.removeAllListeners('notification');
      void client.end().catch(() => undefined);
      if (this.#closed) return;
      this.#log.debug({ err }, 'store: change listener disconnected; reconnecting');
      this.#listenTimer = setTimeout(() => void this.#listen(), this.#listenRetryMs);
      this.#listenTimer.unref();
      this.#listenRetryMs = Math.min(this.#listenRetryMs * 2, LISTEN_RETRY_MAX_MS);
    };
    client.on('error', retry);
    client.on('end', () => retry(new Error('connection ended')));
    client.on('notification', (message) => {
      if (message.channel === CHANNEL) this.#refresh('notify').catch(() => undefined);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      retry(err);
      return;
    }
    if (failed || this.#closed) {
      void client.end().catch(() => undefined);
      return;
    }
    this.#listener = client;
    this.#listenRetryMs = LISTEN_RETRY_MIN_MS;
    // Notifications sent while it was not listening are lost: catch up now.
    this.#refresh('reconnect').catch(() => undefined);
  }

  // ---- PluginStore ----------------------------------------------------------------------------

  async put(plugin: NewPlugin): Promise<PutResult> {
    const { meta } = plugin;
    const all = [...(plugin.modules ?? []), plugin];
    for (const p of all) if (!ID_PATTERN.test(p.meta.id)) throw new Error(`store: invalid plugin id ${p.meta.id}`);
    // The bytes first and on their own: written once, and a big upload holds no lock meanwhile.
    const written: string[] = [];
    await this.#db('put', async () => {
      for (const { bytes, meta: stored } of all) {
        const { id } = stored;
        const { rowCount } = await this.#pool.query('SELECT 1 FROM wasmhost_blobs WHERE id = $1', [id]);
        if (rowCount !== 0) continue;
        const inserted = await this.#pool.query(
          'INSERT INTO wasmhost_blobs (id, bytes) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING',
          [id, asBuffer(bytes)],
        );
        if (inserted.rowCount) written.push(id);
      }
    });
    let outcome: { committed: Committed | null; meta: PluginMeta; created: boolean };
    try {
      // One transaction: a manifest and the modules it brings are stored together or not at all.
      outcome = await this.#db('put', () =>
        this.#transaction(async (client) => {
          let version = await this.#nextVersion(client);
          // A new row's seq (unique: list order and cursors): the version, then one more for each further row.
          let seqTaken = false;
          const nextSeq = async () => (seqTaken ? (version = await this.#nextVersion(client)) : ((seqTaken = true), version));
          const touched = new Set<string>();
          let repaired = false;
          for (const module of plugin.modules ?? []) {
            const step = await this.#putRow(client, nextSeq, module);
            for (const id of step.touched) touched.add(id);
            repaired ||= step.repaired;
          }
          // Under the lock no delete runs: the modules a manifest names stay stored until it is.
          const modules = meta.manifest?.modules.map((m) => m.id) ?? [];
          if (modules.length > 0) {
            const { rows } = await client.query<{ id: string }>(
              `SELECT id FROM wasmhost_plugins WHERE id = ANY($1) AND NOT (record ? 'manifest')`,
              [modules],
            );
            const found = new Set(rows.map((r) => r.id));
            const missing = modules.find((id) => !found.has(id));
            if (missing !== undefined) throw manifestModuleMissing(missing);
          }
          const step = await this.#putRow(client, nextSeq, plugin);
          for (const id of step.touched) touched.add(id);
          repaired ||= step.repaired;
          if (touched.size === 0) {
            const unchanged = { committed: null, meta: step.existing!, created: false };
            return repaired ? unchanged : new NoChange(unchanged);
          }
          const committed = await this.#publish(client, version, [...touched]);
          const row = committed.rows.find((r) => r.id === meta.id);
          return { committed, meta: row ? toEntry(row).meta : step.existing!, created: step.created };
        }),
      );
    } catch (err) {
      // Nothing references the blobs this put wrote: gone now if the database answers, else at a start (#sweepOrphans).
      if (written.length > 0) await this.#dropBlobs(written).catch(() => undefined);
      throw err;
    }
    if (outcome.committed) await this.#applyCommitted(outcome.committed);
    for (const p of all) await this.#cache.write(p.meta.id, p.bytes);
    return { meta: outcome.meta, created: outcome.created };
  }

  /**
   * One plugin's row, in put()'s transaction: the ids whose row changed (its own, a name's previous
   * holder), whether it is new, whether its damaged blob was rewritten, and its record if it was stored.
   */
  async #putRow(
    client: pg.PoolClient,
    nextSeq: () => Promise<number>,
    { bytes, meta }: NewPlugin,
  ): Promise<{ touched: string[]; created: boolean; repaired: boolean; existing: PluginMeta | null }> {
    const blob = asBuffer(bytes);
    const existing = (await client.query<PluginRow>(`SELECT ${COLUMNS} FROM wasmhost_plugins WHERE id = $1`, [meta.id])).rows[0];
    if (existing) {
      const repaired = await this.#repairBlob(client, meta.id, blob);
      const touched = meta.name === null || meta.name === existing.name ? [] : await this.#moveName(client, meta.id, meta.name);
      return { touched, created: false, repaired, existing: toEntry(existing).meta };
    }
    // Under the lock no delete or sweep runs: if the blob is gone now, it stays gone; write it again.
    // Another upload's first step takes no lock and may write the same bytes meanwhile: either copy does.
    const { rowCount } = await client.query('SELECT 1 FROM wasmhost_blobs WHERE id = $1', [meta.id]);
    if (rowCount === 0) {
      await client.query('INSERT INTO wasmhost_blobs (id, bytes) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [meta.id, blob]);
    }
    await client.query('INSERT INTO wasmhost_plugins (id, seq, name, size, record) VALUES ($1, $2, NULL, $3, $4)', [
      meta.id,
      await nextSeq(),
      meta.size,
      JSON.stringify(toRecord(meta)),
    ]);
    const touched = meta.name === null ? [meta.id] : await this.#moveName(client, meta.id, meta.name);
    return { touched, created: true, repaired: false, existing: null };
  }

  /** Blobs a failed put wrote, unless a plugin references them: under the version lock, as the sweep (a put re-writes a blob it finds gone). */
  async #dropBlobs(ids: string[]): Promise<void> {
    await this.#transaction(async (client) => {
      await client.query('SELECT version FROM wasmhost_state FOR UPDATE');
      await client.query(
        'DELETE FROM wasmhost_blobs b WHERE b.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM wasmhost_plugins p WHERE p.id = b.id)',
        [ids],
      );
    });
  }

  /** A re-upload of stored bytes rewrites them if the database's copy was damaged meanwhile. */
  async #repairBlob(client: pg.PoolClient, id: string, blob: Buffer): Promise<boolean> {
    const { rows } = await client.query<{ intact: boolean }>(
      "SELECT sha256(bytes) = decode(id, 'hex') AS intact FROM wasmhost_blobs WHERE id = $1",
      [id],
    );
    if (rows[0]?.intact) return false;
    if (pluginIdOf(blob) !== id) throw new Error(`store: the bytes given for plugin ${id} do not hash to it`);
    await client.query('UPDATE wasmhost_blobs SET bytes = $2 WHERE id = $1', [id, blob]);
    this.#cache.drop(id);
    this.#plugins.damaged.delete(id);
    this.#log.warn({ plugin: id }, 'store: damaged stored bytes were rewritten from a re-upload of them');
    return true;
  }

  async get(idOrName: string): Promise<PluginMeta | null> {
    const known = this.#plugins.resolve(idOrName);
    if (known) return known.meta;
    // Not here yet (uploaded through another replica a moment ago) or not stored: ask the database.
    const byId = ID_PATTERN.test(idOrName);
    const { rows } = await this.#db('get', () =>
      this.#pool.query<PluginRow>(`SELECT ${COLUMNS} FROM wasmhost_plugins WHERE ${byId ? 'id' : 'name'} = $1`, [idOrName]),
    );
    return rows[0] ? toEntry(rows[0]).meta : null;
  }

  async getBytes(id: string): Promise<Uint8Array | null> {
    if (!this.#plugins.has(id) && (await this.get(id)) === null) return null;
    return (await this.#cache.read(id)) ?? (await this.#fetchBytes(id));
  }

  /** The bytes from the database, checked against the id and kept in the local cache. Concurrent asks share one fetch. */
  #fetchBytes(id: string): Promise<Buffer | null> {
    let pending = this.#fetching.get(id);
    if (!pending) {
      pending = this.#fetchBytesOnce(id).finally(() => this.#fetching.delete(id));
      this.#fetching.set(id, pending);
    }
    return pending;
  }

  async #fetchBytesOnce(id: string): Promise<Buffer | null> {
    const { rows } = await this.#db('get_bytes', () =>
      this.#pool.query<{ bytes: Buffer }>(
        'SELECT b.bytes FROM wasmhost_blobs b JOIN wasmhost_plugins p ON p.id = b.id WHERE b.id = $1',
        [id],
      ),
    );
    const bytes = rows[0]?.bytes;
    if (!bytes) return null;
    const actual = pluginIdOf(bytes);
    if (actual !== id) throw this.#damaged(id, actual);
    await this.#cache.write(id, bytes);
    return bytes;
  }

  #damaged(id: string, actualSha256: string): StoredBytesCorruptError {
    this.#plugins.damaged.add(id);
    this.#log.error({ plugin: id, actualSha256 }, 'store: the stored bytes of a plugin are damaged');
    return new StoredBytesCorruptError(id, actualSha256);
  }

  async openBytesStream(id: string): Promise<BytesStream | null> {
    if (!this.#plugins.has(id) && (await this.get(id)) === null) return null;
    let file = await this.#cache.openFile(id);
    if (!file) {
      const bytes = await this.#fetchBytes(id);
      if (!bytes) return null;
      file = await this.#cache.openFile(id);
      // No disk cache (off, full or read-only): stream from memory.
      if (!file) return { stream: Readable.from(chunksOf(bytes)), size: bytes.length };
    }
    const { handle, size } = file;
    try {
      const verified = verifyingStream(id, () => {
        // The local copy went bad after it was checked; the next read fetches it again.
        this.#cache.drop(id);
        return new StoredBytesCorruptError(id, null);
      });
      pipeline(handle.createReadStream(), verified, () => {});
      return { stream: verified, size };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async list(query: ListQuery): Promise<ListPage> {
    const below = query.cursor === undefined ? null : decodeCursor(query.cursor);
    const { rows } = await this.#db('list', () =>
      this.#pool.query<PluginRow>(
        `SELECT ${COLUMNS} FROM wasmhost_plugins
          WHERE ($1::bigint IS NULL OR seq < $1) AND ($2::text IS NULL OR name = $2)
          ORDER BY seq DESC LIMIT $3`,
        [below, query.name ?? null, query.limit + 1],
      ),
    );
    return pageOf(rows.map(toEntry), query.limit);
  }

  known(): PluginRef[] {
    return this.#plugins.known();
  }

  onDelete(listener: (id: string) => void): void {
    this.#plugins.onDelete(listener);
  }

  async delete(idOrName: string): Promise<PluginMeta | null> {
    const byId = ID_PATTERN.test(idOrName);
    const outcome = await this.#db('delete', () =>
      this.#transaction(async (client) => {
        const version = await this.#nextVersion(client);
        const target = byId
          ? idOrName
          : (await client.query<{ id: string }>('SELECT id FROM wasmhost_plugins WHERE name = $1', [idOrName])).rows[0]?.id;
        if (target !== undefined) {
          // Under the lock no manifest can be stored meanwhile.
          const referrers = await client.query<{ id: string }>(
            `SELECT id FROM wasmhost_plugins WHERE record->'manifest'->'modules' @> $1::jsonb ORDER BY seq`,
            [JSON.stringify([{ id: target }])],
          );
          if (referrers.rows.length > 0)
            throw new PluginInUseError(
              target,
              referrers.rows.map((r) => r.id),
            );
        }
        const { rows } = await client.query<PluginRow>(
          `DELETE FROM wasmhost_plugins WHERE ${byId ? 'id' : 'name'} = $1 RETURNING ${COLUMNS}`,
          [idOrName],
        );
        const deleted = rows[0];
        if (!deleted) return new NoChange(null);
        await client.query('DELETE FROM wasmhost_blobs WHERE id = $1', [deleted.id]);
        return { meta: toEntry(deleted).meta, committed: await this.#publish(client, version, [deleted.id]) };
      }),
    );
    if (!outcome) return null;
    await this.#applyCommitted(outcome.committed);
    return outcome.meta;
  }

  async check(): Promise<void> {
    await this.#db('check', async () => {
      const probe = (this.#probe ??= this.#connectProbe());
      try {
        await (await probe).query('SELECT 1');
      } catch (err) {
        if (this.#probe === probe) this.#probe = null;
        void probe.then((client) => client.end()).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Readiness asks on a connection of its own, made on the first check and again after one fails: a
   * pool busy with client work is not a database that is down, and a probe must not queue behind it.
   */
  async #connectProbe(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.#opts.url,
      connectionTimeoutMillis: this.#opts.connectTimeoutMs,
      statement_timeout: this.#opts.statementTimeoutMs,
      query_timeout: this.#opts.statementTimeoutMs + 1_000,
      keepAlive: true,
      application_name: 'wasmhost-ready',
    });
    // Heard, or a dropped connection would end the process; the next query on it fails and replaces it.
    client.on('error', (err) => this.#log.debug({ err }, 'store: the readiness connection failed'));
    await client.connect();
    return client;
  }

  stats(): StoreStats {
    return this.#plugins.stats();
  }

  health(): StoreHealth {
    return {
      up: this.#up,
      listening: this.#listener !== null,
      poolTotal: this.#pool.totalCount,
      poolIdle: this.#pool.idleCount,
      poolWaiting: this.#pool.waitingCount,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    if (this.#listenTimer) clearTimeout(this.#listenTimer);
    const listener = this.#listener;
    this.#listener = null;
    await listener?.end().catch(() => undefined);
    const probe = this.#probe;
    this.#probe = null;
    await probe?.then((client) => client.end()).catch(() => undefined);
    await this.#mirrorQueue;
    await this.#pool.end();
  }
}

/** The bytes as a Buffer without a copy (what pg sends as bytea). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function* chunksOf(bytes: Buffer): Generator<Buffer> {
  for (let at = 0; at < bytes.length; at += DOWNLOAD_CHUNK_BYTES) yield bytes.subarray(at, at + DOWNLOAD_CHUNK_BYTES);
}
