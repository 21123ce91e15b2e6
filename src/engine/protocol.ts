// Messages between the pool (main thread) and its workers. Everything here is structured-cloneable;
// a WebAssembly.Module crosses by reference to its compiled code (no recompilation).
import type { CallLimits } from '../config.ts';
import type { ErrorCode } from '../errors.ts';
import type { EgressAuditEntry, EgressOptions } from '../egress/fetch.ts';
import type { CallLogLevel, LogEntry } from './runtime/logs.ts';
import type { ModuleLayout } from './compile/wasm-rewrite.ts';

/** A compiled module and its layout (from the rewriter: memory limits, whether growth is virtualised). */
export interface CompiledModule {
  compiled: WebAssembly.Module;
  layout: ModuleLayout;
}

/** What a worker keeps by moduleKey: the module a call runs, and for a linked manifest every module it links. */
export interface ModulePayload extends CompiledModule {
  /** A manifest of several modules: all of them (`main` is the index of the one `compiled` is), by stored id and link name. */
  linked?: { modules: (CompiledModule & { id: string; name: string | null })[]; main: number };
}

/**
 * One call. Every call crosses a thread as a structured clone, serialised on the main thread: the
 * fields that hold their default are left out (absent means the default said on each).
 */
export interface CallMessage {
  kind: 'call';
  callId: number;
  /** Index of the shared-state cell the worker must claim before starting (see STATE_CELLS). */
  claim: number;
  /** Absolute deadline (performance.timeOrigin + performance.now() scale, ms): past it the worker never starts the call. */
  deadline: number;
  /** Plugin id: the worker keeps compiled modules and instances by it. */
  moduleKey: string;
  /**
   * Sent when the pool believes the worker does not hold the module yet, with its layout (from the
   * rewriter: memory limits, whether growth is virtualised); the worker keeps both by moduleKey.
   */
  module?: ModulePayload;
  function: string;
  input: string | null;
  /** Absent: utf8. */
  inputEncoding?: 'utf8' | 'base64';
  /** Absent: none (empty). */
  config?: Record<string, string>;
  logLevel: CallLogLevel;
  /** Absent: the defaults (WorkerSetup.defaultLimits). */
  limits?: CallLimits;
  /** Absent: the call may not make HTTP requests (or the plugin cannot). */
  egress?: EgressOptions;
  /** http_headers answers the last response's headers (else, and when absent, 0). */
  httpResponseHeaders?: true;
  /** Absent: UTF-8 when the output is valid UTF-8, else base64. */
  outputEncoding?: 'utf8' | 'base64';
  /** Only get an instance ready (a plugin just uploaded): no function runs, the answer is an empty success. */
  warm?: boolean;
}

/**
 * Claim cells: per worker, STATE_CELLS Int32 cells of its shared state (WorkerCells.claims).
 * Every call sent to a worker owns one cell while it is outstanding:
 *   0        free;
 *   callId   sent, not started: the pool may take it back (compareExchange callId → 0);
 *   -callId  claimed and running: the worker claimed it (compareExchange callId → -callId), one atomic step;
 * the worker stores 0 when the call is over, before it posts the result. So at a deadline the pool
 * knows for certain whether the call never started, runs, or is over.
 */
export const STATE_CELLS = 8;
/**
 * After the claim cells: how many of the worker's HTTP requests are in flight (the worker adds and
 * subtracts). A worker whose call waits on HTTP uses no CPU, so the pool may start a burst worker
 * beyond BURST_WORKERS for it.
 */
const HTTP_WAIT_CELL = STATE_CELLS;
/** Int32 cells: the claim cells, HTTP_WAIT_CELL, one to align what follows to 8 bytes. */
const INT32_CELLS = STATE_CELLS + 2;
/**
 * BigInt64 slots after the Int32 cells. HOUSEKEEPING: while the worker runs plugin code with no call
 * claimed (an instance reset or rebuild after a call, which re-runs a start function), the time
 * (performance.timeOrigin + performance.now(), ms) by which it must be done; 0 otherwise. Set before
 * the call's cell is freed, so the pool never sees an idle worker that is still running plugin code.
 * CACHE_BYTES: what the worker's cached instances hold (memory, snapshots, tables).
 */
const HOUSEKEEPING_SLOT = 0;
const CACHE_BYTES_SLOT = 1;
const BIGINT64_SLOTS = 2;

/** A worker's shared state, seen the same way from the pool and from inside the worker. */
export class WorkerCells {
  readonly buffer: SharedArrayBuffer;
  /** STATE_CELLS claim cells, then HTTP_WAIT_CELL. */
  readonly ints: Int32Array;
  readonly #slots: BigInt64Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(INT32_CELLS * 4 + BIGINT64_SLOTS * 8)) {
    this.buffer = buffer;
    this.ints = new Int32Array(buffer, 0, INT32_CELLS);
    this.#slots = new BigInt64Array(buffer, INT32_CELLS * 4, BIGINT64_SLOTS);
  }

  httpWaits(): number {
    return Atomics.load(this.ints, HTTP_WAIT_CELL);
  }

  addHttpWait(delta: 1 | -1): void {
    Atomics.add(this.ints, HTTP_WAIT_CELL, delta);
  }

  /** The housekeeping deadline (ms, timeOrigin + now scale), or 0 when the worker runs no plugin code without a call. */
  housekeepingDeadline(): number {
    return Number(Atomics.load(this.#slots, HOUSEKEEPING_SLOT));
  }

  beginHousekeeping(deadline: number): void {
    Atomics.store(this.#slots, HOUSEKEEPING_SLOT, BigInt(Math.max(1, Math.ceil(deadline))));
  }

  endHousekeeping(): void {
    Atomics.store(this.#slots, HOUSEKEEPING_SLOT, 0n);
  }

  cacheBytes(): number {
    return Number(Atomics.load(this.#slots, CACHE_BYTES_SLOT));
  }

  setCacheBytes(bytes: number): void {
    Atomics.store(this.#slots, CACHE_BYTES_SLOT, BigInt(bytes));
  }
}

/** What a worker is started with (workerData). */
export interface WorkerSetup {
  cells: SharedArrayBuffer;
  logMirror: SharedArrayBuffer;
  /** WORKER_INSTANCE_CACHE_BYTES. */
  instanceCacheBytes: number;
  /** CALL_MEMORY_PAGES_CEILING: the Memory maximum of an instance that serves every cap. */
  memoryCeilingPages: number;
  /** INSTANCE_RESET_TIMEOUT_MS. */
  resetTimeoutMs: number;
  /** The limits of a call that asks for none (its message carries no `limits`). */
  defaultLimits: CallLimits;
}

/**
 * A call's answer. Fields a call rarely fills are left out when empty (no logs, not truncated, no
 * HTTP requests): each field costs a structured clone on both threads, on every call.
 */
export interface ResultMessage {
  kind: 'result';
  callId: number;
  ok: boolean;
  output?: string;
  outputBase64?: string;
  /** `details` become fields of the error body (egress failures: reason, host, url, targetReason?). */
  error?: { code: ErrorCode; message: string; details?: Record<string, string> };
  /** Absent: none. */
  logs?: LogEntry[];
  logsTruncated?: true;
  /** Absent: none. */
  egress?: EgressAuditEntry[];
  /** Time spent in the plugin (instantiation included when it happened), ms. */
  runMs: number;
}

/** The worker had evicted (or never got) the module: the pool resends the call with it. */
export interface MissingModuleMessage {
  kind: 'missing-module';
  callId: number;
}

/** Posted once the worker has loaded and listens for calls. */
export interface ReadyMessage {
  kind: 'ready';
}

export type WorkerMessage = ResultMessage | MissingModuleMessage | ReadyMessage;

/** The module cache let a module go: the worker drops it and its instances too (they keep its code alive). */
export interface ForgetMessage {
  kind: 'forget';
  moduleKey: string;
}

/** Calls sent ahead to a busy worker, gathered over one event-loop turn: one wake-up for all. */
export interface BatchMessage {
  kind: 'batch';
  calls: CallMessage[];
}
