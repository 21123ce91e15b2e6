// Builds WebAssembly binaries too large to write as WAT (a million functions, exports or globals),
// straight from the binary format: one `run` export `() -> i32` returning 0, plus what is asked for.

export interface ModuleSpec {
  /** Extra functions `() -> i32` besides `run`. */
  functions?: number;
  /** Extra exports, each of one of the extra functions. */
  exports?: number;
  /** Globals (of `globalType`, initialised to 0 or null). */
  globals?: number;
  mutableGlobals?: boolean;
  /** The globals' type (default i32); JS cannot read or write the values of the others. */
  globalType?: 'i32' | 'v128' | 'exnref';
  /** Initial sizes of funcref tables. */
  tables?: number[];
  /** Exception tags `() -> ()`. */
  tags?: number;
  /** Extra function types `(i32|i64 ...) -> ()`, all different. */
  types?: number;
  /** Passive element segments of `entries` references to `run` each. */
  elementSegments?: { count: number; entries: number };
  /** Active data segments of one byte each. */
  dataSegments?: number;
  /** Initial memory pages (default 1). */
  memoryPages?: number;
  /** Functions imported, all `extism:host/env` `get_log_level` (`() -> i32`). */
  imports?: number;
  /** i64 locals of `run`, in one group. */
  locals?: number;
  /** The memory (`memoryPages` to start with) imported from this module and name instead of defined. */
  importMemory?: { module: string; name: string };
  /** `run` grows memory by this many pages and returns what memory.grow answers (the old size, or -1). */
  grow?: number;
  /** `run`'s code instead (without its final `end`): it must leave an i32 (see shapedCode). */
  code?: number[];
}

/** A global's type and initialiser of each `globalType`. */
const GLOBAL_TYPES = {
  i32: { type: [0x7f], init: [0x41, 0] },
  v128: { type: [0x7b], init: [0xfd, 0x0c, ...new Array<number>(16).fill(0)] },
  exnref: { type: [0x69], init: [0xd0, 0x69] },
};

export interface CodeShape {
  /** Locals (i64) the function declares: `locals` of the ModuleSpec, the last one the loop counter. */
  locals: number;
  /** Loops around the body, nested (each inside the last) or one after another. */
  loops: number;
  nested: boolean;
  /** Locals 0 to assigned - 1 are set from the counter in the innermost loop (or in each loop). */
  assigned: number;
  /** Times the innermost loop (or each loop) runs. */
  iterations: number;
}

/**
 * Code for `run` shaped to weigh on V8's compilers: loops (nested or not) that each count the last
 * local down from `iterations`, assigning `assigned` locals on every turn, then return 0.
 */
export function shapedCode({ locals, loops, nested, assigned, iterations }: CodeShape): number[] {
  const counter = leb(locals - 1);
  const code: number[] = [];
  // One push per part: a spread of a big array into push() would pass too many arguments.
  const append = (...parts: number[][]) => parts.forEach((part) => part.forEach((b) => code.push(b)));
  const start = [0x42, ...sleb(iterations), 0x21, ...counter];
  const turn = () => {
    for (let k = 0; k < assigned; k++) append([0x20, ...counter, 0x21, ...leb(k)]); // local k = counter
    // counter -= 1; br_if 0 (the loop) while it is not 0
    append([0x20, ...counter, 0x42, 1, 0x7d, 0x22, ...counter, 0x42, 0, 0x52, 0x0d, 0]);
  };
  if (nested) {
    append(start);
    for (let i = 0; i < loops; i++) append([0x03, 0x40]);
    turn();
    for (let i = 0; i < loops; i++) append([0x0b]);
  } else {
    for (let i = 0; i < loops; i++) {
      append(start, [0x03, 0x40]);
      turn();
      append([0x0b]);
    }
  }
  append([0x41, 0]);
  return code;
}

export function leb(value: number): number[] {
  const out: number[] = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return out;
}

/** A signed LEB128 (i32.const's immediate). */
export function sleb(value: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && !(byte & 0x40)) || (value === -1 && byte & 0x40);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const encoder = new TextEncoder();
const name = (text: string): number[] => {
  const bytes = encoder.encode(text);
  return [...leb(bytes.length), ...bytes];
};

/** Concatenates byte chunks without spreading big arrays onto the stack. */
function join(parts: (number[] | Uint8Array)[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function vector(items: (number[] | Uint8Array)[]): Uint8Array {
  return join([leb(items.length), ...items]);
}

function section(id: number, body: Uint8Array): Uint8Array {
  return join([[id, ...leb(body.length)], body]);
}

/**
 * `module` with a custom section `sectionName` holding `content` appended: still valid and skipped by
 * every engine, so new bytes (a new id, a larger upload) with the same code.
 */
export function withCustomSection(module: Uint8Array, sectionName: string, content: Uint8Array): Uint8Array {
  return join([module, section(0, join([name(sectionName), content]))]);
}

export function buildModule(spec: ModuleSpec): Uint8Array {
  const extra = spec.functions ?? 0;
  const imported = spec.imports ?? 0;
  const sections: Uint8Array[] = [];
  const types: number[][] = [
    [0x60, 0, 1, 0x7f],
    [0x60, 0, 0],
  ];
  for (let i = 0; i < (spec.types ?? 0); i++) {
    const params: number[] = [];
    for (let bit = 0, v = i + 1; bit < 20; bit++, v >>= 1) params.push(v & 1 ? 0x7e : 0x7f);
    types.push([0x60, ...leb(params.length), ...params, 0]);
  }
  sections.push(section(1, vector(types)));
  const importEntries: number[][] = [];
  if (imported > 0) {
    const entry = [...name('extism:host/env'), ...name('get_log_level'), 0x00, 0];
    importEntries.push(...Array.from({ length: imported }, () => entry));
  }
  const memoryLimits = [0x00, ...leb(spec.memoryPages ?? 1)];
  if (spec.importMemory)
    importEntries.push([...name(spec.importMemory.module), ...name(spec.importMemory.name), 0x02, ...memoryLimits]);
  if (importEntries.length > 0) sections.push(section(2, vector(importEntries)));
  sections.push(section(3, vector(Array.from({ length: 1 + extra }, () => [0]))));
  if (spec.tables) sections.push(section(4, vector(spec.tables.map((n) => [0x70, 0x00, ...leb(n)]))));
  if (!spec.importMemory) sections.push(section(5, vector([memoryLimits])));
  if (spec.tags) sections.push(section(13, vector(Array.from({ length: spec.tags }, () => [0x00, 1]))));
  if (spec.globals) {
    const { type, init } = GLOBAL_TYPES[spec.globalType ?? 'i32'];
    const entry = [...type, spec.mutableGlobals ? 1 : 0, ...init, 0x0b];
    sections.push(section(6, vector(Array.from({ length: spec.globals }, () => entry))));
  }
  const exports: number[][] = [[...name('run'), 0x00, ...leb(imported)]];
  for (let i = 0; i < (spec.exports ?? 0); i++)
    exports.push([...name(`f${i}`), 0x00, ...leb(imported + 1 + (i % Math.max(1, extra)))]);
  sections.push(section(7, vector(exports)));
  if (spec.elementSegments) {
    const { count, entries } = spec.elementSegments;
    if (imported > 127) throw new Error('element segments refer to run by a one-byte index');
    const segment = join([[0x01, 0x00], leb(entries), new Uint8Array(entries).fill(imported)]);
    sections.push(section(9, vector(Array.from({ length: count }, () => segment))));
  }
  const body = [4, 0, 0x41, 0, 0x0b];
  const locals = spec.locals ? [0x01, ...leb(spec.locals), 0x7e] : [0x00];
  const result = spec.code ?? (spec.grow === undefined ? [0x41, 0] : [0x41, ...sleb(spec.grow), 0x40, 0x00]);
  const run = join([leb(locals.length + result.length + 1), locals, result, [0x0b]]);
  sections.push(section(10, vector([run, ...Array.from({ length: extra }, () => body)])));
  if (spec.dataSegments) {
    sections.push(section(11, vector(Array.from({ length: spec.dataSegments }, () => [0x00, 0x41, 0, 0x0b, 1, 7]))));
  }
  return join([[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], ...sections]);
}

export interface CodeModuleSpec {
  /** Exported functions `() -> i32`: their instructions (without the final `end`) and i32 locals. */
  functions: { name: string; code: number[]; locals?: number }[];
  memoryPages: number;
}

/**
 * A module of functions written as raw instructions (for encodings WAT tools do not write), each
 * declared for ref.func (function i is index i).
 */
export function buildCodeModule(spec: CodeModuleSpec): Uint8Array {
  const count = spec.functions.length;
  const types = [[0x60, 0, 1, 0x7f]];
  const bodies = spec.functions.map(({ code, locals = 0 }) => {
    const body = [...(locals > 0 ? [1, ...leb(locals), 0x7f] : [0]), ...code, 0x0b];
    return [...leb(body.length), ...body];
  });
  return join([
    [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    section(1, vector(types)),
    section(3, vector(spec.functions.map(() => [0]))),
    section(5, vector([[0x00, ...leb(spec.memoryPages)]])),
    section(7, vector(spec.functions.map((f, i) => [...name(f.name), 0x00, ...leb(i)]))),
    section(9, vector([[0x03, 0x00, ...leb(count), ...spec.functions.flatMap((_, i) => leb(i))]])),
    section(10, vector(bodies)),
  ]);
}
