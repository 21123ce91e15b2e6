// Upload-time validation: compile (the module the engine will run), then check it only asks for what
// the engine provides.
// A module that would fail to link is refused here rather than on every call.
import { AppError } from '../errors.ts';
import type { PluginImport } from '../store/store.ts';
import { EXTISM_ENV, EXTISM_ENV_FUNCTIONS } from './host-env.ts';
import { WASI_FUNCTIONS, WASI_PREVIEW1 } from './wasi.ts';
import { prepareModule, type PreparedModule } from './prepare.ts';
import { HOST_MODULE, MEMORY_IMPORT, WasmRewriteError } from './wasm-rewrite.ts';

// What upload accepts is exactly what the engine links: the name sets come from its implementations.
export { EXTISM_ENV, EXTISM_ENV_FUNCTIONS } from './host-env.ts';
export { WASI_FUNCTIONS, WASI_PREVIEW1 } from './wasi.ts';

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

export async function inspectModule(bytes: Uint8Array): Promise<InspectedModule> {
  // One compile on the way that succeeds: the rewritten module the engine runs describes the plugin
  // too (same imports plus the engine's memory, same function exports).
  let prepared: PreparedModule | null = null;
  let cannotRun: unknown = null;
  try {
    prepared = await prepareModule(bytes);
  } catch (err) {
    cannotRun = err;
  }
  // Otherwise the original says why: V8's message about it, or what it asks for that is not provided.
  const module = prepared?.module ?? (await compileOriginal(bytes));
  // A valid module the rewriter choked on without saying why is a bug here, not bad input.
  if (cannotRun !== null && !(cannotRun instanceof WasmRewriteError) && !(cannotRun instanceof WebAssembly.CompileError)) throw cannotRun;
  const descriptors = WebAssembly.Module.imports(module);
  // The rewriter appends the engine's memory import; the plugin's own imports come before it.
  if (prepared) {
    const memory = descriptors.pop();
    if (memory?.module !== HOST_MODULE || memory.name !== MEMORY_IMPORT) throw new Error('the rewritten module does not end its imports with the engine memory');
  }
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

  const exports = WebAssembly.Module.exports(module).filter((d) => d.kind === 'function').map((d) => d.name);
  if (!exports.some((name) => !RUNTIME_EXPORTS.has(name))) {
    throw new AppError('NO_CALLABLE_EXPORTS', 'the module exports no function a caller could call');
  }

  // The engine runs a rewritten module; one it cannot rewrite would fail every call.
  if (!prepared) throw new AppError('INVALID_WASM', `the module cannot be run by this service: ${(cannotRun as Error).message}`);

  return {
    prepared,
    exports,
    imports: descriptors.map((d) => ({ module: d.module, name: d.name })),
    wasi: descriptors.some((d) => d.module === WASI_PREVIEW1),
  };
}

async function compileOriginal(bytes: Uint8Array): Promise<WebAssembly.Module> {
  try {
    return await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw new AppError('INVALID_WASM', `not a valid WebAssembly module: ${(err as Error).message}`);
  }
}

function isProvided(d: WebAssembly.ModuleImportDescriptor): boolean {
  if (d.kind !== 'function') return false; // the SDK links host functions only
  if (d.module === EXTISM_ENV) return EXTISM_ENV_FUNCTIONS.has(d.name);
  if (d.module === WASI_PREVIEW1) return WASI_FUNCTIONS.has(d.name);
  return false;
}
