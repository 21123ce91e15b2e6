// Reads what a module declares without compiling it or walking its code, in two steps: first what
// it would cost (counts, sizes; nothing allocated per entry, so a module built to exhaust memory
// cannot do it here), checked against the engine's limits; then its interface (imports with their
// signatures, exports), read only from a module within them.
import {
  type Reader,
  readElementSegment,
  readLimits,
  readName,
  SECTION,
  skipConstExpr,
  skipValType,
  splitSections,
  vector,
  WasmRewriteError,
} from './wasm-binary.ts';
import type { Signature, ValType } from '../runtime/signatures.ts';

export type ExternalKind = 'function' | 'table' | 'memory' | 'global' | 'tag';

export interface ModuleSummary {
  /** Type definitions (a recursion group counts each of its types). */
  types: number;
  /** Struct or array types (the GC proposal): their instances live on the JS heap. */
  gcTypes: number;
  imports: number;
  importedFunctions: number;
  /** Functions the module defines. */
  functions: number;
  tables: { min: number; max: number | null }[];
  memory: { min: number; max: number | null } | null;
  globals: number;
  /**
   * The first mutable global the module defines whose value JS cannot read or write (v128, exnref):
   * the engine restores mutable globals through JS after every call.
   */
  opaqueGlobal: { index: number; type: string } | null;
  exports: number;
  /** Bytes of the import and export sections: their names, mostly (every listing and describe carries them). */
  interfaceBytes: number;
  tags: number;
  /** Entries of all element segments together. */
  elementEntries: number;
  dataSegments: number;
}

/**
 * What an import asks for or an export gives, as linking compares them: a function's type (its
 * encoding, so any two equal types compare equal), a memory's or table's limits, a global's type.
 */
export type ExternalType =
  | { kind: 'function'; type: string; signature: Signature | null }
  | { kind: 'memory'; min: number; max: number | null }
  | { kind: 'table'; element: string; min: number; max: number | null }
  | { kind: 'global'; value: string; mutable: boolean }
  | { kind: 'tag' };

export interface ImportSummary {
  module: string;
  name: string;
  kind: ExternalKind;
  /** A function import's signature (null: not a function, or its type has reference or vector types). */
  signature: Signature | null;
  type: ExternalType;
}

export interface ExportSummary {
  name: string;
  kind: ExternalKind;
  type: ExternalType;
}

export interface ModuleInterface {
  imports: ImportSummary[];
  exports: ExportSummary[];
}

const EXTERNAL_KINDS: readonly ExternalKind[] = ['function', 'table', 'memory', 'global', 'tag'];
const NUMERIC: Record<number, ValType> = { 0x7f: 'i32', 0x7e: 'i64', 0x7d: 'f32', 0x7c: 'f64' };
const FUNC = 0x60;
const STRUCT = 0x5f;
const ARRAY = 0x5e;
const REC = 0x4e;
const SUB = 0x50;
const SUB_FINAL = 0x4f;

function kindOf(byte: number): ExternalKind {
  const kind = EXTERNAL_KINDS[byte];
  if (!kind) throw new WasmRewriteError(`unknown external kind ${byte}`);
  return kind;
}

/** Calls `each(form)` for every type definition, after its recursion group and `sub` headers. */
function forEachType(r: Reader, count: number, each: (form: number) => void): void {
  for (let i = 0; i < count; i++) {
    const first = r.byte();
    const group = first === REC ? r.u32() : 1;
    for (let m = 0; m < group; m++) {
      let form = first === REC ? r.byte() : first;
      if (form === SUB || form === SUB_FINAL) {
        for (let n = r.u32(), k = 0; k < n; k++) r.u32(); // supertypes
        form = r.byte();
      }
      each(form);
    }
  }
}

/** Reads the rest of a type definition of `form`; a function type's signature when all its types are numeric. */
function readType(r: Reader, form: number): Signature | null {
  if (form === FUNC) {
    let numeric = true;
    const list = (): ValType[] => {
      const out: ValType[] = [];
      for (let n = r.u32(), i = 0; i < n; i++) {
        const type = NUMERIC[r.bytes[r.pos] ?? -1];
        skipValType(r);
        if (type) out.push(type);
        else numeric = false;
      }
      return out;
    };
    const params = list();
    const results = list();
    return numeric ? { params, results } : null;
  }
  if (form === STRUCT) {
    for (let n = r.u32(), i = 0; i < n; i++) {
      skipValType(r); // storage type (i8/i16 are single bytes too)
      r.byte(); // mutability
    }
    return null;
  }
  if (form === ARRAY) {
    skipValType(r);
    r.byte();
    return null;
  }
  throw new WasmRewriteError(`unknown type form 0x${form.toString(16)}`);
}

function readMemoryLimits(r: Reader): { min: number; max: number | null } {
  const flags = r.bytes[r.pos] ?? 0;
  if (flags & 0x02) throw new WasmRewriteError('a shared memory is not supported');
  if (flags & 0x04) throw new WasmRewriteError('a 64-bit memory is not supported');
  const [min, max] = readLimits(r);
  return { min, max };
}

/** Skips an import's description after its kind byte. */
function skipImportDescription(r: Reader, kind: ExternalKind): void {
  if (kind === 'function') r.u32();
  else if (kind === 'table') {
    skipValType(r);
    readLimits(r);
  } else if (kind === 'memory') readMemoryLimits(r);
  else if (kind === 'global') {
    skipValType(r);
    r.byte();
  } else {
    r.byte(); // tag attribute
    r.u32();
  }
}

/** V8's JS API cannot read or write a global of these value types (abstract heap types exn and noexn included). */
const OPAQUE: Record<number, string> = { 0x7b: 'v128', 0x69: 'exnref', 0x74: 'nullexnref' };

/** The name of the value type at `r` when JS cannot hold its values, else null (reads nothing). */
function opaqueType(r: Reader): string | null {
  const first = r.bytes[r.pos] ?? -1;
  if (first !== 0x63 && first !== 0x64) return OPAQUE[first] ?? null;
  const heap = OPAQUE[r.bytes[r.pos + 1] ?? -1];
  return heap ? `(ref ${first === 0x63 ? 'null ' : ''}${heap === 'exnref' ? 'exn' : 'noexn'})` : null;
}

/** What the module would cost: counts and sizes, read without allocating per entry. */
export function summarizeModule(bytes: Uint8Array): ModuleSummary {
  const summary: ModuleSummary = {
    types: 0,
    gcTypes: 0,
    imports: 0,
    importedFunctions: 0,
    functions: 0,
    tables: [],
    memory: null,
    globals: 0,
    opaqueGlobal: null,
    exports: 0,
    interfaceBytes: 0,
    tags: 0,
    elementEntries: 0,
    dataSegments: 0,
  };
  let importedGlobals = 0;
  for (const s of splitSections(bytes)) {
    switch (s.id) {
      case SECTION.type: {
        const { count, reader: r } = vector(bytes, s);
        forEachType(r, count, (form) => {
          summary.types++;
          if (readType(r, form) === null && form !== FUNC) summary.gcTypes++;
        });
        break;
      }
      case SECTION.import: {
        const { count, reader: r } = vector(bytes, s);
        summary.imports = count;
        summary.interfaceBytes += s.end - s.start;
        for (let i = 0; i < count; i++) {
          r.skipName();
          r.skipName();
          const kind = kindOf(r.byte());
          if (kind === 'function') summary.importedFunctions++;
          if (kind === 'global') importedGlobals++;
          skipImportDescription(r, kind);
        }
        break;
      }
      case SECTION.function:
        summary.functions = vector(bytes, s).count;
        break;
      case SECTION.table: {
        const { count, reader: r } = vector(bytes, s);
        // Counted before they are read: a table section cannot make this loop allocate much.
        if (count > 100_000) throw new WasmRewriteError(`the module defines ${count} tables`);
        for (let i = 0; i < count; i++) {
          const withInit = r.bytes[r.pos] === 0x40;
          if (withInit) r.skip(2);
          skipValType(r);
          const [min, max] = readLimits(r);
          if (withInit) skipConstExpr(r);
          summary.tables.push({ min, max });
        }
        break;
      }
      case SECTION.memory: {
        const { count, reader: r } = vector(bytes, s);
        if (count > 1) throw new WasmRewriteError('the module defines more than one memory');
        if (count === 1) summary.memory = readMemoryLimits(r);
        break;
      }
      case SECTION.global: {
        const { count, reader: r } = vector(bytes, s);
        summary.globals = count;
        for (let i = 0; i < count && summary.opaqueGlobal === null; i++) {
          const type = opaqueType(r);
          skipValType(r);
          if (r.byte() === 1 && type) summary.opaqueGlobal = { index: importedGlobals + i, type };
          skipConstExpr(r);
        }
        break;
      }
      case SECTION.export:
        summary.exports = vector(bytes, s).count;
        summary.interfaceBytes += s.end - s.start;
        break;
      case SECTION.elem: {
        const { count, reader: r } = vector(bytes, s);
        for (let i = 0; i < count; i++) summary.elementEntries += readElementSegment(r).entries;
        break;
      }
      case SECTION.data:
        summary.dataSegments = vector(bytes, s).count;
        break;
      case SECTION.tag:
        summary.tags = vector(bytes, s).count;
        break;
    }
  }
  return summary;
}

/** The parameter count of each function the module defines (by its type; -1 for a type that is not a function's). */
export function functionParams(bytes: Uint8Array): number[] {
  const byType: number[] = [];
  const params: number[] = [];
  for (const s of splitSections(bytes)) {
    if (s.id === SECTION.type) {
      const { count, reader: r } = vector(bytes, s);
      forEachType(r, count, (form) => {
        const start = r.pos;
        byType.push(form === FUNC ? r.u32() : -1);
        r.pos = start;
        readType(r, form);
      });
    } else if (s.id === SECTION.function) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) params.push(byType[r.u32()] ?? -1);
    }
  }
  return params;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');

/** A value or reference type's encoding (a reference type may carry a heap type). */
function valueType(r: Reader): string {
  const start = r.pos;
  skipValType(r);
  return hex(r.bytes.subarray(start, r.pos));
}

/**
 * Imports (with signatures and types) and exports (with types); read only from a module within the
 * limits (see summarizeModule).
 */
export function readInterface(bytes: Uint8Array): ModuleInterface {
  const types: { signature: Signature | null; type: string }[] = [];
  const imports: ImportSummary[] = [];
  const exports: ExportSummary[] = [];
  // Index spaces, imports first: what each function, table, memory and global is.
  const functions: number[] = [];
  const tables: ExternalType[] = [];
  const memories: ExternalType[] = [];
  const globals: ExternalType[] = [];
  const functionImports = new Map<ImportSummary, number>();
  const exported: { name: string; kind: ExternalKind; index: number }[] = [];
  const limits = (r: Reader) => {
    const [min, max] = readLimits(r);
    return { min, max };
  };
  for (const s of splitSections(bytes)) {
    if (s.id === SECTION.type) {
      const { count, reader: r } = vector(bytes, s);
      forEachType(r, count, (form) => {
        const start = r.pos;
        const signature = readType(r, form);
        types.push({ signature, type: `${form.toString(16)}:${hex(bytes.subarray(start, r.pos))}` });
      });
    } else if (s.id === SECTION.import) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) {
        const module = readName(r);
        const field = readName(r);
        const kind = kindOf(r.byte());
        let type: ExternalType = { kind: 'tag' };
        if (kind === 'function') functions.push(r.u32());
        else if (kind === 'table') tables.push((type = { kind, element: valueType(r), ...limits(r) }));
        else if (kind === 'memory') memories.push((type = { kind, ...readMemoryLimits(r) }));
        else if (kind === 'global') globals.push((type = { kind, value: valueType(r), mutable: r.byte() === 1 }));
        else skipImportDescription(r, kind);
        const entry: ImportSummary = { module, name: field, kind, signature: null, type };
        if (kind === 'function') functionImports.set(entry, functions[functions.length - 1]!);
        imports.push(entry);
      }
    } else if (s.id === SECTION.function) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) functions.push(r.u32());
    } else if (s.id === SECTION.table) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) {
        const withInit = r.bytes[r.pos] === 0x40;
        if (withInit) r.skip(2);
        tables.push({ kind: 'table', element: valueType(r), ...limits(r) });
        if (withInit) skipConstExpr(r);
      }
    } else if (s.id === SECTION.memory) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) memories.push({ kind: 'memory', ...readMemoryLimits(r) });
    } else if (s.id === SECTION.global) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) {
        globals.push({ kind: 'global', value: valueType(r), mutable: r.byte() === 1 });
        skipConstExpr(r);
      }
    } else if (s.id === SECTION.export) {
      const { count, reader: r } = vector(bytes, s);
      for (let i = 0; i < count; i++) exported.push({ name: readName(r), kind: kindOf(r.byte()), index: r.u32() });
    }
  }
  const functionType = (typeIndex: number | undefined): ExternalType => {
    const t = typeIndex === undefined ? undefined : types[typeIndex];
    return { kind: 'function', type: t?.type ?? `unknown:${typeIndex}`, signature: t?.signature ?? null };
  };
  for (const [entry, typeIndex] of functionImports) {
    entry.type = functionType(typeIndex);
    entry.signature = types[typeIndex]?.signature ?? null;
  }
  for (const { name: exportName, kind, index } of exported) {
    const space = { function: null, table: tables, memory: memories, global: globals, tag: null }[kind];
    const type: ExternalType = kind === 'function' ? functionType(functions[index]) : (space?.[index] ?? { kind: 'tag' });
    exports.push({ name: exportName, kind, type });
  }
  return { imports, exports };
}
