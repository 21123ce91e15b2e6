// Plugin bytes kept on a replica's local disk by content id. Content ids never go stale, so an entry
// is valid for as long as it hashes to its id; it is dropped when its plugin is deleted or when the
// cache is over its size (least recently used first). Damage on disk is a miss, never an error: the
// database holds the bytes.
import { mkdir, open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { pluginIdOf } from '../store.ts';
import { readIfPresent, removeTempFiles, unlinkIfPresent, writeAtomic } from '../blob-files.ts';

export interface BlobCacheLogger {
  warn(obj: object, msg: string): void;
}

export class BlobCache {
  readonly #dir: string;
  readonly #log: BlobCacheLogger;
  /** id → size of each file the cache keeps; evicting an entry removes its file. Null: caching off. */
  readonly #files: LRUCache<string, number> | null;

  private constructor(dir: string, maxBytes: number, log: BlobCacheLogger) {
    this.#dir = dir;
    this.#log = log;
    this.#files =
      maxBytes > 0
        ? new LRUCache<string, number>({
            maxSize: maxBytes,
            sizeCalculation: (size) => Math.max(1, size),
            dispose: (_size, id, reason) => {
              // 'set' replaces an entry with the same file: nothing to remove.
              if (reason !== 'set') void unlinkIfPresent(this.path(id)).catch(() => undefined);
            },
          })
        : null;
  }

  /** Removes leftovers of interrupted writes and adopts the files already there (checked when read). */
  static async open(dir: string, maxBytes: number, log: BlobCacheLogger): Promise<BlobCache> {
    const cache = new BlobCache(dir, maxBytes, log);
    if (maxBytes === 0) return cache;
    await mkdir(dir, { recursive: true });
    await removeTempFiles(dir);
    for (const file of await readdir(dir)) {
      if (!file.endsWith('.wasm')) continue;
      const size = (await stat(path.join(dir, file))).size;
      cache.#files!.set(file.slice(0, -5), size);
    }
    return cache;
  }

  path(id: string): string {
    return path.join(this.#dir, `${id}.wasm`);
  }

  get enabled(): boolean {
    return this.#files !== null;
  }

  /** The cached bytes if present and intact; damaged ones are removed (a miss). */
  async read(id: string): Promise<Buffer | null> {
    if (!this.#files?.has(id)) return null;
    this.#files.get(id); // recency
    const bytes = await readIfPresent(this.path(id));
    if (bytes !== null && pluginIdOf(bytes) === id) return bytes;
    if (bytes !== null) this.#log.warn({ plugin: id, file: this.path(id) }, 'store: a damaged cached blob was dropped');
    this.#files.delete(id);
    return null;
  }

  /** An open descriptor of the cached file (it stays readable if the entry is evicted meanwhile), or null. */
  async openFile(id: string): Promise<{ handle: Awaited<ReturnType<typeof open>>; size: number } | null> {
    if (!this.#files?.has(id)) return null;
    try {
      const handle = await open(this.path(id), 'r');
      return { handle, size: (await handle.stat()).size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.#files.delete(id);
      return null;
    }
  }

  /** Keeps bytes known to hash to `id`. A write that fails (disk full, read-only) is logged: the cache is optional. */
  async write(id: string, bytes: Uint8Array): Promise<boolean> {
    if (!this.#files || bytes.length > this.#files.maxSize) return false;
    if (this.#files.has(id)) return true;
    try {
      await writeAtomic(this.path(id), bytes, { durable: false });
    } catch (err) {
      this.#log.warn({ err, plugin: id }, 'store: a blob could not be written to the local cache');
      return false;
    }
    this.#files.set(id, bytes.length);
    return true;
  }

  drop(id: string): void {
    this.#files?.delete(id);
  }
}
