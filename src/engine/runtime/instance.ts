// One instantiated plugin that is recycled across calls: state is snapshotted once, right after
// instantiation and start-up, and restored after every call (linear memory, every mutable global,
// every table), so each call starts exactly where a fresh instance would. Pages above the snapshot
// are zeroed; past a threshold the instance is rebuilt (memory cannot shrink). Fresh memory is
// expensive here (page faults: ~100 µs per 64 KiB page), so rebuilds are kept rare.
// With dirty-page tracking (the rewritten module marks every 4 KiB chunk it writes, WASI marks its
// own writes: see dirty-pages.ts), a reset looks only at the marked chunks; without it, at every page.
//
// Memory caps: with the grow shim (virtual growth) one instance serves every memoryMaxPages: its
// Memory's maximum is the ceiling, and the shim refuses growth past the call's cap, which the engine
// sets before each call (as the pages the shim may still add: the dirty map's grow budget). A module without the shim grows memory natively, so it needs a
// Memory whose maximum is the call's cap: one instance per cap (see worker.ts).
import { CallFailure } from './call-failure.ts';
import { DIRTY_CHUNK, DirtyPageMap } from './dirty-pages.ts';
import { createExtismEnv, EXTISM_ENV, type CallState, type HostSlot } from './host-env.ts';
import { pluginExport, runExport, startModule, startupState, type PluginExport } from './startup.ts';
import { createWasi, WASI_PREVIEW1 } from './wasi.ts';
import {
  DIRTY_MAP_IMPORT,
  GLOBAL_EXPORT_PREFIX,
  HOST_MODULE,
  MEMORY_IMPORT,
  TABLE_EXPORT_PREFIX,
  type ModuleLayout,
} from '../compile/wasm-rewrite.ts';

const PAGE = 65536;
const WASM32_MAX_PAGES = 65536;
const ZERO_PAGE = Buffer.alloc(PAGE);
/** JS heap per table element as measured on Node 24 (a funcref table: 32 bytes; a snapshot entry: ~10). */
export const TABLE_ELEMENT_BYTES = 32;
const SNAPSHOT_ELEMENT_BYTES = 16;
/** What an instance holds besides memory and tables (instance and export objects, globals), roughly. */
export const INSTANCE_OVERHEAD_BYTES = 64 * 1024;

/**
 * Memory as it was after start-up, sparse: most pages of a fresh instance are zero (a Rust stack,
 * .bss, an allocator's free space), and copying them would cost page faults and keep memory for nothing.
 */
export class MemorySnapshot {
  /** Pages the memory had. */
  readonly pages: number;
  /** The non-zero pages, one after the other. */
  readonly #saved: Buffer;
  /** Per page: its offset in #saved, or -1 for a zero page. */
  readonly #at: Int32Array;

  /**
   * `written`: the only pages that may not be zero (data segments, start-up's marked writes), or
   * null to look at every page. Reading a page never touched costs a page fault: for a plugin
   * declaring 64 MiB, looking at every page took ~1.6 s here under load.
   */
  constructor(live: Buffer, written: Iterable<number> | null) {
    this.pages = live.length / PAGE;
    this.#at = new Int32Array(this.pages).fill(-1);
    let nonZero = 0;
    const candidates = written ? [...new Set(written)].filter((p) => p < this.pages).sort((a, b) => a - b) : this.#every();
    for (const page of candidates) {
      if (live.compare(ZERO_PAGE, 0, PAGE, page * PAGE, (page + 1) * PAGE) !== 0) this.#at[page] = nonZero++ * PAGE;
    }
    this.#saved = Buffer.allocUnsafe(nonZero * PAGE);
    for (let page = 0; page < this.pages; page++) {
      const at = this.#at[page]!;
      if (at >= 0) live.copy(this.#saved, at, page * PAGE, (page + 1) * PAGE);
    }
  }

  *#every(): Iterable<number> {
    for (let page = 0; page < this.pages; page++) yield page;
  }

  get bytes(): number {
    return this.#saved.length;
  }

  /**
   * Bytes [start, end) of `live` back to the snapshot (zero above it), page by page. A call dirties little and often
   * writes back what was there (a stack): comparing (memcmp, reads only) is about twice as fast as
   * copying, and zero pages are compared with one zero page that stays in cache.
   */
  restoreRange(live: Buffer, start: number, end: number): void {
    for (let at = start; at < end;) {
      const page = Math.floor(at / PAGE);
      const until = Math.min(end, (page + 1) * PAGE);
      const length = until - at;
      const pageAt = page < this.pages ? this.#at[page]! : -1;
      const savedAt = pageAt < 0 ? -1 : pageAt + (at - page * PAGE);
      if (savedAt < 0) {
        if (live.compare(ZERO_PAGE, 0, length, at, until) !== 0) live.fill(0, at, until);
      } else if (live.compare(this.#saved, savedAt, savedAt + length, at, until) !== 0) {
        this.#saved.copy(live, at, savedAt, savedAt + length);
      }
      at = until;
    }
  }
}

/**
 * Memory size (pages) past which a reset rebuilds (a new instance, or a linked set) instead of
 * zeroing the pages grown above the snapshot: memory cannot shrink. With virtual growth they only
 * hold what one call needed; without, they creep up every call.
 */
export function rebuildAbovePages(snapshotPages: number, virtualGrowth: boolean): number {
  return virtualGrowth
    ? snapshotPages + Math.max(64, Math.ceil(snapshotPages / 2))
    : snapshotPages + Math.max(16, Math.ceil(snapshotPages / 4));
}

/** What the engine knows about a rewritten module, derived once per module per worker. */
export interface ModuleShape extends ModuleLayout {
  module: WebAssembly.Module;
  wasi: boolean;
  /** Imports http_request: exports are called through JSPI so HTTP can suspend them. */
  jspi: boolean;
  functions: Set<string>;
}

export function describeModule(module: WebAssembly.Module, layout: ModuleLayout): ModuleShape {
  const imports = WebAssembly.Module.imports(module);
  if (!imports.some((i) => i.module === HOST_MODULE && i.name === MEMORY_IMPORT)) {
    throw new CallFailure('INTERNAL_ERROR', 'the module was not prepared for the engine');
  }
  return {
    module,
    ...layout,
    wasi: imports.some((i) => i.module === WASI_PREVIEW1),
    jspi: imports.some((i) => i.module === EXTISM_ENV && i.name === 'http_request'),
    functions: new Set(
      WebAssembly.Module.exports(module)
        .filter((e) => e.kind === 'function')
        .map((e) => e.name),
    ),
  };
}

interface Snapshot {
  memory: MemorySnapshot;
  /** Pages the plugin had (its virtual size, with the grow shim) when the snapshot was taken. */
  pages: number;
  globals: { global: WebAssembly.Global; value: unknown }[];
  /**
   * Every element of every table, or null when the module tracks table writes and start-up wrote
   * none: the tables are then as instantiation made them, and a call that writes one gets a rebuilt
   * instance. (Reading a table makes a JS function per element: ~0.1 ms each, too slow to do always.)
   */
  tables: { table: WebAssembly.Table; elements: unknown[] }[] | null;
}

interface Live {
  instance: WebAssembly.Instance;
  memory: WebAssembly.Memory;
  /** Null without dirty-page tracking (a module the rewriter could not instrument). */
  dirty: DirtyPageMap | null;
  /** Set to 1 by the module when a call may have written a table (null without tracking). */
  tablesWritten: WebAssembly.Global | null;
  globals: WebAssembly.Global[];
  tables: WebAssembly.Table[];
  /** The grow shim's virtual size (null without virtual growth). */
  memoryPages: WebAssembly.Global | null;
  exports: Map<string, PluginExport>;
}

export class PluginInstance {
  readonly shape: ModuleShape;
  /** The Memory's maximum: the ceiling with the grow shim, else the cap it was created for. */
  readonly maxPages: number;
  readonly #slot: HostSlot = { call: null };
  /** The Extism imports, bound to #slot: made once (an adapter instance each), kept across rebuilds. */
  #env: Record<string, unknown> | null = null;
  #live: Live;
  #snapshot: Snapshot;
  /** Memory size (pages) past which a reset rebuilds instead of zeroing grown pages. */
  readonly #rebuildAbovePages: number;
  /** The cap of the call running now (memoryMaxPages, at most maxPages). */
  #callCap: number;
  rebuilds = 0;
  /** A view of the live memory, made again when growth replaced its buffer. */
  #liveBytes: Buffer | null = null;
  /** The dirty map's visitor on reset: marked chunks back to the snapshot (made once, not per reset). */
  readonly #restoreChunks = (first: number, end: number) =>
    this.#snapshot.memory.restoreRange(this.#bytes(), first * DIRTY_CHUNK, end * DIRTY_CHUNK);

  /**
   * `maxPages`: the Memory's maximum. `startCap`: memoryMaxPages of the call that creates it, which
   * start-up run from JS (_initialize, …) may not grow past (a wasm start function runs inside
   * instantiation, before any cap can be set: only maxPages bounds it).
   */
  constructor(shape: ModuleShape, maxPages: number, startCap: number) {
    this.shape = shape;
    this.maxPages = Math.min(maxPages, shape.declaredMaxPages ?? WASM32_MAX_PAGES);
    this.#callCap = Math.min(startCap, this.maxPages);
    if (shape.initialPages > this.#callCap) throw this.#tooSmall(shape.initialPages, this.#callCap);
    this.#slot.call = startupState();
    try {
      this.#live = this.#instantiate();
      this.#setCap(this.#callCap);
      this.#start();
    } finally {
      this.#slot.call = null;
    }
    this.#snapshot = this.#takeSnapshot(undefined, this.#writtenSinceInstantiation());
    this.#rebuildAbovePages = rebuildAbovePages(this.#snapshot.memory.pages, shape.virtualGrowth);
  }

  #tooSmall(pages: number, cap: number): CallFailure {
    return new CallFailure(
      'MEMORY_LIMIT',
      `the plugin needs ${pages} pages of memory to start; the limit is ${cap} pages (memoryMaxPages)`,
    );
  }

  #instantiate(): Live {
    const memory = new WebAssembly.Memory({ initial: this.shape.initialPages, maximum: this.maxPages });
    const dirty = this.shape.dirtyTracking ? new DirtyPageMap() : null;
    // Until the engine sets the cap (instantiation runs a start function first): only the Memory's maximum bounds growth.
    if (dirty) {
      dirty.growBudget = WASM32_MAX_PAGES;
      dirty.tableBudget = Math.max(0, this.shape.tableElementLimit - this.shape.initialTableElements);
    }
    const imports: WebAssembly.Imports = {
      [EXTISM_ENV]: (this.#env ??= createExtismEnv(this.#slot, this.shape.jspi)) as WebAssembly.ModuleImports,
      [HOST_MODULE]: dirty ? { [MEMORY_IMPORT]: memory, [DIRTY_MAP_IMPORT]: dirty.memory } : { [MEMORY_IMPORT]: memory },
    };
    if (this.shape.wasi) {
      const written = dirty ? (start: number, length: number) => dirty.markWritten(start, length) : () => {};
      // The plugin's own size (the grow shim's) once this instance runs; the Memory's while it starts.
      // (#live is unset while the first instantiation runs a start function, and the old one during a rebuild.)
      const addressable = () =>
        (this.#live as Live | undefined)?.memory === memory ? this.memoryPages() * PAGE : memory.buffer.byteLength;
      imports[WASI_PREVIEW1] = createWasi(this.#slot, memory, written, addressable) as WebAssembly.ModuleImports;
    }
    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(this.shape.module, imports);
    } catch (err) {
      // A failed host call (its start function's) is the reason; what V8 threw only repeats it.
      const failure = this.#slot.call?.failure;
      if (failure instanceof CallFailure) throw new CallFailure(failure.code, `the plugin failed to start: ${failure.message}`);
      throw new CallFailure('PLUGIN_ERROR', `the plugin failed to instantiate: ${(err as Error).message}`);
    }
    const globals: WebAssembly.Global[] = [];
    const tables: WebAssembly.Table[] = [];
    const exports = new Map<string, PluginExport>();
    for (const [name, value] of Object.entries(instance.exports)) {
      if (name.startsWith(GLOBAL_EXPORT_PREFIX)) globals.push(value as WebAssembly.Global);
      else if (name.startsWith(TABLE_EXPORT_PREFIX)) tables.push(value as WebAssembly.Table);
      else if (typeof value === 'function') exports.set(name, pluginExport(value, this.shape.jspi));
    }
    const global = (name: string | null) => (name ? (instance.exports[name] as WebAssembly.Global) : null);
    return {
      instance,
      memory,
      dirty,
      tablesWritten: global(this.shape.tablesWrittenExport),
      globals,
      tables,
      memoryPages: global(this.shape.memoryPagesExport),
      exports,
    };
  }

  /** The grow shim may grow the memory up to `pages` (from its size now: the snapshot's at a call's start). */
  #setCap(pages: number): void {
    const { dirty, memoryPages } = this.#live;
    if (dirty && memoryPages) dirty.growBudget = Math.max(0, pages - (memoryPages.value as number));
  }

  /** Start-up as @extism/extism does it (startup.ts). */
  #start(): void {
    startModule(this.#live.instance, this.shape.wasi, this.#slot);
  }

  /**
   * Pages that may hold anything but zeros after instantiation and start-up: the data segments'
   * and those start-up wrote (marked in the dirty map, which this clears). Null when not known.
   */
  #writtenSinceInstantiation(): number[] | null {
    const { dirty, memory } = this.#live;
    const chunks = memory.buffer.byteLength / DIRTY_CHUNK;
    if (!dirty || !this.shape.dataPages) {
      dirty?.clear(chunks);
      return null;
    }
    return [...this.shape.dataPages, ...dirty.drainPages(chunks)];
  }

  /** Globals and tables as they are now; memory too (`written`: the pages that may be non-zero), unless a rebuild gives its old snapshot's. */
  #takeSnapshot(old?: Pick<Snapshot, 'memory' | 'pages'>, written: number[] | null = null): Snapshot {
    const { memory, globals, tables, tablesWritten, memoryPages } = this.#live;
    return {
      memory: old?.memory ?? new MemorySnapshot(Buffer.from(memory.buffer), written),
      pages: old?.pages ?? (memoryPages ? (memoryPages.value as number) : memory.buffer.byteLength / PAGE),
      globals: globals.map((global) => ({ global, value: global.value })),
      tables:
        tablesWritten?.value === 0
          ? null
          : tables.map((table) => {
              const elements: unknown[] = [];
              for (let i = 0; i < table.length; i++) elements.push(table.get(i));
              return { table, elements };
            }),
    };
  }

  hasFunction(name: string): boolean {
    return this.#live.exports.has(name);
  }

  #bytes(): Buffer {
    const buffer = this.#live.memory.buffer;
    if (this.#liveBytes?.buffer !== buffer) this.#liveBytes = Buffer.from(buffer);
    return this.#liveBytes;
  }

  /**
   * Runs one export for one call with memory capped at `capPages` and returns its i32 result (0 for
   * an export without one; a promise of it under JSPI: see runExport). The caller must `reset()`
   * afterwards, whatever happened.
   */
  run(name: string, call: CallState, capPages: number): number | Promise<number> {
    const fn = this.#live.exports.get(name);
    if (!fn) throw new CallFailure('FUNCTION_NOT_FOUND', `the plugin has no function "${name}"`);
    this.#callCap = Math.min(capPages, this.maxPages);
    if (this.#snapshot.pages > this.#callCap) throw this.#tooSmall(this.#snapshot.pages, this.#callCap);
    this.#setCap(this.#callCap);
    return runExport(fn, this.#slot, call);
  }

  /** The cap the last call ran with (memoryMaxPages as it applied to this instance). */
  get callCap(): number {
    return this.#callCap;
  }

  /**
   * Bytes this instance keeps alive: linear memory and its snapshot (outside the JS heap), tables and
   * their snapshot (on it), and a fixed allowance for the rest.
   */
  footprint(): { bytes: number; heapBytes: number } {
    const { memory, tables } = this.#live;
    const tableElements = tables.reduce((n, t) => n + t.length, 0);
    const snapshotElements = (this.#snapshot.tables ?? []).reduce((n, t) => n + t.elements.length, 0);
    const heapBytes = INSTANCE_OVERHEAD_BYTES + tableElements * TABLE_ELEMENT_BYTES + snapshotElements * SNAPSHOT_ELEMENT_BYTES;
    return { bytes: memory.buffer.byteLength + this.#snapshot.memory.bytes + heapBytes, heapBytes };
  }

  /** The grow shim refused a memory.grow during this call (false without virtual growth: unknown). Read before reset(). */
  growRefused(): boolean {
    const name = this.shape.growRefusedExport;
    if (!name) return false;
    return (this.#live.instance.exports[name] as WebAssembly.Global).value === 1;
  }

  /** The linear memory the plugin runs on now (a rebuild replaces it). */
  get memory(): WebAssembly.Memory {
    return this.#live.memory;
  }

  /** Pages of linear memory in use right now (for MEMORY_LIMIT diagnosis after a failure). */
  memoryPages(): number {
    return this.#live.memoryPages ? (this.#live.memoryPages.value as number) : this.#live.memory.buffer.byteLength / PAGE;
  }

  /** Back to the snapshot: restore in place, or rebuild when memory grew past the threshold (or segments may be dropped). */
  reset(): void {
    const { memory, dirty, tablesWritten } = this.#live;
    const snapshot = this.#snapshot;
    const size = memory.buffer.byteLength;
    // Without tracking a table write cannot be seen: look at every table, every time.
    const tablesMayDiffer = tablesWritten === null || tablesWritten.value !== 0;
    const tablesGrew = tablesMayDiffer && snapshot.tables?.some((t) => t.table.length !== t.elements.length);
    const tablesNeedInstantiation = tablesMayDiffer && snapshot.tables === null;
    if (size / PAGE > this.#rebuildAbovePages || tablesGrew || tablesNeedInstantiation || this.shape.passiveSegments) {
      this.#rebuild();
      return;
    }
    if (dirty) dirty.drain(size / DIRTY_CHUNK, this.#restoreChunks);
    else snapshot.memory.restoreRange(this.#bytes(), 0, size);
    if (tablesMayDiffer && snapshot.tables) {
      for (const { table, elements } of snapshot.tables) {
        for (let i = 0; i < elements.length; i++) if (table.get(i) !== elements[i]) table.set(i, elements[i]);
      }
    }
    // Last: the tables-written flag is one of these globals.
    for (const { global, value } of snapshot.globals) global.value = value;
  }

  /**
   * A new instance and memory, brought to the snapshot. Start-up exports are not re-run (the snapshot
   * holds their effects); a wasm start function runs again, inside instantiation, under the worker's
   * housekeeping deadline. Tables keep what instantiation put there: their snapshot held references to the
   * old instance's functions, and start-up does not write tables in the plugins we accept.
   */
  #rebuild(): void {
    this.rebuilds++;
    const old = this.#snapshot;
    this.#slot.call = startupState();
    try {
      this.#live = this.#instantiate();
    } finally {
      this.#slot.call = null;
    }
    const { memory, globals } = this.#live;
    const missingPages = old.memory.pages - memory.buffer.byteLength / PAGE;
    if (missingPages > 0) memory.grow(missingPages);
    // A start function may have grown this memory past the snapshot: those pages start zeroed.
    const live = this.#bytes();
    old.memory.restoreRange(live, 0, live.length);
    this.#live.dirty?.clear(live.length / DIRTY_CHUNK);
    globals.forEach((global, i) => {
      const value = old.globals[i]?.value;
      if (typeof value === 'number' || typeof value === 'bigint') global.value = value;
    });
    this.#snapshot = this.#takeSnapshot(old);
  }
}
