// The module rewriter alone: what it changes must be exactly what the engine relies on.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DIRTY_CHUNK_SHIFT,
  DIRTY_MAP_IMPORT,
  DIRTY_MAP_PAGES,
  GLOBAL_EXPORT_PREFIX,
  GROW_BUDGET_OFFSET,
  HOST_MODULE,
  MEMORY_IMPORT,
  rewriteForEngine,
  TABLE_BUDGET_OFFSET,
  WasmRewriteError,
} from '../src/engine/compile/wasm-rewrite.ts';
import { leb, Reader } from '../src/engine/compile/wasm-binary.ts';
import { rewriteCode } from '../src/engine/compile/wasm-code.ts';
import { InstructionReader } from '../src/engine/compile/wasm-instructions.ts';
import { readPlugin, repoRoot, wat } from './helpers.ts';

const OPTIONS = { maxTableElements: 100_000 };

const builtPlugins = readdirSync(path.join(repoRoot, 'plugins', 'dist'))
  .filter((f) => f.endsWith('.wasm') && f !== 'bad_import.wasm')
  .map((f) => f.slice(0, -5));

function instantiate(
  bytes: Uint8Array,
  memory: WebAssembly.Memory,
  imports: WebAssembly.Imports = {},
  dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES }),
) {
  const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  return new WebAssembly.Instance(module, { ...imports, [HOST_MODULE]: { [MEMORY_IMPORT]: memory, [DIRTY_MAP_IMPORT]: dirty } });
}

describe('rewriteForEngine', () => {
  it.each(builtPlugins)(
    'keeps %s valid, imports its memory, exports every mutable global and keeps its exports',
    async (name) => {
      const original = new Uint8Array(await readPlugin(name));
      const result = rewriteForEngine(original, OPTIONS);
      const before = new WebAssembly.Module(original as Uint8Array<ArrayBuffer>);
      const after = new WebAssembly.Module(result.bytes as Uint8Array<ArrayBuffer>);
      expect(result.virtualGrowth).toBe(true);
      expect(WebAssembly.Module.imports(after)).toContainEqual({ module: HOST_MODULE, name: MEMORY_IMPORT, kind: 'memory' });
      const exportsAfter = WebAssembly.Module.exports(after);
      for (const e of WebAssembly.Module.exports(before)) expect(exportsAfter).toContainEqual(e);
      expect(exportsAfter.some((e) => e.name.startsWith(GLOBAL_EXPORT_PREFIX))).toBe(true);
    },
  );

  it('reaches a non-exported mutable global and preserves the declared initial memory', async () => {
    const bytes = await wat(`(module
      (memory 3)
      (global $hidden (mut i32) (i32.const 41))
      (func (export "bump") (result i32) (global.set $hidden (i32.add (global.get $hidden) (i32.const 1))) (global.get $hidden)))`);
    const result = rewriteForEngine(bytes, OPTIONS);
    expect(result.initialPages).toBe(3);
    const instance = instantiate(result.bytes, new WebAssembly.Memory({ initial: 3 }));
    const hidden = Object.entries(instance.exports).find(
      ([k]) => k.startsWith(GLOBAL_EXPORT_PREFIX) && (instance.exports[k] as WebAssembly.Global).value === 41,
    );
    expect(hidden).toBeDefined();
    expect((instance.exports.bump as () => number)()).toBe(42);
    (hidden![1] as WebAssembly.Global).value = 41;
    expect((instance.exports.bump as () => number)()).toBe(42);
  });

  it('sends every table.grow through a shim that keeps to the table budget in the dirty map (imported and defined tables, any reference type)', async () => {
    const bytes = await wat(`(module
      (import "lhs" "shared" (table $shared 1 externref))
      (table $own 2 funcref)
      (func (export "growOwn") (param i32) (result i32) (table.grow $own (ref.null func) (local.get 0)))
      (func (export "growShared") (param i32) (result i32) (table.grow $shared (ref.null extern) (local.get 0))))`);
    const result = rewriteForEngine(bytes, OPTIONS);
    expect(result).toMatchObject({ virtualGrowth: true, initialTableElements: 2, tableElementLimit: 100_000 });
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const budget = new DataView(dirty.buffer);
    budget.setInt32(TABLE_BUDGET_OFFSET, 10, true);
    const shared = new WebAssembly.Table({ element: 'externref', initial: 1 });
    const instance = instantiate(result.bytes, new WebAssembly.Memory({ initial: 0 }), { lhs: { shared } }, dirty);
    const [growOwn, growShared] = [instance.exports.growOwn, instance.exports.growShared] as ((n: number) => number)[];
    expect(growOwn!(4)).toBe(2);
    expect(growShared!(5)).toBe(1);
    expect(budget.getInt32(TABLE_BUDGET_OFFSET, true)).toBe(1);
    expect(growOwn!(2)).toBe(-1); // past the budget: nothing grows
    expect(growShared!(-1)).toBe(-1); // 0xFFFFFFFF elements (unsigned), not a shrink
    expect([shared.length, budget.getInt32(TABLE_BUDGET_OFFSET, true)]).toEqual([6, 1]);
    expect(growOwn!(1)).toBe(6);
    expect(budget.getInt32(TABLE_BUDGET_OFFSET, true)).toBe(0);
  });

  it('virtualises memory growth: after the size global is reset, growth reuses the same pages', async () => {
    const bytes = await wat(`(module
      (memory 1)
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
      (func (export "size") (result i32) (memory.size))
      (func (export "poke") (param i32) (i32.store8 (local.get 0) (i32.const 7))))`);
    const result = rewriteForEngine(bytes, OPTIONS);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const budget = new DataView(dirty.buffer);
    budget.setInt32(GROW_BUDGET_OFFSET, 100, true);
    const instance = instantiate(result.bytes, memory, {}, dirty);
    const grow = instance.exports.grow as (n: number) => number;
    const size = instance.exports.size as () => number;
    const pages = Object.entries(instance.exports).find(([k]) => k.startsWith(GLOBAL_EXPORT_PREFIX))![1] as WebAssembly.Global;

    expect(grow(1)).toBe(1);
    expect(size()).toBe(2);
    expect(memory.buffer.byteLength).toBe(2 * 65536);
    pages.value = 1; // what a reset does
    expect(size()).toBe(1);
    expect(grow(1)).toBe(1);
    expect(memory.buffer.byteLength).toBe(2 * 65536); // no new real page
    expect(grow(2)).toBe(2);
    expect(memory.buffer.byteLength).toBe(4 * 65536);
    expect(grow(1)).toBe(-1); // the Memory's maximum still holds
    expect(grow(-1)).toBe(-1);
    expect(size()).toBe(4);
    expect(budget.getInt32(GROW_BUDGET_OFFSET, true)).toBe(96); // lowered by every page grown, virtual or real
  });

  it('refuses memory.grow past the budget in the dirty map, which every module sharing that map draws on', async () => {
    const bytes = await wat(`(module (memory 1) (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))`);
    const { bytes: rewritten } = rewriteForEngine(bytes, OPTIONS);
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const budget = new DataView(dirty.buffer);
    budget.setInt32(GROW_BUDGET_OFFSET, 3, true);
    const [a, b] = [0, 1].map(
      () =>
        instantiate(rewritten, new WebAssembly.Memory({ initial: 1, maximum: 10 }), {}, dirty).exports.grow as (
          n: number,
        ) => number,
    );
    expect(a!(2)).toBe(1);
    expect(b!(2)).toBe(-1); // one page left
    expect(b!(1)).toBe(1);
    expect(a!(1)).toBe(-1);
    expect(budget.getInt32(GROW_BUDGET_OFFSET, true)).toBe(0);
  });

  it('marks in the dirty map the 4 KiB chunks each write touches, the next one only for a write that may cross', async () => {
    const bytes = await wat(`(module
      (memory 4)
      (table 2 funcref)
      (func $f)
      (elem declare func $f)
      (data $p "0123456789")
      (func (export "init") (param i32 i32) (memory.init $p (local.get 0) (i32.const 0) (local.get 1)))
      (func (export "fill") (param i32 i32) (memory.fill (local.get 0) (i32.const 1) (local.get 1)))
      (func (export "copy") (param i32 i32) (memory.copy (local.get 0) (i32.const 0) (local.get 1)))
      (func (export "store8") (param i32) (i32.store8 (local.get 0) (i32.const 1)))
      (func (export "store64") (param i32) (i64.store offset=65536 (local.get 0) (i64.const 1)))
      (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
      (func (export "tset") (table.set (i32.const 0) (ref.func $f))))`);
    const result = rewriteForEngine(bytes, OPTIONS);
    expect(result.dirtyTracking).toBe(true);
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const instance = instantiate(result.bytes, new WebAssembly.Memory({ initial: 4 }), {}, dirty);
    const run = (name: string, ...args: number[]) => (instance.exports[name] as (...a: number[]) => unknown)(...args);
    const map = new Uint8Array(dirty.buffer);
    const marked = (action: () => unknown) => {
      map.fill(0);
      action();
      const found: number[] = [];
      for (let chunk = map.indexOf(1); chunk !== -1; chunk = map.indexOf(1, chunk + 1)) found.push(chunk);
      return found;
    };
    /** Chunks first..last. */
    const chunks = (first: number, last: number) => Array.from({ length: last - first + 1 }, (_, i) => first + i);
    expect(DIRTY_CHUNK_SHIFT).toBe(12);
    expect(marked(() => run('init', 0x1eff0, 10))).toEqual([0x1e]);
    expect(marked(() => run('init', 0x1fffa, 10))).toEqual([0x1f, 0x20]);
    expect(marked(() => run('fill', 2 * 65536 + 5, 65536))).toEqual(chunks(0x20, 0x30));
    expect(marked(() => run('fill', 3 * 65536, 0))).toEqual([]);
    expect(marked(() => run('copy', 65535, 2))).toEqual([0x0f, 0x10]);
    expect(marked(() => run('store8', 65535))).toEqual([0x0f]);
    // An i64 store anywhere in a chunk marks the next one too (it may cross); 0x1fff8 is 65536 + 65530.
    expect(marked(() => run('store64', 65530))).toEqual([0x1f, 0x20]);
    expect(marked(() => run('store64', 0x2000))).toEqual([0x12, 0x13]);
    expect(marked(() => run('load', 65530))).toEqual([]);
    // A bulk write that would pass 4 GiB marks up to the map's last chunk, not past it (no wrap), then traps.
    map.fill(0);
    expect(() => run('fill', 0xfffffff0, 0x100)).toThrow(WebAssembly.RuntimeError);
    expect([map[0xfffff], map[0x100000], map[0]]).toEqual([1, 0, 0]);
    // A write out of bounds traps; whatever it marked, memory is unchanged.
    expect(() => run('fill', 3 * 65536, 2 * 65536)).toThrow(WebAssembly.RuntimeError);

    const tablesWritten = instance.exports[result.tablesWrittenExport!] as WebAssembly.Global;
    run('store8', 0);
    expect(tablesWritten.value).toBe(0);
    run('tset');
    expect(tablesWritten.value).toBe(1);
  });

  it('marks a chunk once for stores through one local, and again wherever that may not cover a write', async () => {
    const bytes = await wat(`(module
      (memory 8)
      (func (export "pair") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (i64.store offset=8 (local.get $p) (i64.const 2)))
      (func (export "far") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (i32.store offset=5000 (local.get $p) (i32.const 2)))
      (func (export "below") (param $p i32) (param $c i32)
        (i32.store offset=100 (local.get $p) (i32.const 1))
        (i32.store8 offset=2 (local.get $p) (i32.const 2)))
      (func (export "moved") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (local.set $p (i32.add (local.get $p) (i32.const 8192)))
        (i32.store offset=8 (local.get $p) (i32.const 2)))
      (func (export "teed") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (i32.store offset=8 (local.get $p) (local.tee $p (i32.add (local.get $p) (i32.const 8192))))
        (i32.store offset=8 (local.get $p) (i32.const 2)))
      (func (export "block") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (block (br_if 0 (local.get $c)) (local.set $p (i32.add (local.get $p) (i32.const 8192))))
        (i32.store offset=8 (local.get $p) (i32.const 2)))
      (func (export "kept") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (block (br_if 0 (local.get $c)) (local.set $c (i32.const 7)))
        (i32.store offset=8 (local.get $p) (local.get $c)))
      (func (export "ifelse") (param $p i32) (param $c i32)
        (if (local.get $c)
          (then (i32.store (local.get $p) (i32.const 1)))
          (else (i32.store offset=8 (local.get $p) (i32.const 2))))
        (i32.store offset=9000 (local.get $p) (i32.const 3)))
      (func (export "loop") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (loop
          (i32.store offset=8 (local.get $p) (i32.const 2))
          (local.set $p (i32.add (local.get $p) (i32.const 4096)))
          (br_if 0 (i32.gt_s (local.tee $c (i32.sub (local.get $c) (i32.const 1))) (i32.const 0)))))
      (func (export "computed") (param $p i32) (param $c i32)
        (i32.store (local.get $p) (i32.const 1))
        (i32.store (i32.add (local.get $p) (i32.const 8192)) (i32.const 2))))`);
    const result = rewriteForEngine(bytes, OPTIONS);
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const memory = new WebAssembly.Memory({ initial: 8 });
    const instance = instantiate(result.bytes, memory, {}, dirty);
    const map = new Uint8Array(dirty.buffer);
    const live = new Uint8Array(memory.buffer);
    const chunk = 2 ** DIRTY_CHUNK_SHIFT;
    /** The chunks marked and the chunks written by one run from clean memory and map. */
    const run = (name: string, p: number, c: number) => {
      map.fill(0);
      live.fill(0);
      (instance.exports[name] as (p: number, c: number) => void)(p, c);
      const marked: number[] = [];
      for (let i = map.indexOf(1); i !== -1; i = map.indexOf(1, i + 1)) marked.push(i);
      const written: number[] = [];
      for (let i = 0; i < live.length; i += chunk) if (live.subarray(i, i + chunk).some((b) => b !== 0)) written.push(i / chunk);
      return { marked, written };
    };
    // The second store of a pair falls in chunk 2, already covered by the first's mark: nothing more is marked.
    expect(run('pair', 2 * chunk - 2, 0)).toEqual({ marked: [1, 2], written: [1, 2] });
    expect(run('far', 2 * chunk - 2, 0).marked).toEqual([1, 2, 3, 4]);
    // Every chunk written is marked, whatever the path, for addresses all around chunk boundaries.
    const names = ['pair', 'far', 'below', 'moved', 'teed', 'block', 'kept', 'ifelse', 'loop', 'computed'];
    for (const name of names) {
      for (const p of [0, 5, chunk - 3, chunk - 1, 3 * chunk - 110, 3 * chunk - 2, 6 * chunk + 4000]) {
        for (const c of [0, 1, 3]) {
          const { marked, written } = run(name, p, c);
          expect({ name, p, c, unmarked: written.filter((w) => !marked.includes(w)) }).toEqual({ name, p, c, unmarked: [] });
        }
      }
    }
  });

  it('stops sharing marks in a function whose nested else branches would cost more than its size, and still marks every write', async () => {
    // `depth` ifs nested in each other's then-branch, the innermost writing 100 locals: each else
    // makes again the marks its then-branch's writes cancelled, depth x 100 in all.
    const deep = (depth: number) => {
      const writes = Array.from({ length: 100 }, (_, i) => `(local.set ${i + 2} (i32.const 0))`).join(' ');
      let nested = writes;
      for (let i = 0; i < depth; i++) nested = `(if (local.get $c) (then ${nested}) (else (nop)))`;
      return `(module (memory 8)
        (func (export "run") (param $p i32) (param $c i32) (local ${'i32 '.repeat(100)})
          (i32.store (local.get $p) (i32.const 1))
          (if (local.get $c) (then ${nested}) (else (i32.store offset=8 (local.get $p) (i32.const 2))))
          (i32.store offset=5000 (local.get $p) (i32.const 3))))`;
    };
    /** Chunk marks (i32.store16 into the dirty map) in the rewritten module. */
    const marks = (bytes: Uint8Array) => {
      let n = 0;
      for (let i = 0; i + 3 < bytes.length; i++)
        if (bytes[i] === 0x3b && bytes[i + 1] === 0x40 && bytes[i + 2] === 1 && bytes[i + 3] === 0) n++;
      return n;
    };
    const shallow = rewriteForEngine(await wat(deep(3)), OPTIONS).bytes;
    const result = rewriteForEngine(await wat(deep(100)), OPTIONS);
    // The store at $p + 8 in the else shares the first store's mark, unless sharing stopped.
    expect([marks(shallow), marks(result.bytes)]).toEqual([2, 3]);
    const dirty = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
    const memory = new WebAssembly.Memory({ initial: 8 });
    const run = instantiate(result.bytes, memory, {}, dirty).exports.run as (p: number, c: number) => void;
    const [map, live] = [new Uint8Array(dirty.buffer), new Uint8Array(memory.buffer)];
    const chunk = 2 ** DIRTY_CHUNK_SHIFT;
    for (const p of [0, chunk - 3, 3 * chunk - 6, 5 * chunk + 100]) {
      for (const c of [0, 1]) {
        map.fill(0);
        live.fill(0);
        run(p, c);
        const unmarked: number[] = [];
        for (let i = 0; i < live.length; i += chunk)
          if (live.subarray(i, i + chunk).some((b) => b !== 0) && !map[i / chunk]) unmarked.push(i / chunk);
        expect({ p, c, unmarked }).toEqual({ p, c, unmarked: [] });
      }
    }
  });

  it('lists the pages active data segments write (constant offsets), and none it cannot tell', async () => {
    const pagesOf = async (body: string) =>
      rewriteForEngine(await wat(`(module (import "env" "g" (global $g i32)) (memory 8) ${body} (func (export "run")))`), OPTIONS)
        .dataPages;
    expect(await pagesOf('')).toEqual([]);
    expect(await pagesOf('(data (i32.const 16) "a") (data (i32.const 0x2fffe) "four") (data $p "passive")')).toEqual([0, 2, 3]);
    expect(await pagesOf('(data (global.get $g) "x")')).toBeNull();
    expect(rewriteForEngine(new Uint8Array(await readPlugin('dirty_probe')), OPTIONS).dataPages).toEqual([2, 10, 33, 63]);
  });

  it('flags passive data or element segments (a call may drop them), not active or declarative ones', async () => {
    const flagged = async (body: string) =>
      rewriteForEngine(await wat(`(module (memory 1) (table 2 funcref) (func $f) ${body} (func (export "run")))`), OPTIONS)
        .passiveSegments;
    expect(await flagged('')).toBe(false);
    expect(await flagged('(data (i32.const 8) "active") (elem (i32.const 0) func $f)')).toBe(false);
    expect(await flagged('(elem declare func $f)')).toBe(false);
    expect(await flagged('(data (i32.const 8) "active") (data $p "passive")')).toBe(true);
    expect(await flagged('(elem (i32.const 0) func $f) (elem $p func $f)')).toBe(true);
    expect(await flagged('(elem $p funcref (ref.func $f))')).toBe(true);
    expect(rewriteForEngine(new Uint8Array(await readPlugin('segments')), OPTIONS).passiveSegments).toBe(true);
    expect(rewriteForEngine(new Uint8Array(await readPlugin('count_vowels')), OPTIONS).passiveSegments).toBe(false);
  });

  it('refuses what it cannot cap: non-Wasm bytes', () => {
    expect(() => rewriteForEngine(new TextEncoder().encode('not wasm at all'), OPTIONS)).toThrow(WasmRewriteError);
  });

  it('turns a memory imported from a linked module into the engine-supplied memory, and says where it came from', async () => {
    const imported = await wat(
      `(module (import "env" "f" (func)) (import "lhs" "mem" (memory 2 8)) (import "env" "g" (func))
        (func (export "size") (result i32) (call 0) (call 1) (memory.size)))`,
    );
    const out = rewriteForEngine(imported, OPTIONS);
    expect(out).toMatchObject({ importedMemory: { module: 'lhs', name: 'mem' }, initialPages: 2, declaredMaxPages: 8 });
    const module = new WebAssembly.Module(out.bytes as Uint8Array<ArrayBuffer>);
    const imports = WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}:${i.kind}`);
    expect(imports).toEqual(['env.f:function', 'env.g:function', 'wasmhost.memory:memory', 'wasmhost.dirty:memory']);
  });
});

// The decoder must read every instruction exactly as V8 does: a byte read out of step hides the
// instructions after it (a store from the dirty map, a memory.grow from the grow shim).
describe('instruction decoder', () => {
  const uleb = (v: number) => leb(v);
  const sleb = (value: number | bigint): number[] => {
    let v = BigInt(value);
    const out: number[] = [];
    for (;;) {
      const b = Number(v & 0x7fn);
      v >>= 7n;
      if ((v === 0n && !(b & 0x40)) || (v === -1n && b & 0x40)) return [...out, b];
      out.push(b | 0x80);
    }
  };
  /** 11 (0x0b, `end`) as every index the context allows: an immediate read as an opcode ends the body early. */
  const X = 0x0b;
  /** A memarg with an explicit memory index (0) and a three-byte offset (65536). */
  const memarg = (align: number) => [0x40 | align, 0x00, 0x80, 0x80, 0x04];
  const LOAD_STORE_ALIGN = [2, 3, 2, 3, 0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 2, 3, 2, 3, 0, 1, 0, 1, 2]; // 0x28–0x3e
  const ATOMIC_ALIGN = [2, 3, 0, 1, 0, 1, 2]; // each group of seven from 0xfe 0x10
  const SIMD_LANES: Record<number, number> = { 0x15: 11, 0x16: 11, 0x17: 11, 0x18: 7, 0x19: 7, 0x1a: 7, 0x1b: 3, 0x1c: 3 };
  for (const op of [0x1d, 0x1e, 0x21, 0x22]) SIMD_LANES[op] = 1;
  for (const op of [0x1f, 0x20]) SIMD_LANES[op] = 3;
  const SIMD_MEMARG_ALIGN: Record<number, number> = {
    0: 4,
    1: 3,
    2: 3,
    3: 3,
    4: 3,
    5: 3,
    6: 3,
    7: 0,
    8: 1,
    9: 2,
    10: 3,
    11: 4,
    0x5c: 2,
    0x5d: 3,
  };

  /**
   * Every instruction with immediates, as instruction sequences (the one under test with what it
   * needs around it), in the module of `contextModule`: encoded here from the specification, and
   * held against V8, which must find each function valid.
   */
  const CASES: [string, number[][]][] = [
    ['block', [[0x02, 0x40], [0x0b]]],
    ['loop (result i32)', [[0x03, 0x7f], [0x00], [0x0b]]],
    ['if (type 11)', [[0x04, X], [0x0b]]],
    ['if else', [[0x04, 0x40], [0x05], [0x0b]]],
    ['if (type 11, a 3-byte s33)', [[0x04, 0x8b, 0x80, 0x00], [0x0b]]],
    ['block (result (ref null 11))', [[0x02, 0x63, X], [0x00], [0x0b]]],
    ['block (result (ref any))', [[0x02, 0x64, 0x6e], [0x00], [0x0b]]],
    ['try catch rethrow catch_all', [[0x06, 0x40], [0x07, X], [0x09, 0x00], [0x19], [0x0b]]],
    [
      'try delegate',
      [
        [0x06, 0x40],
        [0x18, X],
      ],
    ],
    ['throw', [[0x08, X]]],
    // prettier-ignore
    ['try_table (catch, catch_ref, catch_all, catch_all_ref)', [[0x02, 0x69], [0x1f, 0x40, 0x04, 0x00, X, 0x0c, 0x01, 0x00, 0x00, 0x02, 0x0c, 0x03, 0x00], [0x0b], [0x00], [0x0b]]],
    ['br', [[0x0c, X]]],
    ['br_if', [[0x0d, X]]],
    ['br_table', [[0x0e, 0x02, X, 0x00, X]]],
    ['call', [[0x10, X]]],
    ['call_indirect', [[0x11, X, X]]],
    ['return_call', [[0x12, X]]],
    ['return_call_indirect', [[0x13, X, X]]],
    ['call_ref', [[0x14, X]]],
    ['return_call_ref', [[0x15, X]]],
    ['select i32', [[0x1c, 0x01, 0x7f]]],
    [
      'select (ref null any) (ref 11)',
      [[0x02, 0x40], [0x00], [0x1c, 0x01, 0x63, 0x6e], [0x00], [0x1c, 0x01, 0x64, X], [0x00], [0x0b]],
    ],
    ['local.get', [[0x20, X]]],
    ['local.set', [[0x21, X]]],
    ['local.tee', [[0x22, X]]],
    ['global.get', [[0x23, X]]],
    ['global.set', [[0x24, X]]],
    ['table.get', [[0x25, X]]],
    ['table.set', [[0x26, X]]],
    ...LOAD_STORE_ALIGN.map((align, i): [string, number[][]] => [
      `load/store 0x${(0x28 + i).toString(16)}`,
      [[0x28 + i, ...memarg(align)]],
    ]),
    ['i32.load (no memory index)', [[0x28, 0x02, 0x80, 0x01]]],
    ['memory.size', [[0x3f, 0x00]]],
    ['memory.grow', [[0x40, 0x00]]],
    ['i32.const', [[0x41, ...sleb(-123456789)]]],
    ['i64.const', [[0x42, ...sleb(-(2n ** 62n) + 5n)]]],
    ['f32.const', [[0x43, X, X, X, X]]],
    ['f64.const', [[0x44, X, X, X, X, X, X, X, X]]],
    ['ref.null func', [[0xd0, 0x70]]],
    ['ref.null 11', [[0xd0, X]]],
    ['ref.func', [[0xd2, X]]],
    ['br_on_null', [[0xd5, X]]],
    ['br_on_non_null', [[0x02, 0x64, 0x70], [0xd0, 0x70], [0xd6, 0x00], [0x00], [0x0b]]],
    ['struct.new', [[0xfb, 0x00, 0x01]]],
    ['struct.new_default', [[0xfb, 0x01, 0x01]]],
    ['struct.get', [[0xfb, 0x02, 0x01, 0x00]]],
    ['struct.get_s', [[0xfb, 0x03, 0x01, 0x01]]],
    ['struct.get_u', [[0xfb, 0x04, 0x01, 0x01]]],
    ['struct.set', [[0xfb, 0x05, 0x01, 0x00]]],
    ['array.new', [[0xfb, 0x06, 0x02]]],
    ['array.new_default', [[0xfb, 0x07, 0x02]]],
    ['array.new_fixed', [[0xfb, 0x08, 0x02, 0x03]]],
    ['array.new_data', [[0xfb, 0x09, 0x02, X]]],
    ['array.new_elem', [[0xfb, 0x0a, 0x03, X]]],
    ['array.get', [[0xfb, 0x0b, 0x03]]],
    ['array.get_s', [[0xfb, 0x0c, 0x02]]],
    ['array.get_u', [[0xfb, 0x0d, 0x02]]],
    ['array.set', [[0xfb, 0x0e, 0x02]]],
    ['array.fill', [[0xfb, 0x10, 0x02]]],
    ['array.copy', [[0xfb, 0x11, 0x02, 0x02]]],
    ['array.init_data', [[0xfb, 0x12, 0x02, X]]],
    ['array.init_elem', [[0xfb, 0x13, 0x03, X]]],
    ['ref.test', [[0xfb, 0x14, 0x6c]]],
    ['ref.test null', [[0xfb, 0x15, 0x01]]],
    ['ref.cast', [[0xfb, 0x16, 0x6a]]],
    ['ref.cast null', [[0xfb, 0x17, 0x6e]]],
    ['br_on_cast', [[0x02, 0x6e], [0xd0, 0x6e], [0xfb, 0x18, 0x03, 0x00, 0x6e, 0x6c], [0x0b]]],
    ['br_on_cast_fail', [[0x02, 0x6e], [0xd0, 0x6e], [0xfb, 0x19, 0x01, 0x00, 0x6e, 0x6c], [0x0b]]],
    ['memory.init', [[0xfc, 0x08, X, 0x00]]],
    ['data.drop', [[0xfc, 0x09, X]]],
    ['memory.copy', [[0xfc, 0x0a, 0x00, 0x00]]],
    ['memory.fill', [[0xfc, 0x0b, 0x00]]],
    ['table.init', [[0xfc, 0x0c, X, X]]],
    ['elem.drop', [[0xfc, 0x0d, X]]],
    ['table.copy', [[0xfc, 0x0e, X, X]]],
    ['table.grow', [[0xfc, 0x0f, X]]],
    ['table.size', [[0xfc, 0x10, X]]],
    ['table.fill', [[0xfc, 0x11, X]]],
    ...Object.entries(SIMD_MEMARG_ALIGN).map(([op, align]): [string, number[][]] => [
      `SIMD memory 0x${Number(op).toString(16)}`,
      [[0xfd, Number(op), ...memarg(align)]],
    ]),
    ['v128.const', [[0xfd, 0x0c, ...Array<number>(16).fill(X)]]],
    ['i8x16.shuffle', [[0xfd, 0x0d, ...Array.from({ length: 16 }, (_, i) => (i * 3 + X) % 32)]]],
    ...Object.entries(SIMD_LANES).map(([op, lane]): [string, number[][]] => [
      `SIMD lane 0x${Number(op).toString(16)}`,
      [[0xfd, Number(op), lane]],
    ]),
    ...[0, 3, 2, 1].flatMap((lane, i): [string, number[][]][] => [
      [`v128.load${8 << i}_lane`, [[0xfd, 0x54 + i, ...memarg(i), [11, 7, 3, 1][i]!]]],
      [`v128.store${8 << i}_lane`, [[0xfd, 0x58 + i, ...memarg(i), lane]]],
    ]),
    ['memory.atomic.notify', [[0xfe, 0x00, ...memarg(2)]]],
    ['memory.atomic.wait32', [[0xfe, 0x01, ...memarg(2)]]],
    ['memory.atomic.wait64', [[0xfe, 0x02, ...memarg(3)]]],
    ['atomic.fence', [[0xfe, 0x03, 0x00]]],
    ...Array.from({ length: 0x4f - 0x10 }, (_, i): [string, number[][]] => [
      `atomic 0x${(0x10 + i).toString(16)}`,
      [[0xfe, 0x10 + i, ...memarg(ATOMIC_ALIGN[i % 7]!)]],
    ]),
  ];

  /** A function body (12 i32 locals) of `instructions` inside 12 blocks, after an `unreachable`. */
  const inTwelveBlocks = (instructions: number[]) => [
    ...[1, 12, 0x7f],
    ...Array.from({ length: 12 }, () => [0x02, 0x40]).flat(),
    0x00,
    ...instructions,
    0x00,
    ...Array<number>(13).fill(0x0b),
  ];

  /** The opcode (one byte, or prefix and sub-opcode) an instruction's bytes start with. */
  const opcodeOf = (bytes: number[]) => {
    if (bytes[0]! < 0xfb || bytes[0] === 0xff) return `${bytes[0]}`;
    const r = new Reader(new Uint8Array(bytes), 1, bytes.length);
    return `${bytes[0]}:${r.u32()}`;
  };

  /**
   * A module with 12 of everything an immediate refers to (types: 0 and 4–11 `() -> ()`, 1 a struct
   * (mut i32, mut i8), 2 an array of mut i8, 3 an array of mut funcref; functions, tables, tags,
   * globals, passive element and data segments), plus one function `() -> ()` per body (with 12
   * i32 locals), each inside 12 blocks after an `unreachable` (so every instruction validates with
   * whatever it pops).
   */
  function contextModule(bodies: number[][]): Uint8Array {
    const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
    const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
    const twelve = (item: number[]) => Array.from({ length: 12 }, () => item);
    const types = [
      [0x60, 0, 0],
      [0x5f, 2, 0x7f, 1, 0x78, 1],
      [0x5e, 0x78, 1],
      [0x5e, 0x70, 1],
      ...Array.from({ length: 8 }, () => [0x60, 0, 0]),
    ];
    const code = (instructions: number[]) => {
      const body = inTwelveBlocks(instructions);
      return [...uleb(body.length), ...body];
    };
    return new Uint8Array([
      ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
      ...section(1, vec(types)),
      ...section(3, vec(Array.from({ length: 12 + bodies.length }, () => [0]))),
      ...section(4, vec(twelve([0x70, 0x00, 0x01]))),
      ...section(5, vec([[0x00, 0x01]])),
      ...section(13, vec(twelve([0x00, 0x00]))),
      ...section(6, vec(twelve([0x7f, 0x01, 0x41, 0x00, 0x0b]))),
      ...section(9, vec([...twelve([0x01, 0x00, 0x01, 0x00]), [0x03, 0x00, ...vec(Array.from({ length: 12 }, (_, i) => [i]))]])),
      ...section(12, [12]),
      ...section(10, vec([...twelve([2, 0, 0x0b]), ...bodies.map(code)])),
      ...section(11, vec(twelve([0x01, 0x02, 0x61, 0x62]))),
    ]);
  }

  /** Decodes `bytes` as instructions; the lengths read, or the error. */
  function lengths(bytes: number[]): number[] {
    const r = new Reader(new Uint8Array([...bytes, 0x0b]), 0, bytes.length + 1);
    const code = new InstructionReader(r, 100);
    const out: number[] = [];
    while (r.pos < bytes.length) {
      const at = r.pos;
      code.next();
      out.push(r.pos - at);
    }
    return out;
  }

  /** Opcodes V8 knows: a function of one (followed by zeros) fails to validate for another reason than the opcode. */
  function v8Knows(opcode: number[]): boolean {
    try {
      new WebAssembly.Module(contextModule([[...opcode, ...Array<number>(20).fill(0)]]) as Uint8Array<ArrayBuffer>);
      return true;
    } catch (err) {
      return !/invalid (gc |numeric |simd |atomic )?opcode/i.test((err as Error).message);
    }
  }
  function decoderKnows(opcode: number[]): boolean {
    try {
      lengths([...opcode, ...Array<number>(20).fill(0)]);
      return true;
    } catch (err) {
      if (/unknown instruction/.test((err as Error).message)) return false;
      return true;
    }
  }
  const OPCODES = [
    ...Array.from({ length: 0xfb }, (_, op) => [op]),
    [0xff],
    ...[0xfb, 0xfc, 0xfd, 0xfe].flatMap((prefix) => Array.from({ length: 0x200 }, (_, sub) => [prefix, ...uleb(sub)])),
  ];

  it('knows exactly the opcodes V8 accepts (single bytes and every prefix’s first 512)', () => {
    const disagree = OPCODES.filter((opcode) => v8Knows(opcode) !== decoderKnows(opcode)).map(opcodeOf);
    expect(disagree).toEqual([]);
    expect(OPCODES.filter(v8Knows).length).toBeGreaterThan(500); // the probe itself works
  });

  it.each(CASES)('reads %s as V8 does', (_name, instructions) => {
    expect(() => new WebAssembly.Module(contextModule([instructions.flat()]) as Uint8Array<ArrayBuffer>)).not.toThrow();
    expect(lengths(instructions.flat())).toEqual(instructions.map((i) => i.length));
  });

  it('reads every opcode without immediates as one opcode (V8 agrees: a following `end` is not read as an immediate)', () => {
    const withImmediates = new Set(CASES.flatMap(([, instructions]) => instructions.map(opcodeOf)));
    const bare = OPCODES.filter((opcode) => v8Knows(opcode) && !withImmediates.has(opcodeOf(opcode)) && opcode[0] !== 0x0b);
    expect(bare.length).toBeGreaterThan(350);
    const wrong = bare
      .filter((opcode) => {
        const valid = WebAssembly.validate(contextModule([opcode]) as Uint8Array<ArrayBuffer>);
        return !valid || lengths(opcode).join() !== `${opcode.length}`;
      })
      .map(opcodeOf);
    expect(wrong).toEqual([]);
  });

  /** Marks rewriteCode puts in a body (i32.store8/store16 into the dirty map, memory 1). */
  const marksIn = (instructions: number[]) => {
    const body = inTwelveBlocks(instructions);
    const rewrite = {
      sizeFn: 90,
      growFn: 91,
      tableGrowFn: () => 94,
      dirty: { memory: 1, markRangeFn: 92, tablesWrittenGlobal: 93 },
    };
    const out = rewriteCode(new Uint8Array(body), 0, rewrite) ?? new Uint8Array(0);
    let marks = 0;
    for (let i = 0; i + 3 < out.length; i++)
      if ((out[i] === 0x3a || out[i] === 0x3b) && out[i + 1] === 0x40 && out[i + 2] === 1 && out[i + 3] === 0) marks++;
    return marks;
  };

  it.each(CASES)('marks the store right after %s', (_name, instructions) => {
    const store = [0x41, 0x80, 0x80, 0x04, 0x41, 0x01, 0x3a, 0x00, 0x00]; // i32.store8 at 65536
    expect(marksIn([...instructions.flat(), ...store])).toBe(marksIn(instructions.flat()) + 1);
  });

  it('refuses a body that does not end exactly at its last end (it would be read out of step)', () => {
    const rewrite = { sizeFn: 90, growFn: 91, tableGrowFn: () => 94, dirty: null };
    const run = (code: number[]) => () => rewriteCode(new Uint8Array([0, ...code]), 0, rewrite);
    expect(run([0x41, 0x00, 0x40, 0x00, 0x1a, 0x0b])).not.toThrow(); // memory.grow: rewritten
    expect(run([0x41, 0x00, 0x40, 0x00, 0x1a, 0x0b, 0x01])).toThrow(/goes on after its last end/);
    expect(run([0x02, 0x40, 0x0b])).toThrow(/ends before its last end/);
    expect(run([0x20, 0x00, 0x1a, 0x0b])).toThrow(/local 0 does not exist/);
    expect(run([0x41, 0x00, 0x40, 0x01, 0x1a, 0x0b])).toThrow(/memory 1 does not exist/);
  });
});
