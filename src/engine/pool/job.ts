// One call on its way through the pool: queued → sent (to one worker) → running → settled.
// A job settles in exactly one place (settle), which clears its deadline timer and its abort
// listener; whatever ends it (an answer, its deadline, its caller giving up, its worker dying, the
// pool closing) goes through there, and a second ending is a no-op.
import type { CallMessage, ModulePayload, ResultMessage } from '../protocol.ts';
import type { WorkerHandle } from './worker-handle.ts';

export interface PoolTask {
  message: Omit<CallMessage, 'callId' | 'module' | 'claim' | 'deadline'>;
  /** Size of the input it carries (counted against PoolOptions.queueMaxBytes while it waits). */
  inputBytes: number;
  /** Sent along only to a worker that does not hold it yet. */
  module: ModulePayload;
  /** performance.now() by which the task must be done. */
  deadline: number;
  /** The call's timeoutMs, for messages (the deadline was set from it when the call arrived). */
  timeoutMs: number;
}

export interface PoolResult {
  result: ResultMessage;
  /** ms between submission and the moment a worker could start it. */
  queueMs: number;
}

export interface JobHooks {
  /** The deadline passed (the pool decides what that means where the job is). */
  onDeadline(job: Job): void;
  /** The caller's signal aborted (the pool frees its place unless the call already runs). */
  onAbort(job: Job, reason: unknown): void;
}

type Settle = (outcome: { result: PoolResult } | { error: unknown }) => void;

export class Job {
  readonly callId: number;
  readonly task: PoolTask;
  /** performance.now() at submission. */
  readonly submitted: number;
  /** When it was first sent to a worker (0 while it never was). */
  sentAt = 0;
  /** When it was last sent to a worker (a call taken back is sent again). */
  lastSentAt = 0;
  /** The worker it was sent to, and its claim cell there (null / -1 while queued). */
  handle: WorkerHandle | null = null;
  cell = -1;
  readonly #timer: NodeJS.Timeout;
  readonly #signal: AbortSignal | null;
  readonly #onAbort: (() => void) | null;
  #settle: Settle | null;
  /** Settles when the job does (resolve or fail). */
  readonly promise: Promise<PoolResult>;

  constructor(callId: number, task: PoolTask, submitted: number, hooks: JobHooks, signal: AbortSignal | null) {
    this.callId = callId;
    this.task = task;
    this.submitted = submitted;
    let settle!: Settle;
    this.promise = new Promise<PoolResult>((resolve, reject) => {
      settle = (outcome) => ('result' in outcome ? resolve(outcome.result) : reject(outcome.error));
    });
    this.#settle = settle;
    this.#timer = setTimeout(() => hooks.onDeadline(this), Math.max(0, task.deadline - submitted));
    this.#signal = signal;
    this.#onAbort = signal ? () => hooks.onAbort(this, signal.reason) : null;
    if (signal && this.#onAbort) signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  get settled(): boolean {
    return this.#settle === null;
  }

  resolve(result: ResultMessage, now: number): void {
    this.#end({ result: { result, queueMs: Math.max(0, (this.sentAt || now) - this.submitted) } });
  }

  fail(error: unknown): void {
    this.#end({ error });
  }

  #end(outcome: { result: PoolResult } | { error: unknown }): void {
    const settle = this.#settle;
    if (!settle) return;
    this.#settle = null;
    clearTimeout(this.#timer);
    if (this.#signal && this.#onAbort) this.#signal.removeEventListener('abort', this.#onAbort);
    this.handle = null;
    this.cell = -1;
    settle(outcome);
  }
}
