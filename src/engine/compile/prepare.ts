// Turns a plugin's stored bytes into what workers run: the rewritten module, compiled once.
import { Worker } from 'node:worker_threads';
import { rewriteForEngine, WasmRewriteError, type ModuleLayout } from './wasm-rewrite.ts';

export interface PreparedModule {
  module: WebAssembly.Module;
  layout: ModuleLayout;
  /** Time spent rewriting and compiling, for the compile metric. */
  compileMs: number;
}

export type Compile = (bytes: Uint8Array<ArrayBuffer>) => Promise<WebAssembly.Module> | WebAssembly.Module;

/**
 * Throws WasmRewriteError for a module the engine cannot run, or a CompileError. `compile`: the
 * preparation thread compiles every function up front (see prepare-worker.ts).
 */
export async function prepareModule(bytes: Uint8Array, compile: Compile = WebAssembly.compile): Promise<PreparedModule> {
  const started = performance.now();
  const { bytes: rewritten, ...layout } = rewriteForEngine(bytes);
  const module = await compile(rewritten as Uint8Array<ArrayBuffer>);
  return { module, layout, compileMs: performance.now() - started };
}

export type Prepare = (bytes: Uint8Array) => Promise<PreparedModule>;

export interface PrepareRequest {
  id: number;
  bytes: Uint8Array;
}

export type PrepareReply = { id: number; prepared: PreparedModule } | { id: number; error: { name: string; message: string } };

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
  readonly #workerUrl: URL;
  #worker: Worker | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (p: PreparedModule) => void; reject: (err: Error) => void }>();
  #closed = false;

  /** `workerUrl`: tests only (a thread that dies). */
  constructor(workerUrl: URL = PREPARE_WORKER_URL) {
    this.#workerUrl = workerUrl;
  }

  readonly prepare: Prepare = (bytes) => {
    if (this.#closed) return Promise.reject(new Error('the module preparer is closed'));
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    // A copy of exactly these bytes, moved to the thread (the caller keeps its own).
    const copy = new Uint8Array(bytes);
    return new Promise<PreparedModule>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, bytes: copy } satisfies PrepareRequest, [copy.buffer]);
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

  #settle(reply: PrepareReply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    if (this.#pending.size === 0) this.#worker?.unref();
    if ('prepared' in reply) pending.resolve(reply.prepared);
    else pending.reject(rebuildError(reply.error));
  }

  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = null;
    if (worker) await worker.terminate();
  }
}

/** The errors callers tell apart (a module the engine cannot run, one V8 refuses) keep their class. */
function rebuildError({ name, message }: { name: string; message: string }): Error {
  if (name === 'WasmRewriteError') return new WasmRewriteError(message);
  if (name === 'CompileError') return new WebAssembly.CompileError(message);
  const err = new Error(message);
  err.name = name;
  return err;
}
