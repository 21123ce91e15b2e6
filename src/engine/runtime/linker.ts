// A manifest's linked modules, instantiated together for one call, as @extism/extism links them
// (foreground-plugin.ts, instantiateModule): from the main module, depth first in import order, each
// module named by an import is instantiated on first need and its export satisfies the import; a
// function imported from a module still being instantiated (a cycle) goes through a trampoline that
// finds the export on its first call. Only modules reachable from the main one are instantiated.
// Every module has its own memory (the engine creates it: compile/wasm-rewrite.ts), unless it imports
// one from a linked module (a shared memory), and its own WASI when it imports WASI.
//
// Isolation, as for one module (instance.ts): once every module has started, each memory (a shared one
// once) and every module's mutable globals are snapshotted, and after each call restored (the chunks
// the call marked dirty, in the one dirty map of the set: every memory is restored where any module
// wrote, a superset of its own writes), so each call starts
// where a fresh set of instances would. Tables are not snapshotted: a call that may have written one,
// a module with passive segments or without dirty tracking, or a memory grown far past its snapshot,
// makes the worker drop the set and instantiate a new one for the next call (reset() answers false).
// Memory cap: the call's memoryMaxPages counts every module's memory together, start-up included. The
// grow shims draw on one budget of pages, kept in the set's dirty map (compile/wasm-rewrite.ts): it
// starts at the cap, loses each memory's initial pages as the memory is created and every page a shim
// adds, and is set again before each call to the cap minus all memories' pages. So no module can grow
// into pages another holds. A memory that a module without the grow shim grows (its own, or one it
// imports) grows natively, which nothing counts: its maximum is what the budget has left when it is
// created, taken from it at once. Such a set is made for one cap and dropped after every call.
import { CallFailure } from './call-failure.ts';
import { DIRTY_CHUNK, DirtyPageMap } from './dirty-pages.ts';
import { createExtismEnv, EXTISM_ENV, type CallState, type HostSlot } from './host-env.ts';
import { INSTANCE_OVERHEAD_BYTES, MemorySnapshot, rebuildAbovePages, TABLE_ELEMENT_BYTES, type ModuleShape } from './instance.ts';
import { pluginExport, runExport, startModule, startupState, type PluginExport } from './startup.ts';
import { createWasi, WASI_PREVIEW1 } from './wasi.ts';
import {
  DIRTY_MAP_IMPORT,
  GLOBAL_EXPORT_PREFIX,
  HOST_MODULE,
  MEMORY_IMPORT,
  TABLE_EXPORT_PREFIX,
} from '../compile/wasm-rewrite.ts';
import { MAIN_MODULE_NAME } from '../compile/link-check.ts';

const PAGE = 65536;

export interface LinkedModuleShape {
  /** The stored module's id. */
  id: string;
  /** The name other modules import it by (null: none can). */
  name: string | null;
  shape: ModuleShape;
}

/** What a worker keeps for a linked manifest: its modules, the main one at `main`. */
export interface LinkedShapes {
  modules: LinkedModuleShape[];
  main: number;
}

/** A linear memory of the set (a shared one once) and its snapshot. */
interface LinkedMemory {
  memory: WebAssembly.Memory;
  /** Its maximum when a module without the grow shim grows it (natively, uncounted: all of it is held from the budget), else null. */
  nativeMaxPages: number | null;
  /** Pages data segments write (null: unknown, look at every page for the snapshot). */
  dataPages: number[] | null;
  snapshot: MemorySnapshot | null;
}

interface Member {
  shape: ModuleShape;
  instance: WebAssembly.Instance;
  memory: LinkedMemory;
  /** Every mutable global (the engine's included) and its value after start-up. */
  globals: { global: WebAssembly.Global; value: unknown }[];
}

/** A linked manifest's instances (see above), recycled across calls while reset() says they can be. */
export class LinkedPlugin {
  /** The main module's. */
  readonly shape: ModuleShape;
  readonly #set: LinkedShapes;
  readonly #byName = new Map<string, number>();
  readonly #slot: HostSlot = { call: null };
  /** The modules instantiated so far; null while one is being instantiated (its imports are resolving). */
  readonly #linked = new Map<number, Member | null>();
  readonly #env: WebAssembly.ModuleImports;
  /** The chunks any module wrote, in any memory, and the grow shims' shared budget (see above). */
  readonly #dirty = new DirtyPageMap();
  /** Each memory's maximum: the ceiling when every module caps its growth itself (the grow shim), else the first call's cap. */
  readonly #maxPages: number;
  /** The cap of the call running now (memoryMaxPages, over all memories). */
  #cap: number;
  readonly #exports = new Map<string, PluginExport>();
  /** Every module can be brought back to its snapshot after a call (see above). */
  readonly #recyclable: boolean;
  /** Modules whose own memory a module without the grow shim grows (itself, or one importing it): see above. */
  readonly #nativeMemories: Set<number>;

  /**
   * Instantiates and starts every module reachable from the main one, then snapshots them.
   * `ceilingPages`: CALL_MEMORY_PAGES_CEILING; `capPages`: the first call's memoryMaxPages, over all
   * modules' memories.
   */
  constructor(set: LinkedShapes, ceilingPages: number, capPages: number) {
    this.#set = set;
    this.shape = set.modules[set.main]!.shape;
    this.#cap = capPages;
    this.#dirty.growBudget = capPages;
    // MODULE_MAX_TABLE_ELEMENTS for the set as a whole: its tables start with what every module's
    // starts with, and the table-grow shims share what is left (a set whose tables may have grown is
    // dropped after the call: see reset). A module without the shims is held to its own tables' maxima.
    const tableLimit = Math.min(...set.modules.map((m) => m.shape.tableElementLimit));
    this.#dirty.tableBudget = Math.max(0, tableLimit - set.modules.reduce((n, m) => n + m.shape.initialTableElements, 0));
    this.#recyclable = set.modules.every((m) => m.shape.dirtyTracking && m.shape.virtualGrowth && !m.shape.passiveSegments);
    this.#maxPages = this.#recyclable ? ceilingPages : capPages;
    set.modules.forEach((m, i) => {
      const name = i === set.main ? MAIN_MODULE_NAME : m.name;
      if (name !== null) this.#byName.set(name, i);
    });
    this.#nativeMemories = this.#nativelyGrown();
    // One host environment for all (the SDK shares its call context between modules): with JSPI when any module does HTTP.
    const jspi = set.modules.some((m) => m.shape.jspi);
    this.#env = createExtismEnv(this.#slot, jspi) as WebAssembly.ModuleImports;
    this.#slot.call = startupState();
    try {
      this.#instantiate(set.main, [MAIN_MODULE_NAME]);
    } finally {
      this.#slot.call = null;
    }
    const main = this.#linked.get(set.main)!.instance;
    for (const [name, value] of Object.entries(main.exports)) {
      if (typeof value === 'function') this.#exports.set(name, pluginExport(value, jspi));
    }
    if (this.#recyclable) this.#snapshot();
  }

  /** Memories and globals as start-up left them. */
  #snapshot(): void {
    const memories = this.#memories();
    // Pages start-up wrote in any memory (marks are not told apart by memory).
    const written = this.#dirty.drainPages(this.#chunks(memories));
    for (const linked of memories) {
      const { memory, dataPages } = linked;
      linked.snapshot = new MemorySnapshot(Buffer.from(memory.buffer), dataPages ? [...dataPages, ...written] : null);
    }
    for (const member of this.#members()) {
      for (const g of member.globals) g.value = g.global.value;
    }
  }

  /**
   * The modules whose own memory grows natively: each module without the grow shim names the module
   * that defines its memory (following imported memories to it; the upload refused cycles of them).
   */
  #nativelyGrown(): Set<number> {
    const owners = new Set<number>();
    for (const [index, { shape }] of this.#set.modules.entries()) {
      if (shape.virtualGrowth) continue;
      let owner: number | undefined = index;
      for (let hops = 0; owner !== undefined && hops <= this.#set.modules.length; hops++) {
        const imported: ModuleShape['importedMemory'] = this.#set.modules[owner]!.shape.importedMemory;
        if (!imported) break;
        owner = this.#byName.get(imported.module);
      }
      if (owner !== undefined) owners.add(owner);
    }
    return owners;
  }

  /**
   * This set can run a call capped at `capPages`: a set whose memories grow natively was made for
   * one cap (their maxima were taken from it), so one of another cap needs a new set.
   */
  serves(capPages: number): boolean {
    return this.#recyclable || capPages === this.#maxPages;
  }

  #nameOf(index: number): string {
    return index === this.#set.main ? MAIN_MODULE_NAME : (this.#set.modules[index]!.name ?? `wasm[${index}]`);
  }

  /** The instance of module `index`, instantiated now if it is not yet; null while it is being instantiated. */
  #provider(index: number, path: string[]): Member | null {
    if (!this.#linked.has(index)) this.#instantiate(index, [...path, this.#nameOf(index)]);
    return this.#linked.get(index) ?? null;
  }

  #instantiate(index: number, path: string[]): Member {
    const { shape } = this.#set.modules[index]!;
    this.#linked.set(index, null);
    const from = `from module "${path.join('"/"')}"`;
    const imports: Record<string, Record<string, unknown>> = {};
    const add = (module: string, name: string, value: unknown) => ((imports[module] ??= {})[name] = value);

    // The memory: a linked module's (shared, with its dirty map), else its own.
    let linked: LinkedMemory;
    const shared = shape.importedMemory;
    if (shared) {
      const providerIndex = this.#byName.get(shared.module);
      const provider = providerIndex === undefined ? null : this.#provider(providerIndex, path);
      const exported = provider?.instance.exports[shared.name];
      const owner = [...this.#members()].find((m) => m.memory.memory === exported)?.memory;
      if (!(exported instanceof WebAssembly.Memory) || !owner) {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot import "${shared.module}" "${shared.name}"; no memory is exported by that name (or it is in an import cycle)`,
        );
      }
      linked = owner;
      // Its data segments write the shared memory too.
      if (owner.dataPages && shape.dataPages) owner.dataPages.push(...shape.dataPages);
      else owner.dataPages = null;
    } else {
      const budget = this.#dirty.growBudget;
      const declared = shape.declaredMaxPages ?? this.#maxPages;
      if (shape.initialPages > Math.min(budget, declared, this.#maxPages))
        throw this.#tooSmall(this.memoryPages() + shape.initialPages);
      // Grown without the grow shim, nothing counts its growth: the budget left is its maximum, taken at once.
      const native = this.#nativeMemories.has(index);
      const maximum = Math.min(declared, native ? budget : this.#maxPages);
      const memory = new WebAssembly.Memory({ initial: shape.initialPages, maximum });
      this.#dirty.growBudget = budget - (native ? maximum : shape.initialPages);
      linked = {
        memory,
        nativeMaxPages: native ? maximum : null,
        dataPages: shape.dataPages ? [...shape.dataPages] : null,
        snapshot: null,
      };
    }
    const { memory } = linked;
    const dirty = this.#dirty;
    add(HOST_MODULE, MEMORY_IMPORT, memory);
    if (shape.dirtyTracking) add(HOST_MODULE, DIRTY_MAP_IMPORT, dirty.memory);

    for (const i of WebAssembly.Module.imports(shape.module)) {
      if (i.module === HOST_MODULE) continue;
      if (i.module === EXTISM_ENV) {
        add(i.module, i.name, this.#env[i.name]);
        continue;
      }
      if (i.module === WASI_PREVIEW1) {
        imports[WASI_PREVIEW1] ??= createWasi(this.#slot, memory, (start, length) => dirty.markWritten(start, length));
        continue;
      }
      const providerIndex = this.#byName.get(i.module);
      if (providerIndex === undefined) {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot resolve import "${i.module}" "${i.name}": not provided by host imports nor linked manifest items`,
        );
      }
      const provider = this.#provider(providerIndex, path);
      if (provider) add(i.module, i.name, provider.instance.exports[i.name]);
      else if (i.kind === 'function') add(i.module, i.name, this.#trampoline(providerIndex, i.name, path));
      else {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot import "${i.module}" "${i.name}"; circular imports of type="${i.kind}" are not supported`,
        );
      }
    }

    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(shape.module, imports as WebAssembly.Imports);
    } catch (err) {
      const failure = this.#slot.call?.failure;
      if (failure instanceof CallFailure) throw new CallFailure(failure.code, `the plugin failed to start: ${failure.message}`);
      if (err instanceof CallFailure) throw err;
      throw new CallFailure('PLUGIN_ERROR', `the plugin failed to instantiate: ${from}: ${(err as Error).message}`);
    }
    const global = (name: string | null) => (name ? (instance.exports[name] as WebAssembly.Global) : null);
    // A shared memory may have grown before this module came: its grow shim starts from the memory's size.
    if (shared) {
      const pages = global(shape.memoryPagesExport);
      if (pages) pages.value = memory.buffer.byteLength / PAGE;
    }
    startModule(instance, shape.wasi, this.#slot);
    const globals = Object.entries(instance.exports)
      .filter(([name]) => name.startsWith(GLOBAL_EXPORT_PREFIX))
      .map(([, global]) => ({ global: global as WebAssembly.Global, value: undefined as unknown }));
    const member = { shape, instance, memory: linked, globals };
    this.#linked.set(index, member);
    return member;
  }

  /** A function of a module still being instantiated: looked up on its first call, as the SDK does. */
  #trampoline(index: number, name: string, path: string[]): (...args: unknown[]) => unknown {
    let target: ((...args: unknown[]) => unknown) | null = null;
    return (...args: unknown[]) => {
      if (!target) {
        const member = this.#linked.get(index);
        if (!member) {
          throw new CallFailure(
            'PLUGIN_ERROR',
            `from module instance "${path.join('"/"')}": target module "${this.#nameOf(index)}" was never instantiated`,
          );
        }
        target = member.instance.exports[name] as (...args: unknown[]) => unknown;
      }
      return target(...args);
    };
  }

  #tooSmall(pages: number): CallFailure {
    return new CallFailure(
      'MEMORY_LIMIT',
      `the plugin's modules need ${pages} pages of memory to start; the limit is ${this.#cap} pages (memoryMaxPages)`,
    );
  }

  *#members(): Iterable<Member> {
    for (const member of this.#linked.values()) if (member) yield member;
  }

  /** Chunks of the largest memory: the part of the dirty map any module may have marked. */
  #chunks(memories: LinkedMemory[]): number {
    return Math.max(0, ...memories.map((m) => m.memory.buffer.byteLength / DIRTY_CHUNK));
  }

  /** The distinct memories of the instantiated modules (a shared one once). */
  #memories(): LinkedMemory[] {
    return [...new Set([...this.#members()].map((m) => m.memory))];
  }

  hasFunction(name: string): boolean {
    return this.#exports.has(name);
  }

  /** Runs one export of the main module (see runExport); every module's memory together stays within `capPages`. */
  run(name: string, call: CallState, capPages: number): number | Promise<number> {
    const fn = this.#exports.get(name);
    if (!fn) throw new CallFailure('FUNCTION_NOT_FOUND', `the plugin has no function "${name}"`);
    this.#cap = Math.min(capPages, this.#maxPages);
    const total = this.memoryPages();
    if (total > this.#cap) throw this.#tooSmall(total);
    // What the memories do not hold, less what a memory growing natively may still take.
    const native = this.#memories().reduce(
      (n, m) => n + (m.nativeMaxPages === null ? 0 : m.nativeMaxPages - m.memory.buffer.byteLength / PAGE),
      0,
    );
    this.#dirty.growBudget = Math.max(0, this.#cap - total - native);
    const rc = runExport(fn, this.#slot, call);
    return rc instanceof Promise ? rc.then((value) => this.#withinCap(value)) : this.#withinCap(rc);
  }

  /** `rc` once the call is over, unless the memories grew past the cap together. */
  #withinCap(rc: number): number {
    const after = this.memoryPages();
    if (after > this.#cap) {
      throw new CallFailure(
        'MEMORY_LIMIT',
        `the plugin ran out of memory: its modules' memories grew to ${after} pages together; the limit is ${this.#cap} pages (memoryMaxPages)`,
      );
    }
    return rc;
  }

  get callCap(): number {
    return this.#cap;
  }

  /** Pages of a module's memory as it sees them (with the grow shim, its virtual size). */
  #pagesOf(member: Member): number {
    const pages = member.shape.memoryPagesExport;
    return pages
      ? ((member.instance.exports[pages] as WebAssembly.Global).value as number)
      : member.memory.memory.buffer.byteLength / PAGE;
  }

  /** Pages of all modules' memories together (a shared memory once, at the largest size a module sees). */
  memoryPages(): number {
    const sizes = new Map<LinkedMemory, number>();
    for (const member of this.#members())
      sizes.set(member.memory, Math.max(sizes.get(member.memory) ?? 0, this.#pagesOf(member)));
    return [...sizes.values()].reduce((n, pages) => n + pages, 0);
  }

  /**
   * Back to the snapshot after a call, in place; false when that cannot be done (see above): the
   * caller drops this set and makes a new one.
   */
  reset(): boolean {
    if (!this.#recyclable) return false;
    for (const member of this.#members()) {
      const written = member.shape.tablesWrittenExport;
      if (written && (member.instance.exports[written] as WebAssembly.Global).value !== 0) return false;
    }
    const memories = this.#memories();
    // Every module has the grow shim here (#recyclable).
    for (const { memory, snapshot } of memories)
      if (memory.buffer.byteLength / PAGE > rebuildAbovePages(snapshot!.pages, true)) return false;
    const runs: [number, number][] = [];
    this.#dirty.drain(this.#chunks(memories), (first, end) => runs.push([first * DIRTY_CHUNK, end * DIRTY_CHUNK]));
    for (const { memory, snapshot } of memories) {
      const live = Buffer.from(memory.buffer);
      for (const [start, end] of runs) if (start < live.length) snapshot!.restoreRange(live, start, Math.min(end, live.length));
    }
    for (const member of this.#members()) for (const { global, value } of member.globals) global.value = value as never;
    return true;
  }

  /** Bytes the set keeps alive: its memories and their snapshots, and an allowance per instance. */
  footprint(): { bytes: number; heapBytes: number } {
    // Tables live on the JS heap (a table shared between modules once).
    const tables = new Set<WebAssembly.Table>();
    for (const member of this.#members()) {
      for (const [name, value] of Object.entries(member.instance.exports)) {
        if (name.startsWith(TABLE_EXPORT_PREFIX)) tables.add(value as WebAssembly.Table);
      }
    }
    const tableElements = [...tables].reduce((n, t) => n + t.length, 0);
    const heapBytes = [...this.#members()].length * INSTANCE_OVERHEAD_BYTES + tableElements * TABLE_ELEMENT_BYTES;
    const memoryBytes = this.#memories().reduce((n, m) => n + m.memory.buffer.byteLength + (m.snapshot?.bytes ?? 0), 0);
    return { bytes: memoryBytes + heapBytes, heapBytes };
  }

  /** A grow shim of any module refused a memory.grow during this call. */
  growRefused(): boolean {
    for (const member of this.#linked.values()) {
      const name = member?.shape.growRefusedExport;
      if (name && (member.instance.exports[name] as WebAssembly.Global).value === 1) return true;
    }
    return false;
  }
}
