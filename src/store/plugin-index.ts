// What a store knows of its plugins in memory, whatever its backend: records by id and by name, their
// bytes together, the ones whose stored bytes were found damaged, and who hears of a delete.
import { freezeMeta, ID_PATTERN, type PluginMeta, type PluginRef, type StoreStats } from './store.ts';

export class PluginIndex<Entry extends { meta: PluginMeta }> {
  readonly #byId = new Map<string, Entry>();
  readonly #byName = new Map<string, string>();
  readonly #deleteListeners: ((id: string) => void)[] = [];
  #bytes = 0;
  /** Plugins whose stored bytes were found damaged or missing, until repaired or deleted (pg: or their row is read again). */
  readonly damaged = new Set<string>();

  get(id: string): Entry | undefined {
    return this.#byId.get(id);
  }

  has(id: string): boolean {
    return this.#byId.has(id);
  }

  resolve(idOrName: string): Entry | undefined {
    const id = ID_PATTERN.test(idOrName) ? idOrName : this.#byName.get(idOrName);
    return id === undefined ? undefined : this.#byId.get(id);
  }

  holderOf(name: string): string | undefined {
    return this.#byName.get(name);
  }

  entries(): IterableIterator<Entry> {
    return this.#byId.values();
  }

  ids(): IterableIterator<string> {
    return this.#byId.keys();
  }

  /** Adds or replaces `entry`; a name it carries is taken from the plugin that held it (whose record loses it). */
  set(entry: Entry): void {
    const { id, name } = entry.meta;
    this.#forget(id);
    this.#byId.set(id, entry);
    this.#bytes += entry.meta.size;
    if (name === null) return;
    const holder = this.#byName.get(name);
    if (holder !== undefined && holder !== id) {
      const previous = this.#byId.get(holder);
      if (previous) this.#byId.set(holder, { ...previous, meta: freezeMeta({ ...previous.meta, name: null }) });
    }
    this.#byName.set(name, id);
  }

  /** Forgets `id` and its damage without telling the delete listeners (see deleted); returns what it held. */
  drop(id: string): Entry | undefined {
    const previous = this.#forget(id);
    if (previous) this.damaged.delete(id);
    return previous;
  }

  #forget(id: string): Entry | undefined {
    const previous = this.#byId.get(id);
    if (!previous) return undefined;
    this.#byId.delete(id);
    this.#bytes -= previous.meta.size;
    const name = previous.meta.name;
    if (name !== null && this.#byName.get(name) === id) this.#byName.delete(name);
    return previous;
  }

  /** Tells the delete listeners that `id` is gone. */
  notifyDeleted(id: string): void {
    for (const listener of this.#deleteListeners) listener(id);
  }

  onDelete(listener: (id: string) => void): void {
    this.#deleteListeners.push(listener);
  }

  known(): PluginRef[] {
    return [...this.#byId.values()].map((e) => e.meta);
  }

  stats(): StoreStats {
    return { plugins: this.#byId.size, bytes: this.#bytes, damaged: this.damaged.size };
  }
}
