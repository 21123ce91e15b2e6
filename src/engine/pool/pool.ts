// A pool of long-lived worker threads with a bounded FIFO queue.
// Job lifecycle: queued → sent (to one worker) → running → done | failed | timed out.
// - A deadline covers the whole call. When it passes while the call runs, the worker is terminated
//   (the only way to stop a Wasm loop) and replaced at once by a warm standby.
// - Every call sent to a worker owns a claim cell in shared memory (protocol.ts): the worker claims
//   it and starts in one atomic step, so the pool always knows whether a call never started (take
//   it back, answer or run it elsewhere) or may be running (only terminating the worker stops it).
// - Workers that die while starting are respawned after a delay that doubles per failure in a row.
// - Pipelining: a busy worker whose current call is young may get more calls sent ahead (gathered
//   over one event-loop turn into one message), so it does not sleep between calls: a cross-thread
//   wake-up costs more than a small call here. The pool takes calls sent ahead back (and runs them
//   elsewhere) if a call in front of them turns out to be long.
// - Burst: when every worker is held by a long call (a loop, a slow upstream) and calls wait, a
//   burst worker (the standby) serves them, so long calls cannot starve short ones. BURST_WORKERS
//   bounds them for calls using CPU; a worker waiting on HTTP (HTTP_WAIT_CELL) allows one more.
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { AppError } from '../../errors.ts';
import { createLogMirrorBuffer, readLogMirror } from '../log-mirror.ts';
import {
  HTTP_WAIT_CELL,
  SHARED_CELLS,
  STATE_CELLS,
  type CallMessage,
  type ForgetMessage,
  type ResultMessage,
  type WorkerMessage,
} from '../protocol.ts';

export type RestartReason = 'timeout' | 'crash' | 'exit';

/** Hooks for metrics and logs; the pool never depends on what they do. */
export interface PoolObserver {
  onWorkerRestart?(reason: RestartReason): void;
}

export interface PoolStats {
  /** Core workers configured. */
  size: number;
  /** Core workers that can serve calls: started, and not running a call the pool does not track. */
  ready: number;
  /** Extra workers serving while all core workers are held by long calls. */
  burst: number;
  busy: number;
  queued: number;
  queueMax: number;
  /** Input bytes the waiting calls hold. */
  queuedBytes: number;
  restarts: Record<RestartReason, number>;
}

export interface PoolTask {
  message: Omit<CallMessage, 'callId' | 'module' | 'claim' | 'deadline'>;
  /** Size of the input it carries (counted against PoolOptions.queueMaxBytes while it waits). */
  inputBytes: number;
  module: WebAssembly.Module;
  /** performance.now() by which the task must be done. */
  deadline: number;
}

export interface PoolResult {
  result: ResultMessage;
  /** ms between submission and the moment a worker could start it. */
  queueMs: number;
}

interface Job {
  task: PoolTask;
  callId: number;
  submitted: number;
  /** When it was sent to a worker (0 while queued). */
  sent: number;
  timer: NodeJS.Timeout;
  resolve: (r: PoolResult) => void;
  reject: (e: unknown) => void;
  slot: Slot | null;
  /** Its claim cell in its worker's state (-1 while not sent). */
  cell: number;
}

/** Calls sent to one worker and not answered yet, the running one included. */
const MAX_OUTSTANDING = 4;

interface Slot {
  worker: Worker;
  /** Sent to this worker and not answered yet, in send order. */
  jobs: Job[];
  /** When the worker's current call began (approximately: send time or the previous answer). */
  busySince: number;
  state: Int32Array;
  /** Calls sent ahead during this event-loop turn, posted together. */
  outbox: CallMessage[];
  /** The running call's logs, mirrored by the worker (see log-mirror.ts). */
  logMirror: SharedArrayBuffer;
  modules: Set<string>;
  retired: boolean;
  burst: boolean;
  /** The worker has loaded and listens for calls (its 'ready' message). */
  online: boolean;
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
  /** Tests only: the script workers run (one that fails to start, to check the backoff). */
  workerUrl?: URL;
  /** A call holding a worker longer than this counts as long-running (burst workers may start). */
  longCallMs?: number;
  /** Most burst workers at once; defaults to the pool size. */
  maxBurst?: number;
}

// tsc rewrites import specifiers but not this URL: from the built dist/ the worker is worker.js.
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? '../runtime/worker.ts' : '../runtime/worker.js', import.meta.url);
const WORKER_COMPILE_CACHE = path.join(tmpdir(), 'wasmhost-compile-cache');
/** A call sent ahead only goes to a worker whose current call started less than this ago. */
const AHEAD_IF_YOUNGER_MS = 5;
/** Respawn delay after workers died while starting: doubles per failure in a row, up to the max. */
const RESPAWN_BACKOFF_MS = 50;
const RESPAWN_BACKOFF_MAX_MS = 5_000;
/** Burst workers beyond BURST_WORKERS for calls waiting on HTTP, per core worker (bounds the threads). */
const MAX_HTTP_WAIT_BURST = 4;
/** When a caller refused for a full queue may try again. */
const OVERLOADED_RETRY_AFTER_MS = 1_000;

export class WorkerPool {
  readonly #slots: Slot[] = [];
  readonly #burst: Slot[] = [];
  #standby: Slot | null = null;
  #watchTimer: NodeJS.Timeout | null = null;
  #flushScheduled = false;
  readonly #queue: Job[] = [];
  readonly #options: PoolOptions;
  readonly #longCallMs: number;
  readonly #restarts: Record<RestartReason, number> = { timeout: 0, crash: 0, exit: 0 };
  #nextCallId = 1;
  #closed = false;
  /** Workers in a row that died before they started; reset when one starts. */
  #startFailures = 0;
  readonly #respawnTimers = new Set<NodeJS.Timeout>();
  #standbyPending = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#longCallMs = options.longCallMs ?? 100;
    for (let i = 0; i < options.size; i++) this.#slots.push(this.#spawn());
    this.#standby = this.#spawn();
  }

  #spawn(): Slot {
    const state = new Int32Array(new SharedArrayBuffer(4 * SHARED_CELLS));
    const logMirror = createLogMirrorBuffer();
    const worker = new Worker(this.#options.workerUrl ?? WORKER_URL, {
      name: 'wasmhost-engine',
      workerData: { state, logMirror, instanceCacheBytes: this.#options.instanceCacheBytes ?? 256 * 1024 * 1024 },
      // Workers see no host environment. The compile cache (type-stripped, compiled modules) cuts a
      // worker's start from ~60-250 ms to ~15 ms here: replacements after a timeout are ready sooner.
      env: { NODE_COMPILE_CACHE: WORKER_COMPILE_CACHE },
      resourceLimits: { maxOldGenerationSizeMb: this.#options.maxOldGenerationSizeMb ?? 256 },
    });
    const slot: Slot = {
      worker,
      jobs: [],
      busySince: 0,
      state,
      outbox: [],
      logMirror,
      modules: new Set(),
      retired: false,
      burst: false,
      online: false,
    };
    worker.on('message', (msg: WorkerMessage) => this.#onMessage(slot, msg));
    worker.on('error', (err) => this.#onWorkerGone(slot, 'crash', err));
    worker.on('exit', (code) => this.#onWorkerGone(slot, 'exit', new Error(`worker exited with code ${code}`)));
    return slot;
  }

  /** The warm standby (replaced by a fresh one in the background). */
  #takeStandby(): Slot {
    const slot = this.#standby ?? this.#spawn();
    this.#standby = null;
    this.#refillStandby();
    return slot;
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

  run(task: PoolTask): Promise<PoolResult> {
    if (this.#closed) return Promise.reject(new AppError('SHUTTING_DOWN', 'the engine is shutting down'));
    const now = performance.now();
    const target = this.#queue.length === 0 ? this.#slotFor(task.message.moduleKey, now) : null;
    if (!target) {
      const overloaded = (why: string) =>
        Promise.reject(
          new AppError('OVERLOADED', `all ${this.#slots.length} workers are busy and ${why}`, {
            retryAfterMs: OVERLOADED_RETRY_AFTER_MS,
          }),
        );
      if (this.#queue.length >= this.#options.queueMax) return overloaded(`${this.#queue.length} calls are waiting`);
      const queuedBytes = this.#queue.reduce((sum, job) => sum + job.task.inputBytes, 0);
      if (queuedBytes + task.inputBytes > this.#options.queueMaxBytes) {
        return overloaded(
          `the waiting calls hold ${queuedBytes} bytes of input (QUEUE_MAX_BYTES ${this.#options.queueMaxBytes})`,
        );
      }
    }
    return new Promise<PoolResult>((resolve, reject) => {
      const job: Job = {
        task,
        callId: this.#takeCallId(),
        submitted: now,
        sent: 0,
        timer: setTimeout(() => this.#onDeadline(job), Math.max(0, task.deadline - now)),
        resolve,
        reject,
        slot: null,
        cell: -1,
      };
      if (target) this.#send(target, job, now);
      else {
        this.#queue.push(job);
        this.#watch();
      }
    });
  }

  /** Call ids live in Int32 cells (and as -id once claimed): they wrap before 2^31. */
  #takeCallId(): number {
    const id = this.#nextCallId;
    this.#nextCallId = id >= 0x7fffffff ? 1 : id + 1;
    return id;
  }

  /** An idle worker (preferring one holding the module), else the least loaded one that may take a call ahead. */
  #slotFor(moduleKey: string, now: number): Slot | null {
    let idle: Slot | null = null;
    let ahead: Slot | null = null;
    const better = (a: Slot, b: Slot | null) =>
      !b ||
      a.jobs.length < b.jobs.length ||
      (a.jobs.length === b.jobs.length && a.modules.has(moduleKey) && !b.modules.has(moduleKey));
    for (const slot of this.#all()) {
      if (slot.retired || this.#freeCell(slot) === -1) continue;
      if (slot.jobs.length === 0) {
        if (!idle || (slot.modules.has(moduleKey) && !idle.modules.has(moduleKey))) idle = slot;
      } else if (this.#canTakeAhead(slot, now) && better(slot, ahead)) {
        ahead = slot;
      }
    }
    return idle ?? ahead;
  }

  #canTakeAhead(slot: Slot, now: number): boolean {
    return slot.jobs.length < MAX_OUTSTANDING && now - slot.busySince < AHEAD_IF_YOUNGER_MS && this.#freeCell(slot) !== -1;
  }

  /** A free claim cell (-1: none; cannot happen while MAX_OUTSTANDING < STATE_CELLS). */
  #freeCell(slot: Slot): number {
    for (let cell = 0; cell < STATE_CELLS; cell++) if (Atomics.load(slot.state, cell) === 0) return cell;
    return -1;
  }

  /** Takes a call back from its worker if it has not started there; false: it started (and may still run). */
  #takeBack(slot: Slot, job: Job): boolean {
    return Atomics.compareExchange(slot.state, job.cell, job.callId, 0) === job.callId;
  }

  #all(): Slot[] {
    return this.#burst.length === 0 ? this.#slots : [...this.#slots, ...this.#burst];
  }

  #send(slot: Slot, job: Job, now: number, forceModule = false): void {
    const ahead = slot.jobs.length > 0 && !forceModule;
    const cell = this.#freeCell(slot);
    if (cell === -1) {
      // Cannot happen (callers check; MAX_OUTSTANDING < STATE_CELLS): wait rather than share a cell.
      job.slot = null;
      this.#queue.unshift(job);
      this.#watch();
      return;
    }
    if (slot.jobs.length === 0) slot.busySince = now;
    slot.jobs.push(job);
    job.slot = slot;
    job.cell = cell;
    job.sent ||= now;
    const key = job.task.message.moduleKey;
    const deadline = performance.timeOrigin + job.task.deadline;
    const message: CallMessage = { ...job.task.message, callId: job.callId, claim: cell, deadline };
    if (forceModule || !slot.modules.has(key)) {
      message.module = job.task.module;
      slot.modules.add(key);
    }
    Atomics.store(slot.state, cell, job.callId);
    if (!ahead) {
      slot.worker.postMessage(message);
      return;
    }
    slot.outbox.push(message);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
    this.#watch();
  }

  #flush(): void {
    this.#flushScheduled = false;
    for (const slot of this.#all()) {
      if (slot.outbox.length === 0 || slot.retired) continue;
      slot.worker.postMessage({ kind: 'batch', calls: slot.outbox });
      slot.outbox = [];
    }
  }

  #onMessage(slot: Slot, msg: WorkerMessage): void {
    if (msg.kind === 'ready') {
      slot.online = true;
      this.#startFailures = 0;
      return;
    }
    const index = slot.jobs.findIndex((j) => j.callId === msg.callId);
    const job = slot.jobs[index];
    if (!job) return; // a call already answered (timed out while its result was on the way)
    slot.jobs.splice(index, 1);
    if (msg.kind === 'missing-module') {
      this.#send(slot, job, performance.now(), true);
      return;
    }
    clearTimeout(job.timer);
    const now = performance.now();
    slot.busySince = now;
    job.resolve({ result: msg, queueMs: Math.max(0, job.sent - job.submitted) });
    this.#fill(slot, now);
  }

  /** Sends waiting calls to any worker that can take them (after calls were taken back). */
  #drain(now: number): void {
    while (this.#queue.length > 0) {
      const slot = this.#slotFor(this.#queue[0]!.task.message.moduleKey, now);
      if (!slot) return;
      this.#send(slot, this.#queue.shift()!, now);
    }
  }

  /** Gives a worker that just freed up the next waiting call(s). */
  #fill(slot: Slot, now: number): void {
    if (slot.retired) return;
    while (this.#queue.length > 0 && this.#freeCell(slot) !== -1 && (slot.jobs.length === 0 || this.#canTakeAhead(slot, now))) {
      this.#send(slot, this.#queue.shift()!, now);
    }
    if (slot.burst && slot.jobs.length === 0) this.#endBurst(slot);
  }

  /**
   * While calls wait (in the queue, or sent ahead to a worker): take back calls sent ahead of a long
   * call, and start a burst worker when every worker is held by a long call. Re-checks itself.
   */
  #watch(): void {
    if (this.#closed || this.#watchTimer) return;
    const now = performance.now();
    for (const slot of this.#all()) {
      if (now - slot.busySince < this.#longCallMs) continue;
      // Either we take a call back, or the worker has already claimed it.
      const takenBack = slot.jobs.filter((job) => this.#takeBack(slot, job));
      if (takenBack.length === 0) continue;
      slot.jobs = slot.jobs.filter((job) => !takenBack.includes(job));
      for (const job of takenBack) {
        job.slot = null;
        job.cell = -1;
      }
      this.#queue.unshift(...takenBack);
    }
    this.#drain(now);
    if (this.#queue.length > 0) {
      const busy = this.#all().filter((s) => s.jobs.length > 0);
      const allLong = busy.length === this.#all().length && busy.every((s) => now - s.busySince >= this.#longCallMs);
      if (allLong && this.#burst.length < this.#burstLimit()) {
        const slot = this.#takeStandby();
        slot.burst = true;
        this.#burst.push(slot);
        this.#fill(slot, now);
      }
    }
    const waiting =
      this.#queue.length > 0 || this.#all().some((s) => s.jobs.some((job) => Atomics.load(s.state, job.cell) === job.callId));
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
    const waitingOnHttp = this.#all().filter((s) => Atomics.load(s.state, HTTP_WAIT_CELL) > 0).length;
    return cpuBound + Math.min(waitingOnHttp, MAX_HTTP_WAIT_BURST * this.#options.size);
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
    const slot = job.slot;
    const timeout = (message: string, details: Record<string, unknown> = {}) =>
      job.reject(new AppError('TIMEOUT', message, { details }));
    if (!slot) {
      const index = this.#queue.indexOf(job);
      if (index !== -1) this.#queue.splice(index, 1);
      timeout(
        `the call did not start within its ${Math.round(job.task.deadline - job.submitted)} ms deadline (all workers busy)`,
      );
      return;
    }
    const index = slot.jobs.indexOf(job);
    if (index !== -1) slot.jobs.splice(index, 1);
    const limitMs = Math.round(job.task.deadline - job.submitted);
    if (this.#takeBack(slot, job)) {
      // Never started, and now it never will (the worker skips a call whose cell it cannot claim).
      timeout(`the call did not start within its ${limitMs} ms deadline (all workers busy)`);
      return;
    }
    if (Atomics.load(slot.state, job.cell) !== -job.callId) {
      // Over, its answer on the way (the worker frees the cell before it posts the result).
      timeout(`the call exceeded its time limit (${limitMs} ms)`);
      return;
    }
    const { logs, truncated } = readLogMirror(slot.logMirror, job.callId);
    this.#replace(slot, 'timeout');
    timeout(`the call exceeded its time limit (${limitMs} ms) and was stopped`, { logs, logsTruncated: truncated, egress: [] });
  }

  #onWorkerGone(slot: Slot, reason: RestartReason, err: Error): void {
    if (slot.retired) return;
    if (!slot.online) this.#startFailures++;
    this.#replace(slot, reason, err);
  }

  /**
   * Terminates a worker and puts a fresh one in its place. Its calls that had not started run
   * elsewhere; one it had started fails (it may have had effects: it must not run twice).
   */
  #replace(slot: Slot, reason: RestartReason, cause?: Error): void {
    slot.retired = true;
    slot.outbox = [];
    const requeued: Job[] = [];
    for (const job of slot.jobs.splice(0)) {
      if (this.#takeBack(slot, job)) {
        job.slot = null;
        job.cell = -1;
        requeued.push(job);
        continue;
      }
      clearTimeout(job.timer);
      const why = cause ? `the worker running the call stopped: ${cause.message}` : 'the worker running the call was stopped';
      job.reject(new AppError('INTERNAL_ERROR', why, cause ? { cause } : {}));
    }
    this.#queue.unshift(...requeued);
    void slot.worker.terminate();
    if (this.#closed) return;
    if (slot === this.#standby) {
      this.#standby = null;
      this.#refillStandby();
      return;
    }
    this.#restarts[reason]++;
    this.#options.observer?.onWorkerRestart?.(reason);
    const now = performance.now();
    const burstIndex = this.#burst.indexOf(slot);
    if (burstIndex !== -1) {
      this.#burst.splice(burstIndex, 1);
    } else {
      const index = this.#slots.indexOf(slot);
      if (index === -1) return;
      if (this.#respawnDelay() > 0 && !this.#standby?.online) {
        // Workers keep dying at start: the retired slot stays (serving nothing) until the backoff ends.
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
    for (const slot of [...this.#all(), ...(this.#standby ? [this.#standby] : [])]) {
      if (slot.retired || !slot.modules.delete(moduleKey)) continue;
      slot.worker.postMessage({ kind: 'forget', moduleKey } satisfies ForgetMessage);
    }
  }

  /** Started, and not running a call the pool has forgotten (an engine bug: the worker would be lost). */
  #isReady(slot: Slot): boolean {
    if (slot.retired || !slot.online) return false;
    for (let cell = 0; cell < STATE_CELLS; cell++) {
      const value = Atomics.load(slot.state, cell);
      if (value < 0 && !slot.jobs.some((job) => job.callId === -value)) return false;
    }
    return true;
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
    return {
      size: this.#slots.length,
      ready: this.#slots.filter((s) => this.#isReady(s)).length,
      burst: this.#burst.length,
      busy: this.#all().filter((s) => s.jobs.length > 0).length,
      queued: this.#queue.length,
      queueMax: this.#options.queueMax,
      queuedBytes: this.#queue.reduce((sum, job) => sum + job.task.inputBytes, 0),
      restarts: { ...this.#restarts },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#watchTimer) clearTimeout(this.#watchTimer);
    for (const timer of this.#respawnTimers) clearTimeout(timer);
    this.#respawnTimers.clear();
    const shuttingDown = () => new AppError('SHUTTING_DOWN', 'the engine is shutting down');
    const pending = [...this.#queue.splice(0), ...this.#all().flatMap((s) => s.jobs.splice(0))];
    for (const job of pending) {
      clearTimeout(job.timer);
      job.reject(shuttingDown());
    }
    const slots = [...this.#slots, ...this.#burst.splice(0), ...(this.#standby ? [this.#standby] : [])];
    this.#standby = null;
    await Promise.all(
      slots.map((slot) => {
        slot.retired = true;
        return slot.worker.terminate();
      }),
    );
  }
}
