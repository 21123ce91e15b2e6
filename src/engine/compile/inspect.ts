// Upload-time validation: the module must be valid, within the module limits, import only what the
// engine provides (with the engine's signatures) and export something to call. All of it runs where
// `prepare` runs (a thread of its own in the server), and the prepared module goes to the cache.
import { AppError } from '../../errors.ts';
import type { PluginImport } from '../../store/store.ts';
import { WASI_PREVIEW1 } from '../runtime/wasi.ts';
import { ModuleRefusedError } from './module-check.ts';
import type { Prepare, PreparedModule } from './prepare.ts';
import { WasmRewriteError } from './wasm-rewrite.ts';

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

export interface InspectOptions {
  /** A module of a manifest: imports from its other modules are checked by the manifest (link-check.ts). */
  linking?: boolean;
  /** A caller calls its exports (not a manifest's side module, which may export only a memory). */
  callable?: boolean;
}

/** `prepare`: where the checks, rewrite and compile run (the server passes its ModulePreparer's). */
export async function inspectModule(
  bytes: Uint8Array,
  prepare: Prepare,
  { linking = false, callable = true }: InspectOptions = {},
): Promise<InspectedModule> {
  let prepared: PreparedModule;
  try {
    prepared = await prepare(bytes, { validate: true, linking });
  } catch (err) {
    throw refusal(err);
  }
  const { exports, imports } = prepared;
  if (callable) checkCallable(exports);
  return { prepared, exports, imports, wasi: imports.some((i) => i.module === WASI_PREVIEW1) };
}

/** Throws NO_CALLABLE_EXPORTS unless a caller could call one of `exports`. */
export function checkCallable(exports: readonly string[]): void {
  if (!exports.some((name) => !RUNTIME_EXPORTS.has(name))) {
    throw new AppError('NO_CALLABLE_EXPORTS', 'the module exports no function a caller could call');
  }
}

/** The upload's answer for a module preparation refused; anything else is not the module's fault. */
export function refusal(err: unknown): unknown {
  if (err instanceof ModuleRefusedError) return new AppError(err.code, err.message, { details: err.details });
  if (err instanceof WebAssembly.CompileError) {
    return new AppError('INVALID_WASM', `not a valid WebAssembly module: ${err.message}`);
  }
  if (err instanceof WasmRewriteError) {
    return new AppError('INVALID_WASM', `the module cannot be run by this service: ${err.message}`);
  }
  return err;
}
