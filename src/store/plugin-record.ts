// The plugin record, written once: what the store keeps about a plugin, what the API answers for it
// (api/schemas.ts registers this schema as the document's `Plugin`), and its TypeScript type.
import { Type, type Static, type TSchema } from 'typebox';

/** A plugin id: the lowercase hex sha256 of its bytes (names never look like one). */
export const ID_PATTERN = /^[0-9a-f]{64}$/;

/** A name: a movable alias, never 64 hex digits (that would read as an id). */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export const NameSchema = Type.String({
  $id: 'Name',
  pattern: NAME_PATTERN.source,
  description: 'A movable alias; never 64 hex digits (that would read as an id).',
  examples: ['count_vowels'],
});

export const HostPatternSchema = Type.String({
  $id: 'HostPattern',
  minLength: 1,
  maxLength: 300,
  description:
    '`[http://|https://]HOST[:PORT]`, HOST being `*`, `*.domain`, a host name or an IP address (see `CallRequest.allowedHosts`).',
  examples: ['api.example.com', '*.example.com', '*', 'https://api.example.com:8443'],
});

/** A `$ref` to a shared schema (registered by $id), typed as the schema it points at. */
export function ref<T extends TSchema>(schema: T) {
  const id = (schema as { $id?: string }).$id;
  if (id === undefined) throw new Error('ref(): the schema has no $id');
  return Type.Unsafe<Static<T>>({ $ref: `${id}#` });
}

const PluginImportSchema = Type.Object({ module: Type.String(), name: Type.String() }, { additionalProperties: false });
export type PluginImport = Static<typeof PluginImportSchema>;

const ManifestLimitsSchema = Type.Object(
  {
    memoryMaxPages: Type.Optional(Type.Integer()),
    maxHttpResponseBytes: Type.Optional(Type.Integer()),
    maxVarBytes: Type.Optional(Type.Integer()),
    timeoutMs: Type.Optional(Type.Integer()),
  },
  {
    additionalProperties: false,
    description: 'Limits a manifest sets for its plugin, by call request field: calls may lower them, never raise them.',
  },
);
export type ManifestLimits = Static<typeof ManifestLimitsSchema>;

const ManifestModuleSchema = Type.Object(
  { id: Type.String({ pattern: ID_PATTERN.source }), name: Type.Union([Type.String(), Type.Null()]) },
  {
    additionalProperties: false,
    description: 'A module of a stored manifest: its id (sha256) and the name other modules link it by.',
  },
);
export type ManifestModule = Static<typeof ManifestModuleSchema>;

export const PluginManifestSchema = Type.Object(
  {
    modules: Type.Array(ManifestModuleSchema),
    main: Type.String({ pattern: ID_PATTERN.source, description: 'The module whose exports are called.' }),
    limits: ManifestLimitsSchema,
  },
  {
    $id: 'PluginManifest',
    additionalProperties: false,
    description: 'What a plugin made from a manifest runs, and the limits it sets for its calls.',
  },
);
export type PluginManifest = Static<typeof PluginManifestSchema>;

export const PluginSchema = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN.source, description: 'Lowercase hex sha256 of the Wasm bytes.' }),
    name: Type.Union([Type.String(), Type.Null()], { description: 'The alias pointing at this plugin, if any.' }),
    description: Type.String(),
    size: Type.Integer({ minimum: 1, description: 'Bytes.' }),
    createdAt: Type.String({ format: 'date-time' }),
    exports: Type.Array(Type.String(), { description: 'Exported function names (what a caller may call).' }),
    imports: Type.Array(PluginImportSchema),
    wasi: Type.Boolean({ description: 'Imports wasi_snapshot_preview1; WASI is then enabled for its calls.' }),
    config: Type.Unsafe<Record<string, string>>({
      type: 'object',
      additionalProperties: { type: 'string' },
      description:
        "Defaults merged under each call's config. The values are secrets: `GET /plugins` and `GET /plugins/{id}` answer them only to an `admin` token (or to anyone while the service runs open); any other token sees the keys, each value replaced by `[REDACTED]`.",
    }),
    allowedHosts: Type.Array(ref(HostPatternSchema), {
      description: 'Egress allow-list used when a call gives none (grammar and semantics as `CallRequest.allowedHosts`).',
    }),
    /**
     * Present on a plugin made from an Extism manifest (its bytes are the manifest's canonical JSON):
     * the stored modules it runs and the limits it sets. Exports, imports and wasi are its main module's.
     */
    manifest: Type.Optional(ref(PluginManifestSchema)),
  },
  {
    $id: 'Plugin',
    additionalProperties: false,
    examples: [
      {
        id: '9ee554422a18a0112159050331e0f8f512287a32ad3d40fd2b026bce63aafe21',
        name: 'count_vowels',
        description: '',
        size: 11703,
        createdAt: '2026-11-27T08:04:17.144Z',
        exports: ['count_vowels'],
        imports: [
          { module: 'extism:host/env', name: 'config_get' },
          { module: 'extism:host/env', name: 'var_get' },
          { module: 'extism:host/env', name: 'var_set' },
        ],
        wasi: false,
        config: {},
        allowedHosts: [],
      },
    ],
  },
);
export type PluginMeta = Static<typeof PluginSchema>;
