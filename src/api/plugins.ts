// Plugin routes: upload (its body is read by upload-body.ts), list, describe, download, delete. `:id` is an id or a name.
import multipart from '@fastify/multipart';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../config.ts';
import { checkCallable, inspectModule, refusal, type InspectedModule } from '../engine/compile/inspect.ts';
import { checkLinks, checkTotals } from '../engine/compile/link-check.ts';
import { moduleCheckLimits } from '../engine/compile/module-check.ts';
import type { Prepare, PreparedModule } from '../engine/compile/prepare.ts';
import { AppError, isAppError } from '../errors.ts';
import { resolveLimits } from '../engine/limits.ts';
import { canonicalManifest, mainIndex, parseManifest, type ManifestModule } from '../manifest.ts';
import { manifestModuleMissing, pluginIdOf, type NewPlugin, type PluginMeta, type PutResult } from '../store/store.ts';
import { configForCaller } from './auth.ts';
import { ROUTE_POLICIES } from './route-policy.ts';
import { checkConfigSize } from './config-size.ts';
import { MAX_DESCRIPTION_CHARS, MULTIPART_OVERHEAD_BYTES, readUpload, tooLarge, type ManifestUpload } from './upload-body.ts';
import {
  ExtismManifestSchema,
  MalformedPath,
  NameSchema,
  PluginNotFound,
  PluginRefParams,
  PluginSchema,
  PROTECTED_ROUTE_ERRORS,
  RequestTimeout,
  ShuttingDown,
  StoreError,
  errorResponse,
  ref,
} from './schemas.ts';
/** How long a refused upload's remaining body is read and dropped before the connection is cut. */
const LINGER_MS = 5_000;
const OVERLOADED_RETRY_AFTER_MS = 1_000;

export interface PluginRoutesOptions {
  config: Config;
  /** Rewrites and compiles an upload for the engine (off the main thread). */
  prepare: Prepare;
}

/** Answers sent before the body was read (client errors, an upload refused as overloaded). */
const isRefusal = (status: number): boolean => (status >= 400 && status < 500) || status === 503;

/**
 * After refusing a body still in flight, read and discard the rest for a while before closing. Closing
 * at once (what Fastify does after a parser error) resets a connection with unread data, and the reset
 * can destroy the error response before the client reads it.
 */
function lingerOnUnreadBody(request: FastifyRequest, reply: FastifyReply): void {
  const raw = request.raw;
  if (raw.complete || !isRefusal(reply.statusCode)) return;
  const timer = setTimeout(() => raw.socket.destroy(), LINGER_MS);
  timer.unref();
  raw.once('close', () => clearTimeout(timer));
  raw.on('data', () => {}).resume();
}

/** A stored manifest's canonical text with its config as `redact` shows it (its key order kept). */
function redactManifestConfig(text: string, redact: (config: Record<string, string>) => Record<string, string>): string {
  const manifest = JSON.parse(text) as { config?: Record<string, string> };
  if (manifest.config) manifest.config = redact(manifest.config);
  return JSON.stringify(manifest);
}

/** An If-Match header holds this ETag (strong comparison, as RFC 9110 asks of If-Match) or `*`. */
function ifMatchHits(header: string, etag: string): boolean {
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag;
  });
}

function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || t === `W/${etag}`;
  });
}

const wasmBody = { type: 'string', contentMediaType: 'application/wasm' } as const;

/** Documentation of the upload's body: the route reads it itself (raw or multipart), so Fastify does not validate it. */
const UPLOAD_BODY = {
  content: {
    'application/wasm': { schema: wasmBody },
    'application/octet-stream': { schema: wasmBody },
    'application/json': { schema: ref(ExtismManifestSchema) },
    'multipart/form-data': {
      schema: {
        type: 'object',
        properties: {
          manifest: {
            type: 'string',
            // Forms (Swagger UI) pre-fill a field with its default: empty, the upload of a module.
            default: '',
            description:
              'JSON text: an Extism manifest (`ExtismManifest`) instead of the part `file`; its `path` entries name further file parts of the form. Not together with `config` or `allowedHosts`. A text field or a part of type application/json; empty means not given.',
          },
          file: { ...wasmBody, description: 'The Wasm module, at most MAX_PLUGIN_BYTES (default 32 MiB).' },
          name: ref(NameSchema),
          description: { type: 'string', maxLength: MAX_DESCRIPTION_CHARS, default: '' },
          config: {
            type: 'string',
            description:
              "JSON text: an object of string values, defaults merged under every call's config. A text field or a part of type application/json; empty means not given.",
            examples: ['{"route":"https://jsonplaceholder.typicode.com/todos/1"}'],
          },
          allowedHosts: {
            type: 'string',
            description:
              'JSON text: an array of host patterns (grammar: `CallRequest.allowedHosts`), the egress allow-list when a call gives none. A text field or a part of type application/json; empty means not given.',
            examples: ['["jsonplaceholder.typicode.com"]'],
          },
        },
        // Swagger UI sends a field with this encoding as JSON text (without it, it sends the items of the pre-filled array).
        'x-encoding': {
          manifest: { contentType: 'application/json' },
          config: { contentType: 'application/json' },
          allowedHosts: { contentType: 'application/json' },
        },
      },
    },
  },
};

const pluginAnswer = (description: string) => ({
  description,
  content: { 'application/json': { schema: ref(PluginSchema) } },
});

/** A module's import, as LINK_ERROR and UNSUPPORTED_IMPORTS details name it. */
const IMPORT_REQUIRED = ['module', 'name', 'kind'];
const IMPORT_PROPERTIES = { module: { type: 'string' }, name: { type: 'string' }, kind: { type: 'string' } };

const UPLOAD_SCHEMA = {
  tags: ['plugins'],
  operationId: 'uploadPlugin',
  summary: 'Upload a plugin',
  description: `Role: \`admin\`. Rate-limited per token (per address when open).

The body is the Wasm module itself (\`application/wasm\` or \`application/octet-stream\`, with an
optional \`name\` in the query), or a \`multipart/form-data\` form with the module in the part
\`file\` and optional fields \`name\`, \`description\`, \`config\` and \`allowedHosts\`.

Or an Extism manifest (\`ExtismManifest\`): as the JSON body (\`application/json\`), or as the form
field \`manifest\` with the modules its \`path\` entries name as further file parts (a part's field
name or file name is its path). Each module is checked and stored as a plugin of its own; the
manifest is stored in canonical form (modules by \`hash\`, keys ordered), whose sha256 is its id,
and is what a download answers. Its \`config\`, \`allowed_hosts\`, \`memory\` and \`timeout_ms\` are the
plugin's defaults, at most the operator's ceilings; a call may lower them, never raise them.
A manifest may list several modules, linked as \`extism call --link\` and the Extism SDK link them:
the main module is the one named \`main\` (else the last, which must then be unnamed), the others
are linked by their \`name\`, and an import of a module name is satisfied by that module's export of
the same name and type (functions, memories, globals, tables; functions also in a cycle). Every
import of every module must resolve (\`LINK_ERROR\` names the first that does not), the module
limits hold for each module and for all together, and a side module need not export a function.

The module is compiled once (the validation) and must only import host functions of
\`extism:host/env\` and \`wasi_snapshot_preview1\` (and, in a manifest, what its other modules
export), and export at least one function.
Bytes already stored answer \`200\` with the existing record; a \`name\` given with them is
applied (moved to this plugin), other fields are ignored, and a stored copy damaged on disk
is rewritten from them. Nothing is stored when the upload is refused.`,
  querystring: Type.Object({
    // Not the Name schema: a bad name is 400 INVALID_NAME (with what a name may be), not a schema error.
    name: Type.Optional(Type.String({ description: 'Name for the plugin (raw uploads; in a form, the `name` field wins).' })),
  }),
  response: {
    201: {
      ...pluginAnswer('Stored.'),
      headers: { Location: { type: 'string', description: '/plugins/{id} of the new plugin.' } },
    },
    200: pluginAnswer(
      "These bytes were already stored (the upload is idempotent): the existing record, unchanged except that a `name` given with the upload is applied (moved to this plugin). The upload's `description`, `config` and `allowedHosts` are ignored; to change them, delete the plugin and upload it again.",
    ),
    400: errorResponse(
      `The upload is refused:
\`INVALID_WASM\` (not WebAssembly, does not compile, cannot be prepared for running, or over a module limit such as
MODULE_MAX_TABLE_ELEMENTS: the message says why, and \`limit\`, \`value\`, \`max\` name a limit passed, \`function\`
the function of a per-function one such as MODULE_MAX_LOCALS_X_CONTROL),
\`UNSUPPORTED_IMPORTS\` (imports anything but functions of \`extism:host/env\` and \`wasi_snapshot_preview1\`, or one of them
with another signature than the service provides; listed in \`unsupportedImports\`, a mismatch with \`expected\` and \`actual\`;
custom host functions, under \`extism:host/user\` or any other namespace, are not offered),
\`NO_CALLABLE_EXPORTS\` (exports no function),
\`INVALID_MANIFEST\` (a manifest that is not one: the message says what; \`hash\` names a module that is not stored),
\`INVALID_MANIFEST\` also for two modules with one name, or several modules none of which is main,
\`UNSUPPORTED_MANIFEST\` (\`url\` or \`path\` sources, \`allowed_paths\`; \`feature\` says which:
\`url\`, \`path\`, \`allowed_paths\`),
\`LINK_ERROR\` (an import of a manifest's module that no host module and no module of the manifest satisfies, or
satisfies with another type, or a memory, global or table imported in an import cycle: \`importer\` is the importing
module's name, \`import\` the import, \`reason\` why),
\`LIMIT_ABOVE_CEILING\` (a manifest limit above the operator's ceiling),
\`INVALID_NAME\`, \`INVALID_CONFIG\`, \`INVALID_ALLOWED_HOSTS\` (with \`pattern\` and \`problem\` for a pattern outside the grammar),
\`MISSING_FILE\` (a form without the part \`file\`), \`EMPTY_BODY\`,
\`INVALID_REQUEST\` (unknown or repeated form field, the name as both form field and query, a file in another part,
a field over 64 KiB, a form without a boundary or cut before its end),
\`INVALID_CONFIG\` also for a config over CONFIG_MAX_KEYS keys or CONFIG_MAX_BYTES bytes.`,
      [
        'INVALID_WASM',
        'UNSUPPORTED_IMPORTS',
        'NO_CALLABLE_EXPORTS',
        'INVALID_NAME',
        'INVALID_CONFIG',
        'INVALID_ALLOWED_HOSTS',
        'MISSING_FILE',
        'EMPTY_BODY',
        'INVALID_REQUEST',
        'INVALID_MANIFEST',
        'UNSUPPORTED_MANIFEST',
        'LINK_ERROR',
        'LIMIT_ABOVE_CEILING',
      ],
      {
        properties: {
          feature: { type: 'string', enum: ['url', 'path', 'allowed_paths'] },
          importer: { type: 'string', description: 'LINK_ERROR: the name of the module whose import does not resolve.' },
          import: { type: 'object', required: IMPORT_REQUIRED, properties: IMPORT_PROPERTIES },
          reason: { type: 'string' },
          hash: { type: 'string' },
          field: { type: 'string' },
          requested: { type: 'integer' },
          ceiling: { type: 'integer' },
          unsupportedImports: {
            type: 'array',
            items: {
              type: 'object',
              required: IMPORT_REQUIRED,
              properties: {
                ...IMPORT_PROPERTIES,
                expected: { type: 'string', description: 'The signature the service provides, e.g. `(i64) -> i64`.' },
                actual: { type: 'string', description: 'The signature the module declares.' },
              },
            },
          },
          limit: { type: 'string', description: 'The module limit passed (its environment variable).' },
          value: { type: 'integer' },
          max: { type: 'integer' },
          function: {
            type: 'integer',
            description: 'A per-function module limit passed: the index of the function (imports first).',
          },
          pattern: { type: 'string' },
          problem: { type: 'string' },
        },
        examples: {
          unsupportedImports: {
            value: {
              statusCode: 400,
              code: 'UNSUPPORTED_IMPORTS',
              error: 'Bad Request',
              message:
                'the module imports what this service does not provide: env.abort, foo.bar (available: functions of "extism:host/env" and "wasi_snapshot_preview1" with their signatures; custom host functions (extism:host/user or any other namespace) are not offered)',
              unsupportedImports: [
                { module: 'env', name: 'abort', kind: 'function' },
                { module: 'foo', name: 'bar', kind: 'function' },
              ],
            },
          },
        },
      },
    ),
    ...PROTECTED_ROUTE_ERRORS,
    408: RequestTimeout,
    413: errorResponse(
      '`PLUGIN_TOO_LARGE`: the module is larger than MAX_PLUGIN_BYTES (at most what MODULE_CACHE_BYTES holds compiled). Refused as soon as the limit is passed (or at once from Content-Length); the rest of the body is not kept.',
      ['PLUGIN_TOO_LARGE'],
    ),
    415: errorResponse('`UNSUPPORTED_MEDIA_TYPE`: the body is neither Wasm, octet-stream nor a multipart form.', [
      'UNSUPPORTED_MEDIA_TYPE',
    ]),
    500: StoreError,
    503: errorResponse(
      '`OVERLOADED`: UPLOAD_CONCURRENCY uploads (default 2) are already in progress (nothing was read), or every PostgreSQL connection of this replica (PG_POOL_MAX) is in use; nothing was stored, retry after Retry-After seconds. `STORE_UNAVAILABLE`: the PostgreSQL store cannot be reached; nothing was stored, retry after Retry-After seconds. `SHUTTING_DOWN`: the server is shutting down.',
      ['OVERLOADED', 'STORE_UNAVAILABLE', 'SHUTTING_DOWN'],
      { headers: { 'Retry-After': { type: 'string', description: 'Seconds to wait.' } } },
    ),
  },
};

const LIST_SCHEMA = {
  tags: ['plugins'],
  operationId: 'listPlugins',
  summary: 'List plugins, newest first, a page at a time',
  description: `Role: \`invoke\` (or \`admin\`). Pages are stable under concurrent uploads: following \`nextCursor\`
from the first page lists every plugin stored before it exactly once (newer uploads come
before the first page, never in a later one).`,
  querystring: Type.Object({
    name: Type.Optional(
      Type.String({ description: 'Only the plugin holding this name (an empty list when none does). Given once.' }),
    ),
    // A string: query values are not coerced (app.ts), and "10" must be a valid limit.
    limit: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,9}$',
        description: 'Plugins per page, 1 to LIST_LIMIT_CEILING (default 1000); LIST_LIMIT (default 100) when not given.',
      }),
    ),
    cursor: Type.Optional(
      Type.String({ maxLength: 200, description: 'The `nextCursor` of the previous page, unchanged (opaque).' }),
    ),
  }),
  response: {
    200: {
      description: 'A page of plugins, newest upload first.',
      content: {
        'application/json': {
          schema: Type.Object({
            plugins: Type.Array(ref(PluginSchema)),
            nextCursor: Type.Union([Type.String(), Type.Null()], {
              description: 'Pass as `cursor` for the next page; null on the last page.',
            }),
          }),
        },
      },
    },
    400: errorResponse(
      '`INVALID_REQUEST`: `name` given more than once (`?name=a&name=b`), a `limit` of 0 or not a number, a `cursor` this service did not make. `LIMIT_ABOVE_CEILING`: `limit` above LIST_LIMIT_CEILING.',
      ['INVALID_REQUEST', 'LIMIT_ABOVE_CEILING'],
    ),
    ...PROTECTED_ROUTE_ERRORS,
    503: ShuttingDown,
  },
};

const DESCRIBE_SCHEMA = {
  tags: ['plugins'],
  operationId: 'getPlugin',
  summary: 'Describe a plugin',
  description: 'Role: `invoke` (or `admin`).',
  params: PluginRefParams,
  response: {
    200: pluginAnswer("The plugin's metadata."),
    400: MalformedPath,
    404: PluginNotFound,
    ...PROTECTED_ROUTE_ERRORS,
    503: ShuttingDown,
  },
};

const DOWNLOAD_SCHEMA = {
  tags: ['plugins'],
  operationId: 'downloadPlugin',
  summary: "Download a plugin's Wasm bytes",
  description: 'Role: `invoke` (or `admin`).',
  params: PluginRefParams,
  headers: Type.Object({
    'if-none-match': Type.Optional(
      Type.String({ description: 'An ETag seen before (`"<id>"`): answered with 304 when it still matches.' }),
    ),
  }),
  response: {
    200: {
      description:
        "The module as uploaded, streamed (a manifest plugin: its canonical manifest, JSON, its config values `[REDACTED]` for a caller who may not read them, as in GET /plugins/{id}). The bytes are checked against the id as they are read: bytes damaged on disk end the response before its last chunk (short of Content-Length), so a client never gets them whole under the id's ETag.",
      headers: {
        ETag: {
          type: 'string',
          description:
            'The id, quoted (a manifest whose config values this caller may not read: the id followed by `.redacted`).',
        },
        'Cache-Control': {
          type: 'string',
          description:
            "`immutable` when asked by id (`private` when asked with a token: the answer is that caller's); `no-cache` when asked by name (a name can move).",
        },
      },
      content: { 'application/wasm': { schema: wasmBody }, 'application/json': { schema: ref(ExtismManifestSchema) } },
    },
    304: {
      description: 'Not modified (If-None-Match matched the ETag).',
      headers: { ETag: { type: 'string', description: 'The id, quoted.' } },
      type: 'null',
    },
    400: MalformedPath,
    404: PluginNotFound,
    500: errorResponse(
      '`STORE_ERROR`: the plugin is stored but its bytes are missing from `DATA_DIR`; uploading them again repairs it.',
      ['STORE_ERROR'],
    ),
    ...PROTECTED_ROUTE_ERRORS,
    503: ShuttingDown,
  },
};

const DELETE_SCHEMA = {
  tags: ['plugins'],
  operationId: 'deletePlugin',
  summary: 'Delete a plugin',
  description:
    'Role: `admin`. Deletes the plugin an id or a name points at; its name is freed with it. A module that stored manifests name is not deleted while they are (`409 PLUGIN_IN_USE`). With `If-Match` (the ETag of its download: the id, quoted), only the plugin it names is deleted: a name that points elsewhere by then answers `412 PRECONDITION_FAILED`.',
  params: PluginRefParams,
  response: {
    204: { description: 'Deleted.', type: 'null' },
    409: errorResponse(
      '`PLUGIN_IN_USE`: stored manifests name this module; `referrers` lists their ids. Delete them first.',
      ['PLUGIN_IN_USE'],
      { properties: { referrers: { type: 'array', items: { type: 'string' } } }, required: ['referrers'] },
    ),
    412: errorResponse('`PRECONDITION_FAILED`: the plugin the id or name points at is not the one `If-Match` names.', [
      'PRECONDITION_FAILED',
    ]),
    400: MalformedPath,
    404: PluginNotFound,
    ...PROTECTED_ROUTE_ERRORS,
    503: ShuttingDown,
    500: StoreError,
  },
};

export async function pluginRoutes(root: FastifyInstance, opts: PluginRoutesOptions): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const { maxPluginBytes, uploadConcurrency } = opts.config;
  const { store, moduleCache } = app;

  // Fastify's raw parser streams with a byte cap (keeping the socket's chunks, no copies) and refuses
  // an oversize Content-Length before reading.
  app.addContentTypeParser(
    ['application/wasm', 'application/octet-stream'],
    { parseAs: 'buffer', bodyLimit: maxPluginBytes },
    (_request, body, done) => done(null, body),
  );
  await app.register(multipart, { limits: { fileSize: maxPluginBytes } });
  app.addHook('onSend', async (request, reply, payload) => {
    // Keep the connection through the linger below instead of Fastify's immediate close.
    if (!request.raw.complete && isRefusal(reply.statusCode)) reply.removeHeader('connection');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => lingerOnUnreadBody(request, reply));

  const listLimit = (raw: string | undefined): number => {
    const { default: fallback, ceiling } = opts.config.listLimit;
    if (raw === undefined) return fallback;
    const limit = Number(raw);
    if (limit < 1) throw new AppError('INVALID_REQUEST', 'limit must be at least 1');
    if (limit > ceiling) {
      throw new AppError('LIMIT_ABOVE_CEILING', `limit ${limit} is above the ceiling of ${ceiling} (LIST_LIMIT_CEILING)`);
    }
    return limit;
  };

  const notFound = (idOrName: string): AppError =>
    new AppError('PLUGIN_NOT_FOUND', `no plugin with id or name "${idOrName.slice(0, 80)}"`);

  const resolve = async (idOrName: string): Promise<PluginMeta> => {
    const meta = await store.get(idOrName);
    if (!meta) throw notFound(idOrName);
    return meta;
  };

  // Each upload may hold MAX_PLUGIN_BYTES and rewrites + compiles its module on the main thread: a few
  // at a time. A slot is taken before the body is read and given back when the response ends (or the
  // client goes away).
  let uploadsInProgress = 0;
  const takeUploadSlot = async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (uploadsInProgress >= uploadConcurrency) {
      throw new AppError(
        'OVERLOADED',
        `${uploadConcurrency} uploads are already in progress (UPLOAD_CONCURRENCY); retry shortly`,
        { retryAfterMs: OVERLOADED_RETRY_AFTER_MS },
      );
    }
    uploadsInProgress++;
    reply.raw.once('close', () => uploadsInProgress--);
  };

  /** Runs a store change; a failure that is not already a domain error is logged and answered STORE_ERROR. */
  const storeChange = async <T>(plugin: string, change: 'put' | 'delete', run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (err) {
      if (isAppError(err)) throw err;
      const [doing, done] = change === 'put' ? ['writing', 'stored'] : ['deleting', 'deleted'];
      app.log.error({ err, plugin }, `store: ${doing} a plugin failed`);
      throw new AppError('STORE_ERROR', `the plugin could not be ${done}`, { cause: err });
    }
  };

  /** `bytes` (sha256 `id`) as a plugin uploaded now, with what the upload says of it. */
  const newPlugin = (bytes: Uint8Array, id: string, given: Omit<PluginMeta, 'id' | 'size' | 'createdAt'>): NewPlugin => ({
    bytes,
    // Field by field: a spread would let whatever else a caller's object holds (a compiled module) into the record.
    meta: {
      id,
      name: given.name,
      description: given.description,
      size: bytes.length,
      createdAt: new Date().toISOString(),
      exports: given.exports,
      imports: given.imports,
      wasi: given.wasi,
      config: given.config,
      allowedHosts: given.allowedHosts,
      ...(given.manifest ? { manifest: given.manifest } : {}),
    },
  });

  /** A module a manifest upload brings, stored as a plugin of its own (unnamed: the manifest names it). */
  const moduleToStore = (bytes: Uint8Array, module: ManifestModule & InspectedModule): NewPlugin =>
    newPlugin(bytes, module.id, {
      name: null,
      description: '',
      exports: module.exports,
      imports: module.imports,
      wasi: module.wasi,
      config: {},
      allowedHosts: [],
    });

  const storePut = (plugin: NewPlugin): Promise<PutResult> => storeChange(plugin.meta.id, 'put', () => store.put(plugin));

  /**
   * The answer to a stored upload (201 with its location when it is new), once the workers have made
   * its instances: its first call should not pay for instantiation.
   */
  const answerStored = async (
    request: FastifyRequest,
    reply: FastifyReply,
    { meta, created }: PutResult,
    prepared: PreparedModule,
    kind: 'plugin' | 'manifest',
    logged: Record<string, unknown>,
  ): Promise<PluginMeta> => {
    await app.engine.warm(meta, prepared);
    request.log.info(
      { plugin: meta.id, name: meta.name, ...logged, created },
      created ? `${kind} stored` : `${kind} already stored`,
    );
    if (created) void reply.code(201).header('location', `/plugins/${meta.id}`);
    return meta;
  };

  app.post(
    '/plugins',
    {
      bodyLimit: maxPluginBytes,
      config: {
        policy: ROUTE_POLICIES.upload,
        tooLargeCode: 'PLUGIN_TOO_LARGE',
        tooLargeMessage: tooLarge(maxPluginBytes).message,
        swaggerTransform: ({ schema, url }) => ({ schema: { ...schema, body: UPLOAD_BODY }, url }),
      },
      schema: UPLOAD_SCHEMA,
      onRequest: [
        // A multipart body larger than the file limit plus its fields cannot be valid: refuse before reading.
        async (request) => {
          const length = Number(request.headers['content-length']);
          const type = request.headers['content-type'] ?? '';
          if (type.startsWith('multipart/') && length > maxPluginBytes + MULTIPART_OVERHEAD_BYTES) throw tooLarge(maxPluginBytes);
        },
        takeUploadSlot,
      ],
    },
    async (request, reply) => {
      const upload = await readUpload(request, request.query, maxPluginBytes, opts.config.pluginConfig);
      if (upload.kind === 'manifest') return storeManifest(request, reply, upload);
      const inspected = await inspectModule(upload.bytes, opts.prepare);
      const id = pluginIdOf(upload.bytes);
      const stored = await storePut(
        newPlugin(upload.bytes, id, {
          name: upload.name,
          description: upload.description,
          exports: inspected.exports,
          imports: inspected.imports,
          wasi: inspected.wasi,
          config: upload.config,
          allowedHosts: upload.allowedHosts,
        }),
      );
      moduleCache.set(id, inspected.prepared, upload.bytes.length);
      app.metrics.observeCompile(inspected.prepared.compileMs / 1000);
      return answerStored(request, reply, stored, inspected.prepared, 'plugin', { size: stored.meta.size });
    },
  );

  /**
   * A manifest upload: every module it brings is checked, and the modules are checked together (each
   * import resolvable, the module limits over all of them), before anything is stored; its modules are
   * stored as plugins of their own with the manifest, whose id is the sha256 of its canonical form.
   */
  const storeManifest = async (request: FastifyRequest, reply: FastifyReply, upload: ManifestUpload): Promise<PluginMeta> => {
    const parsed = parseManifest(upload.manifest, upload.parts);
    checkConfigSize(parsed.config, opts.config.pluginConfig, "the manifest's");
    // Its limits must fit under the operator's ceilings now (a call resolves them again).
    resolveLimits(opts.config.engine.limits, parsed.limits);
    const linked = parsed.sources.length > 1;
    const mainAt = mainIndex(parsed.sources);
    type Resolved = ManifestModule & InspectedModule & { upload?: Uint8Array };
    const modules: Resolved[] = [];
    for (const [i, source] of parsed.sources.entries()) {
      // A side module need not export a function (a memory it shares is enough); the main one must.
      const options = { linking: linked, callable: i === mainAt };
      if (source.bytes) {
        const id = pluginIdOf(source.bytes);
        if (source.hash !== null && source.hash !== id) {
          throw new AppError(
            'INVALID_MANIFEST',
            `invalid manifest: wasm[${i}]'s sha256 is ${id}, not the hash ${source.hash} it gives`,
          );
        }
        const inspected = await inspectModule(source.bytes, opts.prepare, options);
        modules.push({ id, name: source.name, ...inspected, upload: source.bytes });
      } else {
        const stored = await store.get(source.hash);
        if (!stored || stored.manifest) {
          throw new AppError('INVALID_MANIFEST', `invalid manifest: wasm[${i}]: no stored module with sha256 ${source.hash}`, {
            details: { hash: source.hash },
          });
        }
        if (options.callable) checkCallable(stored.exports);
        const prepared = await storedModule(stored.id);
        modules.push({
          id: stored.id,
          name: source.name,
          exports: stored.exports,
          imports: stored.imports,
          wasi: stored.wasi,
          prepared,
        });
      }
    }
    checkTotals(
      modules.map((m) => m.prepared.size),
      { ...moduleCheckLimits(opts.config.engine), bytes: maxPluginBytes },
    );
    checkLinks(
      modules.map((m) => ({ name: m.name, interface: m.prepared.interface })),
      mainAt,
    );
    if (!moduleCache.holds(modules.map((m) => m.prepared.size.bytes))) {
      throw new AppError(
        'PLUGIN_TOO_LARGE',
        `the manifest's modules would not stay compiled together within MODULE_CACHE_BYTES (${opts.config.moduleCacheBytes} bytes, ~12 bytes per byte of Wasm each, plus 640 KiB): they would be prepared again on every call`,
      );
    }
    const refs = modules.map((m) => ({ id: m.id, name: m.name }));
    const main = modules[mainAt]!;
    const bytes = canonicalManifest(refs, parsed.config, parsed.allowedHosts, parsed.limits);
    const id = pluginIdOf(bytes);
    // One put: the store keeps the modules this upload brings only if it keeps the manifest (a refused upload stores nothing).
    const stored = await storePut({
      ...newPlugin(bytes, id, {
        name: upload.name,
        description: upload.description,
        exports: main.exports,
        imports: main.imports,
        wasi: main.wasi,
        config: parsed.config,
        allowedHosts: parsed.allowedHosts,
        manifest: { modules: refs, main: main.id, limits: parsed.limits },
      }),
      modules: modules.flatMap((module) => (module.upload ? [moduleToStore(module.upload, module)] : [])),
    });
    for (const module of modules) moduleCache.set(module.id, module.prepared, module.prepared.size.bytes);
    return answerStored(request, reply, stored, main.prepared, 'manifest', { modules: refs.length });
  };

  /** A stored module as prepared for linking: from the module cache, else prepared again from its bytes. */
  const storedModule = async (id: string): Promise<PreparedModule> => {
    const cached = moduleCache.get(id);
    if (cached) return cached;
    const bytes = await store.getBytes(id);
    if (!bytes) throw manifestModuleMissing(id);
    try {
      return await opts.prepare(bytes, { linking: true });
    } catch (err) {
      throw refusal(err);
    }
  };

  app.get('/plugins', { schema: LIST_SCHEMA, config: { policy: ROUTE_POLICIES.read } }, async (request) => {
    const { name, cursor } = request.query;
    const limit = listLimit(request.query.limit);
    const page = await store.list({ name, limit, cursor });
    return {
      plugins: page.plugins.map((meta) => ({ ...meta, config: configForCaller(request, meta.config) })),
      nextCursor: page.nextCursor,
    };
  });

  app.get('/plugins/:id', { schema: DESCRIBE_SCHEMA, config: { policy: ROUTE_POLICIES.read } }, async (request) => {
    const meta = await resolve(request.params.id);
    return { ...meta, config: configForCaller(request, meta.config) };
  });

  app.get('/plugins/:id/wasm', { schema: DOWNLOAD_SCHEMA, config: { policy: ROUTE_POLICIES.read } }, async (request, reply) => {
    const meta = await resolve(request.params.id);
    // A manifest's config values are secrets (configForCaller): a caller who may not read them gets
    // them redacted, under an ETag of its own, so no cache mixes the two bodies.
    const redacted = Boolean(meta.manifest) && !request.readsConfigValues && Object.keys(meta.config).length > 0;
    const etag = redacted ? `"${meta.id}.redacted"` : `"${meta.id}"`;
    // By id the bytes never change; by name they may move to another upload. An answer to a token is
    // the token holder's: a shared cache must not serve it to others.
    const scope = request.principal ? 'private' : 'public';
    void reply
      .header('etag', etag)
      .header('cache-control', request.params.id === meta.id ? `${scope}, max-age=31536000, immutable` : 'no-cache');
    if (ifNoneMatchHits(request.headers['if-none-match'], etag)) return reply.code(304).send();
    if (meta.manifest) {
      // A manifest plugin's bytes are its manifest (modules by hash, canonical JSON text), small: sent
      // whole as text (Fastify would try to serialize a stream sent as JSON).
      const manifest = await store.getBytes(meta.id);
      if (!manifest) throw notFound(request.params.id);
      const text = Buffer.from(manifest).toString('utf8');
      return reply
        .type('application/json')
        .header('content-disposition', `attachment; filename="${meta.name ?? meta.id}.json"`)
        .send(redacted ? redactManifestConfig(text, (config) => configForCaller(request, config)) : text);
    }
    const blob = await store.openBytesStream(meta.id);
    if (!blob) throw notFound(request.params.id);
    return reply
      .type('application/wasm')
      .header('content-length', blob.size)
      .header('content-disposition', `attachment; filename="${meta.name ?? meta.id}.wasm"`)
      .send(blob.stream);
  });

  app.delete('/plugins/:id', { schema: DELETE_SCHEMA, config: { policy: ROUTE_POLICIES.admin } }, async (request, reply) => {
    let target = request.params.id;
    const ifMatch = request.headers['if-match'];
    if (ifMatch !== undefined) {
      const meta = await resolve(target);
      if (!ifMatchHits(ifMatch, `"${meta.id}"`)) {
        throw new AppError(
          'PRECONDITION_FAILED',
          `plugin "${target.slice(0, 80)}" is ${meta.id}, which If-Match does not name: nothing was deleted`,
        );
      }
      // The one it matched, by id: a name moved meanwhile must not take another plugin with it.
      target = meta.id;
    }
    const deleted = await storeChange(target, 'delete', () => store.delete(target));
    if (!deleted) throw notFound(request.params.id);
    moduleCache.delete(deleted.id);
    request.log.info({ plugin: deleted.id, name: deleted.name }, 'plugin deleted');
    return reply.code(204).send();
  });
}
