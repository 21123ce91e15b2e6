// What the rest of the service knows about stored plugins. Backends: fs-store.ts (the embedded
// default) and pg/pg-store.ts (PostgreSQL, shared by replicas).
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AppError } from '../errors.ts';
import type { PluginMeta } from './plugin-record.ts';

export { ID_PATTERN, type PluginImport, type PluginMeta } from './plugin-record.ts';

/** The id of these bytes (content addressing). */
export function pluginIdOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The stored module a call runs: a manifest's main module, else the plugin itself. */
export function mainModuleId(meta: Pick<PluginMeta, 'id' | 'manifest'>): string {
  return meta.manifest?.main ?? meta.id;
}

/** A delete refused: stored manifests run this module. */
export class PluginInUseError extends AppError {
  constructor(id: string, referrers: string[]) {
    super(
      'PLUGIN_IN_USE',
      `plugin ${id} is a module of ${referrers.length === 1 ? 'a stored manifest' : `${referrers.length} stored manifests`} ` +
        `(${referrers.slice(0, 10).join(', ')}${referrers.length > 10 ? ', …' : ''}): delete ${referrers.length === 1 ? 'it' : 'them'} first`,
      { details: { referrers } },
    );
  }
}

/** A manifest put refused: a module it names is not stored (deleted meanwhile), or is a manifest itself. */
export function manifestModuleMissing(id: string): AppError {
  return new AppError('INVALID_MANIFEST', `invalid manifest: no stored module with sha256 ${id}`, { details: { hash: id } });
}

/** Records are shared with every reader (the engine holds them per call): an immutable copy. */
export function freezeMeta(meta: PluginMeta): PluginMeta {
  return Object.freeze({
    ...meta,
    exports: Object.freeze([...meta.exports]),
    imports: Object.freeze(meta.imports.map((imp) => Object.freeze({ module: imp.module, name: imp.name }))),
    config: Object.freeze({ ...meta.config }),
    allowedHosts: Object.freeze([...meta.allowedHosts]),
    ...(meta.manifest
      ? {
          manifest: Object.freeze({
            modules: Object.freeze(meta.manifest.modules.map((m) => Object.freeze({ id: m.id, name: m.name }))),
            main: meta.manifest.main,
            limits: Object.freeze({ ...meta.manifest.limits }),
          }),
        }
      : {}),
  }) as PluginMeta;
}

/**
 * Stored bytes that no longer hash to their id, or are gone: damaged on disk, never served as the
 * plugin. A STORE_ERROR wherever it surfaces (a call, a download).
 */
export class StoredBytesCorruptError extends AppError {
  readonly id: string;
  /** null: the blob is missing while the plugin is still stored. */
  readonly actualSha256: string | null;

  constructor(id: string, actualSha256: string | null) {
    const what = actualSha256 === null ? 'are missing' : `are damaged (their sha256 is ${actualSha256})`;
    super('STORE_ERROR', `the stored bytes of plugin ${id} ${what}; upload the same bytes again to repair it`);
    this.name = 'StoredBytesCorruptError';
    this.id = id;
    this.actualSha256 = actualSha256;
  }
}

export interface NewPlugin {
  bytes: Uint8Array;
  meta: PluginMeta;
  /**
   * A manifest's: the modules its upload brings, each a plugin of its own, stored in the same commit
   * as the manifest (a failed put leaves none of them; those already stored are kept as they are).
   */
  modules?: NewPlugin[];
}

export interface PutResult {
  meta: PluginMeta;
  /** False when the same bytes were already stored (idempotent upload). */
  created: boolean;
}

export interface BytesStream {
  stream: Readable;
  size: number;
}

/** One page of GET /plugins: newest first; `cursor` continues after the last plugin of the previous page. */
export interface ListQuery {
  name?: string | undefined;
  /** Plugins per page (1 or more; the api caps it). */
  limit: number;
  /** An opaque cursor from an earlier page's `nextCursor`. */
  cursor?: string | undefined;
}

export interface ListPage {
  plugins: PluginMeta[];
  /** Null on the last page. */
  nextCursor: string | null;
}

/** What a replica knows of a plugin without asking anyone (metrics labels). */
export type PluginRef = Pick<PluginMeta, 'id' | 'name'>;

/** Store work timed for metrics (a closed set: bounded labels). */
export type StoreOperation = 'get' | 'get_bytes' | 'list' | 'put' | 'delete' | 'sync' | 'poll' | 'check' | 'migrate';
/** busy: refused without reaching the database, every pooled connection in use (overload, not an outage). */
export type StoreOutcome = 'ok' | 'unavailable' | 'busy' | 'error';
/** What made a replica apply another replica's change: a notification, the fallback poll, or a (re)connect. */
export type ChangeSource = 'notify' | 'poll' | 'reconnect';

export interface StoreObserver {
  onQuery?(operation: StoreOperation, outcome: StoreOutcome, seconds: number): void;
  /** A change committed elsewhere reached this replica `lagSeconds` after its commit. */
  onChangeApplied?(source: ChangeSource, lagSeconds: number): void;
}

/** A shared backend's connection state (null for the filesystem store). */
export interface StoreHealth {
  /** The last statement reached the database. */
  up: boolean;
  /** The change listener is connected (without it, changes arrive by the fallback poll). */
  listening: boolean;
  poolTotal: number;
  poolIdle: number;
  poolWaiting: number;
}

export interface StoreStats {
  plugins: number;
  /** Wasm bytes of those plugins. */
  bytes: number;
  /** Plugins whose stored bytes were found missing or damaged (at start or on a read) and not repaired since. */
  damaged: number;
}

export interface PluginStore {
  /**
   * Stores bytes + metadata atomically, a manifest together with the modules it brings; with bytes
   * already stored, applies a new name only (and repairs a damaged blob).
   */
  put(plugin: NewPlugin): Promise<PutResult>;
  /** Resolves an id or a name. */
  get(idOrName: string): Promise<PluginMeta | null>;
  /** The whole module in memory (the engine compiles it), checked against its id (StoredBytesCorruptError). */
  getBytes(id: string): Promise<Uint8Array | null>;
  /**
   * The module as a stream (downloads: memory stays flat whatever the size or the number of readers).
   * Once opened it reads to the end even if the plugin is deleted meanwhile; null when not stored.
   */
  openBytesStream(id: string): Promise<BytesStream | null>;
  /**
   * Newest first, a page at a time. Pages are stable under concurrent uploads: a cursor continues
   * below the last upload it saw, so each plugin stored before the first page shows up exactly once.
   * An invalid cursor is an INVALID_REQUEST AppError.
   */
  list(query: ListQuery): Promise<ListPage>;
  /** Every plugin this process knows of, from memory (a replica's view may lag by the invalidation bound). */
  known(): PluginRef[];
  /** Tells `listener` the id of every plugin deleted, here or (PostgreSQL) by another replica. */
  onDelete(listener: (id: string) => void): void;
  /** Deletes what an id or name points at (and that name). Returns the deleted record. */
  delete(idOrName: string): Promise<PluginMeta | null>;
  /** Readiness: throws when the store cannot be read or written. */
  check(): Promise<void>;
  stats(): StoreStats;
  health(): StoreHealth | null;
  /** Stops background work and closes connections. */
  close(): Promise<void>;
}
