// Prepared (rewritten and compiled) modules by plugin id, least recently used first out, bounded by
// the size of the Wasm source they came from (a fair proxy for their compiled footprint).
// The upload fills it; the engine reads it, so a stored plugin is compiled once, not once per call.
import { LRUCache } from 'lru-cache';
import type { PreparedModule } from './prepare.ts';

export interface ModuleCacheStats {
  entries: number;
  /** Sum of the source sizes of the cached modules. */
  bytes: number;
  maxBytes: number;
  hits: number;
  misses: number;
}

export class ModuleCache {
  readonly #maxBytes: number;
  /** Null when the cache is disabled (MODULE_CACHE_BYTES=0). */
  readonly #lru: LRUCache<string, PreparedModule> | null;
  #hits = 0;
  #misses = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
    this.#lru = maxBytes > 0 ? new LRUCache<string, PreparedModule>({ maxSize: maxBytes }) : null;
  }

  get(id: string): PreparedModule | undefined {
    const module = this.#lru?.get(id);
    if (module) this.#hits++;
    else this.#misses++;
    return module;
  }

  /** `sourceBytes`: size of the Wasm bytes compiled into `module`. Larger than the whole cache: not kept. */
  set(id: string, module: PreparedModule, sourceBytes: number): void {
    if (!this.#lru || sourceBytes > this.#maxBytes) return;
    this.#lru.set(id, module, { size: Math.max(1, sourceBytes) });
  }

  delete(id: string): void {
    this.#lru?.delete(id);
  }

  stats(): ModuleCacheStats {
    return {
      entries: this.#lru?.size ?? 0,
      bytes: this.#lru?.calculatedSize ?? 0,
      maxBytes: this.#maxBytes,
      hits: this.#hits,
      misses: this.#misses,
    };
  }
}
