// The service's Prometheus metrics: one Registry per app (tests build several apps in one process),
// every service metric under one prefix, label values only from bounded sets.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EgressOutcome } from './egress/fetch.ts';
import type { RestartReason } from './engine/pool/pool.ts';
import type { StoreHealth, StoreObserver, StoreStats } from './store/store.ts';

export const METRIC_PREFIX = 'wasmhost_';

/** Label value for calls whose plugin or function was never resolved (caller input never becomes a label). */
export const UNRESOLVED = '';

/** Outcome label of a call: `ok`, or the lower-cased error code it ended with (a closed set, see errors.ts). */
export type OutcomeLabel = string;

export interface CallObservation {
  /** `pluginLabel()` of the resolved plugin, or UNRESOLVED. */
  plugin: string;
  /** An export of the plugin, or UNRESOLVED. */
  function: string;
  outcome: OutcomeLabel;
  queueSeconds?: number | undefined;
  runSeconds?: number | undefined;
}

/** A plugin's call series: the counter's label sets by function and outcome, and the duration histogram's by phase. */
interface CallSeries {
  byOutcome: Map<string, { plugin: string; function: string; outcome: string }>;
  queue: { plugin: string; phase: string };
  run: { plugin: string; phase: string };
}

/** Gauges and counters read when Prometheus scrapes, from whatever part owns the numbers. */
export interface MetricSources {
  store?: () => StoreStats;
  /** `pluginLabel()` of every stored plugin: series of other plugins (deleted, renamed) are dropped at scrape. */
  pluginLabels?: () => Promise<Set<string>>;
  moduleCache?: () => { entries: number; bytes: number; hits: number; misses: number };
  workerPool?: () => {
    size: number;
    ready: number;
    busy: number;
    busyWithoutCall: number;
    queued: number;
    instanceBytes: number;
  };
}

/** Every reason the pool replaces a worker for (typed exhaustive, so the help text cannot drift from pool.ts). */
const RESTART_REASONS: Record<RestartReason, string> = {
  timeout: 'a call passed its deadline and the worker was terminated',
  stuck: 'the worker ran plugin code with no call past INSTANCE_RESET_TIMEOUT_MS, or left a call unclaimed',
  out_of_memory: 'the worker ran out of JS heap',
  crash: 'the worker threw',
  exit: 'the worker exited',
};

/** Route label of requests that matched no route. */
export const UNMATCHED_ROUTE = '(unmatched)';
const STATUS_CLASSES = ['', '1xx', '2xx', '3xx', '4xx', '5xx'];

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Plugins are labelled by name when they have one, else by the first 12 hex digits of their id. */
export function pluginLabel(plugin: { id: string; name: string | null }): string {
  return plugin.name ?? plugin.id.slice(0, 12);
}

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly #sources: MetricSources = {};
  /** Label sets of a plugin's call series (kept so they can be removed, and reused per call rather than built). */
  readonly #callSeries = new Map<string, CallSeries>();

  readonly #http: Histogram<'method' | 'route' | 'status_class'>;
  readonly #calls: Counter<'plugin' | 'function' | 'outcome'>;
  readonly #callSeconds: Histogram<'plugin' | 'phase'>;
  readonly #compileSeconds: Histogram;
  readonly #workerRestarts: Counter<'reason'>;
  readonly #egress: Counter<'outcome'>;
  readonly #pluginLogLines: Counter<'level'>;
  readonly #pluginLogTruncations: Counter;
  readonly #connectionsRefused: Counter<'reason'>;
  /** Give to the store: its operations' latency and how late other replicas' changes arrive. */
  readonly storeObserver: StoreObserver;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    const sources = this.#sources;
    // Numbers owned elsewhere (store, cache, pool), read when /metrics is scraped.
    const scrapeGauge = (name: string, help: string, read: () => number | undefined): void => {
      new Gauge({
        name: `${METRIC_PREFIX}${name}`,
        help,
        registers,
        collect() {
          const value = read();
          if (value !== undefined) this.set(value);
        },
      });
    };

    this.#http = new Histogram({
      name: `${METRIC_PREFIX}http_request_duration_seconds`,
      help: 'HTTP requests by method, route template and status class.',
      labelNames: ['method', 'route', 'status_class'],
      registers,
    });
    this.#calls = new Counter({
      name: `${METRIC_PREFIX}calls_total`,
      help: 'Plugin function calls by plugin, function and outcome (ok or the lower-cased error code).',
      labelNames: ['plugin', 'function', 'outcome'],
      registers,
    });
    this.#callSeconds = new Histogram({
      name: `${METRIC_PREFIX}call_duration_seconds`,
      help: 'Time a call spent waiting for a worker (phase="queue") and running in it (phase="run").',
      labelNames: ['plugin', 'phase'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#compileSeconds = new Histogram({
      name: `${METRIC_PREFIX}compile_duration_seconds`,
      help: 'Time to compile a plugin module (at upload, and on a module cache miss).',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#workerRestarts = new Counter({
      name: `${METRIC_PREFIX}worker_restarts_total`,
      help: `Worker threads replaced, by reason: ${Object.entries(RESTART_REASONS)
        .map(([reason, why]) => `${reason} (${why})`)
        .join(', ')}.`,
      labelNames: ['reason'],
      registers,
    });
    this.#egress = new Counter({
      name: `${METRIC_PREFIX}egress_requests_total`,
      help: 'HTTP requests attempted by plugins: ok (a response handed to the plugin), refused (policy or limit, nothing sent), failed (sent, then failed: DNS, connect, timeout, response over the cap).',
      labelNames: ['outcome'],
      registers,
    });
    this.#pluginLogLines = new Counter({
      name: `${METRIC_PREFIX}plugin_log_lines_total`,
      help: "Log lines captured from plugins (after the call's log level filter), by level.",
      labelNames: ['level'],
      registers,
    });
    this.#pluginLogTruncations = new Counter({
      name: `${METRIC_PREFIX}plugin_log_truncations_total`,
      help: 'Calls whose captured plugin logs hit the count or byte cap.',
      registers,
    });
    this.#connectionsRefused = new Counter({
      name: `${METRIC_PREFIX}connections_refused_total`,
      help: 'Client connections closed as they came, by reason: max_connections (MAX_CONNECTIONS were open), per_address (MAX_CONNECTIONS_PER_ADDRESS were open from its address).',
      labelNames: ['reason'],
      registers,
    });

    scrapeGauge('plugins_stored', 'Plugins in the store.', () => sources.store?.().plugins);
    scrapeGauge('plugins_stored_bytes', 'Bytes of Wasm held by the store.', () => sources.store?.().bytes);
    scrapeGauge(
      'plugins_damaged',
      'Stored plugins whose bytes were found missing or damaged (at start or on a read) and not repaired since.',
      () => sources.store?.().damaged,
    );
    // Counted by the cache itself; a counter read at scrape time.
    const scrapeCounter = (name: string, help: string, read: () => number | undefined): void => {
      new Counter({
        name: `${METRIC_PREFIX}${name}`,
        help,
        registers,
        collect() {
          const value = read();
          if (value === undefined) return;
          this.reset();
          this.inc(value);
        },
      });
    };
    scrapeCounter(
      'module_cache_hits_total',
      'Calls that found their compiled module in the cache.',
      () => sources.moduleCache?.().hits,
    );
    scrapeCounter(
      'module_cache_misses_total',
      'Calls that had to load and compile their module.',
      () => sources.moduleCache?.().misses,
    );
    scrapeGauge('module_cache_entries', 'Compiled modules held in the cache.', () => sources.moduleCache?.().entries);
    scrapeGauge(
      'module_cache_bytes',
      'Wasm source bytes of the modules held in the cache (its size measure).',
      () => sources.moduleCache?.().bytes,
    );
    scrapeGauge('workers', 'Worker threads in the pool.', () => sources.workerPool?.().size);
    scrapeGauge(
      'workers_ready',
      'Core worker threads started and able to take a call (less than wasmhost_workers while a replacement starts).',
      () => sources.workerPool?.().ready,
    );
    scrapeGauge('workers_busy', 'Worker threads running a call.', () => sources.workerPool?.().busy);
    scrapeGauge(
      'workers_busy_without_call',
      'Worker threads running plugin code with no call (an instance reset or rebuild); past INSTANCE_RESET_TIMEOUT_MS they are replaced.',
      () => sources.workerPool?.().busyWithoutCall,
    );
    scrapeGauge(
      'worker_instance_bytes',
      'Memory the workers keep in cached plugin instances (linear memory, snapshots, tables), at most WORKER_INSTANCE_CACHE_BYTES each.',
      () => sources.workerPool?.().instanceBytes,
    );
    scrapeGauge('queue_depth', 'Calls waiting for a free worker.', () => sources.workerPool?.().queued);

    const storeSeconds = new Histogram({
      name: `${METRIC_PREFIX}store_operation_duration_seconds`,
      help: 'PostgreSQL store work by operation (get, get_bytes, list, put, delete, sync, poll, check, migrate) and outcome (ok, unavailable, busy: refused with every pooled connection in use, error).',
      labelNames: ['operation', 'outcome'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    const changeLag = new Histogram({
      name: `${METRIC_PREFIX}store_change_lag_seconds`,
      help: "Time from another replica's commit to this replica applying it, by what brought it: notify, poll (the fallback) or reconnect.",
      labelNames: ['source'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.storeObserver = {
      onQuery: (operation, outcome, seconds) => storeSeconds.observe({ operation, outcome }, seconds),
      onChangeApplied: (source, seconds) => changeLag.observe({ source }, seconds),
    };
  }

  /** A shared store's connection state, from the store itself (STORE=postgres: the filesystem store has none). */
  watchStoreHealth(read: () => StoreHealth): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: (health: StoreHealth) => number): void => {
      new Gauge({
        name: `${METRIC_PREFIX}${name}`,
        help,
        registers,
        collect() {
          this.set(value(read()));
        },
      });
    };
    gauge('store_up', '1 when the last PostgreSQL statement reached the database, else 0.', (h) => Number(h.up));
    gauge('store_listening', '1 while the change listener is connected (else changes arrive by the STORE_POLL_MS poll).', (h) =>
      Number(h.listening),
    );
    gauge('store_pool_in_use', 'PostgreSQL connections running a query.', (h) => h.poolTotal - h.poolIdle);
    gauge('store_pool_idle', 'PostgreSQL connections open and idle.', (h) => h.poolIdle);
    gauge(
      'store_pool_waiting',
      'Store operations waiting for a PostgreSQL connection (PG_POOL_MAX reached).',
      (h) => h.poolWaiting,
    );
  }

  /** Lets the part that owns a number expose it; read at scrape time. */
  watch(sources: MetricSources): void {
    Object.assign(this.#sources, sources);
  }

  /** `route`: the route template, or UNMATCHED_ROUTE (a caller never mints label values). */
  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    // A new label object per request: cheaper than finding a cached one by a key built per request.
    this.#http.observe({ method, route, status_class: STATUS_CLASSES[Math.floor(statusCode / 100)] ?? 'other' }, seconds);
  }

  observeCall(call: CallObservation): void {
    let series = this.#callSeries.get(call.plugin);
    if (!series) {
      series = {
        byOutcome: new Map(),
        queue: { plugin: call.plugin, phase: 'queue' },
        run: { plugin: call.plugin, phase: 'run' },
      };
      this.#callSeries.set(call.plugin, series);
    }
    const key = `${call.function}\n${call.outcome}`;
    let labels = series.byOutcome.get(key);
    if (!labels) series.byOutcome.set(key, (labels = { plugin: call.plugin, function: call.function, outcome: call.outcome }));
    this.#calls.inc(labels);
    if (call.queueSeconds !== undefined) this.#callSeconds.observe(series.queue, call.queueSeconds);
    if (call.runSeconds !== undefined) this.#callSeconds.observe(series.run, call.runSeconds);
  }

  observeCompile(seconds: number): void {
    this.#compileSeconds.observe(seconds);
  }

  connectionRefused(reason: 'max_connections' | 'per_address'): void {
    this.#connectionsRefused.inc({ reason });
  }

  workerRestarted(reason: RestartReason): void {
    this.#workerRestarts.inc({ reason });
  }

  egressRequests(outcome: EgressOutcome, count = 1): void {
    this.#egress.inc({ outcome }, count);
  }

  pluginLogLines(level: string, count = 1): void {
    this.#pluginLogLines.inc({ level }, count);
  }

  pluginLogsTruncated(): void {
    this.#pluginLogTruncations.inc();
  }

  /** The exposition text; first drops the series of plugins no longer stored. */
  async render(): Promise<string> {
    await this.#pruneGonePlugins();
    return this.registry.metrics();
  }

  async #pruneGonePlugins(): Promise<void> {
    if (!this.#sources.pluginLabels || this.#callSeries.size === 0) return;
    const alive = await this.#sources.pluginLabels();
    for (const [plugin, series] of this.#callSeries) {
      if (plugin === UNRESOLVED || alive.has(plugin)) continue;
      for (const labels of series.byOutcome.values()) this.#calls.remove(labels);
      this.#callSeconds.remove(series.queue);
      this.#callSeconds.remove(series.run);
      this.#callSeries.delete(plugin);
    }
  }
}
