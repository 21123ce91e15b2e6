// Turns a plugin's bytes into what workers run: checked against the module limits and the host
// functions, rewritten, compiled once.
import { Worker } from 'node:worker_threads';
import type { PluginImport } from '../../store/store.ts';
import {
  checkImports,
  checkModuleLimits,
  moduleSize,
  ModuleRefusedError,
  type ModuleCheckLimits,
  type ModuleSize,
} from './module-check.ts';
import { rewriteForEngine, WasmRewriteError, type ModuleLayout } from './wasm-rewrite.ts';
import { readInterface, summarizeModule, type ModuleInterface, type ModuleSummary } from './wasm-summary.ts';

export interface PreparedModule {
  module: WebAssembly.Module;
  layout: ModuleLayout;
  /** Exported function names (of the module as uploaded). */
  exports: string[];
  imports: PluginImport[];
  /** Imports and exports with their types, as a manifest's link check compares them. */
  interface: ModuleInterface;
  /** What the module counts against the module limits, which a manifest's modules share (link-check.ts). */
  size: ModuleSize;
  /** Time spent checking, rewriting and compiling, for the compile metric. */
  compileMs: number;
}

export interface PrepareOptions {
  /**
   * A module of a manifest: imports from module names other than the host's are allowed here (the
   * manifest's link check resolves them against its other modules).
   */
  linking?: boolean;
  /**
   * Compile the bytes as given first, so an invalid module is refused as invalid (the rewrite can
   * turn some invalid modules into valid ones). At upload; a stored module was validated then.
   */
  validate?: boolean;
}

export type Compile = (bytes: Uint8Array<ArrayBuffer>) => Promise<WebAssembly.Module> | WebAssembly.Module;

/**
 * Throws ModuleRefusedError for a module over a limit or importing what the engine does not
 * provide, WasmRewriteError for one the engine cannot run, or a CompileError (`validate`) for one
 * that is not valid. The limits are checked before V8 builds anything from the bytes. `compile`:
 * the preparation thread compiles every function up front (see prepare-worker.ts).
 */
export async function prepareModule(
  bytes: Uint8Array,
  limits: ModuleCheckLimits,
  options: PrepareOptions = {},
  compile: Compile = WebAssembly.compile,
): Promise<PreparedModule> {
  const started = performance.now();
  let summary: ModuleSummary;
  try {
    summary = summarizeModule(bytes);
  } catch (err) {
    // Bytes the reader cannot follow: V8 says best what is wrong with them, if anything.
    if (err instanceof WasmRewriteError && options.validate) await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
    throw err;
  }
  const size = moduleSize(summary, bytes.length);
  checkModuleLimits(summary, size, limits);
  if (options.validate) await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  const iface = readInterface(bytes);
  checkImports(iface, options.linking ?? false);
  const { bytes: rewritten, ...layout } = rewriteForEngine(bytes, { maxTableElements: limits.tableElements });
  let module: WebAssembly.Module;
  try {
    module = await compile(rewritten as Uint8Array<ArrayBuffer>);
  } catch (err) {
    // The module is valid (or was at upload): what V8 refuses now is what the rewrite added.
    throw new ModuleRefusedError('INVALID_WASM', `the module cannot be run by this service: ${(err as Error).message}`);
  }
  return {
    module,
    layout,
    exports: iface.exports.filter((e) => e.kind === 'function').map((e) => e.name),
    imports: iface.imports.map((i) => ({ module: i.module, name: i.name })),
    interface: iface,
    size,
    compileMs: performance.now() - started,
  };
}

export type Prepare = (bytes: Uint8Array, options?: PrepareOptions) => Promise<PreparedModule>;

export interface PrepareRequest {
  id: number;
  bytes: Uint8Array;
  limits: ModuleCheckLimits;
  options: PrepareOptions;
}

/** An error as it crosses back from the thread: enough to rebuild the classes callers tell apart. */
export interface PreparationError {
  name: string;
  message: string;
  code?: ModuleRefusedError['code'];
  details?: Record<string, unknown>;
}

export type PrepareReply = { id: number; prepared: PreparedModule } | { id: number; error: PreparationError };

// tsc rewrites import specifiers but not this URL: from the built dist/ the worker is prepare-worker.js.
const PREPARE_WORKER_URL = new URL(
  import.meta.url.endsWith('.ts') ? './prepare-worker.ts' : './prepare-worker.js',
  import.meta.url,
);

/**
 * Runs prepareModule on a thread of its own (started at the first use), so a large upload or a
 * cache miss does not block the server; a compiled module crosses threads without being copied.
 */
export class ModulePreparer {
  readonly #limits: ModuleCheckLimits;
  readonly #workerUrl: URL;
  #worker: Worker | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (p: PreparedModule) => void; reject: (err: Error) => void }>();
  #closed = false;

  /** `workerUrl`: tests only (a thread that dies). */
  constructor(limits: ModuleCheckLimits, workerUrl: URL = PREPARE_WORKER_URL) {
    this.#limits = limits;
    this.#workerUrl = workerUrl;
  }

  readonly prepare: Prepare = (bytes, options = {}) => {
    if (this.#closed) return Promise.reject(new Error('the module preparer is closed'));
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    // A copy of exactly these bytes, moved to the thread (the caller keeps its own).
    const copy = new Uint8Array(bytes);
    return new Promise<PreparedModule>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, bytes: copy, limits: this.#limits, options } satisfies PrepareRequest, [copy.buffer]);
    });
  };

  #start(): Worker {
    const worker = new Worker(this.#workerUrl, { name: 'wasmhost-prepare' });
    // Idle, it must not keep the process alive; a pending request holds it (prepare/#settle).
    worker.unref();
    worker.on('message', (reply: PrepareReply) => this.#settle(reply));
    const fail = (err: Error) => {
      if (this.#worker === worker) this.#worker = null;
      for (const [id, pending] of this.#pending) {
        this.#pending.delete(id);
        pending.reject(new Error(`the module preparation thread stopped: ${err.message}`));
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    this.#worker = worker;
    return worker;
  }

  #settle(answer: PrepareReply): void {
    const pending = this.#pending.get(answer.id);
    if (!pending) return;
    this.#pending.delete(answer.id);
    if (this.#pending.size === 0) this.#worker?.unref();
    if ('prepared' in answer) pending.resolve(answer.prepared);
    else pending.reject(rebuildError(answer.error));
  }

  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = null;
    if (worker) await worker.terminate();
  }
}

/** The errors callers tell apart (a module refused, one the engine cannot run, one V8 refuses) keep their class. */
function rebuildError({ name, message, code, details }: PreparationError): Error {
  if (name === 'ModuleRefusedError' && code) return new ModuleRefusedError(code, message, details);
  if (name === 'WasmRewriteError') return new WasmRewriteError(message);
  if (name === 'CompileError') return new WebAssembly.CompileError(message);
  const err = new Error(message);
  err.name = name;
  return err;
}

/** What crosses back to the preparer for `err` (see rebuildError). */
export function preparationError(err: unknown): PreparationError {
  if (err instanceof ModuleRefusedError) return { name: err.name, message: err.message, code: err.code, details: err.details };
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}
