// Messages between the pool (main thread) and its workers. Everything here is structured-cloneable;
// a WebAssembly.Module crosses by reference to its compiled code (no recompilation).
import type { CallLimits } from '../config.ts';
import type { ErrorCode } from '../errors.ts';
import type { EgressAuditEntry, EgressOptions } from '../egress/fetch.ts';
import type { CallLogLevel, LogEntry } from './runtime/logs.ts';
import type { ModuleLayout } from './compile/wasm-rewrite.ts';

export interface CallMessage {
  kind: 'call';
  callId: number;
  /** Index of the shared-state cell the worker must claim before starting (see STATE_CELLS). */
  claim: number;
  /** Absolute deadline (performance.timeOrigin + performance.now() scale, ms): past it the worker never starts the call. */
  deadline: number;
  /** Plugin id: the worker keeps compiled modules and instances by it. */
  moduleKey: string;
  /** Sent when the pool believes the worker does not hold the module yet. */
  module?: WebAssembly.Module;
  /** From the rewriter: the plugin's memory limits and whether its growth is virtualised. */
  layout: ModuleLayout;
  function: string;
  input: string | null;
  inputEncoding: 'utf8' | 'base64';
  config: Record<string, string>;
  logLevel: CallLogLevel;
  limits: CallLimits;
  /** Null: the call may not make HTTP requests (or the plugin cannot). */
  egress: EgressOptions | null;
  outputEncoding: 'utf8' | 'base64' | null;
  /** Only get an instance ready (a plugin just uploaded): no function runs, the answer is an empty success. */
  warm?: boolean;
}

/**
 * Claim cells: an Int32Array of STATE_CELLS over a SharedArrayBuffer, per worker (workerData.state).
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
export const HTTP_WAIT_CELL = STATE_CELLS;
/** Int32 cells of a worker's shared state: the claim cells, then HTTP_WAIT_CELL. */
export const SHARED_CELLS = STATE_CELLS + 1;

export interface CallOutcome {
  logs: LogEntry[];
  logsTruncated: boolean;
  egress: EgressAuditEntry[];
  /** Time spent in the plugin (instantiation included when it happened), ms. */
  runMs: number;
  /** Pages of linear memory the instance had when the call ended (0 if it never started). */
  memoryPages: number;
}

export interface ResultMessage extends CallOutcome {
  kind: 'result';
  callId: number;
  ok: boolean;
  output?: string;
  outputBase64?: string;
  /** `details` become fields of the error body (egress failures: reason, host, url, targetReason?). */
  error?: { code: ErrorCode; message: string; details?: Record<string, string> };
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
