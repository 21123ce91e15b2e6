// Upload-time validation: compile once, then check the module only asks for what the engine provides.
// A module that would fail to link is refused here rather than on every call.
import { AppError } from '../errors.ts';
import type { PluginImport } from '../store/store.ts';
import { prepareModule, type PreparedModule } from './prepare.ts';
import { WasmRewriteError } from './wasm-rewrite.ts';

export const EXTISM_ENV = 'extism:host/env';
export const WASI_PREVIEW1 = 'wasi_snapshot_preview1';

/** Host functions @extism/extism 2.0.0-rc13 provides under extism:host/env (its CallContext). */
export const EXTISM_ENV_FUNCTIONS = new Set([
  'alloc', 'free', 'length', 'length_unsafe', 'load_u8', 'load_u64', 'store_u8', 'store_u64',
  'input_offset', 'input_length', 'input_load_u8', 'input_load_u64', 'output_set', 'error_set', 'error_get',
  'config_get', 'var_get', 'var_set', 'http_request', 'http_status_code', 'http_headers',
  'log_trace', 'log_debug', 'log_info', 'log_warn', 'log_error', 'get_log_level',
]);

/** WASI preview 1 as node:wasi provides it (the SDK uses node:wasi). */
export const WASI_FUNCTIONS = new Set([
  'args_get', 'args_sizes_get', 'clock_res_get', 'clock_time_get', 'environ_get', 'environ_sizes_get',
  'fd_advise', 'fd_allocate', 'fd_close', 'fd_datasync', 'fd_fdstat_get', 'fd_fdstat_set_flags',
  'fd_fdstat_set_rights', 'fd_filestat_get', 'fd_filestat_set_size', 'fd_filestat_set_times', 'fd_pread',
  'fd_prestat_get', 'fd_prestat_dir_name', 'fd_pwrite', 'fd_read', 'fd_readdir', 'fd_renumber', 'fd_seek',
  'fd_sync', 'fd_tell', 'fd_write', 'path_create_directory', 'path_filestat_get', 'path_filestat_set_times',
  'path_link', 'path_open', 'path_readlink', 'path_remove_directory', 'path_rename', 'path_symlink',
  'path_unlink_file', 'poll_oneoff', 'proc_exit', 'proc_raise', 'random_get', 'sched_yield', 'sock_accept',
  'sock_recv', 'sock_send', 'sock_shutdown',
]);

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

  const exports = WebAssembly.Module.exports(module).filter((d) => d.kind === 'function').map((d) => d.name);
  if (!exports.some((name) => !RUNTIME_EXPORTS.has(name))) {
    throw new AppError('NO_CALLABLE_EXPORTS', 'the module exports no function a caller could call');
  }

  // The engine runs a rewritten module; one it cannot rewrite would fail every call.
  let prepared: PreparedModule;
  try {
    prepared = await prepareModule(bytes);
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
