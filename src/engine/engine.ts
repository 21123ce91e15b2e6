// The call engine: turns a stored plugin + a call request into a worker task and its outcome.
// Knows nothing of HTTP; failures are AppErrors carrying the logs (and egress audit) of the call.
import { CALL_LIMIT_NAMES, type CallLimits, type Config } from '../config.ts';
import type { EgressAuditEntry, EgressOptions } from '../egress/fetch.ts';
import { AppError } from '../errors.ts';
import { mainModuleId, type PluginMeta, type PluginStore } from '../store/store.ts';
import type { CallLogLevel, LogEntry } from './runtime/logs.ts';
import type { ModuleCache } from './compile/module-cache.ts';
import { WorkerPool, type PoolObserver, type PoolStats, type PoolTask } from './pool/pool.ts';
import { EXTISM_ENV } from './runtime/host-env.ts';
import { isHostImport, ModuleRefusedError } from './compile/module-check.ts';
import type { ModulePayload } from './protocol.ts';
import { mainIndex } from '../manifest.ts';
import { resolveLimits } from './limits.ts';
import type { Prepare, PreparedModule } from './compile/prepare.ts';
import { WasmRewriteError } from './compile/wasm-rewrite.ts';

/** What the engine is asked to run (the API turns a CallRequest body into one). */
export interface EngineCall {
  plugin: PluginMeta;
  function: string;
  input: string | null;
  inputEncoding: 'utf8' | 'base64';
  /** Merged over the plugin's stored defaults. */
  config?: Record<string, string> | undefined;
  /** Replaces the plugin's stored list when given. */
  allowedHosts?: string[] | undefined;
  logLevel: CallLogLevel;
  limits: CallLimits;
  outputEncoding?: 'utf8' | 'base64' | undefined;
  /** Lets the plugin read the last HTTP response's headers (http_headers), as `extism call --enable-http-response-headers`. */
  httpResponseHeaders?: boolean | undefined;
  /**
   * The caller gave up (its client went away): a call still waiting for a worker ends at once with
   * the signal's reason; a call already running finishes.
   */
  signal?: AbortSignal | undefined;
}

export interface CallResult {
  output?: string;
  outputBase64?: string;
  logs: LogEntry[];
  logsTruncated: boolean;
  egress: EgressAuditEntry[];
  durationMs: number;
  queueMs: number;
  runMs: number;
}

/** Hooks for metrics: called on every worker restart and module preparation. */
export interface EngineObserver extends PoolObserver {
  /** A module was prepared (rewritten and compiled) in `ms`. */
  onCompile?(ms: number): void;
}

export interface EngineDeps {
  store: PluginStore;
  moduleCache: ModuleCache;
  /** Rewrites and compiles a module evicted from the cache (a ModulePreparer's, off the main thread). */
  prepare: Prepare;
  /** Tests only (AppOptions.egressHosts): egress resolves these names from this table, never DNS. */
  egressHosts?: Record<string, string | string[]> | null;
}

const isHttpImport = (i: { module: string; name: string }) => i.module === EXTISM_ENV && i.name === 'http_request';

/** What a single-module plugin's imports say: modules it needs linked (null: none), and whether it may make HTTP requests. */
interface PluginImports {
  unresolved: string | null;
  http: boolean;
}

/** What the workers run for a plugin (see CallEngine#modulesOf). */
interface PluginModules {
  moduleKey: string;
  module: ModulePayload;
  http: boolean;
}

/** The first exports by name, for a message (the answer's `exports` field has them all). */
function exportList(exports: readonly string[]): string {
  const shown = exports.slice(0, MESSAGE_EXPORTS).join(', ');
  return exports.length > MESSAGE_EXPORTS ? `${shown}, … (${exports.length} in all)` : shown;
}
const MESSAGE_EXPORTS = 20;

function hasKeys(record: Record<string, string>): boolean {
  for (const _ in record) return true;
  return false;
}

/** Longest an upload waits for its plugin's warm-ups (see warm). */
const WARM_WAIT_MS = 1_000;

/** ms kept between an egress request's cut-off and the call's deadline (see #egressOptions). */
function deadlineMargin(timeoutMs: number): number {
  return Math.min(50, Math.floor(timeoutMs / 10));
}

export class CallEngine {
  readonly #config: Config;
  readonly #deps: EngineDeps;
  readonly #pool: WorkerPool;
  readonly #preparing = new Map<string, Promise<PreparedModule>>();
  readonly #observers: EngineObserver[] = [];
  /** The limits of a call that asks for none and whose plugin sets none (workers know them: calls on them do not carry them). */
  readonly #defaultLimits: CallLimits;
  readonly #imports = new WeakMap<PluginMeta, PluginImports>();
  readonly #payloads = new WeakMap<PreparedModule, ModulePayload>();

  constructor(config: Config, deps: EngineDeps) {
    this.#config = config;
    this.#deps = deps;
    this.#defaultLimits = resolveLimits(config.engine.limits, {});
    this.#pool = new WorkerPool({
      size: config.engine.workers,
      queueMax: config.engine.queueMax,
      queueMaxBytes: config.engine.queueMaxBytes,
      maxOldGenerationSizeMb: config.engine.workerHeapMb,
      instanceCacheBytes: config.engine.workerInstanceCacheBytes,
      memoryCeilingPages: config.engine.limits.memoryPages.ceiling,
      resetTimeoutMs: config.engine.instanceResetTimeoutMs,
      maxBurst: config.engine.burstWorkers,
      defaultLimits: this.#defaultLimits,
      observer: { onWorkerRestart: (reason) => this.#observers.forEach((o) => o.onWorkerRestart?.(reason)) },
    });
    // A compiled module lives as long as the cache keeps it: workers let it go with it.
    deps.moduleCache.onEvict((id) => this.#pool.forget(id));
  }

  /** Subscribes to call outcomes and worker restarts (metrics, logs). */
  observe(observer: EngineObserver): void {
    this.#observers.push(observer);
  }

  /**
   * Not in the module cache: one preparation per module, however many calls wait for it. `id`: the
   * stored module's (a manifest plugin runs its main module); `linking`: one of a linked manifest's.
   */
  #prepareMissing(id: string, linking: boolean): Promise<PreparedModule> {
    let pending = this.#preparing.get(id);
    if (!pending) {
      pending = this.#compile(id, linking).finally(() => this.#preparing.delete(id));
      this.#preparing.set(id, pending);
    }
    return pending;
  }

  /** Evicted from the cache (or stored before this process started): prepare it again from the store. */
  async #compile(id: string, linking: boolean): Promise<PreparedModule> {
    // Bytes damaged on disk throw StoredBytesCorruptError, a STORE_ERROR.
    const bytes = await this.#deps.store.getBytes(id);
    if (!bytes) throw new AppError('PLUGIN_NOT_FOUND', `no plugin with id "${id}"`);
    // Stored under a larger MODULE_CACHE_BYTES: it would be compiled again on every call.
    if (!this.#deps.moduleCache.holds([bytes.length])) {
      throw new AppError(
        'PLUGIN_ERROR',
        `the plugin cannot be run: its module (${bytes.length} bytes) would not stay compiled within MODULE_CACHE_BYTES (${this.#config.moduleCacheBytes} bytes, ~12 bytes per byte of Wasm) and would be compiled again on every call`,
      );
    }
    let prepared: PreparedModule;
    try {
      prepared = await this.#deps.prepare(bytes, { linking });
    } catch (err) {
      // Stored before a limit it passes existed (or under other limits): refused here, on every call.
      if (err instanceof ModuleRefusedError || err instanceof WasmRewriteError || err instanceof WebAssembly.CompileError) {
        throw new AppError('PLUGIN_ERROR', `the plugin cannot be run: ${err.message}`);
      }
      throw err;
    }
    for (const o of this.#observers) o.onCompile?.(prepared.compileMs);
    this.#deps.moduleCache.set(id, prepared, bytes.length);
    return prepared;
  }

  /** What a single-module plugin's imports say, worked out once per record (records are replaced, never changed). */
  #importsOf(plugin: PluginMeta): PluginImports {
    let facts = this.#imports.get(plugin);
    if (!facts) {
      // A module stored as part of a linked manifest may import from its other modules: alone it cannot run.
      const unresolved = plugin.imports.filter((i) => !isHostImport(i));
      facts = {
        unresolved: unresolved.length > 0 ? [...new Set(unresolved.map((i) => `"${i.module}"`))].join(', ') : null,
        http: plugin.imports.some(isHttpImport),
      };
      this.#imports.set(plugin, facts);
    }
    return facts;
  }

  /** The payload a worker is sent for a prepared module, one object per module rather than one per call. */
  #payloadOf(prepared: PreparedModule): ModulePayload {
    let payload = this.#payloads.get(prepared);
    if (!payload) {
      payload = { compiled: prepared.module, layout: prepared.layout };
      this.#payloads.set(prepared, payload);
    }
    return payload;
  }

  /**
   * What the workers run for `plugin`, and the key they keep it by: its (main) module, and for a
   * manifest of several modules all of them, kept by the manifest's id. No promise when the module
   * is in the cache (the common case: a call's path stays synchronous up to the pool).
   */
  #modulesOf(plugin: PluginMeta): PluginModules | Promise<PluginModules> {
    const modules = plugin.manifest?.modules ?? [];
    if (modules.length > 1) return this.#linkedModulesOf(plugin, modules);
    const { unresolved, http } = this.#importsOf(plugin);
    if (unresolved !== null) {
      throw new AppError(
        'PLUGIN_ERROR',
        `plugin ${plugin.name ?? plugin.id} imports from modules ${unresolved}: it runs only as a module of a manifest that links them`,
      );
    }
    const moduleKey = mainModuleId(plugin);
    const cached = this.#deps.moduleCache.get(moduleKey);
    if (cached) return { moduleKey, module: this.#payloadOf(cached), http };
    return this.#prepareMissing(moduleKey, false).then((prepared) => ({ moduleKey, module: this.#payloadOf(prepared), http }));
  }

  async #linkedModulesOf(plugin: PluginMeta, modules: NonNullable<PluginMeta['manifest']>['modules']): Promise<PluginModules> {
    const cached = modules.map((m) => this.#deps.moduleCache.get(m.id));
    if (cached.includes(undefined)) await this.#checkSetFits(modules);
    const prepared = await Promise.all(modules.map((m, i) => cached[i] ?? this.#prepareMissing(m.id, true)));
    const mainAt = mainIndex(modules);
    return {
      http: prepared.some((p) => p.imports.some(isHttpImport)),
      moduleKey: plugin.id,
      module: {
        compiled: prepared[mainAt]!.module,
        layout: prepared[mainAt]!.layout,
        linked: {
          main: mainAt,
          modules: modules.map((m, i) => ({
            id: m.id,
            name: m.name,
            compiled: prepared[i]!.module,
            layout: prepared[i]!.layout,
          })),
        },
      },
    };
  }

  /** Stored under a larger MODULE_CACHE_BYTES: preparing the set would evict part of it, on every call. */
  async #checkSetFits(modules: NonNullable<PluginMeta['manifest']>['modules']): Promise<void> {
    const metas = await Promise.all(modules.map((m) => this.#deps.store.get(m.id)));
    if (this.#deps.moduleCache.holds(metas.map((meta) => meta?.size ?? 0))) return;
    throw new AppError(
      'PLUGIN_ERROR',
      `the plugin cannot be run: its manifest's modules would not stay compiled together within MODULE_CACHE_BYTES (${this.#config.moduleCacheBytes} bytes) and would be prepared again on every call`,
    );
  }

  #isDefault(limits: CallLimits): boolean {
    for (const name of CALL_LIMIT_NAMES) if (limits[name] !== this.#defaultLimits[name]) return false;
    return true;
  }

  /** `started`: performance.now() at the call's start, the origin of its deadline. */
  #egressOptions(request: EngineCall, started: number, http: boolean): EgressOptions | null {
    const { plugin } = request;
    if (!http) return null;
    const egress = this.#config.egress;
    return {
      allowedHosts: request.allowedHosts ?? plugin.allowedHosts,
      ceiling: egress.allowedHosts,
      allowPrivate: egress.allowPrivate,
      timeoutMs: egress.timeoutMs,
      // A little before the pool's deadline, so a request cut by it ends the call inside the worker
      // (TIMEOUT with the audit) rather than by terminating the worker.
      deadline: Date.now() - (performance.now() - started) + request.limits.timeoutMs - deadlineMargin(request.limits.timeoutMs),
      maxResponseBytes: request.limits.httpResponseBytes,
      maxRequests: egress.maxRequestsPerCall,
      maxRedirects: egress.maxRedirects,
      maxRequestBodyBytes: egress.maxRequestBodyBytes,
      hosts: this.#deps.egressHosts ?? null,
    };
  }

  async call(request: EngineCall): Promise<CallResult> {
    const started = performance.now();
    const { plugin, limits } = request;
    if (!plugin.exports.includes(request.function)) {
      throw new AppError(
        'FUNCTION_NOT_FOUND',
        `plugin ${plugin.name ?? plugin.id} has no function "${request.function.slice(0, 100)}"; exports: ${exportList(plugin.exports)}`,
        { details: { exports: plugin.exports } },
      );
    }
    const found = this.#modulesOf(plugin);
    const { moduleKey, module, http } = found instanceof Promise ? await found : found;
    // What holds its default stays out of the message (see CallMessage).
    const message: PoolTask['message'] = {
      kind: 'call',
      moduleKey,
      function: request.function,
      input: request.input,
      logLevel: request.logLevel,
    };
    if (request.inputEncoding === 'base64') message.inputEncoding = 'base64';
    const config = request.config ? { ...plugin.config, ...request.config } : plugin.config;
    if (hasKeys(config)) message.config = config;
    if (!this.#isDefault(limits)) message.limits = limits;
    const egress = this.#egressOptions(request, started, http);
    if (egress) message.egress = egress;
    if (request.httpResponseHeaders) message.httpResponseHeaders = true;
    if (request.outputEncoding) message.outputEncoding = request.outputEncoding;
    const { result, queueMs } = await this.#pool.run(
      {
        module,
        deadline: started + limits.timeoutMs,
        timeoutMs: limits.timeoutMs,
        inputBytes:
          request.input === null
            ? 0
            : request.inputEncoding === 'base64'
              ? request.input.length
              : Buffer.byteLength(request.input),
        message,
      },
      request.signal,
    );
    const durationMs = performance.now() - started;
    const base = { logs: result.logs ?? [], logsTruncated: result.logsTruncated ?? false, egress: result.egress ?? [] };
    if (!result.ok) {
      const error = result.error ?? { code: 'INTERNAL_ERROR' as const, message: 'the call failed' };
      throw new AppError(error.code, error.message, { details: { ...error.details, ...base } });
    }
    const out: CallResult = { ...base, durationMs, queueMs, runMs: result.runMs };
    if (result.output !== undefined) out.output = result.output;
    if (result.outputBase64 !== undefined) out.outputBase64 = result.outputBase64;
    return out;
  }

  /**
   * Makes instances of a plugin just stored on the workers (one warm-up per worker, each under the
   * call deadline like a call), so its first call does not pay for them. Resolves when they are
   * done, or after `waitMs` (a plugin whose start-up is slow must not hold its upload for long).
   */
  async warm(plugin: PluginMeta, prepared: PreparedModule, waitMs = WARM_WAIT_MS): Promise<void> {
    // The instance a call on the defaults uses (instances are kept per memory cap).
    const limits = this.#defaultLimits;
    const started = performance.now();
    // A linked manifest warms the set of its modules (prepared at its upload, so in the module cache).
    const { moduleKey, module } =
      (plugin.manifest?.modules.length ?? 0) > 1
        ? await this.#modulesOf(plugin)
        : { moduleKey: mainModuleId(plugin), module: { compiled: prepared.module, layout: prepared.layout } };
    const warmUps = Array.from({ length: this.#config.engine.workers }, () =>
      this.#pool
        .run({
          module,
          deadline: started + limits.timeoutMs,
          timeoutMs: limits.timeoutMs,
          inputBytes: 0,
          message: { kind: 'call', moduleKey, function: '', input: null, logLevel: 'off', warm: true },
        })
        .catch(() => undefined),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(warmUps), new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  stats(): PoolStats {
    return this.#pool.stats();
  }

  /** Resolves once a worker can serve calls; rejects after `timeoutMs` (the readiness check). */
  whenReady(timeoutMs: number): Promise<void> {
    return this.#pool.whenReady(timeoutMs);
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}
