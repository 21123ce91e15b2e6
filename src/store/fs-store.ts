// Filesystem PluginStore: blobs/<id>.wasm + meta/<id>.json under the data dir, each written atomically
// (temp file, fsync, rename, fsync dir). A plugin is visible once its meta file exists, so the blob is
// always written first and removed last. The whole index lives in memory: get/list never touch disk.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { TEMP_PREFIX, fsyncDir, removeTempFiles, unlinkIfPresent, verifyingStream, writeAtomic } from './blob-files.ts';
import {
  freezeMeta,
  ID_PATTERN,
  manifestModuleMissing,
  PluginInUseError,
  pluginIdOf,
  StoredBytesCorruptError,
  type BytesStream,
  type ListPage,
  type ListQuery,
  type NewPlugin,
  type PluginRef,
  type PluginMeta,
  type PluginStore,
  type PutResult,
  type StoreStats,
} from './store.ts';
import { AppError } from '../errors.ts';
import { decodeCursor, pageOf } from './cursor.ts';
import { PluginIndex } from './plugin-index.ts';

/** Errors of open/read that say the process is short of a resource (descriptors, memory), not that the file is bad. */
const TRANSIENT_READ_ERRORS = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'ENOMEM', 'EINTR', 'EBUSY']);
const TRANSIENT_RETRY_AFTER_MS = 1_000;

/** What a meta file holds: the public record plus the order facts that survive a restart. */
interface MetaFile {
  version: 1;
  /** Upload order (newest first in list()). */
  seq: number;
  /** When the current name was given; on a conflict after a crash the higher one keeps the name. */
  nameSeq: number;
  plugin: PluginMeta;
}

interface Entry {
  meta: PluginMeta;
  seq: number;
  nameSeq: number;
}

export interface FsStoreLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export class FsPluginStore implements PluginStore {
  readonly #blobDir: string;
  readonly #metaDir: string;
  readonly #dataDir: string;
  readonly #log: FsStoreLogger;
  readonly #plugins = new PluginIndex<Entry>();
  #nextSeq = 1;
  /** Mutations run one at a time; reads never wait. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dataDir: string, log: FsStoreLogger) {
    this.#dataDir = dataDir;
    this.#blobDir = path.join(dataDir, 'blobs');
    this.#metaDir = path.join(dataDir, 'meta');
    this.#log = log;
  }

  /** Creates the directories, removes leftovers of interrupted writes and loads the index. */
  static async open(dataDir: string, log: FsStoreLogger = { warn: () => {}, error: () => {} }): Promise<FsPluginStore> {
    const store = new FsPluginStore(dataDir, log);
    await store.#load();
    return store;
  }

  async #load(): Promise<void> {
    await mkdir(this.#blobDir, { recursive: true });
    await mkdir(this.#metaDir, { recursive: true });
    await removeTempFiles(this.#dataDir);
    await removeTempFiles(this.#blobDir);
    await removeTempFiles(this.#metaDir);

    const blobs = new Set((await readdir(this.#blobDir)).filter((f) => f.endsWith('.wasm')).map((f) => f.slice(0, -5)));
    const entries: Entry[] = [];
    for (const file of await readdir(this.#metaDir)) {
      if (!file.endsWith('.json')) continue;
      const id = file.slice(0, -5);
      let parsed: MetaFile;
      try {
        parsed = JSON.parse(await readFile(path.join(this.#metaDir, file), 'utf8')) as MetaFile;
      } catch (err) {
        this.#log.warn({ file, err }, 'store: unreadable metadata file skipped');
        continue;
      }
      if (parsed.version !== 1 || parsed.plugin?.id !== id || !ID_PATTERN.test(id)) {
        this.#log.warn({ file }, 'store: metadata file with unexpected content skipped');
        continue;
      }
      // Still stored: a call or a download answers STORE_ERROR until the same bytes are uploaded again.
      if (!blobs.has(id)) {
        this.#log.error({ plugin: id }, 'store: a stored plugin has lost its Wasm blob');
        this.#plugins.damaged.add(id);
      }
      entries.push({ meta: freezeMeta(parsed.plugin), seq: parsed.seq, nameSeq: parsed.nameSeq });
      blobs.delete(id);
    }
    // Blobs nobody acknowledged: an upload that crashed before its metadata, or a delete cut short.
    for (const id of blobs) await unlinkIfPresent(this.#blobPath(id));

    // A crash while a name moved can leave it on two plugins; the later assignment wins.
    entries.sort((a, b) => a.nameSeq - b.nameSeq);
    for (const entry of entries) {
      this.#plugins.set(entry);
      this.#nextSeq = Math.max(this.#nextSeq, entry.seq + 1, entry.nameSeq + 1);
    }
    // Persist the losers of name conflicts so the next start reads a consistent state.
    for (const entry of entries) {
      const current = this.#plugins.get(entry.meta.id)!;
      if (current.meta.name !== entry.meta.name) await this.#writeMeta(current);
    }
  }

  #blobPath(id: string): string {
    return path.join(this.#blobDir, `${id}.wasm`);
  }

  #metaPath(id: string): string {
    return path.join(this.#metaDir, `${id}.json`);
  }

  async #writeMeta(entry: Entry): Promise<void> {
    const file: MetaFile = { version: 1, seq: entry.seq, nameSeq: entry.nameSeq, plugin: entry.meta };
    await writeAtomic(this.#metaPath(entry.meta.id), JSON.stringify(file));
  }

  #serialize<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Gives `name` to `target`, taking it from whoever held it. Target's new record is written first: that
   * write is the commit point. The previous holder's rewrite after it is tidying only (a start resolves
   * a name on two records to the later assignment), so its failure is logged, not thrown.
   */
  async #assignName(target: Entry, name: string): Promise<Entry> {
    const holderId = this.#plugins.holderOf(name);
    const updated: Entry = { ...target, meta: freezeMeta({ ...target.meta, name }), nameSeq: this.#nextSeq++ };
    await this.#writeMeta(updated);
    // The holder's record here loses the name with it.
    this.#plugins.set(updated);
    if (holderId !== undefined && holderId !== target.meta.id) {
      const freed = this.#plugins.get(holderId)!;
      try {
        await this.#writeMeta(freed);
      } catch (err) {
        this.#log.warn(
          { err, plugin: holderId, name },
          "store: the name moved, but its previous holder's record still carries it on disk (resolved at the next start)",
        );
      }
    }
    return updated;
  }

  put(plugin: NewPlugin): Promise<PutResult> {
    return this.#serialize(async () => {
      const { meta } = plugin;
      for (const p of [plugin, ...(plugin.modules ?? [])])
        if (!ID_PATTERN.test(p.meta.id)) throw new Error(`store: invalid plugin id ${p.meta.id}`);
      // Mutations run one at a time: a module found here cannot be deleted before the manifest is
      // stored, and one added here and removed on a failure is never removed from under another
      // upload of the same bytes (it waits, then finds the module stored or not).
      const added: string[] = [];
      try {
        for (const module of plugin.modules ?? []) if ((await this.#putOne(module)).created) added.push(module.meta.id);
        for (const module of meta.manifest?.modules ?? []) {
          const stored = this.#plugins.get(module.id);
          if (!stored || stored.meta.manifest) throw manifestModuleMissing(module.id);
        }
        return await this.#putOne(plugin);
      } catch (err) {
        // Not acknowledged: the modules this put added go again (a crash before this leaves them stored).
        for (const id of added.reverse()) await this.#remove(id).catch(() => undefined);
        throw err;
      }
    });
  }

  /** put() of one plugin, in the mutation queue. */
  async #putOne({ bytes, meta }: NewPlugin): Promise<PutResult> {
    const existing = this.#plugins.get(meta.id);
    if (existing) {
      await this.#repairBlob(meta.id, bytes);
      if (meta.name === null || meta.name === existing.meta.name) return { meta: existing.meta, created: false };
      const renamed = await this.#assignName(existing, meta.name);
      return { meta: renamed.meta, created: false };
    }

    await writeAtomic(this.#blobPath(meta.id), bytes);
    const entry: Entry = { meta: freezeMeta({ ...meta, name: null }), seq: this.#nextSeq++, nameSeq: 0 };
    try {
      if (meta.name === null) {
        await this.#writeMeta(entry);
        this.#plugins.set(entry);
        return { meta: entry.meta, created: true };
      }
      const named = await this.#assignName(entry, meta.name);
      return { meta: named.meta, created: true };
    } catch (err) {
      // Not acknowledged: leave nothing behind (a blob without metadata is invisible anyway).
      if (!this.#plugins.has(meta.id)) await unlinkIfPresent(this.#blobPath(meta.id)).catch(() => undefined);
      throw err;
    }
  }

  /** A re-upload of stored bytes rewrites the blob if the copy on disk was damaged (or lost) meanwhile. */
  async #repairBlob(id: string, bytes: Uint8Array): Promise<void> {
    const onDisk = await readFile(this.#blobPath(id)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (onDisk !== null && pluginIdOf(onDisk) === id) {
      this.#plugins.damaged.delete(id);
      return;
    }
    if (pluginIdOf(bytes) !== id) throw new Error(`store: the bytes given for plugin ${id} do not hash to it`);
    await writeAtomic(this.#blobPath(id), bytes);
    this.#plugins.damaged.delete(id);
    this.#log.warn({ plugin: id }, 'store: a damaged stored blob was rewritten from a re-upload of its bytes');
  }

  async get(idOrName: string): Promise<PluginMeta | null> {
    return this.#plugins.resolve(idOrName)?.meta ?? null;
  }

  async getBytes(id: string): Promise<Uint8Array | null> {
    if (!this.#plugins.has(id)) return null;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.#blobPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.#lost(id);
      throw this.#unreadableNow(id, err) ?? this.#unreadable(id, err);
    }
    // Content addressing makes damage on disk detectable; compiling damaged bytes would blame the plugin.
    const actual = pluginIdOf(bytes);
    if (actual !== id) throw this.#damaged(id, actual);
    return bytes;
  }

  async openBytesStream(id: string): Promise<BytesStream | null> {
    if (!this.#plugins.has(id)) return null;
    let handle;
    try {
      handle = await open(this.#blobPath(id), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.#lost(id);
      throw this.#unreadableNow(id, err) ?? this.#unreadable(id, err);
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw this.#unreadable(id, new Error('not a regular file'));
      const { size } = stats;
      // A file of the wrong size is damaged: refused before the first byte (an emptied blob would
      // otherwise go out as a complete, empty body under the id's ETag).
      const expected = this.#plugins.get(id)?.meta.size;
      if (expected !== undefined && size !== expected) throw this.#damaged(id, pluginIdOf(await handle.readFile()));
      // The open descriptor keeps the file readable after a delete unlinks it; the stream closes it.
      const file = handle.createReadStream();
      const verified = verifyingStream(id, (actual) => this.#damaged(id, actual));
      pipeline(file, verified, () => {});
      return { stream: verified, size };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** No blob: deleted meanwhile (the index drops a plugin before its blob), or lost while still stored. */
  #lost(id: string): null {
    if (this.#plugins.has(id)) throw this.#damaged(id, null);
    return null;
  }

  /**
   * The process is out of descriptors or memory: nothing is wrong with the blob, and a retry may
   * succeed (STORE_UNAVAILABLE, 503). Null for any other error.
   */
  #unreadableNow(id: string, err: unknown): AppError | null {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined || !TRANSIENT_READ_ERRORS.has(code)) return null;
    this.#log.warn({ plugin: id, err }, 'store: the stored bytes of a plugin cannot be read now (out of resources)');
    return new AppError('STORE_UNAVAILABLE', `the stored bytes of plugin ${id} cannot be read now (${code}); retry later`, {
      retryAfterMs: TRANSIENT_RETRY_AFTER_MS,
      cause: err,
    });
  }

  /** The blob is there but cannot be read (permissions, I/O error, something else in its place). */
  #unreadable(id: string, err: unknown): AppError {
    this.#plugins.damaged.add(id);
    this.#log.error({ plugin: id, err, file: this.#blobPath(id) }, 'store: the stored bytes of a plugin cannot be read');
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return new AppError(
      'STORE_ERROR',
      `the stored bytes of plugin ${id} cannot be read (${reason}); upload the same bytes again to repair it`,
      {
        cause: err,
      },
    );
  }

  #damaged(id: string, actualSha256: string | null): StoredBytesCorruptError {
    if (this.#plugins.has(id)) this.#plugins.damaged.add(id);
    this.#log.error({ plugin: id, actualSha256, file: this.#blobPath(id) }, 'store: the stored bytes of a plugin are damaged');
    return new StoredBytesCorruptError(id, actualSha256);
  }

  async list(query: ListQuery): Promise<ListPage> {
    const below = query.cursor === undefined ? Infinity : decodeCursor(query.cursor);
    let entries = [...this.#plugins.entries()].filter((e) => e.seq < below);
    if (query.name !== undefined) entries = entries.filter((e) => e.meta.name === query.name);
    entries.sort((a, b) => b.seq - a.seq);
    return pageOf(entries, query.limit);
  }

  known(): PluginRef[] {
    return this.#plugins.known();
  }

  onDelete(listener: (id: string) => void): void {
    this.#plugins.onDelete(listener);
  }

  delete(idOrName: string): Promise<PluginMeta | null> {
    return this.#serialize(async () => {
      const entry = this.#plugins.resolve(idOrName);
      if (!entry) return null;
      const { id } = entry.meta;
      const referrers = [...this.#plugins.entries()]
        .filter((e) => e.meta.manifest?.modules.some((m) => m.id === id))
        .map((e) => e.meta.id);
      if (referrers.length > 0) throw new PluginInUseError(id, referrers);
      await this.#remove(id);
      return entry.meta;
    });
  }

  /** Deletes a stored plugin, in the mutation queue. */
  async #remove(id: string): Promise<void> {
    // Removing the meta file is the commit point; the blob goes after (an orphan is cleaned at start).
    await unlinkIfPresent(this.#metaPath(id));
    await fsyncDir(this.#metaDir);
    this.#plugins.drop(id);
    await unlinkIfPresent(this.#blobPath(id));
    this.#plugins.notifyDeleted(id);
  }

  async check(): Promise<void> {
    const probe = path.join(this.#dataDir, `${TEMP_PREFIX}probe-${randomBytes(6).toString('hex')}`);
    const content = randomBytes(16);
    try {
      await writeAtomic(probe, content);
      const back = await readFile(probe);
      if (!back.equals(content)) throw new Error('store check: probe file read back differs');
    } finally {
      await unlinkIfPresent(probe).catch(() => undefined);
    }
  }

  stats(): StoreStats {
    return this.#plugins.stats();
  }

  health(): null {
    return null;
  }

  async close(): Promise<void> {
    await this.#queue;
  }
}
