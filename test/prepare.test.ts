// ModulePreparer: the engine's rewrite and compile, run on a thread of its own.
import { afterEach, describe, expect, it } from 'vitest';
import { ModuleRefusedError } from '../src/engine/compile/module-check.ts';
import { ModulePreparer, prepareModule } from '../src/engine/compile/prepare.ts';
import { HOST_MODULE, MEMORY_IMPORT, WasmRewriteError } from '../src/engine/compile/wasm-rewrite.ts';
import { defaultModuleLimits, readPlugin, tinyPluginWat, wat } from './helpers.ts';

const limits = defaultModuleLimits();
const options = { timeoutMs: 30_000 };

describe('ModulePreparer', () => {
  let preparer: ModulePreparer;
  afterEach(async () => {
    await preparer.close();
  });

  it('hands back the compiled module and layout prepareModule makes, for several modules asked for at once', async () => {
    preparer = new ModulePreparer(limits, options);
    const bytes = await readPlugin('rust_vowels');
    const before = Buffer.from(bytes);
    const [threaded, other] = await Promise.all([preparer.prepare(bytes), preparer.prepare(await wat(tinyPluginWat(7)))]);
    const local = await prepareModule(bytes, limits);
    expect(threaded.layout).toEqual(local.layout);
    expect(WebAssembly.Module.imports(threaded.module)).toEqual(WebAssembly.Module.imports(local.module));
    expect(WebAssembly.Module.imports(threaded.module)).toContainEqual({
      module: HOST_MODULE,
      name: MEMORY_IMPORT,
      kind: 'memory',
    });
    expect(WebAssembly.Module.exports(other.module).map((e) => e.name)).toContain('run');
    // The caller's bytes are untouched (a copy went to the thread).
    expect(Buffer.from(bytes).equals(before)).toBe(true);
  });

  it('keeps the error classes callers tell apart: ModuleRefusedError (with its code and details), WasmRewriteError, CompileError', async () => {
    preparer = new ModulePreparer(limits, options);
    const importsMemory = await wat('(module (import "env" "memory" (memory 1)) (func (export "run")))');
    const refused = await preparer.prepare(importsMemory).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ModuleRefusedError);
    expect(refused).toMatchObject({
      code: 'UNSUPPORTED_IMPORTS',
      details: { unsupportedImports: [{ module: 'env', name: 'memory' }] },
    });
    const clash = await wat(
      '(module (global (mut i32) (i32.const 0)) (func (export "run")) (func (export "__wasmhost_global_0")))',
    );
    await expect(preparer.prepare(clash)).rejects.toBeInstanceOf(WasmRewriteError);
    // Valid sections for the rewriter, invalid code for V8: a function body that leaves nothing for its i32 result.
    const badBody = await wat('(module (func (export "run") (result i32) (i32.const 1)))');
    badBody[badBody.length - 3] = 0x01; // i32.const 1 → nop, 1
    const err = await preparer.prepare(badBody, { validate: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebAssembly.CompileError);
    // And it keeps working afterwards.
    expect((await preparer.prepare(await wat(tinyPluginWat(8)))).layout.initialPages).toBe(1);
  });

  it('fails what it was asked when its thread dies, instead of leaving it waiting', async () => {
    preparer = new ModulePreparer(limits, { ...options, workerUrl: new URL('./fixtures/crash-worker.mjs', import.meta.url) });
    await expect(preparer.prepare(await wat(tinyPluginWat(9)))).rejects.toThrow(/the module preparation thread stopped/);
  });

  it('refuses a module whose preparation passes MODULE_PREPARE_TIMEOUT_MS, replacing its thread, and prepares those queued behind it', async () => {
    const workerUrl = new URL('./fixtures/stuck-prepare-worker.mjs', import.meta.url);
    preparer = new ModulePreparer(limits, { timeoutMs: 5_000, workerUrl });
    const stuck = preparer.prepare(new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00])).catch((e: unknown) => e);
    const behind = [preparer.prepare(await wat(tinyPluginWat(11))), preparer.prepare(await wat(tinyPluginWat(12)))];
    const refused = await stuck;
    expect(refused).toBeInstanceOf(ModuleRefusedError);
    expect(refused).toMatchObject({ code: 'INVALID_WASM', details: { limit: 'MODULE_PREPARE_TIMEOUT_MS', max: 5_000 } });
    expect((refused as Error).message).toMatch(/too complex to prepare: it took longer than 5000 ms/);
    expect((await Promise.all(behind)).map((p) => p.layout.initialPages)).toEqual([1, 1]);
  });

  it('refuses work once closed', async () => {
    preparer = new ModulePreparer(limits, options);
    await preparer.close();
    await expect(preparer.prepare(await wat(tinyPluginWat(10)))).rejects.toThrow(/closed/);
  });
});
