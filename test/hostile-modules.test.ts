// Hostile modules, through HTTP against the service in a process of its own (one of these aborted
// the whole process before: a regression must fail a test, not kill the test runner). Whatever a
// module declares or does — tables, globals, functions, exports, types, tags, data and element
// segments, memory, start functions, exceptions — it ends in a clear answer for that upload or that
// call; afterwards /healthz answers, a normal call works and RSS stays bounded.
import { describe, expect, it } from 'vitest';
import { childServerForTest, metricsOf, type ChildServer, useContainedServer } from './child-server.ts';
import { wat } from './helpers.ts';
import { hostPlugin } from './hostile-wat.ts';
import { sampleValue } from './prom-text.ts';
import { buildCodeModule, buildModule, shapedCode, sleb, type CodeShape } from './wasm-builder.ts';

const MiB = 1024 * 1024;
const ENV = {
  WORKERS: '2',
  BURST_WORKERS: '1',
  WORKER_INSTANCE_CACHE_BYTES: String(64 * MiB),
  INSTANCE_RESET_TIMEOUT_MS: '1000',
  // The machine running the tests may lag: load shedding is tested elsewhere.
  MAX_EVENT_LOOP_DELAY_MS: '0',
};
/** Well inside the README's bound for these settings; the table bomb alone went past 4 GiB before. */
const RSS_LIMIT = 1024 * MiB;

let server: ChildServer;
let plugins = 0;

/** A WAT module, compiled, as a manifest's inline `data`. */
async function watBase64(source: string): Promise<string> {
  return Buffer.from(await wat(source)).toString('base64');
}

useContainedServer(ENV, RSS_LIMIT, (started) => (server = started));

interface Outcome {
  upload: number;
  uploadCode?: string;
  uploadMessage?: string;
  call?: number;
  callCode?: string;
  callMessage?: string;
  output?: string;
}

/** Uploads `bytes` and, when accepted, calls `run` once (with `call` fields). */
function tryModule(bytes: Uint8Array, call: Record<string, unknown> = {}): Promise<Outcome> {
  return tryUpload((name) => server.api.upload(bytes, { name }), call);
}

/** Uploads a plugin by `send` under a new name and, when accepted, calls `run` once (with `call` fields). */
async function tryUpload(
  send: (name: string) => ReturnType<ChildServer['api']['upload']>,
  call: Record<string, unknown>,
): Promise<Outcome> {
  const name = `mod-${++plugins}`;
  const upload = await send(name);
  if (upload.status !== 201) return { upload: upload.status, uploadCode: upload.error.code, uploadMessage: upload.error.message };
  const answer = await server.api.call(name, { function: 'run', timeoutMs: 2000, ...call });
  return {
    upload: upload.status,
    call: answer.status,
    ...(answer.ok ? { output: answer.data.output } : { callCode: answer.error.code, callMessage: answer.error.message }),
  };
}

/** Refused at upload with 400 and `code`, the message naming `limit`; the plugin is not stored. */
async function expectRefused(bytes: Uint8Array, code: string, limit: RegExp | string): Promise<void> {
  const outcome = await tryModule(bytes);
  expect([outcome.upload, outcome.uploadCode], outcome.uploadMessage).toEqual([400, code]);
  expect(outcome.uploadMessage).toMatch(limit);
  expect((await server.api.list({ name: `mod-${plugins}` })).data.plugins).toEqual([]);
}

describe('tables', () => {
  it('refuses a table of 10,000,000 elements (it aborted the process) with 400 INVALID_WASM naming MODULE_MAX_TABLE_ELEMENTS', async () => {
    await expectRefused(
      await wat('(module (table 10000000 funcref) (func (export "run") (result i32) (i32.const 0)))'),
      'INVALID_WASM',
      /MODULE_MAX_TABLE_ELEMENTS/,
    );
  });

  it('refuses three tables of 3,000,000 elements with 400 INVALID_WASM', async () => {
    await expectRefused(buildModule({ tables: [3_000_000, 3_000_000, 3_000_000] }), 'INVALID_WASM', /9000000 table elements/);
  });

  it('refuses an externref table over the limit just the same', async () => {
    await expectRefused(
      await wat('(module (table 200000 externref) (func (export "run") (result i32) (i32.const 0)))'),
      'INVALID_WASM',
      /MODULE_MAX_TABLE_ELEMENTS/,
    );
  });

  it('accepts a table at the limit (100,000) and runs it', async () => {
    expect(await tryModule(buildModule({ tables: [100_000] }))).toMatchObject({ upload: 201, call: 200 });
  });

  it('refuses a table one element over the limit', async () => {
    await expectRefused(
      buildModule({ tables: [100_001] }),
      'INVALID_WASM',
      /100001 table elements to start with; the limit is 100000/,
    );
  });

  it('answers table.grow by 9,000,000 during a call with -1 (it aborted the process), and the call goes on (200)', async () => {
    const bytes = await wat(`(module (table $t 1 funcref)
      (func (export "run") (result i32)
        (if (i32.ne (table.grow $t (ref.null func) (i32.const 9000000)) (i32.const -1)) (then (return (i32.const 1))))
        (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 200 });
  });

  it('lets a table grow step by step only up to the limit, even past a larger declared maximum (200)', async () => {
    const bytes = await wat(`(module (table $t 1 5000000 funcref)
      (func (export "run") (result i32)
        (loop $grow (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))))
        (if (i32.gt_u (table.size $t) (i32.const 100000)) (then (return (i32.const 1))))
        (if (i32.lt_u (table.size $t) (i32.const 99000)) (then (return (i32.const 2))))
        (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 200 });
  });

  it('shares the limit between two growing tables (together at most 100,000 elements, 200)', async () => {
    const bytes = await wat(`(module (table $a 10 funcref) (table $b 10 externref)
      (func (export "run") (result i32)
        (loop $ga (br_if $ga (i32.ne (table.grow $a (ref.null func) (i32.const 500)) (i32.const -1))))
        (loop $gb (br_if $gb (i32.ne (table.grow $b (ref.null extern) (i32.const 500)) (i32.const -1))))
        (if (i32.gt_u (i32.add (table.size $a) (table.size $b)) (i32.const 100000)) (then (return (i32.const 1))))
        (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 200 });
  });

  it('restores a table a call changed and grew: the next call sees it as it started (200, 200)', async () => {
    const bytes = await wat(`(module (table $t 2 funcref) (elem declare func $seven)
      (func $seven (result i32) (i32.const 7))
      (func (export "run") (result i32)
        (if (i32.ne (table.size $t) (i32.const 2)) (then (return (i32.const 1))))
        (if (i32.eqz (ref.is_null (table.get $t (i32.const 0)))) (then (return (i32.const 2))))
        (table.set $t (i32.const 0) (ref.func $seven))
        (drop (table.grow $t (ref.func $seven) (i32.const 10)))
        (i32.const 0)))`);
    const first = await tryModule(bytes);
    expect(first).toMatchObject({ upload: 201, call: 200 });
    for (let i = 0; i < 3; i++) expect((await server.api.call(`mod-${plugins}`, { function: 'run' })).status).toBe(200);
  });

  it('answers table.fill far out of bounds with 422 PLUGIN_ERROR (a trap)', async () => {
    const bytes = await wat(`(module (table $t 10 funcref)
      (func (export "run") (result i32) (table.fill $t (i32.const 0) (ref.null func) (i32.const 100000000)) (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });
});

describe('element and data segments', () => {
  it('refuses passive element segments holding 300,000 entries with 400 INVALID_WASM', async () => {
    await expectRefused(
      buildModule({ elementSegments: { count: 3, entries: 100_000 } }),
      'INVALID_WASM',
      /300000 element segment entries/,
    );
  });

  it('refuses 200,000 one-entry element segments with 400 INVALID_WASM', async () => {
    await expectRefused(
      buildModule({ elementSegments: { count: 200_000, entries: 1 } }),
      'INVALID_WASM',
      /MODULE_MAX_TABLE_ELEMENTS/,
    );
  });

  it('answers an active element segment outside its table with 422 PLUGIN_ERROR (instantiation traps)', async () => {
    const bytes = await wat(`(module (table 1 funcref) (func $f) (elem (i32.const 5) func $f)
      (func (export "run") (result i32) (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });

  it('refuses 100,001 data segments with 400 INVALID_WASM (V8 refuses them)', async () => {
    await expectRefused(buildModule({ dataSegments: 100_001 }), 'INVALID_WASM', /not a valid WebAssembly module/);
  });

  it('answers an active data segment outside memory with 422 PLUGIN_ERROR (instantiation traps)', async () => {
    const bytes = await wat(`(module (memory 1) (data (i32.const 65535) "xx") (func (export "run") (result i32) (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });

  it('answers memory.init past a passive segment with 422 PLUGIN_ERROR, and the segment is back for the next call', async () => {
    const bytes = await wat(`(module (memory 1) (data $d "abc")
      (func (export "run") (result i32) (memory.init $d (i32.const 0) (i32.const 0) (i32.const 3)) (data.drop $d)
        (memory.init $d (i32.const 0) (i32.const 0) (i32.const 3)) (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run' })).error.code).toBe('PLUGIN_ERROR');
  });
});

describe('globals, functions, exports, types, tags', () => {
  it('refuses 999,999 globals with 400 INVALID_WASM naming MODULE_MAX_GLOBALS', async () => {
    await expectRefused(
      buildModule({ globals: 999_999 }),
      'INVALID_WASM',
      /999999 globals; the limit is 10000 \(MODULE_MAX_GLOBALS\)/,
    );
  });

  it('refuses 10,001 mutable globals and runs 10,000, restoring them after every call', async () => {
    await expectRefused(buildModule({ globals: 10_001, mutableGlobals: true }), 'INVALID_WASM', /MODULE_MAX_GLOBALS/);
    expect(await tryModule(buildModule({ globals: 10_000, mutableGlobals: true }))).toMatchObject({ upload: 201, call: 200 });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run' })).status).toBe(200);
  });

  it('refuses a module with 1,000,000 functions with 400 INVALID_WASM naming MODULE_MAX_FUNCTIONS (it answered 500)', async () => {
    await expectRefused(
      buildModule({ functions: 999_999 }),
      'INVALID_WASM',
      /1000000 functions; the limit is 100000 \(MODULE_MAX_FUNCTIONS\)/,
    );
  });

  it('counts imported functions too: 100,001 imports are refused', async () => {
    await expectRefused(buildModule({ imports: 100_001 }), 'INVALID_WASM', /100002 functions/);
  });

  it('refuses exports whose names pass MODULE_MAX_INTERFACE_BYTES (256 KiB) with 400 INVALID_WASM: every listing would carry them', async () => {
    const names = Array.from({ length: 300 }, (_, i) => `(export "${String(i).padStart(1000, 'x')}" (func $f))`).join(' ');
    await expectRefused(await wat(`(module (func $f) ${names})`), 'INVALID_WASM', /MODULE_MAX_INTERFACE_BYTES/);
    // Under it, the same shape is stored.
    const fewer = Array.from({ length: 200 }, (_, i) => `(export "${String(i).padStart(1000, 'x')}" (func $f))`).join(' ');
    expect((await server.api.upload(await wat(`(module (func $f) ${fewer})`), { name: 'long-names' })).status).toBe(201);
  });

  it('refuses 900,000 exports with 400 INVALID_WASM naming MODULE_MAX_EXPORTS', async () => {
    await expectRefused(buildModule({ functions: 10, exports: 900_000 }), 'INVALID_WASM', /MODULE_MAX_EXPORTS/);
  });

  it('accepts 9,999 exports (the limit with run) and calls them', async () => {
    expect(await tryModule(buildModule({ functions: 10, exports: 9_999 }))).toMatchObject({ upload: 201, call: 200 });
  });

  it('refuses 30,000 type definitions with 400 INVALID_WASM naming MODULE_MAX_TYPES', async () => {
    await expectRefused(buildModule({ types: 30_000 }), 'INVALID_WASM', /MODULE_MAX_TYPES/);
  });

  it('refuses 20,000 exception tags with 400 INVALID_WASM naming MODULE_MAX_TAGS', async () => {
    await expectRefused(buildModule({ tags: 20_000 }), 'INVALID_WASM', /MODULE_MAX_TAGS/);
  });

  it('refuses Wasm GC struct and array types (their objects live on the JS heap) with 400 INVALID_WASM', async () => {
    // (type (struct (field i32))), (type (array (mut i64))), (type (func (result i32))), func run.
    const gc = new Uint8Array([
      ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
      ...[0x01, 0x0c, 0x03, 0x5f, 0x01, 0x7f, 0x00, 0x5e, 0x7e, 0x01, 0x60, 0x00, 0x01, 0x7f],
      ...[0x03, 0x02, 0x01, 0x02],
      ...[0x07, 0x07, 0x01, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x00],
      ...[0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b],
    ]);
    expect(await WebAssembly.validate(gc)).toBe(true);
    await expectRefused(gc, 'INVALID_WASM', /GC types are not supported/);
  });

  it('refuses a module whose export clashes with a name the engine adds with 400 INVALID_WASM', async () => {
    const bytes = await wat(
      '(module (global (mut i32) (i32.const 0)) (func (export "run") (result i32) (i32.const 0)) (func (export "__wasmhost_global_0")))',
    );
    await expectRefused(bytes, 'INVALID_WASM', /cannot be run by this service/);
  });

  it('refuses alloc imported as (i32) -> i32 with 400 UNSUPPORTED_IMPORTS naming both signatures (every call failed with a BigInt error)', async () => {
    const bytes = await wat(`(module (import "extism:host/env" "alloc" (func $alloc (param i32) (result i32)))
      (func (export "run") (result i32) (drop (call $alloc (i32.const 1))) (i32.const 0)))`);
    await expectRefused(bytes, 'UNSUPPORTED_IMPORTS', /alloc/);
  });

  it('refuses a mutable v128 or exnref global with 400 INVALID_WASM (every call answered 422: JS cannot read them to restore them)', async () => {
    await expectRefused(
      buildModule({ globals: 1, mutableGlobals: true, globalType: 'v128' }),
      'INVALID_WASM',
      /^global 0 is a mutable v128: .*such globals are not supported$/,
    );
    await expectRefused(
      buildModule({ globals: 1, mutableGlobals: true, globalType: 'exnref' }),
      'INVALID_WASM',
      /mutable exnref/,
    );
    // Immutable ones are never restored: they run.
    expect(await tryModule(buildModule({ globals: 1, globalType: 'v128' }))).toMatchObject({ upload: 201, call: 200 });
  });

  it('refuses a function with 60,000 locals with 400 INVALID_WASM (V8 refuses it)', async () => {
    await expectRefused(buildModule({ locals: 60_000 }), 'INVALID_WASM', /not a valid WebAssembly module/);
  });
});

describe('function shapes (what V8 compiles)', () => {
  /** A module whose `run` has `shape` (wasm-builder's shapedCode). */
  const shaped = (shape: CodeShape) => buildModule({ locals: shape.locals, code: shapedCode(shape) });

  it('refuses the tier-up bomb at upload (250 nested loops assigning 49,000 locals: TurboFan took the server to 2.3 GB) naming MODULE_MAX_LOOP_ASSIGNMENTS and the function', async () => {
    const bomb = shaped({ locals: 49_001, loops: 250, nested: true, assigned: 49_000, iterations: 300 });
    const upload = await server.api.upload(bomb, { name: `mod-${++plugins}` });
    expect(upload.status).toBe(400);
    expect(upload.error).toMatchObject({
      code: 'INVALID_WASM',
      limit: 'MODULE_MAX_LOOP_ASSIGNMENTS',
      max: 1_000_000,
      function: 0,
    });
    expect(upload.error.message).toMatch(
      /^function 0 assigns locals inside loops more than 1000000 times.*\(MODULE_MAX_LOOP_ASSIGNMENTS\)$/,
    );
  });

  it('runs a function at MODULE_MAX_LOOP_ASSIGNMENTS (40,000 assignments in 25 nested loops) and refuses one more local (200, then 400)', async () => {
    // One turn of the loop: not hot enough for TurboFan, whose ~150 MB here would only slow the battery.
    const inside = shaped({ locals: 40_000, loops: 25, nested: true, assigned: 39_999, iterations: 1 });
    expect(await tryModule(inside)).toMatchObject({ upload: 201, call: 200 });
    const over = shaped({ locals: 40_001, loops: 25, nested: true, assigned: 40_000, iterations: 300 });
    await expectRefused(over, 'INVALID_WASM', /1000025|more than 1000000 times/);
  });

  it('refuses 1,000 loops in a function of 49,000 locals (5 s of compile at upload, 0.6 GB) naming MODULE_MAX_LOCALS_X_CONTROL', async () => {
    const loops = shaped({ locals: 49_000, loops: 1000, nested: false, assigned: 0, iterations: 1 });
    await expectRefused(
      loops,
      'INVALID_WASM',
      /^function 0 has 49000 locals and 2000 control instructions .*: 98000000 locals × control instructions; the limit is 10000000 \(MODULE_MAX_LOCALS_X_CONTROL\)$/,
    );
  });

  it('runs a function at MODULE_MAX_LOCALS_X_CONTROL (10,000 locals, 500 loops with a branch each) and refuses one more local', async () => {
    const inside = shaped({ locals: 10_000, loops: 500, nested: false, assigned: 10, iterations: 1 });
    expect(await tryModule(inside)).toMatchObject({ upload: 201, call: 200 });
    const over = shaped({ locals: 10_001, loops: 500, nested: false, assigned: 10, iterations: 1000 });
    await expectRefused(over, 'INVALID_WASM', /10001 locals and 1000 control instructions/);
  });

  it('refuses 1,000,000 nested blocks (V8 took 0.9 GB to compile them) naming MODULE_MAX_CONTROL_DEPTH; runs 10,000', async () => {
    const deep = (loops: number) => shaped({ locals: 1, loops, nested: true, assigned: 0, iterations: 1 });
    await expectRefused(
      deep(1_000_000),
      'INVALID_WASM',
      /^function 0 nests .* more than 10000 deep; .*\(MODULE_MAX_CONTROL_DEPTH\)$/,
    );
    await expectRefused(deep(10_001), 'INVALID_WASM', /MODULE_MAX_CONTROL_DEPTH/);
    expect(await tryModule(deep(10_000))).toMatchObject({ upload: 201, call: 200 });
  });

  it('refuses an instruction it cannot decode before V8 sees the module, naming the function (400 INVALID_WASM)', async () => {
    // 0xfd 0x200: no SIMD instruction; skipping it could hide a block.
    await expectRefused(
      buildModule({ code: [0xfd, 0x80, 0x04, 0x41, 0] }),
      'INVALID_WASM',
      /function 0: unknown instruction 0xfd 512/,
    );
  });
});

describe('memory', () => {
  it('refuses a module needing 4 GiB of memory to start with 400 INVALID_WASM naming CALL_MEMORY_PAGES_CEILING', async () => {
    await expectRefused(
      await wat('(module (memory 65536) (func (export "run") (result i32) (i32.const 0)))'),
      'INVALID_WASM',
      /CALL_MEMORY_PAGES_CEILING/,
    );
  });

  it('runs a module needing 300 pages only with memoryMaxPages of at least 300 (422 MEMORY_LIMIT, then 200)', async () => {
    const outcome = await tryModule(await wat('(module (memory 300) (func (export "run") (result i32) (i32.const 0)))'));
    expect(outcome).toMatchObject({ upload: 201, call: 422, callCode: 'MEMORY_LIMIT' });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 300 })).status).toBe(200);
  });

  it('answers memory.grow by 0xFFFFFFFF pages with -1 (200)', async () => {
    const bytes = await wat(`(module (memory 1)
      (func (export "run") (result i32) (if (i32.ne (memory.grow (i32.const -1)) (i32.const -1)) (then (return (i32.const 1)))) (i32.const 0)))`);
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 200 });
  });

  it("caps growth at each call's memoryMaxPages with one instance serving every cap (the cap of the call, not the first)", async () => {
    const bytes = await wat(`(module (memory 1)
      (func (export "run") (result i32) (if (i32.eq (memory.grow (i32.const 63)) (i32.const -1)) (then (unreachable))) (i32.const 0)))`);
    expect(await tryModule(bytes, { memoryMaxPages: 64 })).toMatchObject({ upload: 201, call: 200 });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 32 })).error.code).toBe('MEMORY_LIMIT');
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 64 })).status).toBe(200);
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 16 })).error.code).toBe('MEMORY_LIMIT');
  });

  it('keeps a plugin of (memory 1500) called with four caps within WORKER_INSTANCE_CACHE_BYTES (one of 4000 took a worker to 1.2 GB)', async () => {
    const bytes = await wat(
      '(module (memory 1500) (func (export "run") (result i32) (i32.store (i32.const 98000000) (i32.const 1)) (i32.const 0)))',
    );
    expect(await tryModule(bytes, { memoryMaxPages: 1500, timeoutMs: 60_000 })).toMatchObject({ upload: 201, call: 200 });
    for (const pages of [1501, 2000, 4096]) {
      expect(
        (await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: pages, timeoutMs: 60_000 })).status,
      ).toBe(200);
    }
    // Workers keep at most 64 MiB each: a 94 MiB instance is dropped after its call, the one just used too.
    expect(sampleValue(await metricsOf(server), 'wasmhost_worker_instance_bytes')).toBeLessThanOrEqual(3 * 64 * MiB);
  }, 300_000);

  it('refuses a shared memory with 400 INVALID_WASM', async () => {
    await expectRefused(
      await wat('(module (memory 1 1 shared) (func (export "run") (result i32) (i32.const 0)))', { threads: true }),
      'INVALID_WASM',
      /shared memory/,
    );
  });

  it('refuses a 64-bit memory with 400 INVALID_WASM', async () => {
    await expectRefused(
      await wat('(module (memory i64 1) (func (export "run") (result i32) (i32.const 0)))', { memory64: true }),
      'INVALID_WASM',
      /64-bit memory|not a valid/,
    );
  });

  it('refuses two memories with 400 INVALID_WASM', async () => {
    // (memory 1) (memory 1) (func (export "run") (result i32) (i32.const 0)): multi-memory, written out.
    const twoMemories = new Uint8Array([
      ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
      ...[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f],
      ...[0x03, 0x02, 0x01, 0x00],
      ...[0x05, 0x05, 0x02, 0x00, 0x01, 0x00, 0x01],
      ...[0x07, 0x07, 0x01, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x00],
      ...[0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b],
    ]);
    await expectRefused(twoMemories, 'INVALID_WASM', /more than one memory|not a valid/);
  });

  it('refuses an imported memory with 400 UNSUPPORTED_IMPORTS', async () => {
    await expectRefused(
      await wat('(module (import "env" "memory" (memory 1)) (func (export "run") (result i32) (i32.const 0)))'),
      'UNSUPPORTED_IMPORTS',
      /env\.memory \(memory\)/,
    );
  });

  /**
   * `hidden` (four bytes) after a br_on_null whose label, 67, is 0x43 (f32.const's opcode): the
   * rewriter once read br_on_null without its label and those four bytes as f32.const's, so a store
   * there was never marked (the next call read what it wrote) and a memory.grow there bypassed the
   * grow shim (memoryMaxPages did not hold). `operands` come first, `after` follows.
   */
  const behindBrOnNull = (operands: number[], hidden: number[], after: number[] = []) => [
    ...Array.from({ length: 68 }, () => [0x02, 0x40]).flat(),
    ...operands,
    ...[0xd2, 0x00, 0xd5, 0x43], // ref.func 0 (never null); br_on_null 67
    ...hidden,
    ...after,
    ...Array<number>(68).fill(0x0b),
  ];
  const i32Const = (value: number) => [0x41, ...sleb(value)];

  it.each([
    { title: 'with dirty-page tracking and the grow shim', locals: 1 },
    // Too many locals to add the rewrite's scratch locals: the module runs as uploaded, reset by comparing every page.
    { title: 'run without the rewrite', locals: 49_995 },
  ])(
    'resets a store behind br_on_null before the next call and holds a memory.grow behind it to memoryMaxPages ($title)',
    async ({ locals }) => {
      const address = 0x20000;
      // prettier-ignore
      const bytes = buildCodeModule({
      memoryPages: 4,
      functions: [
        { name: 'write', locals, code: [...behindBrOnNull([...i32Const(address), ...i32Const(0x52434553)], [0x1a, 0x36, 0x00, 0x00]), 0x41, 0] }, // drop; i32.store
        { name: 'read', code: [...i32Const(address), 0x28, 0x02, 0x00] }, // i32.load: the call fails unless it is 0
        {
          name: 'grow',
          locals,
          code: [
            ...behindBrOnNull(i32Const(4000), [0x1a, 0x40, 0x00, 0x01], [0x21, 0x00]), // drop; memory.grow; nop; local.set 0
            0x20, 0x00, 0x41, 0x7f, 0x47, 0x04, 0x40, 0x00, 0x0b, // trap unless it was refused (-1)
            0x41, 0x00,
          ],
        },
      ],
    });
      const name = `mod-${++plugins}`;
      expect((await server.api.upload(bytes, { name })).status).toBe(201);
      for (let i = 0; i < 3; i++) {
        expect((await server.api.call(name, { function: 'write' })).status).toBe(200);
        const read = await server.api.call(name, { function: 'read' });
        expect([read.status, read.ok ? null : read.error.message]).toEqual([200, null]);
      }
      const grow = await server.api.call(name, { function: 'grow', memoryMaxPages: 16 });
      expect([grow.status, grow.ok ? null : grow.error.message]).toEqual([200, null]);
    },
  );

  it('answers a memory.grow bomb with 422 MEMORY_LIMIT at memoryMaxPages', async () => {
    const bytes = await wat(`(module (memory 1)
      (func (export "run") (result i32) (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)))`);
    expect(await tryModule(bytes, { memoryMaxPages: 512 })).toMatchObject({ upload: 201, call: 422, callCode: 'MEMORY_LIMIT' });
  });
});

describe('start functions', () => {
  it('stops a start function that loops forever at the call deadline (504 TIMEOUT), replacing only that worker', async () => {
    const bytes = await wat(
      '(module (func $spin (loop $l (br $l))) (start $spin) (func (export "run") (result i32) (i32.const 0)))',
    );
    expect(await tryModule(bytes, { timeoutMs: 300 })).toMatchObject({ upload: 201, call: 504, callCode: 'TIMEOUT' });
  });

  it('answers a start function that traps with 422 PLUGIN_ERROR', async () => {
    const bytes = await wat('(module (func $boom (unreachable)) (start $boom) (func (export "run") (result i32) (i32.const 0)))');
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });

  it('stops an _initialize export that loops forever at the call deadline (504 TIMEOUT)', async () => {
    const bytes = await wat(
      '(module (func (export "_initialize") (loop $l (br $l))) (func (export "run") (result i32) (i32.const 0)))',
    );
    expect(await tryModule(bytes, { timeoutMs: 300 })).toMatchObject({ upload: 201, call: 504, callCode: 'TIMEOUT' });
  });

  it('refuses http_request in a start function with 422 PLUGIN_ERROR, every time, without crashing a worker (it did)', async () => {
    const before = sampleValue(await metricsOf(server), 'wasmhost_worker_restarts_total', { reason: 'crash' });
    const bytes = await hostPlugin('(i32.const 0)', {
      fields: '(func $start (drop (call $http_request (call $alloc (i64.const 2)) (i64.const 0)))) (start $start)',
    });
    for (let i = 0; i < 4; i++) {
      const outcome =
        i === 0 ? await tryModule(bytes) : { upload: 201, ...(await server.api.call(`mod-${plugins}`, { function: 'run' })) };
      expect(outcome).toMatchObject({ upload: 201 });
    }
    const answer = await server.api.call(`mod-${plugins}`, { function: 'run' });
    expect([answer.status, answer.error.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(answer.error.message).toContain('http_request cannot be used during start-up');
    expect(sampleValue(await metricsOf(server), 'wasmhost_worker_restarts_total', { reason: 'crash' })).toBe(before);
  });

  it('answers a start function allocating past its host memory with 422 MEMORY_LIMIT', async () => {
    const bytes = await hostPlugin('(i32.const 0)', {
      fields: '(func $start (loop $l (drop (call $alloc (i64.const 1048576))) (br $l))) (start $start)',
    });
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'MEMORY_LIMIT' });
  });

  it('replaces a worker whose rebuild (passive segments) runs a start function that loops, and never leaves calls stuck behind it', async () => {
    // The start function loops half the time (WASI random): sooner or later a rebuild after a good call does.
    const bytes = await wat(`(module
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (memory 1) (data $passive "x")
      (func $start (drop (call $random (i32.const 0) (i32.const 1)))
        (if (i32.lt_u (i32.load8_u (i32.const 0)) (i32.const 128)) (then (loop $spin (br $spin)))))
      (start $start)
      (func (export "run") (result i32) (i32.const 0)))`);
    // Each look at /metrics also notes whether a worker was seen running plugin code without a call
    // (it read 0 busy workers before, while one spun at 100%).
    let seenBusyWithoutCall = 0;
    const stuck = async () => {
      const metrics = await metricsOf(server);
      seenBusyWithoutCall = Math.max(seenBusyWithoutCall, sampleValue(metrics, 'wasmhost_workers_busy_without_call'));
      return sampleValue(metrics, 'wasmhost_worker_restarts_total', { reason: 'stuck' });
    };
    const before = await stuck();
    const name = `mod-${++plugins}`;
    expect((await server.api.upload(bytes, { name })).status).toBe(201);
    const answers = new Set<string>();
    for (let i = 0; i < 40 && (await stuck()) === before; i++) {
      const answer = await server.api.call(name, { function: 'run', timeoutMs: 400 });
      answers.add(answer.status === 200 ? '200' : `${answer.status} ${answer.error.code}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // Give the watchdog its INSTANCE_RESET_TIMEOUT_MS (1 s here) for a rebuild still spinning.
    for (let i = 0; i < 40 && (await stuck()) === before; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await stuck()).toBeGreaterThan(before);
    expect(seenBusyWithoutCall).toBeGreaterThanOrEqual(1);
    for (const answer of answers) expect(['200', '504 TIMEOUT']).toContain(answer);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(sampleValue(await metricsOf(server), 'wasmhost_workers_ready')).toBeGreaterThanOrEqual(1);
  });
});

describe('exceptions and the stack', () => {
  it('answers an exception thrown and never caught with 422 PLUGIN_ERROR', async () => {
    const bytes = await wat('(module (tag $e (param i32)) (func (export "run") (result i32) (throw $e (i32.const 42))))', {
      exceptions: true,
    });
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });

  it('cannot catch a trap: catch_all around unreachable still answers 422 PLUGIN_ERROR', async () => {
    const bytes = await wat('(module (func (export "run") (result i32) (try (do (unreachable)) (catch_all)) (i32.const 0)))', {
      exceptions: true,
    });
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });

  it('throws and catches a million exceptions within the call (200, memory bounded)', async () => {
    const bytes = await wat(
      `(module (tag $e (param i64)) (func (export "run") (result i32) (local $i i32)
        (loop $l (try (do (throw $e (i64.const 1))) (catch $e (drop)))
          (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
        (i32.const 0)))`,
      { exceptions: true },
    );
    expect(await tryModule(bytes, { timeoutMs: 10_000 })).toMatchObject({ upload: 201, call: 200 });
  });

  it('answers infinite recursion (stack overflow) with 422 PLUGIN_ERROR and keeps the worker', async () => {
    const bytes = await wat(
      '(module (func $r (result i32) (i32.add (call $r) (i32.const 1))) (func (export "run") (result i32) (call $r)))',
    );
    expect(await tryModule(bytes)).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
  });
});

describe('stored before the limits', () => {
  it('answers a stored plugin over a limit lowered since with 422 PLUGIN_ERROR on every call, after a restart', async () => {
    const dataDir = server.dataDir;
    const name = `mod-${++plugins}`;
    expect((await server.api.upload(buildModule({ tables: [50_000] }), { name })).status).toBe(201);
    // Both processes share the data dir read-only here: the stored plugin is what matters.
    const restarted = await childServerForTest({ ...ENV, MODULE_MAX_TABLE_ELEMENTS: '1000' }, dataDir);
    for (let i = 0; i < 2; i++) {
      const answer = await restarted.api.call(name, { function: 'run' });
      expect([answer.status, answer.error.code]).toEqual([422, 'PLUGIN_ERROR']);
      expect(answer.error.message).toMatch(/cannot be run: .*MODULE_MAX_TABLE_ELEMENTS/);
    }
    expect(restarted.alive()).toBe(true);
  });
});

describe('after the battery', () => {
  it('replaced workers only for calls stopped at their deadline or rebuilds stuck past theirs', async () => {
    const metrics = await metricsOf(server);
    for (const reason of ['out_of_memory', 'crash', 'exit']) {
      expect(sampleValue(metrics, 'wasmhost_worker_restarts_total', { reason }), reason).toBe(0);
    }
  });
});

describe('linked modules', () => {
  const RUN_VIA_SIDE = `(module (import "side" "f" (func $f (result i32))) (func (export "run") (result i32) (drop (call $f)) (i32.const 0)))`;

  /** Uploads a manifest of `side` (linked as "side") and a main module calling its `f`, then calls `run`. */
  async function tryLinked(side: string, call: Record<string, unknown> = {}, main = RUN_VIA_SIDE): Promise<Outcome> {
    const wasm = [{ data: await watBase64(side), name: 'side' }, { data: await watBase64(main) }];
    return tryUpload((name) => server.api.uploadManifest({ wasm }, undefined, { name }), call);
  }

  it('counts a side module’s memory against the call’s memoryMaxPages: 200 + 100 pages run only with 300 (422 MEMORY_LIMIT, then 200)', async () => {
    const side = '(module (memory 200) (func (export "f") (result i32) (i32.const 0)))';
    const main = `(module (import "side" "f" (func $f (result i32))) (memory 100) (func (export "run") (result i32) (drop (call $f)) (i32.const 0)))`;
    const outcome = await tryLinked(side, { memoryMaxPages: 299 }, main);
    expect(outcome).toMatchObject({ upload: 201, call: 422, callCode: 'MEMORY_LIMIT' });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 300 })).status).toBe(200);
  });

  it('refuses a side module needing 4 GiB of memory to start with 400 INVALID_WASM, storing nothing', async () => {
    const outcome = await tryLinked('(module (memory 65536) (func (export "f") (result i32) (i32.const 0)))');
    expect([outcome.upload, outcome.uploadCode]).toEqual([400, 'INVALID_WASM']);
    expect(outcome.uploadMessage).toMatch(/CALL_MEMORY_PAGES_CEILING/);
    expect((await server.api.list({ name: `mod-${plugins}` })).data.plugins).toEqual([]);
  });

  it.each([
    {
      what: 'a module limit (2 × 60,000 functions)',
      entry: '(func)',
      count: 60_000,
      message: /together have 120003 functions; the limit is 100000 \(MODULE_MAX_FUNCTIONS\)/,
    },
    {
      what: 'MODULE_MAX_GLOBALS (2 × 6,000 globals)',
      entry: '(global i32 (i32.const 0))',
      count: 6_000,
      message: /together have 12000 globals; the limit is 10000 \(MODULE_MAX_GLOBALS\)/,
    },
  ])('refuses modules that pass $what only together with 400 INVALID_WASM', async ({ entry, count, message }) => {
    const entries = Array.from({ length: count }, () => entry).join(' ');
    const side = `(module ${entries} (func (export "f") (result i32) (i32.const 0)))`;
    const main = `(module (import "side" "f" (func $f (result i32))) ${entries} (func (export "run") (result i32) (i32.const 0)))`;
    const outcome = await tryLinked(side, {}, main);
    expect([outcome.upload, outcome.uploadCode]).toEqual([400, 'INVALID_WASM']);
    expect(outcome.uploadMessage).toMatch(message);
  });

  it('answers a side module’s memory.grow bomb with 422 MEMORY_LIMIT at memoryMaxPages', async () => {
    const side = `(module (memory 1)
      (func (export "f") (result i32) (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)))`;
    expect(await tryLinked(side, { memoryMaxPages: 256 })).toMatchObject({ upload: 201, call: 422, callCode: 'MEMORY_LIMIT' });
  });

  it('answers two modules that each grow to just under the cap with 422 MEMORY_LIMIT (the cap counts both)', async () => {
    const side = `(module (memory 1) (func (export "f") (result i32) (memory.grow (i32.const 100))))`;
    const main = `(module (import "side" "f" (func $f (result i32))) (memory 1)
      (func (export "run") (result i32) (drop (call $f))
        (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable)) (i32.const 0)))`;
    expect(await tryLinked(side, { memoryMaxPages: 128 }, main)).toMatchObject({
      upload: 201,
      call: 422,
      callCode: 'MEMORY_LIMIT',
    });
    expect((await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 256 })).status).toBe(200);
  });

  /** `count` side modules `s0`… whose `f` grows their memory by `pages` and writes its last byte, returning memory.grow's answer. */
  async function growingSides(count: number, pages: number, inStart = false): Promise<{ name: string; data: string }[]> {
    const grow = `(local $old i32) (local.set $old (memory.grow (i32.const ${pages})))
      (if (i32.ne (local.get $old) (i32.const -1)) (then (i32.store8 (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)) (i32.const 1))))`;
    const source = inStart
      ? `(module (memory 1) (func $start ${grow}) (start $start) (func (export "f") (result i32) (i32.sub (memory.size) (i32.const 1))))`
      : `(module (memory 1) (func (export "f") (result i32) ${grow} (local.get $old)))`;
    const data = await watBase64(source);
    return Array.from({ length: count }, (_, k) => ({ name: `s${k}`, data }));
  }

  /** A main module calling `f` of every side module, trapping when more than `allowed` of them answered other than -1 (0 for a start-up grow). */
  async function callsEverySide(sides: { name: string }[], allowed: number): Promise<string> {
    const imports = sides.map((s) => `(import "${s.name}" "f" (func $${s.name} (result i32)))`).join(' ');
    const calls = sides
      .map((s) => `(if (i32.gt_s (call $${s.name}) (i32.const 0)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))`)
      .join(' ');
    const source = `(module ${imports} (memory 1) (func (export "run") (result i32) (local $n i32) ${calls}
      (if (i32.gt_u (local.get $n) (i32.const ${allowed})) (then unreachable)) (i32.const 0)))`;
    return watBase64(source);
  }

  it.each([
    {
      inStart: false,
      title:
        'lets 15 side modules that each grow by 200 pages hold 256 pages together, not 3,016 (memory.grow answers -1 past the shared cap)',
    },
    {
      inStart: true,
      title:
        'counts start functions’ growth in the shared cap too: 15 side modules growing by 200 pages as they start hold 256 pages together',
    },
  ])('$title', async ({ inStart }) => {
    const sides = await growingSides(15, 200, inStart);
    const upload = await server.api.uploadManifest({ wasm: [...sides, { data: await callsEverySide(sides, 1) }] }, undefined, {
      name: `mod-${++plugins}`,
    });
    expect(upload.status).toBe(201);
    const answer = await server.api.call(`mod-${plugins}`, { function: 'run', memoryMaxPages: 256 });
    expect([answer.status, answer.ok ? null : answer.error.message]).toEqual([200, null]);
  });

  /**
   * Modules the engine runs without its grow shim (a function with too many locals to add its scratch
   * locals: the rewrite falls back), which grow memory natively: a main module (with `mainPages` of
   * memory) calls `g`'s `run`, which grows its memory by `pages`, and traps unless that was refused.
   */
  async function nativeGrower(pages: number, options: { sharedFrom?: string; mainPages?: number } = {}) {
    const { sharedFrom, mainPages = 0 } = options;
    const g = buildModule({
      locals: 49_995,
      grow: pages,
      ...(sharedFrom ? { importMemory: { module: sharedFrom, name: 'memory' } } : {}),
    });
    const main = `(module (import "g" "run" (func $g (result i32))) (memory ${mainPages})
      (func (export "run") (result i32) (if (i32.ne (call $g) (i32.const -1)) (then unreachable)) (i32.const 0)))`;
    const wasm = [
      ...(sharedFrom ? [{ data: await watBase64('(module (memory (export "memory") 1))'), name: sharedFrom }] : []),
      { data: Buffer.from(g).toString('base64'), name: 'g' },
      { data: await watBase64(main) },
    ];
    const name = `mod-${++plugins}`;
    expect((await server.api.uploadManifest({ wasm }, undefined, { name })).status).toBe(201);
    return name;
  }

  it('holds memoryMaxPages while a module without the grow shim grows a memory it imports: 100 + 1 + 200 pages is refused at 256 (200), allowed at 400', async () => {
    const name = await nativeGrower(200, { sharedFrom: 'mem', mainPages: 100 });
    const capped = await server.api.call(name, { function: 'run', memoryMaxPages: 256 });
    expect([capped.status, capped.ok ? null : capped.error.message]).toEqual([200, null]);
    // With room under the cap the same grow succeeds (and main traps, as it does when the grow is not refused).
    const roomy = await server.api.call(name, { function: 'run', memoryMaxPages: 400 });
    expect([roomy.status, roomy.ok ? null : roomy.error.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect((await server.api.call(name, { function: 'run', memoryMaxPages: 256 })).status).toBe(200);
  });

  it('holds a lower memoryMaxPages than the warm-up’s for a module without the grow shim: growing by 100 is refused at 64 (200), allowed at 128', async () => {
    // The upload's warm-up made the set with the default cap (256) on every worker.
    const name = await nativeGrower(100);
    const capped = await server.api.call(name, { function: 'run', memoryMaxPages: 64 });
    expect([capped.status, capped.ok ? null : capped.error.message]).toEqual([200, null]);
    const roomy = await server.api.call(name, { function: 'run', memoryMaxPages: 128 });
    expect([roomy.status, roomy.ok ? null : roomy.error.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('holds MODULE_MAX_TABLE_ELEMENTS for a linked set as a whole: two modules growing their tables step by step hold 100,000 elements together (200)', async () => {
    const growAll = '(loop $g (br_if $g (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))))';
    const side = `(module (table $t 1 funcref) (func (export "f") (result i32) ${growAll} (table.size $t)))`;
    const main = `(module (import "side" "f" (func $f (result i32))) (table $t 1 funcref)
      (func (export "run") (result i32) (local $total i32)
        (local.set $total (call $f)) ${growAll}
        (local.set $total (i32.add (local.get $total) (table.size $t)))
        (if (i32.gt_u (local.get $total) (i32.const 100000)) (then unreachable))
        (if (i32.lt_u (local.get $total) (i32.const 99000)) (then (return (i32.const 2))))
        (i32.const 0)))`;
    const outcome = await tryLinked(side, {}, main);
    expect(outcome).toMatchObject({ upload: 201, call: 200 });
    // A new set for the next call (its tables grew), with the whole budget again.
    expect((await server.api.call(`mod-${plugins}`, { function: 'run' })).status).toBe(200);
  });

  it('counts a linked set’s tables in what a worker’s cached instances hold (99,000 elements: over 3 MiB, not 2 × 64 KiB)', async () => {
    const own = await childServerForTest({ WORKERS: '1', BURST_WORKERS: '0', MAX_EVENT_LOOP_DELAY_MS: '0' });
    const side = await watBase64('(module (table 50000 funcref) (func (export "f") (result i32) (i32.const 0)))');
    const main = await watBase64(`(module (import "side" "f" (func $f (result i32))) (table 49000 funcref)
      (func (export "run") (result i32) (call $f)))`);
    const upload = await own.api.uploadManifest({ wasm: [{ data: side, name: 'side' }, { data: main }] }, undefined, {
      name: 'tables',
    });
    expect(upload.status).toBe(201);
    expect((await own.api.call('tables', { function: 'run' })).status).toBe(200);
    expect(sampleValue(await metricsOf(own), 'wasmhost_worker_instance_bytes')).toBeGreaterThanOrEqual(99_000 * 32);
  });

  it('stops a side module’s start function that loops forever at the call deadline (504 TIMEOUT)', async () => {
    const side = '(module (func $spin (loop $l (br $l))) (start $spin) (func (export "f") (result i32) (i32.const 0)))';
    expect(await tryLinked(side, { timeoutMs: 300 })).toMatchObject({ upload: 201, call: 504, callCode: 'TIMEOUT' });
  });

  it('stops a side module’s _initialize that loops forever at the call deadline (504 TIMEOUT)', async () => {
    const side = '(module (func (export "_initialize") (loop $l (br $l))) (func (export "f") (result i32) (i32.const 0)))';
    expect(await tryLinked(side, { timeoutMs: 300 })).toMatchObject({ upload: 201, call: 504, callCode: 'TIMEOUT' });
  });

  it('answers an import cycle that recurses forever with 422 PLUGIN_ERROR (the stack runs out)', async () => {
    const side = '(module (import "main" "run" (func $run (result i32))) (func (export "f") (result i32) (call $run)))';
    const outcome = await tryLinked(side);
    expect(outcome).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
    expect(outcome.callMessage).toMatch(/Maximum call stack size exceeded/);
  });

  it('answers a cycle through a lazily linked import in a start function with 422 PLUGIN_ERROR (the target was never instantiated)', async () => {
    const side =
      '(module (import "main" "g" (func $g)) (func $start (call $g)) (start $start) (func (export "f") (result i32) (i32.const 0)))';
    const main = `(module (import "side" "f" (func $f (result i32))) (func (export "g")) (func (export "run") (result i32) (drop (call $f)) (i32.const 0)))`;
    const outcome = await tryLinked(side, {}, main);
    expect(outcome).toMatchObject({ upload: 201, call: 422, callCode: 'PLUGIN_ERROR' });
    expect(outcome.callMessage).toMatch(/target module "main" was never instantiated/);
  });

  it('refuses to call a module stored for a manifest on its own (422 PLUGIN_ERROR: its imports come from other modules)', async () => {
    const main = `(module (import "side" "f" (func $f (result i32))) (func (export "run") (result i32) (drop (call $f)) (i32.const 0)))`;
    const side = '(module (func (export "f") (result i32) (i32.const 0)))';
    expect(await tryLinked(side, {}, main)).toMatchObject({ upload: 201, call: 200 });
    const mainId = (await server.api.list({ name: `mod-${plugins}` })).data.plugins[0]!.manifest!.main;
    const answer = await server.api.call(mainId, { function: 'run' });
    expect([answer.status, answer.error.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(answer.error.message).toMatch(/imports from modules "side": it runs only as a module of a manifest that links them/);
  });
});
