// Turns a plugin's bytes into what workers run: checked against the module limits and the host
// functions, rewritten, compiled once.
import { Worker } from 'node:worker_threads';
import type { PluginImport } from '../../store/store.ts';
import {
  checkFunctions,
  checkImports,
  checkModuleLimits,
  moduleSize,
  ModuleRefusedError,
  type ModuleCheckLimits,
  type ModuleSize,
} from './module-check.ts';
import { rewriteForEngine, WasmRewriteError, type ModuleLayout } from './wasm-rewrite.ts';
import { splitSections } from './wasm-binary.ts';
import { readInterface, summarizeModule, type ModuleInterface } from './wasm-summary.ts';

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
 * provide, WasmRewriteError for one the engine cannot run (or read), or a CompileError (`validate`)
 * for one that is not valid. The limits, per-function ones included, are checked before V8 builds
 * or validates anything from the bytes. `compile`:
 * the preparation thread compiles every function up front (see prepare-worker.ts).
 */
export async function prepareModule(
  bytes: Uint8Array,
  limits: ModuleCheckLimits,
  options: PrepareOptions = {},
  compile: Compile = WebAssembly.compile,
): Promise<PreparedModule> {
  const started = performance.now();
  try {
    splitSections(bytes);
  } catch (err) {
    // Not split into sections: V8 says best what is wrong (it stops there too, before any function body).
    if (err instanceof WasmRewriteError && options.validate) await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
    throw err;
  }
  // Anything the readers below cannot follow is refused as it is: V8 must not see a body before its
  // shape is checked (validating 1,000,000 nested blocks took it 0.24 GB).
  const summary = summarizeModule(bytes);
  const size = moduleSize(summary, bytes.length);
  checkModuleLimits(summary, size, limits);
  checkFunctions(bytes, summary, limits);
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

export interface PreparerOptions {
  /**
   * How long one module's preparation may take on the thread (MODULE_PREPARE_TIMEOUT_MS): past it the
   * thread is terminated and replaced, and that module refused as too complex to prepare.
   */
  timeoutMs: number;
  /** Tests only (a thread that dies, or hangs). */
  workerUrl?: URL;
}

interface Job {
  bytes: Uint8Array<ArrayBuffer>;
  options: PrepareOptions;
  resolve: (p: PreparedModule) => void;
  reject: (err: Error) => void;
}

/**
 * Runs prepareModule on a thread of its own (started at the first use), so a large upload or a
 * cache miss does not block the server; a compiled module crosses threads without being copied.
 * One module at a time, each under a deadline from when the thread gets it (not from when it was
 * asked for), so a module that takes too long fails alone: the thread is replaced and the modules
 * waiting behind it go on.
 */
export class ModulePreparer {
  readonly #limits: ModuleCheckLimits;
  readonly #timeoutMs: number;
  readonly #workerUrl: URL;
  #worker: Worker | null = null;
  #nextId = 1;
  readonly #queue: Job[] = [];
  /** The job on the thread now, its id and its deadline timer. */
  #current: { id: number; job: Job; timer: NodeJS.Timeout } | null = null;
  #closed = false;

  constructor(limits: ModuleCheckLimits, options: PreparerOptions) {
    this.#limits = limits;
    this.#timeoutMs = options.timeoutMs;
    this.#workerUrl = options.workerUrl ?? PREPARE_WORKER_URL;
  }

  readonly prepare: Prepare = (bytes, options = {}) => {
    if (this.#closed) return Promise.reject(new Error('the module preparer is closed'));
    return new Promise<PreparedModule>((resolve, reject) => {
      // A copy of exactly these bytes, moved to the thread when its turn comes (the caller keeps its own).
      this.#queue.push({ bytes: new Uint8Array(bytes), options, resolve, reject });
      this.#next();
    });
  };

  /** Sends the next waiting job to the thread, if it is free. */
  #next(): void {
    if (this.#current || this.#closed) return;
    const job = this.#queue.shift();
    if (!job) {
      // Idle, the thread must not keep the process alive.
      this.#worker?.unref();
      return;
    }
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    this.#current = { id, job, timer: setTimeout(() => this.#timedOut(id), this.#timeoutMs) };
    worker.ref();
    const request: PrepareRequest = { id, bytes: job.bytes, limits: this.#limits, options: job.options };
    worker.postMessage(request, [job.bytes.buffer]);
  }

  #start(): Worker {
    const worker = new Worker(this.#workerUrl, { name: 'wasmhost-prepare' });
    worker.on('message', (reply: PrepareReply) => {
      if (worker === this.#worker) this.#settle(reply);
    });
    // A thread that dies fails the job it had; the next ones get a new thread.
    const fail = (err: Error) => {
      if (worker !== this.#worker) return; // replaced already (a deadline passed)
      this.#worker = null;
      this.#finish()?.reject(new Error(`the module preparation thread stopped: ${err.message}`));
      this.#next();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    this.#worker = worker;
    return worker;
  }

  /** The job on the thread, which is free again. */
  #finish(): Job | undefined {
    const current = this.#current;
    if (!current) return undefined;
    clearTimeout(current.timer);
    this.#current = null;
    return current.job;
  }

  #settle(answer: PrepareReply): void {
    if (answer.id !== this.#current?.id) return;
    const job = this.#finish()!;
    if ('prepared' in answer) job.resolve(answer.prepared);
    else job.reject(rebuildError(answer.error));
    this.#next();
  }

  #timedOut(id: number): void {
    if (id !== this.#current?.id) return;
    const job = this.#finish()!;
    const worker = this.#worker;
    this.#worker = null;
    void worker?.terminate();
    job.reject(
      new ModuleRefusedError(
        'INVALID_WASM',
        `the module is too complex to prepare: it took longer than ${this.#timeoutMs} ms (MODULE_PREPARE_TIMEOUT_MS)`,
        { limit: 'MODULE_PREPARE_TIMEOUT_MS', max: this.#timeoutMs },
      ),
    );
    this.#next();
  }

  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = null;
    for (const job of [this.#finish(), ...this.#queue.splice(0)]) job?.reject(new Error('the module preparer is closed'));
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
