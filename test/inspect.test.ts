import createPlugin from '@extism/extism';
import { describe, expect, it } from 'vitest';
import { inspectModule as inspect } from '../src/engine/compile/inspect.ts';
import { prepareModule, type Prepare } from '../src/engine/compile/prepare.ts';
import { CallState, EXTISM_ENV, EXTISM_ENV_SIGNATURES } from '../src/engine/runtime/host-env.ts';
import { describeModule, PluginInstance } from '../src/engine/runtime/instance.ts';
import { LogCollector } from '../src/engine/runtime/logs.ts';
import type { Signature } from '../src/engine/runtime/signatures.ts';
import { WASI_PREVIEW1, WASI_SIGNATURES } from '../src/engine/runtime/wasi.ts';
import { AppError } from '../src/errors.ts';
import { defaultModuleLimits, wat } from './helpers.ts';

const limits = defaultModuleLimits();
const prepare: Prepare = (bytes, options) => prepareModule(bytes, limits, options);
const inspectModule = (bytes: Uint8Array) => inspect(bytes, prepare);

/** `(func (param i64) (result i32))` for a signature. */
function funcType({ params, results }: Signature): string {
  return `(func (param ${params.join(' ')}) (result ${results.join(' ')}))`;
}

/** A module importing every host function upload accepts, with the signatures it accepts. */
function importingEverything(): Promise<Uint8Array> {
  const imports = [
    ...[...EXTISM_ENV_SIGNATURES].map(([name, sig]) => `(import "${EXTISM_ENV}" "${name}" ${funcType(sig)})`),
    ...[...WASI_SIGNATURES].map(([name, sig]) => `(import "${WASI_PREVIEW1}" "${name}" ${funcType(sig)})`),
  ];
  return wat(`(module ${imports.join(' ')} (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))`);
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return (err as AppError).code;
}

describe('inspectModule', () => {
  it('accepts a module importing every host function it claims, and the SDK links it', async () => {
    const bytes = await importingEverything();
    const inspected = await inspectModule(bytes);
    expect(inspected.wasi).toBe(true);
    expect(inspected.exports).toEqual(['run']);
    expect(inspected.imports).toHaveLength(EXTISM_ENV_SIGNATURES.size + WASI_SIGNATURES.size);
    // Linking is where an unknown host function would fail: the SDK must provide all of them.
    const plugin = await createPlugin(
      { wasm: [{ module: await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>) }] },
      { useWasi: true },
    );
    await plugin.close();
  });

  it('accepts only what the engine itself links: a module importing every accepted function runs on an engine instance', async () => {
    const { prepared } = await inspectModule(await importingEverything());
    const instance = new PluginInstance(describeModule(prepared.module, prepared.layout), 16, 16);
    const callLimits = { hostBytes: 1024, outputBytes: 1024, varBytes: 1024, httpResponseBytes: 0 };
    expect(await instance.run('run', new CallState(null, {}, new LogCollector('off', 0, 0), callLimits, null), 16)).toBe(0);
  });

  it('refuses non-function imports and unknown host functions', async () => {
    const memoryImport = await wat(`(module (import "${EXTISM_ENV}" "memory" (memory 1)) (func (export "run")))`);
    expect(await codeOf(inspectModule(memoryImport))).toBe('UNSUPPORTED_IMPORTS');
    const unknownFn = await wat(`(module (import "${EXTISM_ENV}" "no_such_fn" (func)) (func (export "run")))`);
    expect(await codeOf(inspectModule(unknownFn))).toBe('UNSUPPORTED_IMPORTS');
  });

  it('refuses a host function imported with another signature than the engine provides, naming both', async () => {
    const bytes = await wat(`(module
      (import "${EXTISM_ENV}" "alloc" (func (param i32) (result i32)))
      (import "${WASI_PREVIEW1}" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (func (export "run")))`);
    const err = (await inspectModule(bytes).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('UNSUPPORTED_IMPORTS');
    expect(err.details.unsupportedImports).toEqual([
      { module: EXTISM_ENV, name: 'alloc', kind: 'function', expected: '(i64) -> i64', actual: '(i32) -> i32' },
    ]);
    expect(err.message).toContain('extism:host/env.alloc declared as (i32) -> i32, provided as (i64) -> i64');
  });

  it('does not count the WASI reactor start-up export as callable', async () => {
    const bytes = await wat(`(module (func (export "_initialize")))`);
    expect(await codeOf(inspectModule(bytes))).toBe('NO_CALLABLE_EXPORTS');
  });

  it('reads names as V8 does, a leading byte-order mark included', async () => {
    const bytes = await wat(`(module (memory (export "memory") 1) (func (export "\\ef\\bb\\bfrun")))`);
    const v8Names = WebAssembly.Module.exports(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>)).map((e) => e.name);
    expect(v8Names).toContain('\uFEFFrun');
    expect((await inspectModule(bytes)).exports).toEqual(['\uFEFFrun']);
  });

  it('refuses a module the engine could not prepare for running', async () => {
    const bytes = await wat(
      `(module (global $g (mut i32) (i32.const 0)) (func (export "run")) (func (export "__wasmhost_global_0")))`,
    );
    const err = await inspectModule(bytes).catch((e: AppError) => e);
    expect((err as AppError).code).toBe('INVALID_WASM');
    expect((err as AppError).message).toMatch(/cannot be run by this service/);
  });

  it('says why a module does not compile', async () => {
    const err = await inspectModule(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff])).catch((e: AppError) => e);
    expect((err as AppError).code).toBe('INVALID_WASM');
    expect((err as AppError).message).toMatch(/not a valid WebAssembly module: .+/);
  });
});
