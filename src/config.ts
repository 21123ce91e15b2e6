// Environment → one typed, validated Config, read once at start (main.ts) and passed down.
// No other module reads process.env.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { InvalidHostPatternError, validateHostPatterns } from './host-patterns.ts';

const MiB = 1024 * 1024;

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** A limit a caller may lower per request but never raise above `ceiling`. */
export interface Limit {
  default: number;
  ceiling: number;
}

/** Where plugins live: the filesystem (embedded default) or PostgreSQL shared by replicas. */
export type StoreConfig =
  | { kind: 'filesystem' }
  | {
      kind: 'postgres';
      /** DATABASE_URL: a secret (it may hold a password); never logged. */
      url: string;
      /** Connections each replica may hold open for queries (plus one that listens for changes). */
      poolMax: number;
      /** Server-side limit of one statement; the client gives up a second later. */
      statementTimeoutMs: number;
      connectTimeoutMs: number;
      /** How often a replica checks for changes it was not notified of (the staleness bound). */
      pollMs: number;
      /** Plugin bytes kept on local disk (DATA_DIR/blob-cache), least recently used go first. */
      blobCacheBytes: number;
    };
/** One per-call limit: a row of CALL_LIMITS. */
export interface CallLimitSpec {
  /** The call request field a caller lowers it with. */
  field: string;
  /** Environment variable of the default; `<env>_CEILING` sets the ceiling. */
  env: string;
  /** The embedded default and ceiling (what the docs show). */
  default: number;
  ceiling: number;
  /** The smallest value a caller may ask for (the operator's default and ceiling are at least 1). */
  min: number;
  /** How docs show a value. */
  unit: 'ms' | 'bytes' | 'pages' | 'count';
  /** What it limits, for the request field's description and the README. */
  description: string;
}

/**
 * The per-call limits, one row each: config reads the environment from it, api/call.ts builds the
 * request fields and their documentation from it, the engine resolves a call's values with it, and
 * the README's configuration rows are generated from it (npm run openapi).
 */
export const CALL_LIMITS = {
  timeoutMs: {
    field: 'timeoutMs',
    env: 'CALL_TIMEOUT_MS',
    default: 5_000,
    ceiling: 60_000,
    min: 1,
    unit: 'ms',
    description: "The call's deadline, waiting for a worker included.",
  },
  memoryPages: {
    field: 'memoryMaxPages',
    env: 'CALL_MEMORY_PAGES',
    default: 256,
    ceiling: 4096,
    min: 1,
    unit: 'pages',
    description: "Cap on the plugin's own linear memory, in 64 KiB pages.",
  },
  outputBytes: {
    field: 'maxOutputBytes',
    env: 'CALL_OUTPUT_BYTES',
    default: 4 * MiB,
    ceiling: 16 * MiB,
    min: 0,
    unit: 'bytes',
    description: 'Largest output (`422 OUTPUT_TOO_LARGE` beyond it).',
  },
  httpResponseBytes: {
    field: 'maxHttpResponseBytes',
    env: 'CALL_HTTP_RESPONSE_BYTES',
    default: MiB,
    ceiling: 16 * MiB,
    min: 0,
    unit: 'bytes',
    description:
      'Largest response body a plugin HTTP request may receive: a body of exactly this size passes, a larger one ends the call with `422 EGRESS_ERROR` (`reason: response_too_large`).',
  },
  varBytes: {
    field: 'maxVarBytes',
    env: 'CALL_VAR_BYTES',
    default: MiB,
    ceiling: 16 * MiB,
    min: 0,
    unit: 'bytes',
    description: 'Bytes of Extism vars the plugin may hold.',
  },
  logEntries: {
    field: 'maxLogEntries',
    env: 'CALL_LOG_ENTRIES',
    default: 1000,
    ceiling: 10_000,
    min: 0,
    unit: 'count',
    description: 'Log entries kept for the answer (WASI stdout/stderr lines count too); past it `logsTruncated` is true.',
  },
  logBytes: {
    field: 'maxLogBytes',
    env: 'CALL_LOG_BYTES',
    default: 256 * 1024,
    ceiling: 4 * MiB,
    min: 0,
    unit: 'bytes',
    description: 'Bytes of log messages kept for the answer; past it `logsTruncated` is true.',
  },
} as const satisfies Record<string, CallLimitSpec>;

export type CallLimitName = keyof typeof CALL_LIMITS;
export const CALL_LIMIT_NAMES = Object.keys(CALL_LIMITS) as CallLimitName[];
/** The request field of each limit, e.g. `memoryMaxPages`. */
export type CallLimitField = (typeof CALL_LIMITS)[CallLimitName]['field'];
/** One call's limits, resolved from what it asked for and the operator's settings. */
export type CallLimits = Record<CallLimitName, number>;

/**
 * What one module may declare, checked before V8 builds anything from it (upload, and a stored
 * module prepared again). Each has a JS-heap cost in every worker instance, and a worker cannot
 * survive running out of heap inside V8 (it aborts the whole process), so they are bounded.
 */
export interface ModuleLimits {
  /** Functions, imported and defined (MODULE_MAX_FUNCTIONS). */
  functions: number;
  /** Type definitions (MODULE_MAX_TYPES). */
  types: number;
  /** Globals the module defines (MODULE_MAX_GLOBALS); mutable ones are restored after every call. */
  globals: number;
  /** Exports (MODULE_MAX_EXPORTS). */
  exports: number;
  /**
   * Bytes of the import and export sections, names mostly (MODULE_MAX_INTERFACE_BYTES): a plugin's record
   * carries them into every listing, describe and FUNCTION_NOT_FOUND answer.
   */
  interfaceBytes: number;
  /** Elements all tables may ever hold together, and entries all element segments hold (MODULE_MAX_TABLE_ELEMENTS). */
  tableElements: number;
  /** Exception tags (MODULE_MAX_TAGS). */
  tags: number;
  /**
   * Per function, what V8's compilers spend memory and time on (engine/compile/function-cost.ts): blocks,
   * loops, ifs and trys open at once (MODULE_MAX_CONTROL_DEPTH); locals times control instructions
   * (MODULE_MAX_LOCALS_X_CONTROL); assignments of locals inside loops, once per loop around each (MODULE_MAX_LOOP_ASSIGNMENTS).
   */
  controlDepth: number;
  localsTimesControl: number;
  loopAssignments: number;
}

/** JS heap one instance may need at the module limits, per item (measured on Node 24, rounded up). */
const HEAP_BYTES_PER = { tableElement: 48, export: 100, global: 200, tag: 32 };

/**
 * Memory a compiled module takes, estimated from its Wasm size: measured here (RSS of 20 modules
 * compiled eagerly, Node 24) as ~0.7 MiB for a 12 KB module and ~12x the source for a 1.1 MB one.
 */
export function compiledBytes(sourceBytes: number): number {
  return COMPILED_MODULE_OVERHEAD_BYTES + COMPILED_BYTES_PER_SOURCE_BYTE * sourceBytes;
}
const COMPILED_MODULE_OVERHEAD_BYTES = 640 * 1024;
const COMPILED_BYTES_PER_SOURCE_BYTE = 12;

/**
 * The largest Wasm module (bytes) whose compiled estimate a cache of `cacheBytes` holds (0: no cache,
 * no bound). A larger one would be compiled again on every call (seconds of the preparation thread,
 * ahead of every other upload and cache miss), so it is not accepted at all (MAX_PLUGIN_BYTES is at most this).
 */
export function largestCacheableModule(cacheBytes: number): number {
  if (cacheBytes === 0) return Number.MAX_SAFE_INTEGER;
  return Math.max(0, Math.floor((cacheBytes - COMPILED_MODULE_OVERHEAD_BYTES) / COMPILED_BYTES_PER_SOURCE_BYTE));
}

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  store: StoreConfig;
  logLevel: LogLevel;
  /** MAX_PLUGIN_BYTES, at most the largest module MODULE_CACHE_BYTES holds compiled (see largestCacheableModule). */
  maxPluginBytes: number;
  /** Uploads read, checked and compiled at once; more get 503 OVERLOADED (each may hold MAX_PLUGIN_BYTES). */
  uploadConcurrency: number;
  /** Compiled modules kept in memory (bytes of Wasm source they came from). */
  moduleCacheBytes: number;
  /** Plugins per page of GET /plugins (`limit`). */
  listLimit: Limit;
  /** Client connections held at once; past them new ones are closed as they come (the process must keep descriptors). */
  connections: {
    /** MAX_CONNECTIONS: all clients together. */
    max: number;
    /** MAX_CONNECTIONS_PER_ADDRESS: one client address (the TCP peer); 0: no cap of its own. */
    perAddress: number;
    /** The process's open-files limit when it was read at start; null: unknown. */
    descriptorLimit: number | null;
    /** Descriptors the process may need besides its client connections (workers, store, logs). */
    descriptorsReserved: number;
  };
  /** How a request must arrive: clients that send too slowly are cut and free what they hold. */
  requests: {
    /** A request's headers must be complete within this (from its first byte). */
    headersTimeoutMs: number;
    /** A body must be complete within this from its headers. */
    bodyTimeoutMs: number;
    /** A body still arriving must bring at least this many bytes per second, over every window of 5 s (0: off). */
    bodyMinBytesPerSecond: number;
    /** A response must be taken by the client within this from its first byte, or its connection is closed. */
    responseTimeoutMs: number;
    /** A response the client is slow to take must go out at this many bytes per second or more, over every 5 s (0: off). */
    responseMinBytesPerSecond: number;
    /** How long a connection may sit idle between requests. */
    keepAliveTimeoutMs: number;
  };
  /** A plugin's config (upload) and a call's config: keys, and bytes of keys and values together. */
  pluginConfig: { maxKeys: number; maxBytes: number };
  engine: {
    workers: number;
    /** Calls waiting for a worker beyond which new calls get 503 OVERLOADED. */
    queueMax: number;
    /** Input bytes the waiting calls may hold together; beyond it new calls get 503 OVERLOADED. */
    queueMaxBytes: number;
    /** JS heap of each worker thread (MB); plugin memory is capped per call, not by this. */
    workerHeapMb: number;
    /** Memory the cached plugin instances of one worker may keep (live memory, snapshots, tables). */
    workerInstanceCacheBytes: number;
    /** How long a worker may run plugin code between calls (an instance reset or rebuild) before it is replaced. */
    instanceResetTimeoutMs: number;
    moduleLimits: ModuleLimits;
    /** How long preparing one module (check, rewrite, compile) may take on the preparation thread. */
    prepareTimeoutMs: number;
    /** Extra workers started while every worker is held by a long call (0: never). */
    burstWorkers: number;
    maxInputBytes: number;
    limits: Record<CallLimitName, Limit>;
  };
  egress: {
    /** Operator ceiling: host patterns a call may ever reach. */
    allowedHosts: string[];
    allowPrivate: boolean;
    timeoutMs: number;
    maxRequestsPerCall: number;
    maxRedirects: number;
    maxRequestBodyBytes: number;
  };
  ops: {
    /** token → role; empty (the service runs open) only when neither AUTH_TOKENS nor AUTH_TOKENS_FILE is set. */
    authTokens: Map<string, Role>;
    metricsToken: string | null;
    forwardPluginLogs: boolean;
    rateLimitMax: number;
    rateLimitWindowMs: number;
    /** Failed token attempts per client address per rate-limit window before it gets 429s; 0 = off. */
    authFailureMax: number;
    /**
     * Which peers' X-Forwarded-For to believe for the client address (rate limits, failed-token limits,
     * logs): false (none), true (any), a hop count, or addresses/CIDRs of the proxies.
     */
    trustProxy: boolean | number | string[];
    shutdownDrainMs: number;
    maxEventLoopDelayMs: number;
    maxHeapUsedBytes: number;
    /** Rate-limit and failed-token counters shared by all replicas; null: each process counts alone. */
    redis: { url: string; keyPrefix: string } | null;
    /**
     * Host names (lower case, no port) the service answers to while it runs open, so a page whose name
     * an attacker rebinds to this address cannot use it; null: any.
     */
    allowedHostNames: string[] | null;
  };
}

export type Role = 'admin' | 'invoke';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function int(env: Env, key: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${key} must be a non-negative integer, got "${raw}"`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(`${key} must be between ${min} and ${max}, got ${value}`);
  return value;
}

function bool(env: Env, key: string, fallback: boolean): boolean {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(`${key} must be true or false, got "${raw}"`);
}

function oneOf<T extends string>(env: Env, key: string, allowed: readonly T[], fallback: T): T {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${key} must be one of ${allowed.join(', ')}, got "${raw}"`);
  }
  return raw as T;
}

/** `<NAME>` is the default a call gets, `<NAME>_CEILING` the most a caller may ask for. */
function limit(env: Env, key: string, def: number, ceiling: number, min = 1): Limit {
  const c = int(env, `${key}_CEILING`, ceiling, min);
  const d = int(env, key, Math.min(def, c), min);
  if (d > c) throw new ConfigError(`${key} (${d}) must not exceed ${key}_CEILING (${c})`);
  return { default: d, ceiling: c };
}

function callLimits(env: Env): Record<CallLimitName, Limit> {
  const limits = {} as Record<CallLimitName, Limit>;
  for (const name of CALL_LIMIT_NAMES) {
    const spec: CallLimitSpec = CALL_LIMITS[name];
    limits[name] = limit(env, spec.env, spec.default, spec.ceiling, Math.max(spec.min, 1));
  }
  return limits;
}

function list(env: Env, key: string, fallback: string[]): string[] {
  const raw = env[key];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A host pattern list (host-patterns.ts grammar), checked at start so a bad ceiling fails fast. */
function hostPatterns(env: Env, key: string, fallback: string[]): string[] {
  const patterns = list(env, key, fallback);
  try {
    validateHostPatterns(patterns);
  } catch (err) {
    throw err instanceof InvalidHostPatternError ? new ConfigError(`${key}: ${err.message}`) : err;
  }
  return patterns;
}

/**
 * TRUST_PROXY: false (default), true, a hop count, or a comma-separated list of proxy addresses, CIDRs
 * or the names loopback / linklocal / uniquelocal (as Fastify's trustProxy takes them).
 */
function trustProxy(env: Env): boolean | number | string[] {
  const raw = env.TRUST_PROXY?.trim();
  if (raw === undefined || raw === '' || /^(false|0|no|off)$/i.test(raw)) return false;
  if (/^(true|yes|on)$/i.test(raw)) return true;
  if (/^\d+$/.test(raw)) return int(env, 'TRUST_PROXY', 0, 1, 64);
  const entries = list(env, 'TRUST_PROXY', []);
  for (const entry of entries) {
    if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) continue;
    const valid = entry.includes('/') ? isValidCidr(entry) : ipaddr.isValid(entry);
    if (!valid) throw new ConfigError(`TRUST_PROXY: "${entry}" is not an address, a CIDR, loopback, linklocal or uniquelocal`);
  }
  return entries;
}

function isValidCidr(text: string): boolean {
  try {
    ipaddr.parseCIDR(text);
    return true;
  } catch {
    return false;
  }
}

/** Tokens shorter than this are refused: a bearer token is the whole secret. */
const MIN_TOKEN_LENGTH = 16;

/**
 * Why `token` cannot be a token, or null. Whitespace is refused because api/auth.ts reads the token of
 * `Authorization: Bearer <token>` up to the first whitespace: such a token could never match. The
 * reason never holds the token (it ends up in the log and on stderr).
 */
function tokenProblem(token: string): string | null {
  if (token.length < MIN_TOKEN_LENGTH) return `must be a token of ${MIN_TOKEN_LENGTH}+ chars`;
  if (/\s/.test(token)) return 'must be a token without whitespace (a bearer header cannot carry it)';
  return null;
}

/**
 * AUTH_TOKENS="token1:admin,token2:invoke"; AUTH_TOKENS_FILE holds the same, one per line. Errors name
 * an entry by its position (a line of the file), never by its text, which may hold a token.
 */
export function parseAuthTokens(text: string, source: string): Map<string, Role> {
  const tokens = new Map<string, Role>();
  const seenAt = new Map<string, string>();
  let entryNumber = 0;
  for (const [lineIndex, line] of text.split('\n').entries()) {
    // A comment is a whole line, or an entry, that starts with #.
    if (line.trim().startsWith('#')) continue;
    for (const entry of line
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '' && !s.startsWith('#'))) {
      entryNumber++;
      const at = source === 'AUTH_TOKENS' ? `entry ${entryNumber}` : `line ${lineIndex + 1}`;
      const sep = entry.lastIndexOf(':');
      if (sep <= 0) throw new ConfigError(`${source}: ${at} must be "<token of ${MIN_TOKEN_LENGTH}+ chars>:<role>"`);
      const token = entry.slice(0, sep);
      const role = entry.slice(sep + 1);
      const problem = tokenProblem(token);
      if (problem !== null) throw new ConfigError(`${source}: ${at} ${problem}`);
      // The role is not echoed: with token and role swapped ("admin:<token>") it would be the token.
      if (role !== 'admin' && role !== 'invoke') throw new ConfigError(`${source}: ${at}: role must be admin or invoke`);
      const earlier = seenAt.get(token);
      if (earlier !== undefined) {
        throw new ConfigError(`${source}: ${at} repeats the token of ${earlier} (one role per token)`);
      }
      seenAt.set(token, at);
      tokens.set(token, role);
    }
  }
  // A source that is set but holds nothing (an empty Secret, only comments) must not leave the service open.
  if (tokens.size === 0) {
    throw new ConfigError(`${source} is set but holds no tokens; unset it to run open (without access control)`);
  }
  return tokens;
}

/** METRICS_TOKEN: the rules of any other token, and not one of `tokensSource` (it would have two roles). */
function metricsTokenConfig(env: Env, authTokens: ReadonlyMap<string, Role>, tokensSource: string): string | null {
  const raw = env.METRICS_TOKEN;
  if (raw === undefined || raw === '') return null;
  const token = raw.trim();
  const problem = tokenProblem(token);
  if (problem !== null) throw new ConfigError(`METRICS_TOKEN ${problem}`);
  if (authTokens.has(token)) throw new ConfigError(`METRICS_TOKEN repeats a token of ${tokensSource} (one role per token)`);
  return token;
}

function storeConfig(env: Env): StoreConfig {
  const kind = oneOf(env, 'STORE', ['filesystem', 'postgres'] as const, 'filesystem');
  if (kind === 'filesystem') return { kind };
  const url = env.DATABASE_URL?.trim();
  if (!url) throw new ConfigError('STORE=postgres needs DATABASE_URL (postgres://user:password@host:5432/database)');
  if (!/^postgres(ql)?:\/\//.test(url)) throw new ConfigError('DATABASE_URL must start with postgres:// or postgresql://');
  // The driver parses it with URL and threw its TypeError out of the start-up; the value is not shown (a password).
  if (!URL.canParse(url))
    throw new ConfigError('DATABASE_URL is not a valid URL (its value is not shown: it may hold a password)');
  return {
    kind,
    url,
    poolMax: int(env, 'PG_POOL_MAX', 10, 1, 1000),
    statementTimeoutMs: int(env, 'PG_STATEMENT_TIMEOUT_MS', 5_000, 100, 600_000),
    connectTimeoutMs: int(env, 'PG_CONNECT_TIMEOUT_MS', 2_000, 100, 60_000),
    pollMs: int(env, 'STORE_POLL_MS', 250, 20, 60_000),
    blobCacheBytes: int(env, 'BLOB_CACHE_BYTES', 1024 * MiB, 0),
  };
}

/** The names of a loopback listener; any other listener answers to any name unless ALLOWED_HOST_NAMES says. */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

function allowedHostNames(env: Env, host: string): string[] | null {
  const given = list(env, 'ALLOWED_HOST_NAMES', []).map((name) => name.toLowerCase());
  if (given.includes('*')) return null;
  for (const name of given) {
    if (!/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)$/.test(name)) {
      throw new ConfigError(`ALLOWED_HOST_NAMES: "${name}" is not a host name (no port; IPv6 in brackets), or * for any`);
    }
  }
  if (given.length > 0) return given;
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  const loopback = bare === 'localhost' || (ipaddr.isValid(bare) && ipaddr.parse(bare).range() === 'loopback');
  if (!loopback) return null;
  const own = ipaddr.isValid(bare) && ipaddr.parse(bare).kind() === 'ipv6' ? `[${bare}]` : bare;
  return [...new Set([...LOOPBACK_NAMES, own.toLowerCase()])];
}

function redisConfig(env: Env): { url: string; keyPrefix: string } | null {
  const url = env.REDIS_URL?.trim();
  if (!url) return null;
  if (!/^rediss?:\/\//.test(url)) throw new ConfigError('REDIS_URL must start with redis:// or rediss://');
  const keyPrefix = env.REDIS_KEY_PREFIX?.trim() || 'wasmhost:';
  if (!/^[A-Za-z0-9:._-]{1,64}$/.test(keyPrefix))
    throw new ConfigError('REDIS_KEY_PREFIX must be 1-64 characters of A-Z, a-z, 0-9, ":", ".", "_", "-"');
  return { url, keyPrefix };
}

/**
 * The maxima are V8's own limits less what the engine's rewrite adds (a few functions, globals, exports);
 * for the per-function limits, what V8's compilers may spend on one function (~1-2 GB).
 */
function moduleLimits(env: Env): ModuleLimits {
  return {
    functions: int(env, 'MODULE_MAX_FUNCTIONS', 100_000, 1, 999_000),
    types: int(env, 'MODULE_MAX_TYPES', 20_000, 1, 999_000),
    globals: int(env, 'MODULE_MAX_GLOBALS', 10_000, 0, 999_000),
    exports: int(env, 'MODULE_MAX_EXPORTS', 10_000, 1, 999_000),
    interfaceBytes: int(env, 'MODULE_MAX_INTERFACE_BYTES', 256 * 1024, 1024, 16 * MiB),
    tableElements: int(env, 'MODULE_MAX_TABLE_ELEMENTS', 100_000, 0, 10_000_000),
    tags: int(env, 'MODULE_MAX_TAGS', 10_000, 0, 999_000),
    // Defaults: ~40x the largest real function measured (README, Security); at most: ~1-2 GB of compiler memory.
    controlDepth: int(env, 'MODULE_MAX_CONTROL_DEPTH', 10_000, 1, 100_000),
    localsTimesControl: int(env, 'MODULE_MAX_LOCALS_X_CONTROL', 10_000_000, 1, 100_000_000),
    loopAssignments: int(env, 'MODULE_MAX_LOOP_ASSIGNMENTS', 1_000_000, 0, 10_000_000),
  };
}

/** A module at every limit must fit in a quarter of a worker's heap (the rest: other instances, calls). */
function checkModuleHeap(limits: ModuleLimits, workerHeapMb: number): void {
  const bytes =
    limits.tableElements * HEAP_BYTES_PER.tableElement +
    limits.exports * HEAP_BYTES_PER.export +
    limits.globals * HEAP_BYTES_PER.global +
    limits.tags * HEAP_BYTES_PER.tag;
  const budget = (workerHeapMb * MiB) / 4;
  if (bytes > budget) {
    throw new ConfigError(
      `MODULE_MAX_TABLE_ELEMENTS, MODULE_MAX_EXPORTS, MODULE_MAX_GLOBALS and MODULE_MAX_TAGS allow a module ` +
        `~${Math.ceil(bytes / MiB)} MiB of JS heap per instance, more than a quarter of WORKER_HEAP_MB (${workerHeapMb}): ` +
        `lower them or raise WORKER_HEAP_MB`,
    );
  }
}

export interface ConfigSources {
  /** Reads AUTH_TOKENS_FILE; injected so tests need no file system. */
  readFile?: (file: string) => string;
  /** The process's open-files limit (main.ts reads it at start); absent or null: unknown. */
  descriptorLimit?: number | null;
}

/** Descriptors the process keeps for itself: stdio, the listener, the main event loop, logs, DNS, store probes. */
const RESERVED_DESCRIPTORS = 64;
/** Per worker thread: its event loop's (5 measured on Node 24) and a plugin's HTTP connection, rounded up. */
const DESCRIPTORS_PER_WORKER = 8;
/** Per client connection: its socket and a file it may hold open (a download's blob, an upload's temp file). */
export const DESCRIPTORS_PER_CONNECTION = 2;
/** MAX_CONNECTIONS' default when the descriptor limit is unknown, and its largest default otherwise. */
const MAX_CONNECTIONS_DEFAULT = 1024;
const MAX_CONNECTIONS_DEFAULT_CEILING = 16_384;

/** What the process needs besides its connections, from the settings that open descriptors. */
function descriptorsReserved(config: Omit<Config, 'connections'>): number {
  const { workers, burstWorkers } = config.engine;
  // As the pool may run them: core, burst, up to 4 per core while calls wait on HTTP, and the standby.
  const workerThreads = workers + burstWorkers + 4 * workers + 1;
  const store = config.store.kind === 'postgres' ? config.store.poolMax + 2 : 0;
  const redis = config.ops.redis === null ? 0 : 2;
  return RESERVED_DESCRIPTORS + DESCRIPTORS_PER_WORKER * workerThreads + store + redis + 2 * config.uploadConcurrency;
}

/**
 * MAX_CONNECTIONS defaults to what the open-files limit leaves after the process's own needs; one past
 * the limit used to end the process (EMFILE thrown in a timer). MAX_CONNECTIONS_PER_ADDRESS defaults to
 * half of it, so one client cannot take them all, and to no cap behind a trusted proxy (every client
 * then shares the proxy's address).
 */
function connectionsConfig(env: Env, rest: Omit<Config, 'connections'>, descriptorLimit: number | null): Config['connections'] {
  const reserved = descriptorsReserved(rest);
  const fit = descriptorLimit === null ? null : Math.floor((descriptorLimit - reserved) / DESCRIPTORS_PER_CONNECTION);
  if (fit !== null && fit < 1 && !env.MAX_CONNECTIONS?.trim()) {
    throw new ConfigError(
      `the process may open ${descriptorLimit} files (ulimit -n), and wasmhost needs about ${reserved} besides its connections ` +
        `with these WORKERS, BURST_WORKERS and store settings: raise the limit, lower them, or set MAX_CONNECTIONS`,
    );
  }
  const max = int(
    env,
    'MAX_CONNECTIONS',
    fit === null ? MAX_CONNECTIONS_DEFAULT : Math.min(fit, MAX_CONNECTIONS_DEFAULT_CEILING),
    1,
    1_000_000,
  );
  const perAddress = int(env, 'MAX_CONNECTIONS_PER_ADDRESS', rest.ops.trustProxy === false ? Math.ceil(max / 2) : 0, 0, max);
  return { max, perAddress, descriptorLimit, descriptorsReserved: reserved };
}

export function loadConfig(env: Env, sources: ConfigSources = {}): Config {
  const port = int(env, 'PORT', 8080, 0, 65535);
  const host = env.HOST?.trim() || '127.0.0.1';
  const dataDir = path.resolve(env.DATA_DIR?.trim() || './data');
  const logLevel = oneOf(env, 'LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info');

  let authTokens = new Map<string, Role>();
  if (env.AUTH_TOKENS && env.AUTH_TOKENS_FILE) throw new ConfigError('set AUTH_TOKENS or AUTH_TOKENS_FILE, not both');
  if (env.AUTH_TOKENS) authTokens = parseAuthTokens(env.AUTH_TOKENS, 'AUTH_TOKENS');
  if (env.AUTH_TOKENS_FILE) {
    if (!sources.readFile) throw new ConfigError('AUTH_TOKENS_FILE given but no file reader');
    let text: string;
    try {
      text = sources.readFile(env.AUTH_TOKENS_FILE);
    } catch (err) {
      throw new ConfigError(`AUTH_TOKENS_FILE: cannot read ${env.AUTH_TOKENS_FILE}: ${(err as Error).message}`);
    }
    authTokens = parseAuthTokens(text, 'AUTH_TOKENS_FILE');
  }
  const metricsToken = metricsTokenConfig(env, authTokens, env.AUTH_TOKENS_FILE ? 'AUTH_TOKENS_FILE' : 'AUTH_TOKENS');

  // Large enough to hold a module of the default MAX_PLUGIN_BYTES compiled (~385 MiB estimated).
  const moduleCacheBytes = int(env, 'MODULE_CACHE_BYTES', 512 * MiB, 0);
  const rest: Omit<Config, 'connections'> = {
    port,
    host,
    dataDir,
    store: storeConfig(env),
    logLevel,
    maxPluginBytes: Math.min(int(env, 'MAX_PLUGIN_BYTES', 32 * MiB, 8), largestCacheableModule(moduleCacheBytes)),
    uploadConcurrency: int(env, 'UPLOAD_CONCURRENCY', 2, 1, 256),
    moduleCacheBytes,
    listLimit: limit(env, 'LIST_LIMIT', 100, 1000),
    requests: {
      headersTimeoutMs: int(env, 'HEADERS_TIMEOUT_MS', 10_000, 100, 600_000),
      bodyTimeoutMs: int(env, 'BODY_TIMEOUT_MS', 60_000, 100, 3_600_000),
      bodyMinBytesPerSecond: int(env, 'BODY_MIN_BYTES_PER_SECOND', 4096, 0, 1024 * MiB),
      responseTimeoutMs: int(env, 'RESPONSE_TIMEOUT_MS', 120_000, 100, 3_600_000),
      responseMinBytesPerSecond: int(env, 'RESPONSE_MIN_BYTES_PER_SECOND', 4096, 0, 1024 * MiB),
      keepAliveTimeoutMs: int(env, 'KEEP_ALIVE_TIMEOUT_MS', 30_000, 100, 600_000),
    },
    pluginConfig: {
      maxKeys: int(env, 'CONFIG_MAX_KEYS', 256, 0, 100_000),
      maxBytes: int(env, 'CONFIG_MAX_BYTES', 64 * 1024, 0, 16 * MiB),
    },
    engine: {
      workers: int(env, 'WORKERS', Math.max(1, availableParallelism()), 1, 256),
      queueMax: int(env, 'QUEUE_MAX', 256, 0),
      queueMaxBytes: int(env, 'QUEUE_MAX_BYTES', 64 * MiB, 0),
      // Below ~16 MB a worker cannot even start (and at 1-2 MB V8 aborts the whole process).
      workerHeapMb: int(env, 'WORKER_HEAP_MB', 256, 16, 16_384),
      workerInstanceCacheBytes: int(env, 'WORKER_INSTANCE_CACHE_BYTES', 256 * MiB, 0),
      instanceResetTimeoutMs: int(env, 'INSTANCE_RESET_TIMEOUT_MS', 2_000, 100, 600_000),
      moduleLimits: moduleLimits(env),
      prepareTimeoutMs: int(env, 'MODULE_PREPARE_TIMEOUT_MS', 30_000, 100, 600_000),
      burstWorkers: int(env, 'BURST_WORKERS', Math.max(1, availableParallelism()), 0, 256),
      maxInputBytes: int(env, 'MAX_INPUT_BYTES', 4 * MiB, 0),
      limits: callLimits(env),
    },
    egress: {
      allowedHosts: hostPatterns(env, 'EGRESS_ALLOWED_HOSTS', ['*']),
      allowPrivate: bool(env, 'EGRESS_ALLOW_PRIVATE', false),
      timeoutMs: int(env, 'EGRESS_TIMEOUT_MS', 10_000, 1),
      maxRequestsPerCall: int(env, 'EGRESS_MAX_REQUESTS', 32, 0),
      maxRedirects: int(env, 'EGRESS_MAX_REDIRECTS', 5, 0, 20),
      maxRequestBodyBytes: int(env, 'EGRESS_MAX_REQUEST_BODY_BYTES', MiB, 0),
    },
    ops: {
      authTokens,
      metricsToken,
      forwardPluginLogs: bool(env, 'FORWARD_PLUGIN_LOGS', false),
      // Off by default: a service called by other services must take a load test out of the box.
      rateLimitMax: int(env, 'RATE_LIMIT_MAX', 0, 0),
      rateLimitWindowMs: int(env, 'RATE_LIMIT_WINDOW_MS', 60_000, 1),
      authFailureMax: int(env, 'AUTH_FAILURE_MAX', 20, 0),
      trustProxy: trustProxy(env),
      shutdownDrainMs: int(env, 'SHUTDOWN_DRAIN_MS', 10_000, 0),
      maxEventLoopDelayMs: int(env, 'MAX_EVENT_LOOP_DELAY_MS', 1_000, 0),
      maxHeapUsedBytes: int(env, 'MAX_HEAP_USED_BYTES', 0, 0),
      redis: redisConfig(env),
      allowedHostNames: allowedHostNames(env, host),
    },
  };
  checkModuleHeap(rest.engine.moduleLimits, rest.engine.workerHeapMb);
  return { ...rest, connections: connectionsConfig(env, rest, sources.descriptorLimit ?? null) };
}
