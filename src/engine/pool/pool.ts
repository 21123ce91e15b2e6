// A pool of long-lived worker threads with a bounded FIFO queue (job.ts, queue.ts, worker-handle.ts).
// - A deadline covers the whole call. When it passes while the call runs, the worker is terminated
//   (the only way to stop a Wasm loop) and replaced at once by a warm standby.
// - Every call sent to a worker owns a claim cell in shared memory (protocol.ts): the worker claims
//   it and starts in one atomic step, so the pool always knows whether a call never started (take
//   it back, answer or run it elsewhere) or may be running (only terminating the worker stops it).
// - A caller's AbortSignal frees a call's place at once while it waits (queued, or sent and not
//   started); a call already running finishes. Closing the pool ends every call the same way.
// - The watchdog replaces a worker that runs plugin code with no call past its housekeeping deadline
//   (a rebuild whose start function loops), or that leaves a call unclaimed while doing nothing.
// - Workers that die while starting are respawned after a delay that doubles per failure in a row.
// - Pipelining: a busy worker whose current call is young may get more calls sent ahead (gathered
//   over one event-loop turn into one message), so it does not sleep between calls: a cross-thread
//   wake-up costs more than a small call here. The pool takes calls sent ahead back (and runs them
//   elsewhere) if a call in front of them turns out to be long.
// - Burst: when every worker is held by a long call (a loop, a slow upstream) and calls wait, a
//   burst worker (the standby) serves them, so long calls cannot starve short ones. BURST_WORKERS
//   bounds them for calls using CPU; a worker waiting on HTTP allows one more.
import type { CallLimits } from '../../config.ts';
import { AppError } from '../../errors.ts';
import type { CallMessage, ResultMessage, WorkerMessage } from '../protocol.ts';
import { Job, type PoolResult, type PoolTask } from './job.ts';
import { JobQueue } from './queue.ts';
import { WorkerHandle, type RestartReason, type WorkerOptions } from './worker-handle.ts';

export type { PoolResult, PoolTask } from './job.ts';
export type { RestartReason } from './worker-handle.ts';

/** Hooks for metrics and logs; the pool never depends on what they do. */
export interface PoolObserver {
  onWorkerRestart?(reason: RestartReason): void;
}

export interface PoolStats {
  /** Core workers configured. */
  size: number;
  /** Core workers that can serve calls: started, not stuck, and not running a call the pool does not track. */
  ready: number;
  /** Extra workers serving while all core workers are held by long calls. */
  burst: number;
  /** Workers with a call sent to them (running or about to). */
  busy: number;
  /** Workers running plugin code with no call (resetting or rebuilding an instance). */
  busyWithoutCall: number;
  queued: number;
  queueMax: number;
  /** Input bytes the waiting calls hold. */
  queuedBytes: number;
  /** Memory the workers' cached plugin instances hold together. */
  instanceBytes: number;
  restarts: Record<RestartReason, number>;
  /** How long the next respawn waits: 0, or while workers keep dying at start, a delay that doubles per failure. */
  respawnDelayMs: number;
}

export interface PoolOptions {
  size: number;
  queueMax: number;
  /** Input bytes the waiting calls may hold together. */
  queueMaxBytes: number;
  observer?: PoolObserver;
  /** Worker resource limits (JS heap); Wasm memory is capped per call by the engine. */
  maxOldGenerationSizeMb?: number;
  /** Memory the cached plugin instances of one worker may keep (worker.ts). */
  instanceCacheBytes?: number;
  /** CALL_MEMORY_PAGES_CEILING: the Memory maximum of instances that serve every cap. */
  memoryCeilingPages?: number;
  /** INSTANCE_RESET_TIMEOUT_MS: plugin code a worker runs with no call (a rebuild) must end within it. */
  resetTimeoutMs?: number;
  /** Tests only: the script workers run (one that fails to start, to check the backoff). */
  workerUrl?: URL;
  /** A call holding a worker longer than this counts as long-running (burst workers may start). */
  longCallMs?: number;
  /** Most burst workers at once; defaults to the pool size. */
  maxBurst?: number;
  /** The limits of a call whose message carries none (CallMessage.limits). */
  defaultLimits: CallLimits;
}

// tsc rewrites import specifiers but not this URL: from the built dist/ the worker is worker.js.
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? '../runtime/worker.ts' : '../runtime/worker.js', import.meta.url);
/** Calls sent to one worker and not answered yet, the running one included (fewer than STATE_CELLS). */
const MAX_OUTSTANDING = 4;
/** A call sent ahead only goes to a worker whose current call started less than this ago. */
const AHEAD_IF_YOUNGER_MS = 5;
/** Respawn delay after workers died while starting: doubles per failure in a row, up to the max. */
const RESPAWN_BACKOFF_MS = 50;
const RESPAWN_BACKOFF_MAX_MS = 5_000;
/** Burst workers beyond BURST_WORKERS for calls waiting on HTTP, per core worker (bounds the threads). */
const MAX_HTTP_WAIT_BURST = 4;
/** When a caller refused for a full queue may try again. */
const OVERLOADED_RETRY_AFTER_MS = 1_000;

const shuttingDown = () => new AppError('SHUTTING_DOWN', 'the engine is shutting down');

export class WorkerPool {
  readonly #slots: WorkerHandle[] = [];
  readonly #burst: WorkerHandle[] = [];
  #standby: WorkerHandle | null = null;
  #watchTimer: NodeJS.Timeout | null = null;
  readonly #watchdogTimer: NodeJS.Timeout;
  #flushScheduled = false;
  readonly #queue: JobQueue;
  readonly #options: PoolOptions;
  readonly #workerOptions: WorkerOptions;
  readonly #longCallMs: number;
  readonly #resetTimeoutMs: number;
  readonly #restarts: Record<RestartReason, number> = { timeout: 0, stuck: 0, out_of_memory: 0, crash: 0, exit: 0 };
  #nextCallId = 1;
  #closed = false;
  /** Workers in a row that died before they started; reset when one starts. */
  #startFailures = 0;
  readonly #respawnTimers = new Set<NodeJS.Timeout>();
  #standbyPending = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#queue = new JobQueue(options.queueMax, options.queueMaxBytes);
    this.#longCallMs = options.longCallMs ?? 100;
    this.#resetTimeoutMs = options.resetTimeoutMs ?? 2_000;
    this.#workerOptions = {
      url: options.workerUrl ?? WORKER_URL,
      maxOldGenerationSizeMb: options.maxOldGenerationSizeMb ?? 256,
      setup: {
        instanceCacheBytes: options.instanceCacheBytes ?? 256 * 1024 * 1024,
        memoryCeilingPages: options.memoryCeilingPages ?? 4096,
        resetTimeoutMs: this.#resetTimeoutMs,
        defaultLimits: options.defaultLimits,
      },
    };
    for (let i = 0; i < options.size; i++) this.#slots.push(this.#spawn());
    this.#standby = this.#spawn();
    this.#watchdogTimer = setInterval(() => this.#watchdog(), Math.min(250, Math.max(25, this.#resetTimeoutMs / 4)));
    this.#watchdogTimer.unref();
  }

  #spawn(): WorkerHandle {
    return new WorkerHandle(this.#workerOptions, {
      onMessage: (handle, message) => this.#onMessage(handle, message),
      onGone: (handle, reason, err) => {
        if (!handle.online) this.#startFailures++;
        this.#replace(handle, reason, err);
      },
    });
  }

  /** The warm standby (replaced by a fresh one in the background). */
  #takeStandby(): WorkerHandle {
    const handle = this.#standby ?? this.#spawn();
    this.#standby = null;
    this.#refillStandby();
    return handle;
  }

  /** 0 normally; after workers died while starting, a delay that doubles per failure in a row. */
  #respawnDelay(): number {
    return this.#startFailures === 0 ? 0 : Math.min(RESPAWN_BACKOFF_MAX_MS, RESPAWN_BACKOFF_MS * 2 ** (this.#startFailures - 1));
  }

  /** Runs `spawn` now, or after the backoff delay while workers keep dying at start. */
  #respawn(spawn: () => void): void {
    const delay = this.#respawnDelay();
    if (delay === 0) {
      spawn();
      return;
    }
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer);
      if (!this.#closed) spawn();
    }, delay);
    this.#respawnTimers.add(timer);
  }

  #refillStandby(): void {
    if (this.#closed || this.#standby || this.#standbyPending) return;
    this.#standbyPending = true;
    this.#respawn(() => {
      this.#standbyPending = false;
      if (!this.#standby) this.#standby = this.#spawn();
    });
  }

  /**
   * Runs a task on a worker. `signal`: the caller gave up; while the call waits (queued, or sent and
   * not started) it leaves at once and the promise rejects with the signal's reason; a call already
   * running finishes.
   */
  run(task: PoolTask, signal?: AbortSignal): Promise<PoolResult> {
    if (this.#closed) return Promise.reject(shuttingDown());
    if (signal?.aborted) return Promise.reject(signal.reason);
    const now = performance.now();
    if (task.deadline <= now) {
      return Promise.reject(
        new AppError(
          'TIMEOUT',
          `the call's ${task.timeoutMs} ms deadline passed before it could be queued (preparing the plugin took that long)`,
        ),
      );
    }
    const target = this.#queue.length === 0 ? this.#handleFor(task.message.moduleKey, now) : null;
    if (!target) {
      const refusal = this.#queue.refusal(task.inputBytes);
      if (refusal !== null) {
        return Promise.reject(
          new AppError('OVERLOADED', `all ${this.#slots.length} workers are busy and ${refusal}`, {
            retryAfterMs: OVERLOADED_RETRY_AFTER_MS,
          }),
        );
      }
    }
    const job = new Job(
      this.#takeCallId(),
      task,
      now,
      { onDeadline: (j) => this.#onDeadline(j), onAbort: (j, reason) => this.#abort(j, reason) },
      signal ?? null,
    );
    if (target) this.#send(target, job, now);
    else {
      this.#queue.push(job);
      this.#watch();
    }
    return job.promise;
  }

  /** Call ids live in Int32 cells (and as -id once claimed): they wrap before 2^31. */
  #takeCallId(): number {
    const id = this.#nextCallId;
    this.#nextCallId = id >= 0x7fffffff ? 1 : id + 1;
    return id;
  }

  /** An idle worker (preferring one holding the module), else the least loaded one that may take a call ahead. */
  #handleFor(moduleKey: string, now: number): WorkerHandle | null {
    let idle: WorkerHandle | null = null;
    let ahead: WorkerHandle | null = null;
    const better = (a: WorkerHandle, b: WorkerHandle | null) =>
      !b ||
      a.jobs.length < b.jobs.length ||
      (a.jobs.length === b.jobs.length && a.modules.has(moduleKey) && !b.modules.has(moduleKey));
    for (const handle of this.#all()) {
      if (handle.retired || handle.freeCell() === -1 || this.#longHousekeeping(handle, now)) continue;
      if (handle.jobs.length === 0) {
        if (!idle || (handle.modules.has(moduleKey) && !idle.modules.has(moduleKey))) idle = handle;
      } else if (this.#canTakeAhead(handle, now) && better(handle, ahead)) {
        ahead = handle;
      }
    }
    return idle ?? ahead;
  }

  /** Running plugin code with no call (a rebuild) for longer than a long call: no place to send a call to. */
  #longHousekeeping(handle: WorkerHandle, now: number): boolean {
    const deadline = handle.housekeepingDeadline();
    return deadline !== 0 && performance.timeOrigin + now - (deadline - this.#resetTimeoutMs) >= this.#longCallMs;
  }

  /** Held by a long call, or by long housekeeping: calls sent ahead to it should run elsewhere. */
  #heldLong(handle: WorkerHandle, now: number): boolean {
    return this.#longHousekeeping(handle, now) || (handle.jobs.length > 0 && now - handle.busySince >= this.#longCallMs);
  }

  #canTakeAhead(handle: WorkerHandle, now: number): boolean {
    return handle.jobs.length < MAX_OUTSTANDING && now - handle.busySince < AHEAD_IF_YOUNGER_MS && handle.freeCell() !== -1;
  }

  #all(): WorkerHandle[] {
    return this.#burst.length === 0 ? this.#slots : [...this.#slots, ...this.#burst];
  }

  #send(handle: WorkerHandle, job: Job, now: number, forceModule = false): void {
    const ahead = handle.jobs.length > 0 && !forceModule;
    const cell = handle.freeCell();
    if (cell === -1) {
      // Cannot happen (callers check; MAX_OUTSTANDING < STATE_CELLS): wait rather than share a cell.
      this.#queue.unshift(job);
      this.#watch();
      return;
    }
    if (handle.jobs.length === 0) handle.busySince = now;
    job.sentAt ||= now;
    job.lastSentAt = now;
    const key = job.task.message.moduleKey;
    const message: CallMessage = {
      ...job.task.message,
      callId: job.callId,
      claim: cell,
      deadline: performance.timeOrigin + job.task.deadline,
    };
    if (forceModule || !handle.modules.has(key)) {
      message.module = job.task.module;
      handle.modules.add(key);
    }
    handle.send(job, message, cell, ahead);
    if (!ahead) return;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        for (const h of this.#all()) h.flush();
      });
    }
    this.#watch();
  }

  #onMessage(handle: WorkerHandle, msg: WorkerMessage): void {
    if (msg.kind === 'ready') {
      handle.online = true;
      this.#startFailures = 0;
      return;
    }
    const job = handle.jobOf(msg.callId);
    if (!job) return; // a call already answered (timed out while its result was on the way)
    handle.forget(job);
    const now = performance.now();
    if (msg.kind === 'missing-module') {
      this.#send(handle, job, now, true);
      return;
    }
    handle.busySince = now;
    job.resolve(msg satisfies ResultMessage, now);
    this.#fill(handle, now);
  }

  /** Sends waiting calls to any worker that can take them (after calls were taken back). */
  #drain(now: number): void {
    for (let job = this.#queue.peek(); job; job = this.#queue.peek()) {
      const handle = this.#handleFor(job.task.message.moduleKey, now);
      if (!handle) return;
      this.#send(handle, this.#queue.shift()!, now);
    }
  }

  /** Gives a worker that just freed up the next waiting call(s). */
  #fill(handle: WorkerHandle, now: number): void {
    if (handle.retired) return;
    while (this.#queue.length > 0 && handle.freeCell() !== -1 && (handle.jobs.length === 0 || this.#canTakeAhead(handle, now))) {
      this.#send(handle, this.#queue.shift()!, now);
    }
    if (handle.burst && handle.jobs.length === 0) this.#endBurst(handle);
  }

  /**
   * While calls wait (in the queue, or sent ahead to a worker): take back calls sent ahead of a long
   * call, and start a burst worker when every worker is held by a long call. Re-checks itself.
   */
  #watch(): void {
    if (this.#closed || this.#watchTimer) return;
    const now = performance.now();
    for (const handle of this.#all()) {
      if (!this.#heldLong(handle, now)) continue;
      // Either we take a call back, or the worker has already claimed it.
      const takenBack = [...handle.jobs].filter((job) => handle.takeBack(job));
      this.#queue.unshift(...takenBack);
    }
    this.#drain(now);
    if (this.#queue.length > 0) {
      const allLong = this.#all().every((h) => this.#heldLong(h, now));
      if (allLong && this.#burst.length < this.#burstLimit()) {
        const handle = this.#takeStandby();
        handle.burst = true;
        this.#burst.push(handle);
        this.#fill(handle, now);
      }
    }
    const waiting = this.#queue.length > 0 || this.#all().some((h) => h.hasUnclaimed());
    if (waiting) {
      this.#watchTimer = setTimeout(
        () => {
          this.#watchTimer = null;
          this.#watch();
        },
        Math.max(5, this.#longCallMs / 4),
      );
    }
  }

  /**
   * BURST_WORKERS, plus one per worker whose call waits on HTTP (it uses no CPU), up to
   * MAX_HTTP_WAIT_BURST per core worker: slow upstreams must not hold every worker.
   */
  #burstLimit(): number {
    const cpuBound = this.#options.maxBurst ?? this.#options.size;
    const waitingOnHttp = this.#all().filter((h) => h.cells.httpWaits() > 0).length;
    return cpuBound + Math.min(waitingOnHttp, MAX_HTTP_WAIT_BURST * this.#options.size);
  }

  /** An idle burst worker becomes the standby again, or goes. */
  #endBurst(handle: WorkerHandle): void {
    this.#burst.splice(this.#burst.indexOf(handle), 1);
    handle.burst = false;
    if (!this.#standby && !this.#closed) this.#standby = handle;
    else handle.destroy(() => shuttingDown());
  }

  #onDeadline(job: Job): void {
    if (job.settled) return;
    const handle = job.handle;
    const limitMs = job.task.timeoutMs;
    const timeout = (message: string, details: Record<string, unknown> = {}) =>
      job.fail(new AppError('TIMEOUT', message, { details }));
    if (!handle) {
      this.#queue.remove(job);
      timeout(`the call did not start within its ${limitMs} ms deadline (all workers busy)`);
      return;
    }
    if (handle.takeBack(job)) {
      // Never started, and now it never will (the worker skips a call whose cell it cannot claim).
      timeout(`the call did not start within its ${limitMs} ms deadline (all workers busy)`);
      return;
    }
    if (!handle.isRunning(job)) {
      // Over, its answer on the way (the worker frees the cell before it posts the result).
      handle.forget(job);
      timeout(`the call exceeded its time limit (${limitMs} ms)`);
      return;
    }
    const { logs, truncated } = handle.logsOf(job);
    timeout(`the call exceeded its time limit (${limitMs} ms) and was stopped`, { logs, logsTruncated: truncated, egress: [] });
    this.#replace(handle, 'timeout');
  }

  /** The caller gave up: a waiting call leaves now; a running one finishes (its answer goes nowhere). */
  #abort(job: Job, reason: unknown): void {
    if (job.settled) return;
    const handle = job.handle;
    if (!handle) {
      this.#queue.remove(job);
      job.fail(reason);
    } else if (handle.takeBack(job)) {
      job.fail(reason);
      this.#fill(handle, performance.now());
    }
  }

  /** Replaces workers that run plugin code with no call past their deadline, or hold a call they never pick up. */
  #watchdog(): void {
    if (this.#closed) return;
    const now = performance.now();
    const wall = performance.timeOrigin + now;
    const handles = this.#standby ? [...this.#all(), this.#standby] : [...this.#all()];
    for (const handle of handles) {
      if (handle.retired) continue;
      const stuck =
        handle.housekeepingOverdue(wall) ||
        handle.hasLostCall() ||
        (handle.housekeepingDeadline() === 0 &&
          handle.online &&
          !handle.jobs.some((job) => handle.isRunning(job)) &&
          handle.jobs.some((job) => handle.isUnclaimed(job) && now - job.lastSentAt > this.#resetTimeoutMs));
      if (stuck) this.#replace(handle, 'stuck');
    }
  }

  /**
   * Terminates a worker and puts a fresh one in its place. Its calls that had not started run
   * elsewhere; one it had started fails (it may have had effects: it must not run twice).
   */
  #replace(handle: WorkerHandle, reason: RestartReason, cause?: Error): void {
    if (handle.retired) return;
    const why = cause ? `the worker running the call stopped: ${cause.message}` : 'the worker running the call was stopped';
    const unstarted = handle.destroy(() => new AppError('INTERNAL_ERROR', why, cause ? { cause } : {}));
    this.#queue.unshift(...unstarted);
    if (this.#closed) return;
    if (handle === this.#standby) {
      this.#standby = null;
      this.#refillStandby();
      return;
    }
    this.#restarts[reason]++;
    this.#options.observer?.onWorkerRestart?.(reason);
    const now = performance.now();
    const burstIndex = this.#burst.indexOf(handle);
    if (burstIndex !== -1) {
      this.#burst.splice(burstIndex, 1);
    } else {
      const index = this.#slots.indexOf(handle);
      if (index === -1) return;
      if (this.#respawnDelay() > 0 && !this.#standby?.online) {
        // Workers keep dying at start: the retired handle stays (serving nothing) until the backoff ends.
        this.#respawn(() => {
          const fresh = this.#spawn();
          this.#slots[index] = fresh;
          const at = performance.now();
          this.#fill(fresh, at);
          this.#drain(at);
        });
      } else {
        const fresh = this.#takeStandby();
        this.#slots[index] = fresh;
        this.#fill(fresh, now);
      }
    }
    this.#drain(now);
    if (this.#queue.length > 0) this.#watch();
  }

  /** The module cache let `moduleKey` go: workers holding it drop it (a later call sends it again). */
  forget(moduleKey: string): void {
    for (const handle of this.#standby ? [...this.#all(), this.#standby] : this.#all()) {
      if (!handle.retired && handle.modules.delete(moduleKey)) handle.dropModule(moduleKey);
    }
  }

  /** Resolves once a core worker is ready; rejects after `timeoutMs` (readiness check). */
  async whenReady(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const { ready, size } = this.stats();
      if (ready > 0) return;
      if (this.#closed) throw new Error('the worker pool is closed');
      if (performance.now() >= until) throw new Error(`no worker thread is ready (${ready} of ${size})`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  stats(): PoolStats {
    const now = performance.now();
    const all = this.#all();
    return {
      size: this.#slots.length,
      ready: this.#slots.filter((h) => h.isReady(now)).length,
      burst: this.#burst.length,
      busy: all.filter((h) => h.jobs.length > 0).length,
      busyWithoutCall: all.filter((h) => h.housekeepingDeadline() !== 0 && !h.jobs.some((job) => h.isRunning(job))).length,
      queued: this.#queue.length,
      queueMax: this.#queue.maxJobs,
      queuedBytes: this.#queue.bytes,
      instanceBytes: all.reduce((sum, h) => sum + h.cells.cacheBytes(), 0),
      restarts: { ...this.#restarts },
      respawnDelayMs: this.#respawnDelay(),
    };
  }

  /** Ends every call: waiting ones leave as an abort would take them, running ones with their workers. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#watchTimer) clearTimeout(this.#watchTimer);
    clearInterval(this.#watchdogTimer);
    for (const timer of this.#respawnTimers) clearTimeout(timer);
    this.#respawnTimers.clear();
    const handles = [...this.#slots, ...this.#burst.splice(0), ...(this.#standby ? [this.#standby] : [])];
    this.#standby = null;
    for (const job of [...this.#queue.drainAll(), ...handles.flatMap((h) => h.jobs)]) this.#abort(job, shuttingDown());
    for (const handle of handles) for (const job of handle.destroy(() => shuttingDown())) job.fail(shuttingDown());
    await Promise.all(handles.map((h) => h.terminated));
  }
}
