// Rewrites a plugin module (once, before compiling) so the engine can cap and reset it from JS:
// - its linear memory becomes an import (`wasmhost.memory`): the engine creates it, with a maximum;
//   a memory the module imports from a linked module (a manifest's shared memory) becomes that
//   same import, and the engine passes it the linked module's memory (runtime/linker.ts);
// - every mutable global and every table is exported (`__wasmhost_global_N`, `__wasmhost_table_N`)
//   so they can be snapshotted after start-up and restored after each call;
// - every table gets a maximum (its share of MODULE_MAX_TABLE_ELEMENTS), so `table.grow` past it
//   returns -1 instead of growing a table on the JS heap (a worker cannot survive running out of it);
//   with the grow shim, every `table.grow` also goes through a shim of its table that refuses growth
//   past a budget of elements in the dirty map (TABLE_BUDGET_OFFSET), shared like the memory budget,
//   so a linked call's modules together stay within the limit;
// - "virtual growth": memory.size/memory.grow become calls to two appended functions that keep the
//   size in a global. After a reset, that global says the memory is back at its initial size, so an
//   allocator that grows on first use (Rust's dlmalloc) reuses the same pages call after call,
//   instead of growing the memory forever. The grow shim refuses growth past a budget of pages kept
//   in the dirty map's last word (GROW_BUDGET_OFFSET), which the engine sets before each call (so
//   one instance serves every memoryMaxPages) and the shim lowers by every grow: the modules of a
//   linked call share one dirty map, so one budget covers all their memories. It sets a flag global
//   when it refuses, so a trap that follows can be reported as MEMORY_LIMIT, and only then;
// - dirty-page tracking: every write to memory marks its chunks in a second imported memory
//   (`wasmhost.dirty`, one byte per 4 KiB chunk; see wasm-code.ts), so a reset restores only the
//   chunks a call wrote, and a flag global says whether a call wrote a table.
// Appended functions, types and globals go at the end of their index spaces, so no existing index
// moves. A body the decoder cannot read leaves the module without virtual growth and tracking (the
// engine then compares every page and rebuilds instances that grew too much).
import {
  concat,
  leb,
  nameBytes,
  Reader,
  readElementSegment,
  readLimits,
  readName,
  SECTION,
  section,
  skipConstExpr,
  skipValType,
  splitSections,
  vector,
  WasmRewriteError,
  type RawSection,
} from './wasm-binary.ts';
import { DIRTY_CHUNK_SHIFT, i32Const, markRangeBody, rewriteCode, tableGrowBody } from './wasm-code.ts';

export { WasmRewriteError } from './wasm-binary.ts';
export { DIRTY_CHUNK, DIRTY_CHUNK_SHIFT, LAST_CHUNK } from './wasm-code.ts';

export const HOST_MODULE = 'wasmhost';
export const MEMORY_IMPORT = 'memory';
export const DIRTY_MAP_IMPORT = 'dirty';
/** Pages of the dirty map: one byte per chunk of a 4 GiB memory, plus one (a crossing write marks chunk + 1). */
export const DIRTY_MAP_PAGES = Math.ceil((2 ** (32 - DIRTY_CHUNK_SHIFT) + 1) / 65536);
export const GLOBAL_EXPORT_PREFIX = '__wasmhost_global_';
export const TABLE_EXPORT_PREFIX = '__wasmhost_table_';
/**
 * Byte offset in the dirty map of the grow shim's budget: the pages (an i32) memory.grow may still add,
 * set by the engine, lowered by the shim. Past every mark (one byte per chunk of 4 GiB, plus one).
 */
export const GROW_BUDGET_OFFSET = DIRTY_MAP_PAGES * 65536 - 4;
/**
 * Byte offset in the dirty map of the table-grow shims' budget: the elements (an i32) `table.grow` may
 * still add to any table of the modules sharing the map, set by the engine, lowered by each shim.
 */
export const TABLE_BUDGET_OFFSET = GROW_BUDGET_OFFSET - 4;

/** What the engine needs to know about a rewritten module (V8 does not reflect import limits). */
export interface ModuleLayout {
  /** Pages the plugin's memory starts with (its declared minimum). */
  initialPages: number;
  /** The module's own declared maximum, if any. */
  declaredMaxPages: number | null;
  /** The memory the module imports from a linked module (the engine supplies it as `wasmhost.memory`), or null. */
  importedMemory: { module: string; name: string } | null;
  /** memory.size/memory.grow go through the engine's shims (see above). */
  virtualGrowth: boolean;
  /** Export name of the global the grow shim sets to 1 when it refuses a grow (null without virtual growth). */
  growRefusedExport: string | null;
  /** Export name of the global holding the virtual memory size in pages (null without virtual growth). */
  memoryPagesExport: string | null;
  /**
   * Writes to memory are marked in the imported dirty map (`wasmhost.dirty`), which comes with virtual
   * growth (same decoder). Without it, a reset compares every page.
   */
  dirtyTracking: boolean;
  /** Export name of the global set to 1 when a call may have written a table (null without tracking). */
  tablesWrittenExport: string | null;
  /** Elements the module's own tables start with. */
  initialTableElements: number;
  /**
   * MODULE_MAX_TABLE_ELEMENTS as it was prepared with. With the grow shim every `table.grow` goes
   * through a shim that draws on a budget in the dirty map (TABLE_BUDGET_OFFSET), which the engine
   * sets to this less what the tables of every module sharing the map start with; each table's
   * maximum (its share) bounds the module alone, with or without the shim.
   */
  tableElementLimit: number;
  /**
   * Has passive data or element segments: a call may drop them (data.drop, elem.drop), and no API
   * restores a dropped segment, so each call gets a new instance (restored from the snapshot).
   */
  passiveSegments: boolean;
  /**
   * Pages active data segments write at instantiation (their offsets are constants), or null when
   * that cannot be told: every other page of a fresh instance is zero until start-up writes to it.
   */
  dataPages: number[] | null;
}

export interface RewriteResult extends ModuleLayout {
  bytes: Uint8Array;
}

const KIND = { func: 0, table: 1, memory: 2, global: 3, tag: 4 } as const;
/** The dirty map's memory index: imported right after the plugin's own memory (index 0). */
const DIRTY_MEMORY_INDEX = 1;
const I32 = 0x7f;
/** Position of each known section id in the required order (custom sections keep their places). */
const ORDER: Record<number, number> = { 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13 };

export interface RewriteOptions {
  /** Table elements all tables may ever hold together (MODULE_MAX_TABLE_ELEMENTS); each table gets a share as its maximum. */
  maxTableElements: number;
}

export function rewriteForEngine(input: Uint8Array, options: RewriteOptions): RewriteResult {
  try {
    return rewrite(input, true, options);
  } catch (err) {
    if (!(err instanceof WasmRewriteError)) throw err;
    return rewrite(input, false, options);
  }
}

interface TableEntry {
  /** The bytes before the limits: the reference type, after the 0x40 0x00 prefix of a table with an initializer. */
  head: Uint8Array;
  /** Its reference type's bytes. */
  type: Uint8Array;
  min: number;
  max: number | null;
  /** The initializer expression (tables with one), else empty. */
  tail: Uint8Array;
}

function readTables(input: Uint8Array, s: RawSection | undefined): TableEntry[] {
  const { count, reader: r } = vector(input, s);
  const tables: TableEntry[] = [];
  for (let i = 0; i < count; i++) {
    const start = r.pos;
    const withInit = r.bytes[r.pos] === 0x40;
    if (withInit) {
      r.byte();
      if (r.byte() !== 0x00) throw new WasmRewriteError('unknown table encoding');
    }
    const typeStart = r.pos;
    skipValType(r);
    const head = input.subarray(start, r.pos);
    const type = input.subarray(typeStart, r.pos);
    const [min, max] = readLimits(r);
    const tailStart = r.pos;
    if (withInit) skipConstExpr(r);
    tables.push({ head, type, min, max, tail: input.subarray(tailStart, r.pos) });
  }
  return tables;
}

/**
 * The table section with every maximum capped: the elements the tables start with, plus an equal
 * share each of what `maxElements` leaves, never above what the module declared.
 */
function cappedTables(tables: TableEntry[], maxElements: number): Uint8Array {
  const initial = tables.reduce((n, t) => n + t.min, 0);
  if (initial > maxElements) {
    throw new WasmRewriteError(
      `its tables start with ${initial} elements; the limit is ${maxElements} (MODULE_MAX_TABLE_ELEMENTS)`,
    );
  }
  const share = Math.floor((maxElements - initial) / Math.max(1, tables.length));
  const entries = tables.map((t) => {
    const max = Math.min(t.max ?? Number.MAX_SAFE_INTEGER, t.min + share);
    return concat([t.head, [0x01], leb(t.min), leb(max), t.tail]);
  });
  return section(SECTION.table, concat([leb(tables.length), ...entries]));
}

function rewrite(input: Uint8Array, virtualGrowth: boolean, options: RewriteOptions): RewriteResult {
  const sections = splitSections(input);
  const find = (id: number) => sections.find((s) => s.id === id);

  // Imports come first in their index spaces.
  const imports = vector(input, find(SECTION.import));
  let importedFuncs = 0;
  let importedGlobals = 0;
  let importedTables = 0;
  let initialPages = 0;
  let declaredMaxPages: number | null = null;
  let importedMemory: ModuleLayout['importedMemory'] = null;
  /** The reference type (bytes) of each table, imported ones first. */
  const tableTypes: Uint8Array[] = [];
  /** The import entries but an imported memory's (which becomes `wasmhost.memory`). */
  let importEntries = imports.entries;
  for (let i = 0; i < imports.count; i++) {
    const r = imports.reader;
    const entryStart = r.pos;
    const moduleName = readName(r);
    const fieldName = readName(r);
    const kind = r.byte();
    // prettier-ignore
    switch (kind) {
      case KIND.func: r.u32(); importedFuncs++; break;
      case KIND.table: {
        const typeStart = r.pos;
        skipValType(r);
        tableTypes.push(input.subarray(typeStart, r.pos));
        readLimits(r);
        importedTables++;
        break;
      }
      case KIND.memory: {
        if (importedMemory) throw new WasmRewriteError('the module imports more than one memory');
        [initialPages, declaredMaxPages] = readLimits(r);
        importedMemory = { module: moduleName, name: fieldName };
        const base = imports.entries.byteOffset - input.byteOffset;
        importEntries = concat([
          imports.entries.subarray(0, entryStart - base),
          imports.entries.subarray(r.pos - base),
        ]);
        break;
      }
      case KIND.global: skipValType(r); r.byte(); importedGlobals++; break;
      case KIND.tag: r.byte(); r.u32(); break;
      default: throw new WasmRewriteError(`unknown import kind ${kind}`);
    }
  }

  // A module without memory gets an empty one it never touches (the engine treats all alike).
  const memorySection = find(SECTION.memory);
  if (memorySection && importedMemory) throw new WasmRewriteError('the module imports a memory and defines one');
  if (memorySection) {
    const mr = new Reader(input, memorySection.start, memorySection.end);
    const count = mr.u32();
    if (count > 1) throw new WasmRewriteError('the module defines more than one memory');
    if (count === 1) [initialPages, declaredMaxPages] = readLimits(mr);
  }

  const tableEntries = readTables(input, find(SECTION.table));
  const tables = tableEntries.length;
  tableTypes.push(...tableEntries.map((t) => t.type));

  const globals = vector(input, find(SECTION.global));
  const mutableGlobals: number[] = [];
  for (let i = 0; i < globals.count; i++) {
    skipValType(globals.reader);
    if (globals.reader.byte() === 1) mutableGlobals.push(importedGlobals + i);
    skipConstExpr(globals.reader);
  }

  const types = vector(input, find(SECTION.type));
  const functions = vector(input, find(SECTION.function));
  const params = virtualGrowth ? paramCounts(input, types, functions, importedFuncs) : [];
  const code = vector(input, find(SECTION.code));
  const replaced = new Map<number, Uint8Array | null>([[SECTION.memory, null]]);
  if (tables > 0) replaced.set(SECTION.table, cappedTables(tableEntries, options.maxTableElements));
  let extraGlobals: number[] = [];
  let growRefusedExport: string | null = null;
  let memoryPagesExport: string | null = null;

  let tablesWrittenExport: string | null = null;

  if (virtualGrowth) {
    const sizeType = types.count;
    const growType = types.count + 1;
    const markType = types.count + 2;
    const sizeFn = importedFuncs + functions.count;
    const growFn = sizeFn + 1;
    const markRangeFn = sizeFn + 2;
    const pagesGlobal = importedGlobals + globals.count;
    const refusedGlobal = pagesGlobal + 1;
    const tablesWrittenGlobal = pagesGlobal + 2;
    const refuse = [0x41, 0x01, 0x24, ...leb(refusedGlobal), 0x41, 0x7f, 0x0f]; // refused = 1; return -1
    // A table.grow shim for each table grown, appended after markRange in the order they are met.
    const grownTables: number[] = [];
    const tableGrowFn = (table: number): number => {
      if (!grownTables.includes(table)) grownTables.push(table);
      return markRangeFn + 1 + grownTables.indexOf(table);
    };
    const codeRewrite = {
      sizeFn,
      growFn,
      tableGrowFn,
      dirty: { memory: DIRTY_MEMORY_INDEX, markRangeFn, tablesWrittenGlobal },
    };

    const bodies: (Uint8Array | number[])[] = [];
    const r = code.reader;
    for (let i = 0; i < code.count; i++) {
      const size = r.u32();
      const body = input.subarray(r.pos, r.pos + size);
      r.skip(size);
      const rewritten = rewriteCode(body, params[i] ?? 0, codeRewrite);
      bodies.push(rewritten ? concat([leb(rewritten.length), rewritten]) : concat([leb(size), body]));
    }
    // () -> i32: the virtual size.
    const sizeBody = [0x00, 0x23, ...leb(pagesGlobal), 0x0b];
    // (n: i32) -> i32: grow the virtual size by n within the budget, growing the real memory only when needed.
    const [n, old, delta, left] = [0, 1, 2, 3];
    // i32 at GROW_BUDGET_OFFSET of the dirty map (memarg: align 4, explicit memory index).
    const budget = [0x42, ...leb(DIRTY_MEMORY_INDEX), ...leb(GROW_BUDGET_OFFSET)];
    // prettier-ignore
    const growBody = [
      0x01, 0x03, I32, // locals: old, delta, left
      0x23, ...leb(pagesGlobal), 0x21, old, // old = pages
      0x41, 0x00, 0x28, ...budget, 0x21, left, // left = budget
      0x20, n, 0x20, left, 0x4b, // n > left (unsigned: a negative n too)?
      0x04, 0x40, ...refuse, 0x0b, //   refuse
      0x20, old, 0x20, n, 0x6a, 0x3f, 0x00, 0x6b, 0x22, delta, // delta = old + n - memory.size
      0x41, 0x00, 0x4a, // delta > 0 (signed)?
      0x04, 0x40,
      0x20, delta, 0x40, 0x00, 0x41, 0x7f, 0x46, // memory.grow(delta) == -1?
      0x04, 0x40, ...refuse, 0x0b, //   refuse
      0x0b,
      0x41, 0x00, 0x20, left, 0x20, n, 0x6b, 0x36, ...budget, // budget = left - n
      0x20, old, 0x20, n, 0x6a, 0x24, ...leb(pagesGlobal), // pages = old + n
      0x20, old,
      0x0b,
    ];
    const markBody = markRangeBody(DIRTY_MEMORY_INDEX);
    for (const body of [sizeBody, growBody, markBody]) bodies.push(concat([leb(body.length), body]));
    // (ref, n: i32) -> i32 per grown table, one function type per reference type.
    const shimTypes: Uint8Array[] = [];
    const shimTypeOf = new Map<string, number>();
    const shimTypeIndexes = grownTables.map((table) => {
      const type = tableTypes[table];
      if (!type) throw new WasmRewriteError(`table.grow of table ${table}, which does not exist`);
      const key = type.join(',');
      if (!shimTypeOf.has(key)) {
        shimTypeOf.set(key, types.count + 3 + shimTypes.length);
        shimTypes.push(concat([[0x60, 0x02], type, [I32, 0x01, I32]]));
      }
      return shimTypeOf.get(key)!;
    });
    for (const table of grownTables) {
      const body = tableGrowBody(table, DIRTY_MEMORY_INDEX, TABLE_BUDGET_OFFSET);
      bodies.push(concat([leb(body.length), body]));
    }
    const added = 3 + grownTables.length;

    replaced.set(SECTION.code, section(SECTION.code, concat([leb(code.count + added), ...bodies])));
    replaced.set(
      SECTION.type,
      section(
        SECTION.type,
        concat([
          leb(types.count + 3 + shimTypes.length),
          types.entries,
          [0x60, 0x00, 0x01, I32],
          [0x60, 0x01, I32, 0x01, I32],
          [0x60, 0x02, I32, I32, 0x00],
          ...shimTypes,
        ]),
      ),
    );
    replaced.set(
      SECTION.function,
      section(
        SECTION.function,
        concat([
          leb(functions.count + added),
          functions.entries,
          leb(sizeType),
          leb(growType),
          leb(markType),
          ...shimTypeIndexes.map((t) => leb(t)),
        ]),
      ),
    );
    const pagesEntry = [I32, 0x01, ...i32Const(initialPages), 0x0b];
    const zeroEntry = [I32, 0x01, 0x41, 0x00, 0x0b];
    replaced.set(
      SECTION.global,
      section(SECTION.global, concat([leb(globals.count + 3), globals.entries, pagesEntry, zeroEntry, zeroEntry])),
    );
    // Exported like every mutable global: restored (to the initial size and 0) after each call.
    extraGlobals = [pagesGlobal, refusedGlobal, tablesWrittenGlobal];
    growRefusedExport = `${GLOBAL_EXPORT_PREFIX}${refusedGlobal}`;
    tablesWrittenExport = `${GLOBAL_EXPORT_PREFIX}${tablesWrittenGlobal}`;
    memoryPagesExport = `${GLOBAL_EXPORT_PREFIX}${pagesGlobal}`;
  }

  // Exports: the plugin's own, plus every mutable global and table under engine names.
  const exports = vector(input, find(SECTION.export));
  const names = new Set<string>();
  for (let i = 0; i < exports.count; i++) {
    const r = exports.reader;
    names.add(readName(r));
    r.byte();
    r.u32();
  }
  const added: number[][] = [];
  const addExport = (name: string, kind: number, index: number) => {
    if (names.has(name)) throw new WasmRewriteError(`the module already exports "${name}"`);
    added.push([...nameBytes(name), kind, ...leb(index)]);
  };
  for (const index of [...mutableGlobals, ...extraGlobals]) addExport(`${GLOBAL_EXPORT_PREFIX}${index}`, KIND.global, index);
  for (let t = 0; t < importedTables + tables; t++) addExport(`${TABLE_EXPORT_PREFIX}${t}`, KIND.table, t);
  replaced.set(SECTION.export, section(SECTION.export, concat([leb(exports.count + added.length), exports.entries, ...added])));

  // The memory, as an import with the plugin's minimum and no maximum (the engine supplies it); then
  // the dirty map (memory 1: the module defines no memory of its own any more).
  const memoryImport = [...nameBytes(HOST_MODULE), ...nameBytes(MEMORY_IMPORT), KIND.memory, 0x00, ...leb(initialPages)];
  const dirtyImport = virtualGrowth
    ? [
        ...nameBytes(HOST_MODULE),
        ...nameBytes(DIRTY_MAP_IMPORT),
        KIND.memory,
        0x01,
        ...leb(DIRTY_MAP_PAGES),
        ...leb(DIRTY_MAP_PAGES),
      ]
    : [];
  const importCount = imports.count - (importedMemory ? 1 : 0) + (virtualGrowth ? 2 : 1);
  replaced.set(SECTION.import, section(SECTION.import, concat([leb(importCount), importEntries, memoryImport, dirtyImport])));

  const passiveSegments = hasPassiveSegments(input, find(SECTION.data), find(SECTION.elem));
  return {
    bytes: assemble(input, sections, replaced),
    initialPages,
    declaredMaxPages,
    importedMemory,
    virtualGrowth,
    growRefusedExport,
    memoryPagesExport,
    dirtyTracking: virtualGrowth,
    tablesWrittenExport,
    initialTableElements: tableEntries.reduce((n, t) => n + t.min, 0),
    tableElementLimit: options.maxTableElements,
    passiveSegments,
    dataPages: activeDataPages(input, find(SECTION.data)),
  };
}

/** Pages written by active data segments whose offset is an i32.const; null if any offset is not. */
function activeDataPages(input: Uint8Array, dataSection: RawSection | undefined): number[] | null {
  try {
    const data = vector(input, dataSection);
    const pages = new Set<number>();
    for (let i = 0; i < data.count; i++) {
      const r = data.reader;
      const flags = r.u32();
      if (flags === 2) r.u32(); // memory index
      let offset = 0;
      if (flags !== 1) {
        if (r.byte() !== 0x41) return null; // not i32.const (e.g. global.get)
        offset = readI32(r) >>> 0;
        if (r.byte() !== 0x0b) return null;
      }
      const length = r.u32();
      r.skip(length);
      if (flags === 1 || length === 0) continue;
      for (let page = Math.floor(offset / 65536); page <= Math.floor((offset + length - 1) / 65536); page++) pages.add(page);
    }
    return [...pages].sort((a, b) => a - b);
  } catch (err) {
    if (err instanceof WasmRewriteError) return null;
    throw err;
  }
}

/** A signed LEB128 i32. */
function readI32(r: Reader): number {
  let result = 0;
  let shift = 0;
  let b: number;
  do {
    b = r.byte();
    result |= (b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80 && shift < 35);
  return shift < 32 && b & 0x40 ? result | (-1 << shift) : result;
}

/** Parameter count of each function defined in the module, from its type (plain function types only). */
function paramCounts(
  input: Uint8Array,
  types: { count: number; reader: Reader },
  functions: { count: number; reader: Reader },
  importedFuncs: number,
): number[] {
  const typeReader = new Reader(input, types.reader.pos, types.reader.end);
  const byType: number[] = [];
  for (let t = 0; t < types.count; t++) {
    if (typeReader.byte() !== 0x60) throw new WasmRewriteError('a type other than a plain function type (GC types)');
    const count = typeReader.u32();
    for (let i = 0; i < count; i++) skipValType(typeReader);
    const results = typeReader.u32();
    for (let i = 0; i < results; i++) skipValType(typeReader);
    byType.push(count);
  }
  const functionReader = new Reader(input, functions.reader.pos, functions.reader.end);
  const counts: number[] = [];
  for (let f = 0; f < functions.count; f++) {
    const count = byType[functionReader.u32()];
    if (count === undefined) throw new WasmRewriteError(`function ${importedFuncs + f} has an unknown type`);
    counts.push(count);
  }
  return counts;
}

/** True when a data or element segment is passive (or the sections cannot be read: assume so). */
function hasPassiveSegments(
  input: Uint8Array,
  dataSection: RawSection | undefined,
  elemSection: RawSection | undefined,
): boolean {
  try {
    const data = vector(input, dataSection);
    for (let i = 0; i < data.count; i++) {
      const r = data.reader;
      const flags = r.u32();
      if (flags === 1) return true;
      if (flags === 2) r.u32(); // memory index
      if (flags !== 0 && flags !== 2) throw new WasmRewriteError(`unknown data segment kind ${flags}`);
      skipConstExpr(r);
      r.skip(r.u32());
    }
    const elems = vector(input, elemSection);
    for (let i = 0; i < elems.count; i++) {
      if (readElementSegment(elems.reader).passive) return true;
    }
    return false;
  } catch (err) {
    if (err instanceof WasmRewriteError) return true;
    throw err;
  }
}

/** The module with `replaced` sections swapped in (null: dropped), new ones inserted in order. */
function assemble(input: Uint8Array, sections: RawSection[], replaced: Map<number, Uint8Array | null>): Uint8Array {
  const parts: Uint8Array[] = [input.subarray(0, 8)];
  const pending = new Map(replaced);
  const flushBefore = (order: number) => {
    const due = [...pending].sort(([a], [b]) => (ORDER[a] ?? 0) - (ORDER[b] ?? 0));
    for (const [id, bytes] of due) {
      if ((ORDER[id] ?? 0) < order) {
        if (bytes) parts.push(bytes);
        pending.delete(id);
      }
    }
  };
  for (const s of sections) {
    const raw = input.subarray(s.headerStart, s.end);
    if (s.id === SECTION.custom) {
      parts.push(raw);
      continue;
    }
    flushBefore(ORDER[s.id] ?? 0);
    if (pending.has(s.id)) {
      const bytes = pending.get(s.id);
      if (bytes) parts.push(bytes);
      pending.delete(s.id);
    } else if (!replaced.has(s.id)) {
      parts.push(raw);
    }
  }
  flushBefore(Number.MAX_SAFE_INTEGER);
  return concat(parts);
}
