// Extism manifests (extism/extism manifest/src/lib.rs) as the service accepts them: `wasm` entries by
// sha256 `hash` (a stored module's id), inline base64 `data`, or — in a multipart upload — `path`
// naming one of the form's file parts; `config`, `allowed_hosts`, `memory` and `timeout_ms` become the
// plugin's stored defaults. The server fetches nothing and exposes no files: `url` sources, other
// `path`s and `allowed_paths` are refused. A stored manifest is its canonical JSON (what its id hashes).
import { AppError } from './errors.ts';
import { MAIN_MODULE_NAME } from './engine/compile/link-check.ts';
import { HOST_MODULE } from './engine/compile/wasm-rewrite.ts';
import { validateHostPatterns } from './host-patterns.ts';
import type { ManifestLimits, ManifestModule } from './store/plugin-record.ts';

// The record of a stored manifest is part of the plugin record (store/plugin-record.ts).
export type { ManifestLimits, ManifestModule, PluginManifest } from './store/plugin-record.ts';

/** Where a wasm entry's bytes come from. */
export type WasmSource =
  { bytes: Uint8Array; name: string | null; hash: string | null } | { bytes?: undefined; hash: string; name: string | null };

export interface ParsedManifest {
  sources: WasmSource[];
  config: Record<string, string>;
  allowedHosts: string[];
  limits: ManifestLimits;
}

const TOP_LEVEL = new Set(['wasm', 'config', 'allowed_hosts', 'allowed_paths', 'memory', 'timeout_ms']);
const MEMORY_FIELDS: Readonly<Record<string, keyof ManifestLimits>> = {
  max_pages: 'memoryMaxPages',
  max_http_response_bytes: 'maxHttpResponseBytes',
  max_var_bytes: 'maxVarBytes',
};
const ENTRY_FIELDS = new Set(['data', 'hash', 'name', 'path', 'url', 'headers', 'method']);
const HASH_PATTERN = /^[0-9a-f]{64}$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/]*={0,2}$/;
const MAX_MODULES = 16;
const MAX_CONFIG_ENTRIES = 256;

const invalid = (message: string): AppError => new AppError('INVALID_MANIFEST', `invalid manifest: ${message}`);
const unsupported = (message: string, feature: string): AppError =>
  new AppError('UNSUPPORTED_MANIFEST', message, { details: { feature } });

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function count(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw invalid(`${what} must be a non-negative integer`);
  return value;
}

/**
 * Parses a manifest (JSON already decoded). `parts`: a multipart upload's file parts by field name and
 * by file name, which a `path` entry may name.
 */
export function parseManifest(value: unknown, parts: ReadonlyMap<string, Uint8Array> = new Map()): ParsedManifest {
  if (!isObject(value)) throw invalid('it must be a JSON object with a "wasm" array');
  for (const key of Object.keys(value)) {
    if (!TOP_LEVEL.has(key)) throw invalid(`unknown field "${key.slice(0, 80)}" (known: ${[...TOP_LEVEL].join(', ')})`);
  }
  const paths = value.allowed_paths;
  if (paths !== undefined && paths !== null && !(isObject(paths) && Object.keys(paths).length === 0)) {
    throw unsupported('allowed_paths is not supported: plugins get no files on this server', 'allowed_paths');
  }
  const wasm = value.wasm;
  if (!Array.isArray(wasm) || wasm.length === 0) throw invalid('"wasm" must be a non-empty array of modules');
  if (wasm.length > MAX_MODULES) throw invalid(`"wasm" lists ${wasm.length} modules; at most ${MAX_MODULES}`);
  const sources = wasm.map((entry, i) => parseEntry(entry, i, parts));
  const names = sources.map((s) => s.name).filter((n): n is string => n !== null);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw invalid(`two modules are named "${dup}"`);
  if (sources.length > 1 && !names.includes(MAIN_MODULE_NAME)) {
    const last = sources[sources.length - 1]!;
    if (last.name !== null) {
      throw invalid(
        `no main module: with several modules, one must be named "${MAIN_MODULE_NAME}" or the last one left unnamed (it is named "${last.name}")`,
      );
    }
    // Linked as "main" all the same: named so, it is the same manifest (one canonical form, one id) as when named so.
    last.name = MAIN_MODULE_NAME;
  }

  const config: Record<string, string> = {};
  if (value.config !== undefined && value.config !== null) {
    if (!isObject(value.config)) throw invalid('"config" must be an object of string values');
    const entries = Object.entries(value.config);
    if (entries.length > MAX_CONFIG_ENTRIES) throw invalid(`"config" has more than ${MAX_CONFIG_ENTRIES} keys`);
    for (const [k, v] of entries) {
      if (typeof v !== 'string') throw invalid(`config value of "${k.slice(0, 80)}" must be a string`);
      config[k] = v;
    }
  }
  let allowedHosts: string[] = [];
  if (value.allowed_hosts !== undefined && value.allowed_hosts !== null) {
    if (!Array.isArray(value.allowed_hosts) || value.allowed_hosts.some((h) => typeof h !== 'string')) {
      throw invalid('"allowed_hosts" must be an array of host patterns');
    }
    allowedHosts = value.allowed_hosts as string[];
    validateHostPatterns(allowedHosts);
  }
  const limits: ManifestLimits = {};
  if (value.memory !== undefined && value.memory !== null) {
    if (!isObject(value.memory)) throw invalid('"memory" must be an object');
    for (const [k, v] of Object.entries(value.memory)) {
      const field = MEMORY_FIELDS[k];
      if (!field) throw invalid(`unknown field "memory.${k.slice(0, 80)}" (known: ${Object.keys(MEMORY_FIELDS).join(', ')})`);
      if (v !== null) limits[field] = count(v, `memory.${k}`);
    }
  }
  if (value.timeout_ms !== undefined && value.timeout_ms !== null) limits.timeoutMs = count(value.timeout_ms, 'timeout_ms');
  if (limits.memoryMaxPages === 0) throw invalid('memory.max_pages must be at least 1');
  if (limits.timeoutMs === 0) throw invalid('timeout_ms must be at least 1');
  return { sources, config, allowedHosts, limits };
}

function parseEntry(entry: unknown, index: number, parts: ReadonlyMap<string, Uint8Array>): WasmSource {
  const where = `wasm[${index}]`;
  if (!isObject(entry)) throw invalid(`${where} must be an object`);
  for (const key of Object.keys(entry)) {
    if (!ENTRY_FIELDS.has(key)) throw invalid(`unknown field "${where}.${key.slice(0, 80)}"`);
  }
  const name = entry.name === undefined || entry.name === null ? null : entry.name;
  if (name !== null && (typeof name !== 'string' || name.length === 0 || name.length > 128)) {
    throw invalid(`${where}.name must be a string of 1 to 128 characters`);
  }
  // The engine's own imports come from this module name (compile/wasm-rewrite.ts): no module may take it.
  if (name === HOST_MODULE) throw invalid(`${where}.name "${HOST_MODULE}" is reserved for the engine's own imports`);
  const hash = entry.hash === undefined || entry.hash === null ? null : entry.hash;
  if (hash !== null && (typeof hash !== 'string' || !HASH_PATTERN.test(hash))) {
    throw invalid(`${where}.hash must be a sha256 in lower-case hex (64 digits)`);
  }
  if (entry.url !== undefined) {
    throw unsupported(
      `${where}: url sources are not supported: the server fetches nothing; upload the module and refer to it by its sha256 "hash", or send it as "data"`,
      'url',
    );
  }
  if (entry.data !== undefined) {
    if (typeof entry.data !== 'string' || !BASE64_PATTERN.test(entry.data)) throw invalid(`${where}.data must be base64 text`);
    return { bytes: new Uint8Array(Buffer.from(entry.data, 'base64')), name, hash };
  }
  if (entry.path !== undefined) {
    const part = typeof entry.path === 'string' ? parts.get(entry.path) : undefined;
    if (!part) {
      throw unsupported(
        `${where}: path sources are not supported: the server reads no files; send the module as a form part ` +
          `named by the path, as "data", or refer to a stored module by its sha256 "hash"`,
        'path',
      );
    }
    return { bytes: part, name, hash };
  }
  if (hash === null) throw invalid(`${where} needs "hash" (a stored module's sha256), "data" (base64) or "path" (a form part)`);
  return { hash, name };
}

/**
 * The main module's index: the one named MAIN_MODULE_NAME, else the last (as Extism picks it; with several
 * modules parseManifest has made sure the last is then unnamed, as the SDK requires).
 */
export function mainIndex(modules: readonly { name: string | null }[]): number {
  const named = modules.findIndex((m) => m.name === MAIN_MODULE_NAME);
  return named === -1 ? modules.length - 1 : named;
}

/** The stored form: modules by hash, keys in a fixed order, config and allowed hosts sorted — the same manifest gives the same bytes. */
export function canonicalManifest(
  modules: readonly ManifestModule[],
  config: Readonly<Record<string, string>>,
  allowedHosts: readonly string[],
  limits: ManifestLimits,
): Uint8Array {
  const doc: Record<string, unknown> = {
    wasm: modules.map((m) => (m.name === null ? { hash: m.id } : { hash: m.id, name: m.name })),
  };
  const keys = Object.keys(config).sort();
  if (keys.length > 0) doc.config = Object.fromEntries(keys.map((k) => [k, config[k]]));
  // A set of patterns: their order and repeats change nothing a call may do.
  if (allowedHosts.length > 0) doc.allowed_hosts = [...new Set(allowedHosts)].sort();
  const memory: Record<string, number> = {};
  for (const [field, limit] of Object.entries(MEMORY_FIELDS)) {
    const v = limits[limit];
    if (v !== undefined) memory[field] = v;
  }
  if (Object.keys(memory).length > 0) doc.memory = memory;
  if (limits.timeoutMs !== undefined) doc.timeout_ms = limits.timeoutMs;
  return new TextEncoder().encode(JSON.stringify(doc));
}
