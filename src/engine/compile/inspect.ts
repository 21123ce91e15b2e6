// Upload-time validation: compile once, then check the module only asks for what the engine provides.
// A module that would fail to link is refused here rather than on every call.
import { AppError } from '../../errors.ts';
import type { PluginImport } from '../../store/store.ts';
import { EXTISM_ENV, EXTISM_ENV_FUNCTIONS } from '../runtime/host-env.ts';
import { WASI_FUNCTIONS, WASI_PREVIEW1 } from '../runtime/wasi.ts';
import { prepareModule, type Prepare, type PreparedModule } from './prepare.ts';
import { WasmRewriteError } from './wasm-rewrite.ts';

// What upload accepts is exactly what the engine links: the name sets come from its implementations.
export { EXTISM_ENV, EXTISM_ENV_FUNCTIONS } from '../runtime/host-env.ts';
export { WASI_FUNCTIONS, WASI_PREVIEW1 } from '../runtime/wasi.ts';

/** Exports the runtime calls itself (WASI reactor start-up), not a caller. */
const RUNTIME_EXPORTS = new Set(['_initialize']);

export interface InspectedModule {
  /** What the engine runs; the upload hands it to the module cache. */
  prepared: PreparedModule;
  /** Exported function names. */
  exports: string[];
  imports: PluginImport[];
  wasi: boolean;
}

/** `prepare`: where the rewrite and compile for the engine run (the server passes its ModulePreparer's). */
export async function inspectModule(bytes: Uint8Array, prepare: Prepare = prepareModule): Promise<InspectedModule> {
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw new AppError('INVALID_WASM', `not a valid WebAssembly module: ${(err as Error).message}`);
  }

  const descriptors = WebAssembly.Module.imports(module);
  const unsupported = descriptors.filter((d) => !isProvided(d));
  if (unsupported.length > 0) {
    const listed = unsupported.map((d) => `${d.module}.${d.name}${d.kind === 'function' ? '' : ` (${d.kind})`}`);
    throw new AppError(
      'UNSUPPORTED_IMPORTS',
      `the module imports what this service does not provide: ${listed.join(', ')} ` +
        `(available: functions of "${EXTISM_ENV}" and "${WASI_PREVIEW1}")`,
      { details: { unsupportedImports: unsupported.map((d) => ({ module: d.module, name: d.name, kind: d.kind })) } },
    );
  }

  const exports = WebAssembly.Module.exports(module)
    .filter((d) => d.kind === 'function')
    .map((d) => d.name);
  if (!exports.some((name) => !RUNTIME_EXPORTS.has(name))) {
    throw new AppError('NO_CALLABLE_EXPORTS', 'the module exports no function a caller could call');
  }

  // The engine runs a rewritten module; one it cannot rewrite would fail every call.
  let prepared: PreparedModule;
  try {
    prepared = await prepare(bytes);
  } catch (err) {
    if (!(err instanceof WasmRewriteError)) throw err;
    throw new AppError('INVALID_WASM', `the module cannot be run by this service: ${err.message}`);
  }

  return {
    prepared,
    exports,
    imports: descriptors.map((d) => ({ module: d.module, name: d.name })),
    wasi: descriptors.some((d) => d.module === WASI_PREVIEW1),
  };
}

function isProvided(d: WebAssembly.ModuleImportDescriptor): boolean {
  if (d.kind !== 'function') return false; // the SDK links host functions only
  if (d.module === EXTISM_ENV) return EXTISM_ENV_FUNCTIONS.has(d.name);
  if (d.module === WASI_PREVIEW1) return WASI_FUNCTIONS.has(d.name);
  return false;
}
