// Worker thread entry: runs one call at a time on recycled plugin instances (see instance.ts).
// The result is posted before the instance is reset, so the reset is off the caller's path.
import { parentPort, workerData } from 'node:worker_threads';
import type * as EgressFetch from '../../egress/fetch.ts';
import type { EgressSession } from '../../egress/fetch.ts';
import type { ErrorCode } from '../../errors.ts';
import { CallFailure, WasiExit } from './call-failure.ts';
import { CallState } from './host-env.ts';
import { describeModule, PluginInstance, type ModuleShape } from './instance.ts';
import { LogMirrorWriter } from '../log-mirror.ts';
import { LogCollector } from './logs.ts';
import {
  HTTP_WAIT_CELL,
  type BatchMessage,
  type ForgetMessage,
  type CallMessage,
  type ResultMessage,
  type WorkerMessage,
} from '../protocol.ts';

const MAX_MODULES = 64;
const MAX_INSTANCES_PER_MODULE = 4;
const PAGE = 65536;

interface ModuleEntry {
  shape: ModuleShape;
  /** By memory cap (pages). */
  instances: Map<number, PluginInstance>;
}

const modules = new Map<string, ModuleEntry>();

/** Marks the wait in HTTP_WAIT_CELL, where the pool sees this worker is not using CPU. */
async function waitingOnHttp<T>(request: () => Promise<T>): Promise<T> {
  Atomics.add(shared.state, HTTP_WAIT_CELL, 1);
  try {
    return await request();
  } finally {
    Atomics.sub(shared.state, HTTP_WAIT_CELL, 1);
  }
}
/** Loaded on the first call that may use HTTP: it pulls in undici, which would slow every worker start. */
let egressModule: typeof EgressFetch | null = null;
const port = parentPort;
if (!port) throw new Error('engine/runtime/worker.ts must run in a worker thread');
/** Shared with the pool: the claim cells of the calls sent here (see protocol.ts); the running call's logs. */
const shared = workerData as { state: Int32Array; logMirror: SharedArrayBuffer; instanceCacheBytes: number };
const state = shared.state;
/** Memory the cached instances of this worker may keep (WORKER_INSTANCE_CACHE_BYTES); least recently used modules go first. */
const CACHE_BUDGET_BYTES = shared.instanceCacheBytes;
const logMirror = new LogMirrorWriter(shared.logMirror);

function post(message: WorkerMessage): void {
  port!.postMessage(message);
}

function moduleFor(msg: CallMessage): ModuleEntry | null {
  let entry = modules.get(msg.moduleKey);
  if (entry) {
    modules.delete(msg.moduleKey); // most recently used last
    modules.set(msg.moduleKey, entry);
    return entry;
  }
  if (!msg.module) return null;
  entry = { shape: describeModule(msg.module, msg.layout), instances: new Map() };
  modules.set(msg.moduleKey, entry);
  if (modules.size > MAX_MODULES) modules.delete(modules.keys().next().value as string);
  return entry;
}

/** Drops least recently used modules (never `keep`) while the cached instances exceed the budget. */
function trimCache(keep: ModuleEntry): void {
  let total = 0;
  for (const entry of modules.values()) for (const instance of entry.instances.values()) total += instance.footprint();
  for (const [key, entry] of modules) {
    if (total <= CACHE_BUDGET_BYTES) return;
    if (entry === keep) continue;
    for (const instance of entry.instances.values()) total -= instance.footprint();
    modules.delete(key);
  }
}

function instanceFor(entry: ModuleEntry, memoryPages: number): PluginInstance {
  let instance = entry.instances.get(memoryPages);
  if (!instance) {
    instance = new PluginInstance(entry.shape, memoryPages);
    entry.instances.set(memoryPages, instance);
    if (entry.instances.size > MAX_INSTANCES_PER_MODULE) entry.instances.delete(entry.instances.keys().next().value as number);
  }
  return instance;
}

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lossyUtf8 = new TextDecoder('utf-8');

function encodeOutput(
  bytes: Uint8Array,
  encoding: CallMessage['outputEncoding'],
): Pick<ResultMessage, 'output' | 'outputBase64'> {
  const base64 = () => ({ outputBase64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') });
  if (encoding === 'base64') return base64();
  if (encoding === 'utf8') return { output: lossyUtf8.decode(bytes) };
  try {
    return { output: strictUtf8.decode(bytes) };
  } catch {
    return base64();
  }
}

/**
 * Maps whatever ended a call to a code and message. A trap is MEMORY_LIMIT only when memory was
 * refused during the call (the grow shim refused a memory.grow, or a host allocation hit its cap);
 * modules run without the shim cannot tell, so their traps stay PLUGIN_ERROR with a hint near the cap.
 */
function describeFailure(
  err: unknown,
  instance: PluginInstance | null,
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
    if (instance.growRefused() || call?.memoryRefused) {
      return {
        code: 'MEMORY_LIMIT',
        message: `the plugin ran out of memory: a memory.grow beyond ${instance.maxPages} pages (memoryMaxPages) was refused, ${pages} pages in use; trap: ${text}`,
      };
    }
    const nearCap = !instance.shape.virtualGrowth && pages >= instance.maxPages - Math.max(1, Math.floor(instance.maxPages / 8));
    const hint = nearCap
      ? ` (its memory was at ${pages} of ${instance.maxPages} pages (memoryMaxPages): a refused memory.grow may be the cause)`
      : '';
    return { code: 'PLUGIN_ERROR', message: `the plugin trapped: ${text}${hint}` };
  }
  if (err instanceof RangeError) return { code: 'PLUGIN_ERROR', message: `the plugin failed: ${text}` };
  return { code: 'PLUGIN_ERROR', message: text };
}

async function handleCall(msg: CallMessage): Promise<void> {
  const cell = msg.claim;
  // Taken back by the pool meanwhile (it runs elsewhere, or was answered).
  if (Atomics.load(state, cell) !== msg.callId) return;
  // Past its deadline: the pool's timer answers it and frees the cell; starting it would only cost this worker.
  if (performance.timeOrigin + performance.now() >= msg.deadline) return;
  const started = performance.now();
  const entry = moduleFor(msg);
  if (!entry) {
    // Give the cell back unstarted; the pool resends the call with its module.
    if (Atomics.compareExchange(state, cell, msg.callId, 0) === msg.callId) post({ kind: 'missing-module', callId: msg.callId });
    return;
  }
  // Claim and start in one step: from here the pool treats the call as running.
  if (Atomics.compareExchange(state, cell, msg.callId, -msg.callId) !== msg.callId) return;
  const { limits } = msg;
  if (msg.warm) {
    warm(msg, entry, started);
    return;
  }
  const logs = new LogCollector(msg.logLevel, limits.logEntries, limits.logBytes);
  logMirror.start(msg.callId);
  logs.onEntry = (entry) => logMirror.write(entry);
  let instance: PluginInstance | null = null;
  let egress: EgressSession | null = null;
  let call: CallState | null = null;
  let result: ResultMessage;
  try {
    instance = instanceFor(entry, limits.memoryPages);
    if (!instance.hasFunction(msg.function))
      throw new CallFailure('FUNCTION_NOT_FOUND', `the plugin has no function "${msg.function}"`);
    if (msg.egress && entry.shape.jspi) {
      egressModule ??= await import('../../egress/fetch.ts');
      egress = egressModule.createEgressFetch(msg.egress);
    }
    const input =
      msg.input === null ? null : msg.inputEncoding === 'base64' ? Buffer.from(msg.input, 'base64') : encoder.encode(msg.input);
    call = new CallState(
      input,
      msg.config,
      logs,
      {
        hostBytes: limits.memoryPages * PAGE + limits.outputBytes + (input?.length ?? 0),
        outputBytes: limits.outputBytes,
        varBytes: limits.varBytes,
        httpResponseBytes: limits.httpResponseBytes,
      },
      egress ? (url, init) => waitingOnHttp(() => egress!.fetch(url, init)) : null,
    );
    let rc = 0;
    try {
      rc = await instance.run(msg.function, call);
    } catch (err) {
      if (!(err instanceof WasiExit && err.exitCode === 0)) throw err;
    }
    if (egress?.failure) throw egress.failure;
    const { output, error } = call.result();
    if (error !== null) throw new CallFailure('PLUGIN_ERROR', error);
    if (rc !== 0) throw new CallFailure('PLUGIN_ERROR', `the function returned ${rc} (non-zero) without setting an error`);
    logs.flush();
    result = {
      kind: 'result',
      callId: msg.callId,
      ok: true,
      ...encodeOutput(output ?? new Uint8Array(0), msg.outputEncoding),
      logs: logs.entries,
      logsTruncated: logs.truncated,
      egress: egress?.audit ?? [],
      runMs: performance.now() - started,
      memoryPages: instance.memoryPages(),
    };
  } catch (err) {
    logs.flush();
    result = {
      kind: 'result',
      callId: msg.callId,
      ok: false,
      error: describeFailure(egress?.failure ?? err, instance, call),
      logs: logs.entries,
      logsTruncated: logs.truncated,
      egress: egress?.audit ?? [],
      runMs: performance.now() - started,
      memoryPages: instance?.memoryPages() ?? 0,
    };
  }
  Atomics.store(state, cell, 0);
  post(result);
  instance?.reset();
  trimCache(entry);
  if (egress) await egress.close();
}

/** A warm-up: the instance a call with these limits would use, made now; its failure is the first call's to report. */
function warm(msg: CallMessage, entry: ModuleEntry, started: number): void {
  let ok = true;
  try {
    instanceFor(entry, msg.limits.memoryPages);
  } catch {
    ok = false;
  }
  Atomics.store(state, msg.claim, 0);
  post({
    kind: 'result',
    callId: msg.callId,
    ok,
    logs: [],
    logsTruncated: false,
    egress: [],
    runMs: performance.now() - started,
    memoryPages: 0,
  });
  trimCache(entry);
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
        logs: [],
        logsTruncated: false,
        egress: [],
        runMs: 0,
        memoryPages: 0,
      });
      process.exit(1);
    });
}
port.on('message', (msg: CallMessage | BatchMessage | ForgetMessage) => {
  if (msg.kind === 'batch') msg.calls.forEach(enqueue);
  else if (msg.kind === 'forget') queue = queue.then(() => void modules.delete(msg.moduleKey));
  else enqueue(msg);
});
post({ kind: 'ready' });
