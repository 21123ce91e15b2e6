// Worker thread entry: runs one call at a time on recycled plugin instances (see instance.ts).
// The result is posted before the instance is reset, so the reset is off the caller's path; the reset
// (which may rebuild the instance and re-run its start function) runs under a housekeeping deadline
// the pool watches (protocol.ts WorkerCells), since no call's deadline covers it.
import { getHeapStatistics } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import type * as EgressFetch from '../../egress/fetch.ts';
import type { EgressSession } from '../../egress/fetch.ts';
import type { ErrorCode } from '../../errors.ts';
import { CallFailure, WasiExit } from './call-failure.ts';
import { CallState } from './host-env.ts';
import { describeModule, PluginInstance, type ModuleShape } from './instance.ts';
import { LinkedPlugin, type LinkedShapes } from './linker.ts';
import { LogMirrorWriter } from '../log-mirror.ts';
import { LogCollector, type LogEntry } from './logs.ts';
import {
  WorkerCells,
  type BatchMessage,
  type CallMessage,
  type ForgetMessage,
  type ResultMessage,
  type WorkerMessage,
  type WorkerSetup,
} from '../protocol.ts';

const MAX_MODULES = 64;
/** Instances of one module without the grow shim (one per memory cap); a module with it has one. */
const MAX_INSTANCES_PER_MODULE = 4;
const PAGE = 65536;

interface ModuleEntry {
  shape: ModuleShape;
  /** A linked manifest: its modules (`shape` is its main one's). */
  linked: LinkedShapes | null;
  /** Some module imports http_request (runs through JSPI): a call with egress gets an HTTP session. */
  http: boolean;
  /** A linked manifest's instances, recycled while they can be (linker.ts). */
  linkedInstance: LinkedPlugin | null;
  /** By memory cap (pages); 0 for the one instance of a module with the grow shim. */
  instances: Map<number, PluginInstance>;
  /** What its instances held when last measured: after each call or warm-up that used them (see measure). */
  bytes: number;
  heapBytes: number;
}

const modules = new Map<string, ModuleEntry>();

const port = parentPort;
if (!port) throw new Error('engine/runtime/worker.ts must run in a worker thread');
const setup = workerData as WorkerSetup;
/** Shared with the pool: claim cells of the calls sent here, HTTP waits, housekeeping, cache size (protocol.ts). */
const cells = new WorkerCells(setup.cells);
const logMirror = new LogMirrorWriter(setup.logMirror);
/** The JS heap the cached instances may take (their tables, mostly): a quarter of this worker's heap. */
const HEAP_LIMIT = getHeapStatistics().heap_size_limit;
const CACHE_HEAP_BUDGET = HEAP_LIMIT / 4;
/** Past this much used heap after a call, every cached instance goes (a backstop for what estimates miss). */
const HEAP_PRESSURE = HEAP_LIMIT / 2;
/**
 * The used heap is read when the cache grew since the last reading, else after this many calls:
 * getHeapStatistics builds a 14-field object, and a call that made no instance and grew no table
 * adds only garbage, which the next GC takes back.
 */
const HEAP_CHECK_EVERY = 64;
let trimsSinceHeapCheck = 0;
let bytesAtHeapCheck = 0;
/** What the pool's gauge was last told (see trimCache). */
let publishedBytes = 0;
/** performance.timeOrigin is a getter, and constant. */
const TIME_ORIGIN = performance.timeOrigin;

const mirrorLog = (entry: LogEntry) => logMirror.write(entry);

/** Marks the wait in the HTTP wait cell, where the pool sees this worker is not using CPU. */
async function waitingOnHttp<T>(request: () => Promise<T>): Promise<T> {
  cells.addHttpWait(1);
  try {
    return await request();
  } finally {
    cells.addHttpWait(-1);
  }
}
/** Loaded on the first call that may use HTTP: it pulls in undici, which would slow every worker start. */
let egressModule: typeof EgressFetch | null = null;

function post(message: WorkerMessage): void {
  port!.postMessage(message);
}

/** The key of the module used last (last in `modules` already). */
let lastKey: string | null = null;

function moduleFor(msg: CallMessage): ModuleEntry | null {
  let entry = modules.get(msg.moduleKey);
  if (entry) {
    if (msg.moduleKey !== lastKey) {
      modules.delete(msg.moduleKey); // most recently used last
      modules.set(msg.moduleKey, entry);
      lastKey = msg.moduleKey;
    }
    return entry;
  }
  if (!msg.module) return null;
  const { compiled, layout, linked } = msg.module;
  const shapes: LinkedShapes | null = linked
    ? {
        main: linked.main,
        modules: linked.modules.map((m) => ({ id: m.id, name: m.name, shape: describeModule(m.compiled, m.layout) })),
      }
    : null;
  const shape = shapes ? shapes.modules[shapes.main]!.shape : describeModule(compiled, layout);
  entry = {
    shape,
    linked: shapes,
    http: shapes ? shapes.modules.some((m) => m.shape.jspi) : shape.jspi,
    linkedInstance: null,
    instances: new Map(),
    bytes: 0,
    heapBytes: 0,
  };
  modules.set(msg.moduleKey, entry);
  lastKey = msg.moduleKey;
  if (modules.size > MAX_MODULES) modules.delete(modules.keys().next().value as string);
  return entry;
}

/** Measures the instances of the module a call just used; the others have not changed since theirs. */
function measure(entry: ModuleEntry): void {
  let bytes = 0;
  let heapBytes = 0;
  for (const instance of entry.instances.values()) {
    const f = instance.footprint();
    bytes += f.bytes;
    heapBytes += f.heapBytes;
  }
  if (entry.linkedInstance) {
    const f = entry.linkedInstance.footprint();
    bytes += f.bytes;
    heapBytes += f.heapBytes;
  }
  entry.bytes = bytes;
  entry.heapBytes = heapBytes;
}

function dropInstances(entry: ModuleEntry): void {
  entry.instances.clear();
  entry.linkedInstance = null;
  entry.bytes = 0;
  entry.heapBytes = 0;
}

/**
 * After a call or warm-up used `used`: drops the instances of least recently used modules while they
 * hold more than WORKER_INSTANCE_CACHE_BYTES, or more JS heap than CACHE_HEAP_BUDGET: the module
 * just used goes last, but goes too when it alone is over. Publishes what stays (the pool's gauge).
 */
function trimCache(used: ModuleEntry | null): void {
  if (used) measure(used);
  let bytes = 0;
  let heapBytes = 0;
  for (const entry of modules.values()) {
    bytes += entry.bytes;
    heapBytes += entry.heapBytes;
  }
  for (const entry of modules.values()) {
    if (bytes <= setup.instanceCacheBytes && heapBytes <= CACHE_HEAP_BUDGET) break;
    bytes -= entry.bytes;
    heapBytes -= entry.heapBytes;
    dropInstances(entry);
  }
  if (bytes > bytesAtHeapCheck || ++trimsSinceHeapCheck >= HEAP_CHECK_EVERY) {
    trimsSinceHeapCheck = 0;
    if (getHeapStatistics().used_heap_size > HEAP_PRESSURE) {
      for (const entry of modules.values()) dropInstances(entry);
      bytes = 0;
    }
    bytesAtHeapCheck = bytes;
  }
  // A BigInt per store: only when it changed.
  if (bytes !== publishedBytes) cells.setCacheBytes((publishedBytes = bytes));
}

function instanceFor(entry: ModuleEntry, memoryPages: number): PluginInstance {
  const { shape } = entry;
  const key = shape.virtualGrowth ? 0 : memoryPages;
  let instance = entry.instances.get(key);
  if (!instance) {
    instance = new PluginInstance(shape, shape.virtualGrowth ? setup.memoryCeilingPages : memoryPages, memoryPages);
    entry.instances.set(key, instance);
    if (entry.instances.size > MAX_INSTANCES_PER_MODULE) entry.instances.delete(entry.instances.keys().next().value as number);
  }
  return instance;
}

function linkedFor(entry: ModuleEntry, linked: LinkedShapes, memoryPages: number): LinkedPlugin {
  // A set made for another cap (a warm-up's) whose memories grow natively would hold that cap instead.
  if (!entry.linkedInstance?.serves(memoryPages))
    entry.linkedInstance = new LinkedPlugin(linked, setup.memoryCeilingPages, memoryPages);
  return entry.linkedInstance;
}

const encoder = new TextEncoder();
/** A call without config: host functions only read it. */
const NO_CONFIG: Record<string, string> = Object.freeze({});
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lossyUtf8 = new TextDecoder('utf-8');

/** Sets the answer's output, as text or base64 (`encoding` null: text when it is valid UTF-8). */
function setOutput(result: ResultMessage, bytes: Uint8Array, encoding: CallMessage['outputEncoding']): void {
  if (encoding === 'utf8') result.output = lossyUtf8.decode(bytes);
  else if (encoding === undefined) {
    try {
      result.output = strictUtf8.decode(bytes);
      return;
    } catch {
      // not UTF-8: base64 below
    }
  }
  if (result.output === undefined)
    result.outputBase64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/** A call's answer (output or error still to set): logs and HTTP requests only when there are any (see ResultMessage). */
function answer(callId: number, started: number, logs: LogCollector, egress: EgressSession | null): ResultMessage {
  logs.flush();
  const result: ResultMessage = { kind: 'result', callId, ok: true, runMs: performance.now() - started };
  if (logs.entries.length > 0) result.logs = logs.entries;
  if (logs.truncated) result.logsTruncated = true;
  if (egress && egress.audit.length > 0) result.egress = egress.audit;
  return result;
}

/**
 * Maps whatever ended a call to a code and message. A trap is MEMORY_LIMIT only when memory was
 * refused during the call (the grow shim refused a memory.grow, or a host allocation hit its cap);
 * modules run without the shim cannot tell, so their traps stay PLUGIN_ERROR with a hint near the cap.
 */
function describeFailure(
  err: unknown,
  instance: PluginInstance | LinkedPlugin | null,
  call: CallState | null,
): { code: ErrorCode; message: string; details?: Record<string, string> } {
  if (err instanceof CallFailure) return { code: err.code, message: err.message };
  if (egressModule?.isEgressError(err)) {
    const { code, message, ...details } = err.toJSON();
    return { code, message, details };
  }
  if (err instanceof WasiExit) return { code: 'PLUGIN_ERROR', message: err.message };
  const text = err instanceof Error ? err.message : String(err);
  if (instance && err instanceof WebAssembly.RuntimeError) {
    const pages = instance.memoryPages();
    const cap = instance.callCap;
    if (instance.growRefused() || call?.memoryRefused) {
      return {
        code: 'MEMORY_LIMIT',
        message: `the plugin ran out of memory: a memory.grow beyond ${cap} pages (memoryMaxPages) was refused, ${pages} pages in use; trap: ${text}`,
      };
    }
    const nearCap = !instance.shape.virtualGrowth && pages >= cap - Math.max(1, Math.floor(cap / 8));
    const hint = nearCap
      ? ` (its memory was at ${pages} of ${cap} pages (memoryMaxPages): a refused memory.grow may be the cause)`
      : '';
    return { code: 'PLUGIN_ERROR', message: `the plugin trapped: ${text}${hint}` };
  }
  if (err instanceof RangeError) return { code: 'PLUGIN_ERROR', message: `the plugin failed: ${text}` };
  return { code: 'PLUGIN_ERROR', message: text };
}

/** The call ended without an exception: what the plugin left decides (a failed host call first). */
function outcomeOf(call: CallState, rc: number): Uint8Array {
  const failure = call.failure;
  if (failure && !(failure instanceof WasiExit && failure.exitCode === 0)) throw failure;
  const { output, error } = call.result();
  if (error !== null) throw new CallFailure('PLUGIN_ERROR', error);
  if (rc !== 0) throw new CallFailure('PLUGIN_ERROR', `the function returned ${rc} (non-zero) without setting an error`);
  return output ?? new Uint8Array(0);
}

async function handleCall(msg: CallMessage): Promise<void> {
  const cell = msg.claim;
  // Taken back by the pool meanwhile (it runs elsewhere, or was answered).
  if (Atomics.load(cells.ints, cell) !== msg.callId) return;
  // Past its deadline: the pool's timer answers it and frees the cell; starting it would only cost this worker.
  const started = performance.now();
  if (TIME_ORIGIN + started >= msg.deadline) return;
  const entry = moduleFor(msg);
  if (!entry) {
    // Give the cell back unstarted; the pool resends the call with its module.
    if (Atomics.compareExchange(cells.ints, cell, msg.callId, 0) === msg.callId)
      post({ kind: 'missing-module', callId: msg.callId });
    return;
  }
  // Claim and start in one step: from here the pool treats the call as running.
  if (Atomics.compareExchange(cells.ints, cell, msg.callId, -msg.callId) !== msg.callId) return;
  if (msg.warm) {
    warm(msg, entry, started);
    return;
  }
  const limits = msg.limits ?? setup.defaultLimits;
  const logs = new LogCollector(msg.logLevel, limits.logEntries, limits.logBytes);
  logMirror.start(msg.callId);
  logs.onEntry = mirrorLog;
  let instance: PluginInstance | LinkedPlugin | null = null;
  let egress: EgressSession | null = null;
  let call: CallState | null = null;
  let result: ResultMessage;
  try {
    instance = entry.linked ? linkedFor(entry, entry.linked, limits.memoryPages) : instanceFor(entry, limits.memoryPages);
    if (!instance.hasFunction(msg.function))
      throw new CallFailure('FUNCTION_NOT_FOUND', `the plugin has no function "${msg.function}"`);
    if (msg.egress && entry.http) {
      egressModule ??= await import('../../egress/fetch.ts');
      egress = egressModule.createEgressFetch(msg.egress);
    }
    const input =
      msg.input === null ? null : msg.inputEncoding === 'base64' ? Buffer.from(msg.input, 'base64') : encoder.encode(msg.input);
    call = new CallState(
      input,
      msg.config ?? NO_CONFIG,
      logs,
      {
        hostBytes: limits.memoryPages * PAGE + limits.outputBytes + (input?.length ?? 0),
        outputBytes: limits.outputBytes,
        varBytes: limits.varBytes,
        httpResponseBytes: limits.httpResponseBytes,
      },
      egress ? (url, init) => waitingOnHttp(() => egress!.fetch(url, init)) : null,
    );
    if (msg.httpResponseHeaders) call.responseHeaders = {};
    let rc = 0;
    try {
      const running = instance.run(msg.function, call, limits.memoryPages);
      rc = typeof running === 'number' ? running : await running;
    } catch (err) {
      // A failed host call the plugin let through is the same failure; the first one is the answer.
      const failure = call.failure ?? err;
      if (!(failure instanceof WasiExit && failure.exitCode === 0)) throw failure;
    }
    if (egress?.failure) throw egress.failure;
    const output = outcomeOf(call, rc);
    result = answer(msg.callId, started, logs, egress);
    setOutput(result, output, msg.outputEncoding);
  } catch (err) {
    result = answer(msg.callId, started, logs, egress);
    result.ok = false;
    result.error = describeFailure(err, instance, call);
  }
  // From here no call holds this worker, but plugin code may still run (a rebuild): say until when.
  cells.beginHousekeeping(TIME_ORIGIN + performance.now() + setup.resetTimeoutMs);
  Atomics.store(cells.ints, cell, 0);
  post(result);
  if (instance instanceof LinkedPlugin) {
    let recycled = false;
    try {
      recycled = instance.reset();
    } catch {
      // Not brought back: the next call makes a new set.
    }
    if (!recycled && entry.linkedInstance === instance) entry.linkedInstance = null;
  } else if (instance instanceof PluginInstance) {
    try {
      instance.reset();
    } catch {
      // A rebuild that failed (its start function trapped, say): the next call starts a new instance.
      for (const [key, cached] of entry.instances) if (cached === instance) entry.instances.delete(key);
    }
  }
  trimCache(entry);
  cells.endHousekeeping();
  if (egress) void egress.close().catch(() => undefined);
}

/** A warm-up: the instance a call with these limits would use, made now; its failure is the first call's to report. */
function warm(msg: CallMessage, entry: ModuleEntry, started: number): void {
  let ok = true;
  try {
    const { memoryPages } = msg.limits ?? setup.defaultLimits;
    if (entry.linked) linkedFor(entry, entry.linked, memoryPages);
    else instanceFor(entry, memoryPages);
  } catch {
    ok = false;
  }
  cells.beginHousekeeping(TIME_ORIGIN + performance.now() + setup.resetTimeoutMs);
  Atomics.store(cells.ints, msg.claim, 0);
  post({ kind: 'result', callId: msg.callId, ok, runMs: performance.now() - started });
  trimCache(entry);
  cells.endHousekeeping();
}

// One call at a time: a call suspended on HTTP must not let the next one onto the same instance.
let queue: Promise<void> = Promise.resolve();
function enqueue(msg: CallMessage): void {
  queue = queue
    .then(() => handleCall(msg))
    .catch((err: unknown) => {
      // Only a bug in the engine lands here; the pool fails the call and replaces this worker.
      port!.postMessage({
        kind: 'result',
        callId: msg.callId,
        ok: false,
        error: { code: 'INTERNAL_ERROR', message: String(err) },
        runMs: 0,
      } satisfies ResultMessage);
      process.exit(1);
    });
}
port.on('message', (msg: CallMessage | BatchMessage | ForgetMessage) => {
  if (msg.kind === 'batch') msg.calls.forEach(enqueue);
  else if (msg.kind === 'forget') {
    // The module cache let it go: its code must not stay alive here (its instances hold it).
    queue = queue.then(() => {
      modules.delete(msg.moduleKey);
      // Linked manifests running it hold its code too.
      for (const [key, entry] of modules) if (entry.linked?.modules.some((m) => m.id === msg.moduleKey)) modules.delete(key);
      trimCache(null);
    });
  } else enqueue(msg);
});
post({ kind: 'ready' });
