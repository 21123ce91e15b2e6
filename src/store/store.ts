// What the rest of the service knows about stored plugins. Backends: fs-store.ts (embedded default).
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AppError } from '../errors.ts';

/** A plugin id: the lowercase hex sha256 of its bytes (names never look like one). */
export const ID_PATTERN = /^[0-9a-f]{64}$/;

/** The id of these bytes (content addressing). */
export function pluginIdOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export interface PluginImport {
  module: string;
  name: string;
}

export interface PluginMeta {
  /** Lowercase hex sha256 of the Wasm bytes: content-addressed and immutable. */
  id: string;
  /** Movable alias pointing at the newest upload that carried it. */
  name: string | null;
  description: string;
  size: number;
  /** ISO 8601. */
  createdAt: string;
  /** Exported function names (what a caller may call). */
  exports: string[];
  imports: PluginImport[];
  /** Imports wasi_snapshot_preview1: WASI is enabled for its calls. */
  wasi: boolean;
  /** Defaults merged under each call's config. */
  config: Record<string, string>;
  /** Default egress allow-list when a call gives none. */
  allowedHosts: string[];
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

export interface PluginStore {
  /** Stores bytes + metadata atomically; with bytes already stored, applies a new name only (and repairs a damaged blob). */
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
  /** Newest first. */
  list(filter?: { name?: string }): Promise<PluginMeta[]>;
  /** Deletes what an id or name points at (and that name). Returns the deleted record. */
  delete(idOrName: string): Promise<PluginMeta | null>;
  /** Readiness: throws when the store cannot be read or written. */
  check(): Promise<void>;
  stats(): { plugins: number; bytes: number };
}
