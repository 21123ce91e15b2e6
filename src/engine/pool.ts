// A pool of long-lived worker threads with a bounded FIFO queue.
// Task lifecycle: queued → running → done | failed | timed out. A deadline covers queue and run;
// when it passes while running, the worker is terminated (the only way to stop a Wasm loop) and
// replaced at once by a warm standby, so the pool is back at full size without a start-up delay.
// When every worker has been held by a call for a while (a loop, a slow upstream) and calls are
// waiting, a burst worker (the standby) takes them, so long calls cannot starve short ones.
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { AppError } from '../errors.ts';
import type { CallMessage, ResultMessage, WorkerMessage } from './protocol.ts';

export type RestartReason = 'timeout' | 'crash' | 'exit';

/** Hooks for metrics and logs; the pool never depends on what they do. */
export interface PoolObserver {
  onWorkerRestart?(reason: RestartReason): void;
}

export interface PoolStats {
  /** Core workers alive (always the configured size, but for the instant of a replacement). */
  size: number;
  /** Extra workers serving while all core workers are held by long calls. */
  burst: number;
  busy: number;
  queued: number;
  queueMax: number;
  restarts: Record<RestartReason, number>;
}

export interface PoolTask {
  message: Omit<CallMessage, 'callId' | 'module'>;
  module: WebAssembly.Module;
  /** performance.now() by which the task must be done. */
  deadline: number;
}

export interface PoolResult {
  result: ResultMessage;
  /** ms between submission and dispatch to a worker. */
  queueMs: number;
}

interface Job {
  task: PoolTask;
  callId: number;
  submitted: number;
  dispatched: number;
  timer: NodeJS.Timeout;
  resolve: (r: PoolResult) => void;
  reject: (e: unknown) => void;
  slot: Slot | null;
}

interface Slot {
  worker: Worker;
  job: Job | null;
  modules: Set<string>;
  retired: boolean;
  burst: boolean;
}

export interface PoolOptions {
  size: number;
  queueMax: number;
  observer?: PoolObserver;
  /** Worker resource limits (JS heap); Wasm memory is capped per call by the engine. */
  maxOldGenerationSizeMb?: number;
  /** A call holding a worker longer than this counts as long-running (burst workers may start). */
  longCallMs?: number;
  /** Most burst workers at once; defaults to the pool size. */
  maxBurst?: number;
}

// tsc rewrites import specifiers but not this URL: from the built dist/ the worker is worker.js.
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

const WORKER_COMPILE_CACHE = path.join(tmpdir(), 'wasmhost-compile-cache');

export class WorkerPool {
  readonly #slots: Slot[] = [];
  readonly #burst: Slot[] = [];
  #standby: Slot | null = null;
  #unstickTimer: NodeJS.Timeout | null = null;
  readonly #queue: Job[] = [];
  readonly #options: PoolOptions;
  readonly #restarts: Record<RestartReason, number> = { timeout: 0, crash: 0, exit: 0 };
  #nextCallId = 1;
  #closed = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    for (let i = 0; i < options.size; i++) this.#slots.push(this.#spawn());
    this.#standby = this.#spawn();
  }

  /** The warm standby (replaced by a fresh one in the background). */
  #takeStandby(): Slot {
    const slot = this.#standby ?? this.#spawn();
    this.#standby = this.#closed ? null : this.#spawn();
    return slot;
  }

  #spawn(): Slot {
    const worker = new Worker(WORKER_URL, {
      name: 'wasmhost-engine',
      // Workers see no host environment. The compile cache (type-stripped, compiled modules) cuts a
      // worker's start from ~60-250 ms to ~15 ms here: replacements after a timeout are ready sooner.
      env: { NODE_COMPILE_CACHE: WORKER_COMPILE_CACHE },
      resourceLimits: { maxOldGenerationSizeMb: this.#options.maxOldGenerationSizeMb ?? 256 },
    });
    const slot: Slot = { worker, job: null, modules: new Set(), retired: false, burst: false };
    worker.on('message', (msg: WorkerMessage) => this.#onMessage(slot, msg));
    worker.on('error', (err) => this.#onWorkerGone(slot, 'crash', err));
    worker.on('exit', (code) => this.#onWorkerGone(slot, 'exit', new Error(`worker exited with code ${code}`)));
    return slot;
  }

  run(task: PoolTask): Promise<PoolResult> {
    if (this.#closed) return Promise.reject(new AppError('SHUTTING_DOWN', 'the engine is shutting down'));
    const idle = this.#idleSlot(task.message.moduleKey);
    if (!idle && this.#queue.length >= this.#options.queueMax) {
      return Promise.reject(
        new AppError('OVERLOADED', `all ${this.#slots.length} workers are busy and ${this.#queue.length} calls are waiting`, {
          headers: { 'retry-after': '1' },
        }),
      );
    }
    return new Promise<PoolResult>((resolve, reject) => {
      const now = performance.now();
      const job: Job = {
        task,
        callId: this.#nextCallId++,
        submitted: now,
        dispatched: 0,
        timer: setTimeout(() => this.#onDeadline(job), Math.max(0, task.deadline - now)),
        resolve,
        reject,
        slot: null,
      };
      if (idle) this.#dispatch(idle, job);
      else {
        this.#queue.push(job);
        this.#unstick();
      }
    });
  }

  /** Calls are waiting: start a burst worker if every worker is held by a long call, else check again later. */
  #unstick(): void {
    if (this.#queue.length === 0 || this.#closed) return;
    const longCallMs = this.#options.longCallMs ?? 100;
    const now = performance.now();
    const busy = [...this.#slots, ...this.#burst].filter((s) => s.job && !s.retired);
    const oldestFreshStart = Math.max(...busy.map((s) => s.job!.dispatched));
    if (now - oldestFreshStart >= longCallMs && this.#burst.length < (this.#options.maxBurst ?? this.#options.size)) {
      const slot = this.#takeStandby();
      slot.burst = true;
      this.#burst.push(slot);
      this.#next(slot);
    }
    if (this.#queue.length > 0 && !this.#unstickTimer) {
      const wait = Math.max(5, longCallMs - (now - oldestFreshStart));
      this.#unstickTimer = setTimeout(() => {
        this.#unstickTimer = null;
        this.#unstick();
      }, wait);
    }
  }

  /** An idle worker, preferring one that already holds the module. */
  #idleSlot(moduleKey: string): Slot | null {
    let any: Slot | null = null;
    for (const slot of this.#slots) {
      if (slot.job || slot.retired) continue;
      if (slot.modules.has(moduleKey)) return slot;
      any ??= slot;
    }
    return any;
  }

  #dispatch(slot: Slot, job: Job, forceModule = false): void {
    slot.job = job;
    job.slot = slot;
    job.dispatched ||= performance.now();
    const key = job.task.message.moduleKey;
    const message: CallMessage = { ...job.task.message, callId: job.callId };
    if (forceModule || !slot.modules.has(key)) {
      message.module = job.task.module;
      slot.modules.add(key);
    }
    slot.worker.postMessage(message);
  }

  #onMessage(slot: Slot, msg: WorkerMessage): void {
    const job = slot.job;
    if (!job || job.callId !== msg.callId) return;
    if (msg.kind === 'missing-module') {
      this.#dispatch(slot, job, true);
      return;
    }
    slot.job = null;
    clearTimeout(job.timer);
    job.resolve({ result: msg, queueMs: job.dispatched - job.submitted });
    this.#next(slot);
  }

  #next(slot: Slot): void {
    if (slot.retired || slot.job) return;
    const job = this.#queue.shift();
    if (job) this.#dispatch(slot, job);
    else if (slot.burst) this.#endBurst(slot);
  }

  /** An idle burst worker becomes the standby again, or goes. */
  #endBurst(slot: Slot): void {
    this.#burst.splice(this.#burst.indexOf(slot), 1);
    slot.burst = false;
    if (!this.#standby && !this.#closed) this.#standby = slot;
    else {
      slot.retired = true;
      void slot.worker.terminate();
    }
  }

  #onDeadline(job: Job): void {
    if (!job.slot) {
      const index = this.#queue.indexOf(job);
      if (index !== -1) this.#queue.splice(index, 1);
      job.reject(new AppError('TIMEOUT', `the call did not start within its ${Math.round(job.task.deadline - job.submitted)} ms deadline (all workers busy)`));
      return;
    }
    const ms = Math.round(job.task.deadline - job.dispatched);
    job.reject(new AppError('TIMEOUT', `the call exceeded its time limit (${ms} ms of run time) and was stopped`));
    this.#replace(job.slot, 'timeout');
  }

  #onWorkerGone(slot: Slot, reason: RestartReason, err: Error): void {
    if (slot.retired) return;
    const job = slot.job;
    if (job) {
      clearTimeout(job.timer);
      job.reject(new AppError('INTERNAL_ERROR', `the worker running the call stopped: ${err.message}`, { cause: err }));
    }
    this.#replace(slot, reason);
  }

  #replace(slot: Slot, reason: RestartReason): void {
    slot.retired = true;
    slot.job = null;
    void slot.worker.terminate();
    if (this.#closed) return;
    if (slot === this.#standby) {
      this.#standby = this.#spawn();
      return;
    }
    this.#restarts[reason]++;
    this.#options.observer?.onWorkerRestart?.(reason);
    const burstIndex = this.#burst.indexOf(slot);
    if (burstIndex !== -1) {
      this.#burst.splice(burstIndex, 1);
      this.#unstick();
      return;
    }
    const index = this.#slots.indexOf(slot);
    if (index === -1) return;
    const fresh = this.#takeStandby();
    this.#slots[index] = fresh;
    this.#next(fresh);
  }

  stats(): PoolStats {
    return {
      size: this.#slots.filter((s) => !s.retired).length,
      burst: this.#burst.length,
      busy: [...this.#slots, ...this.#burst].filter((s) => s.job !== null).length,
      queued: this.#queue.length,
      queueMax: this.#options.queueMax,
      restarts: { ...this.#restarts },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#unstickTimer) clearTimeout(this.#unstickTimer);
    const standby = this.#standby;
    this.#standby = null;
    if (standby) {
      standby.retired = true;
      void standby.worker.terminate();
    }
    for (const job of this.#queue.splice(0)) {
      clearTimeout(job.timer);
      job.reject(new AppError('SHUTTING_DOWN', 'the engine is shutting down'));
    }
    await Promise.all(
      [...this.#slots, ...this.#burst.splice(0)].map((slot) => {
        slot.retired = true;
        if (slot.job) {
          clearTimeout(slot.job.timer);
          slot.job.reject(new AppError('SHUTTING_DOWN', 'the engine is shutting down'));
          slot.job = null;
        }
        return slot.worker.terminate();
      }),
    );
  }
}
