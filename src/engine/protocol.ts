// Messages between the pool (main thread) and its workers. Everything here is structured-cloneable;
// a WebAssembly.Module crosses by reference to its compiled code (no recompilation).
import type { ErrorCode } from '../errors.ts';
import type { EgressAuditEntry, EgressOptions } from '../egress/fetch.ts';
import type { CallLogLevel, LogEntry } from './logs.ts';
import type { ModuleLayout } from './wasm-rewrite.ts';

export interface WorkerCallLimits {
  memoryPages: number;
  outputBytes: number;
  varBytes: number;
  httpResponseBytes: number;
  logEntries: number;
  logBytes: number;
}

export interface CallMessage {
  kind: 'call';
  callId: number;
  /** Sent ahead to a busy worker: the shared-state cell it must claim before starting (0: none). */
  claim: number;
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
  limits: WorkerCallLimits;
  /** Null: the call may not make HTTP requests (or the plugin cannot). */
  egress: EgressOptions | null;
  outputEncoding: 'utf8' | 'base64' | null;
}

/** Int32Array over a SharedArrayBuffer, per worker (workerData.state). */
export const STATE_RUNNING = 0;
/** Cells 1..STATE_CELLS hold the callIds of calls sent ahead and not yet claimed. */
export const STATE_CELLS = 8;

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

export type WorkerMessage = ResultMessage | MissingModuleMessage;

/** Calls sent ahead to a busy worker, gathered over one event-loop turn: one wake-up for all. */
export interface BatchMessage {
  kind: 'batch';
  calls: CallMessage[];
}
