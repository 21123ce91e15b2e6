// The pool's handle on one worker thread: it owns the thread, its port, its shared cells (claim
// cells, HTTP waits, housekeeping deadline: protocol.ts), the calls sent to it and its teardown.
// Destroying it fails the calls it had started (they may have had effects: they must not run
// twice) and hands back the ones it had not, for the pool to run elsewhere.
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { createLogMirrorBuffer, readLogMirror } from '../log-mirror.ts';
import {
  STATE_CELLS,
  WorkerCells,
  type CallMessage,
  type ForgetMessage,
  type WorkerMessage,
  type WorkerSetup,
} from '../protocol.ts';
import type { Job } from './job.ts';

export type RestartReason = 'timeout' | 'stuck' | 'out_of_memory' | 'crash' | 'exit';

export interface WorkerOptions {
  /** The script workers run (tests: one that fails to start). */
  url: URL;
  /** JS heap of the thread (MB); Wasm memory is capped per call by the engine. */
  maxOldGenerationSizeMb: number;
  setup: Omit<WorkerSetup, 'cells' | 'logMirror'>;
}

export interface WorkerEvents {
  onMessage(handle: WorkerHandle, message: WorkerMessage): void;
  /** The thread died: threw, ran out of heap or exited. Not called after destroy(). */
  onGone(handle: WorkerHandle, reason: RestartReason, error: Error): void;
}

// The compile cache (type-stripped, compiled modules) cuts a worker's start from ~60-250 ms to
// ~15 ms here: replacements after a timeout are ready sooner.
const WORKER_COMPILE_CACHE = path.join(tmpdir(), 'wasmhost-compile-cache');

export class WorkerHandle {
  readonly worker: Worker;
  readonly cells = new WorkerCells();
  /** The running call's logs, mirrored by the worker (see log-mirror.ts). */
  readonly logMirror = createLogMirrorBuffer();
  /** Sent to this worker and not answered yet, in send order. */
  jobs: Job[] = [];
  /** Plugin ids whose module this worker was sent (it may have evicted some: it asks again). */
  readonly modules = new Set<string>();
  /** When the worker's current call began (approximately: send time or the previous answer). */
  busySince = 0;
  /** The worker has loaded and listens for calls (its 'ready' message). */
  online = false;
  /** Being torn down or gone: never sent anything again. */
  retired = false;
  /** Serving the queue while every core worker is held by a long call. */
  burst = false;
  /** Calls sent ahead during this event-loop turn, posted together. */
  #outbox: CallMessage[] = [];
  /** Settles once the thread is gone after destroy(). */
  terminated: Promise<unknown> = Promise.resolve();

  constructor(options: WorkerOptions, events: WorkerEvents) {
    const setup: WorkerSetup = { ...options.setup, cells: this.cells.buffer, logMirror: this.logMirror };
    this.worker = new Worker(options.url, {
      name: 'wasmhost-engine',
      workerData: setup,
      // Workers see no host environment.
      env: { NODE_COMPILE_CACHE: WORKER_COMPILE_CACHE },
      resourceLimits: { maxOldGenerationSizeMb: options.maxOldGenerationSizeMb },
    });
    this.worker.on('message', (message: WorkerMessage) => {
      if (!this.retired) events.onMessage(this, message);
    });
    this.worker.on('error', (err: Error & { code?: string }) => {
      if (this.retired) return;
      events.onGone(this, err.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'out_of_memory' : 'crash', err);
    });
    this.worker.on('exit', (code) => {
      if (!this.retired) events.onGone(this, 'exit', new Error(`worker exited with code ${code}`));
    });
  }

  /** A free claim cell (-1: none; cannot happen while the pool keeps fewer outstanding calls than STATE_CELLS). */
  freeCell(): number {
    for (let cell = 0; cell < STATE_CELLS; cell++) if (Atomics.load(this.cells.ints, cell) === 0) return cell;
    return -1;
  }

  /**
   * Sends `job` (its claim cell is stored before the message goes). `ahead`: the worker is busy; the
   * message waits in the outbox until flush(), so calls sent ahead in one event-loop turn wake it once.
   */
  send(job: Job, message: CallMessage, cell: number, ahead: boolean): void {
    this.jobs.push(job);
    job.handle = this;
    job.cell = cell;
    Atomics.store(this.cells.ints, cell, job.callId);
    if (ahead) this.#outbox.push(message);
    else this.worker.postMessage(message);
  }

  /** Posts the calls sent ahead (see send). */
  flush(): void {
    if (this.#outbox.length === 0 || this.retired) return;
    this.worker.postMessage({ kind: 'batch', calls: this.#outbox });
    this.#outbox = [];
  }

  /** The worker drops `moduleKey` and its instances (the module cache let it go). */
  dropModule(moduleKey: string): void {
    this.worker.postMessage({ kind: 'forget', moduleKey } satisfies ForgetMessage);
  }

  /** Takes a call back if it has not started here (it never will); false: it started, and may still run. */
  takeBack(job: Job): boolean {
    if (job.handle !== this || Atomics.compareExchange(this.cells.ints, job.cell, job.callId, 0) !== job.callId) return false;
    this.forget(job);
    job.handle = null;
    job.cell = -1;
    return true;
  }

  /** The worker claimed the call and has not finished it. */
  isRunning(job: Job): boolean {
    return job.handle === this && Atomics.load(this.cells.ints, job.cell) === -job.callId;
  }

  /** No longer tracked here (answered, or given up on). */
  forget(job: Job): void {
    const index = this.jobs.indexOf(job);
    if (index !== -1) this.jobs.splice(index, 1);
  }

  /** The job of `callId`, sent here and not answered yet. */
  jobOf(callId: number): Job | undefined {
    return this.jobs.find((j) => j.callId === callId);
  }

  /** The logs the worker captured for `job` so far (it is being stopped mid-call). */
  logsOf(job: Job): ReturnType<typeof readLogMirror> {
    return readLogMirror(this.logMirror, job.callId);
  }

  /** Sent here and not picked up yet (the worker may still take it, or it may be taken back). */
  isUnclaimed(job: Job): boolean {
    return job.handle === this && Atomics.load(this.cells.ints, job.cell) === job.callId;
  }

  /** Some call of this worker waits, unclaimed, for it to pick it up. */
  hasUnclaimed(): boolean {
    return this.jobs.some((job) => this.isUnclaimed(job));
  }

  /** While it runs plugin code with no call claimed (a reset or rebuild after a call): by when that must end; else 0. */
  housekeepingDeadline(): number {
    return this.cells.housekeepingDeadline();
  }

  /** Past its housekeeping deadline (`wall`: performance.timeOrigin + performance.now()): stuck. */
  housekeepingOverdue(wall: number): boolean {
    const deadline = this.cells.housekeepingDeadline();
    return deadline !== 0 && wall > deadline;
  }

  /** A claimed cell whose call the pool no longer tracks (an engine bug: the worker would be lost). */
  hasLostCall(): boolean {
    for (let cell = 0; cell < STATE_CELLS; cell++) {
      const value = Atomics.load(this.cells.ints, cell);
      if (value < 0 && !this.jobs.some((job) => job.callId === -value)) return true;
    }
    return false;
  }

  /** Started, not torn down, not running plugin code past its housekeeping deadline, not lost to a forgotten call. */
  isReady(now: number): boolean {
    if (this.retired || !this.online || this.housekeepingOverdue(performance.timeOrigin + now)) return false;
    return !this.hasLostCall();
  }

  /**
   * Terminates the thread. Its calls that had not started come back (to run elsewhere); those it
   * had started fail with `failure(job)`. Idempotent.
   */
  destroy(failure: (job: Job) => unknown): Job[] {
    if (this.retired) return [];
    this.retired = true;
    this.#outbox = [];
    const unstarted: Job[] = [];
    for (const job of [...this.jobs]) {
      if (this.takeBack(job)) unstarted.push(job);
      else job.fail(failure(job));
    }
    this.jobs = [];
    this.terminated = this.worker.terminate().catch(() => undefined);
    return unstarted;
  }
}
