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
  WasmRewriteError,
} from '../src/engine/compile/wasm-rewrite.ts';
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
