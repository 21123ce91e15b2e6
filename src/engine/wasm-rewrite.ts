// Rewrites a module so the engine can reset and cap it from JS, touching only the import, memory,
// global and export sections (code is left byte-for-byte alone, so function indices never move):
// - its own linear memory becomes an import (`wasmhost.memory`): the engine creates it with the
//   caller's page cap as its maximum, so one compiled module serves every cap;
// - every mutable global and every table is exported (`__wasmhost_global_N`, `__wasmhost_table_N`)
//   so their values can be snapshotted after start-up and restored after each call.

export const HOST_MODULE = 'wasmhost';
export const MEMORY_IMPORT = 'memory';
export const GLOBAL_EXPORT_PREFIX = '__wasmhost_global_';
export const TABLE_EXPORT_PREFIX = '__wasmhost_table_';

export class WasmRewriteError extends Error {
  override name = 'WasmRewriteError';
}

export interface RewriteResult {
  bytes: Uint8Array;
  /** Pages the plugin's memory starts with (its declared minimum). */
  initialPages: number;
  /** The module's own declared maximum, if any. */
  declaredMaxPages: number | null;
}

const SECTION = { custom: 0, type: 1, import: 2, function: 3, table: 4, memory: 5, global: 6, export: 7, start: 8 } as const;
const KIND = { func: 0, table: 1, memory: 2, global: 3, tag: 4 } as const;

class Reader {
  pos: number;
  readonly bytes: Uint8Array;
  readonly end: number;
  constructor(bytes: Uint8Array, start: number, end: number) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }
  byte(): number {
    if (this.pos >= this.end) throw new WasmRewriteError('unexpected end of section');
    return this.bytes[this.pos++] as number;
  }
  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 35) throw new WasmRewriteError('LEB128 integer too long');
    }
    return result;
  }
  /** Skips a signed LEB128 of any width. */
  skipLeb(): void {
    while (this.byte() & 0x80);
  }
  skip(n: number): void {
    if (this.pos + n > this.end) throw new WasmRewriteError('unexpected end of section');
    this.pos += n;
  }
  name(): void {
    this.skip(this.u32());
  }
}

function leb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

function nameBytes(text: string): number[] {
  const encoded = new TextEncoder().encode(text);
  return [...leb(encoded.length), ...encoded];
}

function section(id: number, body: Uint8Array | number[]): Uint8Array {
  const header = [id, ...leb(body.length)];
  const out = new Uint8Array(header.length + body.length);
  out.set(header, 0);
  out.set(body, header.length);
  return out;
}

/** Table type or memory limits: flags, min, [max]. Returns [min, max|null]. */
function readLimits(r: Reader): [number, number | null, number] {
  const flags = r.byte();
  if (flags > 0x01) {
    throw new WasmRewriteError(`unsupported memory/table limits (flags 0x${flags.toString(16)}: shared or 64-bit)`);
  }
  const min = r.u32();
  const max = flags & 1 ? r.u32() : null;
  return [min, max, flags];
}

/** Skips a constant expression up to and including its `end`. */
function skipConstExpr(r: Reader): void {
  for (;;) {
    const op = r.byte();
    switch (op) {
      case 0x0b: return; // end
      case 0x41: case 0x42: r.skipLeb(); break; // i32.const, i64.const
      case 0x43: r.skip(4); break; // f32.const
      case 0x44: r.skip(8); break; // f64.const
      case 0x23: r.u32(); break; // global.get
      case 0xd0: r.byte(); break; // ref.null t (single-byte heap types are all we accept)
      case 0xd2: r.u32(); break; // ref.func
      case 0x6a: case 0x6b: case 0x6c: case 0x7c: case 0x7d: case 0x7e: break; // extended const arithmetic
      case 0xfd: { // v128.const
        if (r.u32() !== 12) throw new WasmRewriteError('unsupported SIMD instruction in a constant expression');
        r.skip(16);
        break;
      }
      default:
        throw new WasmRewriteError(`unsupported instruction 0x${op.toString(16)} in a constant expression`);
    }
  }
}

function skipValType(r: Reader): void {
  const t = r.byte();
  // ref types with an explicit heap type (0x63/0x64) carry one more LEB.
  if (t === 0x63 || t === 0x64) r.skipLeb();
}

interface ParsedSection {
  id: number;
  /** Offset of the section id byte. */
  headerStart: number;
  start: number;
  end: number;
}

function splitSections(bytes: Uint8Array): ParsedSection[] {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new WasmRewriteError('not a WebAssembly binary (bad magic)');
  }
  if (bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0) {
    throw new WasmRewriteError('unsupported WebAssembly binary version (a component?)');
  }
  const sections: ParsedSection[] = [];
  const r = new Reader(bytes, 8, bytes.length);
  while (r.pos < bytes.length) {
    const headerStart = r.pos;
    const id = r.byte();
    const size = r.u32();
    const start = r.pos;
    r.skip(size);
    sections.push({ id, headerStart, start, end: r.pos });
  }
  return sections;
}

/** Section order position for inserting new sections (custom sections keep their places). */
const ORDER: Record<number, number> = { 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13 };

export function rewriteForEngine(input: Uint8Array): RewriteResult {
  const sections = splitSections(input);
  const find = (id: number) => sections.find((s) => s.id === id);

  // Imports: count imported globals/tables (they come first in their index spaces).
  let importedGlobals = 0;
  let importedTables = 0;
  let importedMemories = 0;
  let importCount = 0;
  const importSection = find(SECTION.import);
  if (importSection) {
    const r = new Reader(input, importSection.start, importSection.end);
    importCount = r.u32();
    for (let i = 0; i < importCount; i++) {
      r.name();
      r.name();
      const kind = r.byte();
      switch (kind) {
        case KIND.func: r.u32(); break;
        case KIND.table: skipValType(r); readLimits(r); importedTables++; break;
        case KIND.memory: readLimits(r); importedMemories++; break;
        case KIND.global: skipValType(r); r.byte(); importedGlobals++; break;
        case KIND.tag: r.byte(); r.u32(); break;
        default: throw new WasmRewriteError(`unknown import kind ${kind}`);
      }
    }
  }
  if (importedMemories > 0) throw new WasmRewriteError('the module imports its memory; it must define one');

  // A module without memory gets an empty one it never touches (the engine treats all alike).
  let initialPages = 0;
  let declaredMaxPages: number | null = null;
  const memorySection = find(SECTION.memory);
  if (memorySection) {
    const mr = new Reader(input, memorySection.start, memorySection.end);
    const count = mr.u32();
    if (count > 1) throw new WasmRewriteError('the module defines more than one memory');
    if (count === 1) [initialPages, declaredMaxPages] = readLimits(mr);
  }

  // Tables defined by the module.
  let definedTables = 0;
  const tableSection = find(SECTION.table);
  if (tableSection) definedTables = new Reader(input, tableSection.start, tableSection.end).u32();

  // Mutable globals defined by the module.
  const mutableGlobals: number[] = [];
  const globalSection = find(SECTION.global);
  if (globalSection) {
    const r = new Reader(input, globalSection.start, globalSection.end);
    const count = r.u32();
    for (let i = 0; i < count; i++) {
      skipValType(r);
      const mutable = r.byte() === 1;
      skipConstExpr(r);
      if (mutable) mutableGlobals.push(importedGlobals + i);
    }
  }

  // Existing exports: keep them, note what is already reachable.
  const exportEntries: Uint8Array[] = [];
  const exportNames = new Set<string>();
  const exportSection = find(SECTION.export);
  if (exportSection) {
    const r = new Reader(input, exportSection.start, exportSection.end);
    const count = r.u32();
    for (let i = 0; i < count; i++) {
      const entryStart = r.pos;
      const nameLen = r.u32();
      const name = new TextDecoder().decode(input.subarray(r.pos, r.pos + nameLen));
      r.skip(nameLen);
      r.byte(); // kind
      r.u32(); // index
      exportNames.add(name);
      exportEntries.push(input.subarray(entryStart, r.pos));
    }
  }
  const addExport = (name: string, kind: number, index: number) => {
    if (exportNames.has(name)) throw new WasmRewriteError(`the module already exports "${name}"`);
    exportEntries.push(Uint8Array.from([...nameBytes(name), kind, ...leb(index)]));
  };
  for (const index of mutableGlobals) addExport(`${GLOBAL_EXPORT_PREFIX}${index}`, KIND.global, index);
  for (let t = 0; t < importedTables + definedTables; t++) addExport(`${TABLE_EXPORT_PREFIX}${t}`, KIND.table, t);

  // New import section: the old entries plus the memory.
  const memoryImport = [...nameBytes(HOST_MODULE), ...nameBytes(MEMORY_IMPORT), KIND.memory, 0x00, ...leb(initialPages)];
  let oldImports: Uint8Array = new Uint8Array(0);
  if (importSection) {
    const r = new Reader(input, importSection.start, importSection.end);
    r.u32();
    oldImports = input.subarray(r.pos, importSection.end);
  }
  const importBody = [...leb(importCount + 1), ...oldImports, ...memoryImport];
  const exportBody: number[] = [...leb(exportEntries.length)];
  for (const entry of exportEntries) exportBody.push(...entry);

  const replaced = new Map<number, Uint8Array | null>([
    [SECTION.import, section(SECTION.import, importBody)],
    [SECTION.memory, null],
    [SECTION.export, section(SECTION.export, exportBody)],
  ]);

  const parts: Uint8Array[] = [input.subarray(0, 8)];
  const pending = new Map(replaced);
  const flushBefore = (order: number) => {
    for (const [id, bytes] of [...pending]) {
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

  const total = parts.reduce((n, p) => n + p.length, 0);
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    bytes.set(p, offset);
    offset += p.length;
  }
  return { bytes, initialPages, declaredMaxPages };
}
