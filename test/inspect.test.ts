import createPlugin from '@extism/extism';
import { describe, expect, it } from 'vitest';
import { EXTISM_ENV, EXTISM_ENV_FUNCTIONS, inspectModule, WASI_FUNCTIONS, WASI_PREVIEW1 } from '../src/engine/compile/inspect.ts';
import { CallState } from '../src/engine/runtime/host-env.ts';
import { describeModule, PluginInstance } from '../src/engine/runtime/instance.ts';
import { LogCollector } from '../src/engine/runtime/logs.ts';
import { AppError } from '../src/errors.ts';
import { wat } from './helpers.ts';

/** A module importing every host function upload accepts. */
function importingEverything(): Promise<Uint8Array> {
  const imports = [
    ...[...EXTISM_ENV_FUNCTIONS].map((name) => `(import "${EXTISM_ENV}" "${name}" (func))`),
    ...[...WASI_FUNCTIONS].map((name) => `(import "${WASI_PREVIEW1}" "${name}" (func))`),
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
    expect(inspected.imports).toHaveLength(EXTISM_ENV_FUNCTIONS.size + WASI_FUNCTIONS.size);
    // Linking is where an unknown host function would fail: the SDK must provide all of them.
    const plugin = await createPlugin(
      { wasm: [{ module: await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>) }] },
      { useWasi: true },
    );
    await plugin.close();
  });

  it('accepts only what the engine itself links: a module importing every accepted function runs on an engine instance', async () => {
    const { prepared } = await inspectModule(await importingEverything());
    const instance = new PluginInstance(describeModule(prepared.module, prepared.layout), 16);
    const limits = { hostBytes: 1024, outputBytes: 1024, varBytes: 1024, httpResponseBytes: 0 };
    expect(await instance.run('run', new CallState(null, {}, new LogCollector('off', 0, 0), limits, null))).toBe(0);
  });

  it('refuses non-function imports and unknown host functions', async () => {
    const memoryImport = await wat(`(module (import "${EXTISM_ENV}" "memory" (memory 1)) (func (export "run")))`);
    expect(await codeOf(inspectModule(memoryImport))).toBe('UNSUPPORTED_IMPORTS');
    const unknownFn = await wat(`(module (import "${EXTISM_ENV}" "no_such_fn" (func)) (func (export "run")))`);
    expect(await codeOf(inspectModule(unknownFn))).toBe('UNSUPPORTED_IMPORTS');
  });

  it('does not count the WASI reactor start-up export as callable', async () => {
    const bytes = await wat(`(module (func (export "_initialize")))`);
    expect(await codeOf(inspectModule(bytes))).toBe('NO_CALLABLE_EXPORTS');
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
