// Extism manifests (extism/extism manifest/src/lib.rs) as the service accepts them: `wasm` entries by
// sha256 `hash` (a stored module's id), inline base64 `data`, or — in a multipart upload — `path`
// naming one of the form's file parts; `config`, `allowed_hosts`, `memory` and `timeout_ms` become the
// plugin's stored defaults. The server fetches nothing and exposes no files: `url` sources, other
// `path`s and `allowed_paths` are refused. A stored manifest is its canonical JSON (what its id hashes).
import { Type } from 'typebox';
import Value from 'typebox/value';
import { AppError } from './errors.ts';
import { MAIN_MODULE_NAME } from './engine/compile/link-check.ts';
import { HOST_MODULE } from './engine/compile/wasm-rewrite.ts';
import { validateHostPatterns } from './host-patterns.ts';
import { HostPatternSchema, type ManifestLimits, type ManifestModule } from './store/plugin-record.ts';

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

const MEMORY_FIELDS: Readonly<Record<string, keyof ManifestLimits>> = {
  max_pages: 'memoryMaxPages',
  max_http_response_bytes: 'maxHttpResponseBytes',
  max_var_bytes: 'maxVarBytes',
};
const MAX_MODULES = 16;
const MAX_CONFIG_ENTRIES = 256;

/** A manifest as JSON, once the schema holds. */
interface ManifestJson {
  wasm: EntryJson[];
  config?: Record<string, string> | null;
  allowed_hosts?: string[] | null;
  allowed_paths?: Record<string, unknown> | null;
  memory?: { max_pages?: number | null; max_http_response_bytes?: number | null; max_var_bytes?: number | null } | null;
  timeout_ms?: number | null;
}

interface EntryJson {
  data?: string;
  hash?: string | null;
  path?: string;
  name?: string | null;
  url?: string;
  headers?: Record<string, unknown>;
  method?: string;
}

/** A field left unset may come as null (as Extism's SDKs may write it): the same as absent. */
const orNull = <T extends { type: string }>(schema: T) => ({ ...schema, type: [schema.type, 'null'] });
const count = (minimum: number, description?: string) =>
  orNull({ type: 'integer', minimum, maximum: Number.MAX_SAFE_INTEGER, ...(description ? { description } : {}) });

/**
 * An upload's Extism manifest: its one shape check (parseManifest refuses what it does not match with
 * INVALID_MANIFEST, then what the service does not do) and its documentation (openapi.yaml).
 */
export const ExtismManifestSchema = Type.Unsafe<ManifestJson>({
  $id: 'ExtismManifest',
  type: 'object',
  additionalProperties: false,
  required: ['wasm'],
  description: `An Extism manifest (extism/extism \`manifest\`). \`url\` and \`path\` sources (except a \`path\` naming a
part of the same form) and \`allowed_paths\` are refused: the server fetches nothing and exposes no files. A field
given as null is taken as absent.`,
  properties: {
    wasm: {
      type: 'array',
      minItems: 1,
      maxItems: MAX_MODULES,
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          data: { type: 'string', pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'The module, base64.' },
          hash: orNull({
            type: 'string',
            pattern: '^[0-9a-f]{64}$',
            description: 'sha256 of the module: a stored module (its id), or the check of `data`.',
          }),
          path: { type: 'string', description: 'In a multipart upload, the field or file name of the part holding the module.' },
          name: orNull({
            type: 'string',
            minLength: 1,
            maxLength: 128,
            description: "The module's name (`main` marks the main module; else the last is).",
          }),
          url: { type: 'string', description: 'Refused.' },
          headers: { type: 'object' },
          method: { type: 'string' },
        },
      },
    },
    config: orNull({ type: 'object', maxProperties: MAX_CONFIG_ENTRIES, additionalProperties: { type: 'string' } }),
    allowed_hosts: orNull({ type: 'array', items: { $ref: 'HostPattern#' } }),
    allowed_paths: orNull({ type: 'object', description: 'Refused unless empty.' }),
    memory: orNull({
      type: 'object',
      additionalProperties: false,
      properties: {
        max_pages: count(1, 'Default and ceiling of `memoryMaxPages` for its calls.'),
        max_http_response_bytes: count(0, 'Default and ceiling of `maxHttpResponseBytes`.'),
        max_var_bytes: count(0, 'Default and ceiling of `maxVarBytes`.'),
      },
    }),
    timeout_ms: count(1, 'Default and ceiling of `timeoutMs`.'),
  },
  examples: [
    {
      wasm: [{ hash: '9ee554422a18a0112159050331e0f8f512287a32ad3d40fd2b026bce63aafe21', name: 'main' }],
      config: { vowels: 'aeiou' },
      timeout_ms: 2000,
    },
  ],
});
/** What the schema's $refs name. */
const SCHEMA_CONTEXT = { 'HostPattern#': HostPatternSchema };

const invalid = (message: string): AppError => new AppError('INVALID_MANIFEST', `invalid manifest: ${message}`);
const unsupported = (message: string, feature: string): AppError =>
  new AppError('UNSUPPORTED_MANIFEST', message, { details: { feature } });

/** `/wasm/0/name` as `wasm[0].name`. */
function fieldName(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce((path, part) => (/^[0-9]+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

/** The refusal of a manifest the schema does not match: an unknown field by name, else the first mismatch. */
function shapeError(value: unknown): AppError {
  const errors = [...Value.Errors(SCHEMA_CONTEXT, ExtismManifestSchema, value)];
  // A field no schema allows (additionalProperties: false) fails the schema `false`.
  const unknown = errors.find((e) => e.keyword === 'boolean');
  if (unknown) {
    const parent = unknown.instancePath.slice(0, unknown.instancePath.lastIndexOf('/'));
    const known =
      parent === ''
        ? Object.keys((ExtismManifestSchema as unknown as { properties: object }).properties)
        : parent === '/memory'
          ? Object.keys(MEMORY_FIELDS)
          : [];
    const name = fieldName(unknown.instancePath).slice(0, 80);
    return invalid(`unknown field "${name}"${known.length > 0 ? ` (known: ${known.join(', ')})` : ''}`);
  }
  const first = errors.find((e) => e.keyword !== 'additionalProperties') ?? errors[0];
  if (!first) return invalid('it does not match the manifest schema');
  return invalid(`${fieldName(first.instancePath) || 'the manifest'} ${first.message}`);
}

/**
 * Parses a manifest (JSON already decoded). `parts`: a multipart upload's file parts by field name and
 * by file name, which a `path` entry may name.
 */
export function parseManifest(value: unknown, parts: ReadonlyMap<string, Uint8Array> = new Map()): ParsedManifest {
  if (!Value.Check(SCHEMA_CONTEXT, ExtismManifestSchema, value)) {
    // A host pattern is refused as a plugin's form upload refuses it (INVALID_ALLOWED_HOSTS, naming the problem).
    const hosts = (value as { allowed_hosts?: unknown } | null)?.allowed_hosts;
    if (Array.isArray(hosts) && hosts.every((h) => typeof h === 'string')) validateHostPatterns(hosts);
    throw shapeError(value);
  }
  const paths = value.allowed_paths;
  if (paths && Object.keys(paths).length > 0) {
    throw unsupported('allowed_paths is not supported: plugins get no files on this server', 'allowed_paths');
  }
  const sources = value.wasm.map((entry, i) => parseEntry(entry, i, parts));
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

  const config: Record<string, string> = { ...value.config };
  const allowedHosts = value.allowed_hosts ?? [];
  validateHostPatterns(allowedHosts);
  const limits: ManifestLimits = {};
  for (const [k, field] of Object.entries(MEMORY_FIELDS)) {
    const v = value.memory?.[k as keyof NonNullable<ManifestJson['memory']>];
    if (v !== undefined && v !== null) limits[field] = v;
  }
  if (value.timeout_ms !== undefined && value.timeout_ms !== null) limits.timeoutMs = value.timeout_ms;
  return { sources, config, allowedHosts, limits };
}

function parseEntry(entry: EntryJson, index: number, parts: ReadonlyMap<string, Uint8Array>): WasmSource {
  const where = `wasm[${index}]`;
  const name = entry.name ?? null;
  // The engine's own imports come from this module name (compile/wasm-rewrite.ts): no module may take it.
  if (name === HOST_MODULE) throw invalid(`${where}.name "${HOST_MODULE}" is reserved for the engine's own imports`);
  const hash = entry.hash ?? null;
  if (entry.url !== undefined) {
    throw unsupported(
      `${where}: url sources are not supported: the server fetches nothing; upload the module and refer to it by its sha256 "hash", or send it as "data"`,
      'url',
    );
  }
  if (entry.data !== undefined) return { bytes: new Uint8Array(Buffer.from(entry.data, 'base64')), name, hash };
  if (entry.path !== undefined) {
    const part = parts.get(entry.path);
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
