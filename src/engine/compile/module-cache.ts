// Prepared (rewritten and compiled) modules by plugin id, least recently used first out, bounded by
// the memory they take once compiled (estimated from their source size, see compiledBytes).
// The upload fills it; the engine reads it, so a stored plugin is compiled once, not once per call.
// A module it lets go is let go by the workers too (onEvict), so the bound holds for the process.
import { LRUCache } from 'lru-cache';
import { compiledBytes } from '../../config.ts';
import type { PreparedModule } from './prepare.ts';

export { compiledBytes } from '../../config.ts';

export interface ModuleCacheStats {
  entries: number;
  /** Estimated memory of the cached compiled modules (compiledBytes). */
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
  readonly #evicted: ((id: string) => void)[] = [];

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
    this.#lru =
      maxBytes > 0
        ? new LRUCache<string, PreparedModule>({
            maxSize: maxBytes,
            dispose: (_module, id, reason) => {
              if (reason !== 'set') for (const listener of this.#evicted) listener(id);
            },
          })
        : null;
  }

  /** Called with the id of every module the cache lets go (evicted or deleted, not replaced). */
  onEvict(listener: (id: string) => void): void {
    this.#evicted.push(listener);
  }

  get(id: string): PreparedModule | undefined {
    const module = this.#lru?.get(id);
    if (module) this.#hits++;
    else this.#misses++;
    return module;
  }

  /**
   * Whether modules of these Wasm sizes fit the cache together once compiled: one module, or a linked
   * manifest's (its call needs them all, and one evicting another would prepare it again on every
   * call). True with the cache disabled (MODULE_CACHE_BYTES=0), where every call prepares its modules
   * by the operator's choice.
   */
  holds(sourceBytes: readonly number[]): boolean {
    return this.#maxBytes === 0 || sourceBytes.reduce((n, bytes) => n + compiledBytes(bytes), 0) <= this.#maxBytes;
  }

  /** `sourceBytes`: size of the Wasm bytes compiled into `module`. Larger than the whole cache: not kept. */
  set(id: string, module: PreparedModule, sourceBytes: number): void {
    const size = compiledBytes(sourceBytes);
    if (!this.#lru || size > this.#maxBytes) return;
    this.#lru.set(id, module, { size });
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
