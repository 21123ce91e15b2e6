// The HTTP contract's shapes, each written once: TypeBox schemas that validate requests, serialize
// answers, type the handlers and become openapi.yaml's components (api/openapi.ts generates the
// document from the routes; `npm run openapi`). Routes refer to a shape with `ref()`. The plugin
// record is the store's (store/plugin-record.ts).
import { Type, type Static } from 'typebox';
import { CALL_LOG_LEVELS } from '../engine/runtime/logs.ts';
import { ExtismManifestSchema } from '../manifest.ts';
import { HostPatternSchema, NameSchema, PluginManifestSchema, PluginSchema, ref } from '../store/plugin-record.ts';

export { ExtismManifestSchema, HostPatternSchema, NameSchema, PluginSchema, ref };

/** An object of string values (TypeBox's Record would document patternProperties). */
const stringMap = (description: string) =>
  Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' }, description });

export const ErrorSchema = Type.Object(
  {
    statusCode: Type.Integer({ description: 'The HTTP status, repeated.' }),
    code: Type.String({ pattern: '^[A-Z][A-Z0-9_]*$', description: 'Stable machine-readable error code.' }),
    error: Type.String({ description: 'The HTTP reason phrase.' }),
    message: Type.String({ description: 'What went wrong, for a person.' }),
  },
  // Some errors carry details (e.g. unsupportedImports, logs).
  { $id: 'Error', additionalProperties: true },
);

export const ReadinessChecksSchema = Type.Unsafe<Record<string, 'ok' | 'failed'>>({
  $id: 'ReadinessChecks',
  type: 'object',
  description: 'Each check by name. Why a check failed is logged (warn, "not ready"), not answered.',
  additionalProperties: { enum: ['ok', 'failed'] },
});

const ALLOWED_HOSTS_DESCRIPTION = `Egress allow-list for this call, replacing the plugin's stored list (without either, the
plugin may reach nothing). A URL is allowed only if it matches this list AND the operator
ceiling EGRESS_ALLOWED_HOSTS (default \`*\`): a caller can narrow the ceiling, never widen it.
Each pattern is \`[http://|https://]HOST[:PORT]\`:
- \`api.example.com\`: exactly that host, case-insensitive (compared in canonical form:
  lower case, punycode; a trailing dot in the URL is ignored);
- \`*.example.com\`: any subdomain (\`a.example.com\`, \`a.b.example.com\`), not \`example.com\` itself;
- \`*\`: any host (that the ceiling allows);
- an IPv4 address or a bracketed IPv6 address (\`[2001:db8::1]\`) matches that address;
- \`:PORT\` pins the port (default ports count: \`api.example.com:443\` matches
  \`https://api.example.com/\`); without it any port matches;
- \`http://\` or \`https://\` pins the scheme; without it both match.
There is no negation: \`!x\` (which the Extism SDK reads as "everything else"), paths, and
other wildcards (\`*x.com\`, \`a.*.com\`) are refused with \`400 INVALID_ALLOWED_HOSTS\`.
Matching is only the first gate: every address the host resolves to must also be public
unless EGRESS_ALLOW_PRIVATE=true.`;

export const CallRequestSchema = Type.Object(
  {
    function: Type.String({ minLength: 1, maxLength: 1024, description: 'An exported function of the plugin.' }),
    input: Type.Optional(Type.String({ description: 'UTF-8 input (give this or inputBase64, not both).' })),
    inputBase64: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'Binary input, base64.' })),
    config: Type.Optional(stringMap("Merged over the plugin's stored config.")),
    allowedHosts: Type.Optional(
      Type.Array(ref(HostPatternSchema), {
        maxItems: 256,
        description: ALLOWED_HOSTS_DESCRIPTION,
        examples: [['api.example.com', '*.cdn.example.com', 'https://auth.example.com:8443']],
      }),
    ),
    logLevel: Type.Optional(Type.Enum([...CALL_LOG_LEVELS], { default: 'info' })),
    timeoutMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Default CALL_TIMEOUT_MS, at most CALL_TIMEOUT_MS_CEILING; covers waiting for a worker too.',
      }),
    ),
    memoryMaxPages: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          "Cap on the plugin's own linear memory in 64 KiB pages (default CALL_MEMORY_PAGES, at most CALL_MEMORY_PAGES_CEILING).",
      }),
    ),
    maxOutputBytes: Type.Optional(
      Type.Integer({ minimum: 0, description: 'Default CALL_OUTPUT_BYTES, at most CALL_OUTPUT_BYTES_CEILING.' }),
    ),
    maxHttpResponseBytes: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Largest HTTP response body the plugin may receive (default CALL_HTTP_RESPONSE_BYTES, at most its ceiling). A body of exactly this size passes; a larger one ends the call with `422 EGRESS_ERROR` (`reason: response_too_large`).',
      }),
    ),
    maxVarBytes: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Bytes of Extism vars the plugin may hold (default CALL_VAR_BYTES, at most its ceiling).',
      }),
    ),
    maxLogEntries: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Log entries kept for the response (default CALL_LOG_ENTRIES, at most its ceiling); past it `logsTruncated` is true. WASI stdout/stderr entries count too.',
      }),
    ),
    maxLogBytes: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Bytes of log messages kept for the response (default CALL_LOG_BYTES, at most its ceiling).',
      }),
    ),
    outputEncoding: Type.Optional(
      Type.Enum(['utf8', 'base64'], { description: 'Default utf8 when the output is valid UTF-8, else base64.' }),
    ),
    httpResponseHeaders: Type.Optional(
      Type.Boolean({
        description: `Lets the plugin read HTTP response headers (\`extism call --enable-http-response-headers\`, the
SDK's \`allowHttpResponseHeaders\`): \`http_headers\` then returns a JSON object of the last
response's headers (names in lower case, repeated headers joined with \`, \`), \`{}\` before any
request. False or absent: \`http_headers\` returns 0.`,
      }),
    ),
  },
  {
    $id: 'CallRequest',
    additionalProperties: false,
    not: {
      description: 'input and inputBase64 are exclusive.',
      required: ['input', 'inputBase64'],
      properties: { input: true, inputBase64: true },
    },
    examples: [{ function: 'count_vowels', input: 'Hello, World!', config: { vowels: 'aeiou' } }],
  },
);
export type CallRequest = Static<typeof CallRequestSchema>;

export const LogEntrySchema = Type.Object(
  {
    level: Type.Enum(['trace', 'debug', 'info', 'warn', 'error', 'stdout', 'stderr']),
    message: Type.String(),
    time: Type.String({ format: 'date-time' }),
  },
  { $id: 'LogEntry', additionalProperties: false },
);

export const EGRESS_REASONS = [
  'not_in_allow_list',
  'private_address',
  'scheme',
  'redirect_refused',
  'too_many_redirects',
  'too_many_requests',
  'request_too_large',
  'invalid_request',
  'dns_failed',
  'connect_failed',
  'upstream_failed',
  'response_too_large',
  'timeout',
  'deadline',
] as const;

export const EgressReasonSchema = Type.Enum([...EGRESS_REASONS], {
  $id: 'EgressReason',
  description: `Why an attempt was refused or failed (absent when it succeeded). Refused, the call ends with
\`422 HOST_NOT_ALLOWED\`: \`not_in_allow_list\`, \`private_address\`, \`scheme\` (only http and https),
\`redirect_refused\` (a redirect to a target that would be refused), \`too_many_redirects\`.
Refused by a limit, \`422 EGRESS_ERROR\`: \`too_many_requests\` (EGRESS_MAX_REQUESTS per call),
\`request_too_large\` (EGRESS_MAX_REQUEST_BODY_BYTES), \`invalid_request\`.
Failed upstream: \`dns_failed\`, \`connect_failed\`, \`upstream_failed\`, \`response_too_large\`
(\`422 EGRESS_ERROR\`); \`timeout\` (EGRESS_TIMEOUT_MS, \`504 EGRESS_TIMEOUT\`); \`deadline\` (the
call's own deadline, \`504 TIMEOUT\`).`,
});

/** An attempt refused before anything was sent: the example of the attempt's and of a call error's documentation. */
export const REFUSED_EGRESS_EXAMPLE = {
  method: 'GET',
  url: 'http://169.254.169.254/latest/meta-data/',
  status: null,
  bytes: 0,
  durationMs: 0.2,
  allowed: false,
  reason: 'private_address',
};

export const EgressAttemptSchema = Type.Object(
  {
    method: Type.String(),
    url: Type.String({
      description: 'The URL of this hop; query kept, fragment dropped, credentials replaced by `REDACTED`.',
    }),
    status: Type.Union([Type.Integer(), Type.Null()], {
      description: "The upstream's HTTP status; null when no response arrived (refused, connection failed, timed out).",
    }),
    bytes: Type.Integer({ description: 'Response body bytes received (decoded).' }),
    durationMs: Type.Number(),
    allowed: Type.Boolean({ description: 'False when the policy or a limit refused the attempt before anything was sent.' }),
    reason: Type.Optional(ref(EgressReasonSchema)),
  },
  {
    $id: 'EgressAttempt',
    description: 'One HTTP request the plugin attempted; each redirect hop is an attempt of its own.',
    additionalProperties: false,
    examples: [
      {
        method: 'GET',
        url: 'https://REDACTED:REDACTED@api.example.com/v1/items?page=2',
        status: 200,
        bytes: 512,
        durationMs: 41.3,
        allowed: true,
      },
      REFUSED_EGRESS_EXAMPLE,
    ],
  },
);

export const CallResponseSchema = Type.Object(
  {
    output: Type.Optional(Type.String({ description: 'The output as UTF-8 text (when valid UTF-8 and not asked for base64).' })),
    outputBase64: Type.Optional(Type.String({ description: 'The output bytes, base64.' })),
    logs: Type.Array(ref(LogEntrySchema), {
      description: "The plugin's log calls at or above logLevel, and WASI stdout/stderr lines, in order.",
    }),
    logsTruncated: Type.Boolean({ description: 'True when CALL_LOG_ENTRIES or CALL_LOG_BYTES cut the logs short.' }),
    durationMs: Type.Number(),
    plugin: Type.Object({ id: Type.String(), name: Type.Union([Type.String(), Type.Null()]) }, { additionalProperties: false }),
    function: Type.String(),
    egress: Type.Array(ref(EgressAttemptSchema)),
  },
  {
    $id: 'CallResponse',
    additionalProperties: false,
    examples: [
      {
        output: '{"count":3,"total":3,"vowels":"aeiou"}',
        logs: [],
        logsTruncated: false,
        durationMs: 0.41,
        plugin: { id: '9ee554422a18a0112159050331e0f8f512287a32ad3d40fd2b026bce63aafe21', name: 'count_vowels' },
        function: 'count_vowels',
        egress: [],
      },
    ],
  },
);
export type CallResponse = Static<typeof CallResponseSchema>;

/** The error shape of a call: every answer of a call carries its logs and egress (empty when it never ran). */
export const CallErrorSchema = Type.Unsafe({
  $id: 'CallError',
  allOf: [
    { $ref: 'Error#' },
    {
      type: 'object',
      required: ['logs', 'logsTruncated', 'egress'],
      properties: {
        reason: { $ref: 'EgressReason#' },
        host: {
          type: 'string',
          description:
            'HOST_NOT_ALLOWED, EGRESS_ERROR, EGRESS_TIMEOUT, TIMEOUT of a plugin request — the host of the request (or redirect hop) that failed.',
        },
        url: { type: 'string', description: 'With `host`; the URL of that request, credentials redacted.' },
        targetReason: { $ref: 'EgressReason#' },
        pattern: { type: 'string', description: 'INVALID_ALLOWED_HOSTS only; the pattern refused.' },
        problem: { type: 'string', description: 'INVALID_ALLOWED_HOSTS only; what is wrong with it.' },
        logs: { type: 'array', items: { $ref: 'LogEntry#' } },
        logsTruncated: { type: 'boolean' },
        egress: { type: 'array', items: { $ref: 'EgressAttempt#' } },
        exports: { type: 'array', items: { type: 'string' }, description: 'FUNCTION_NOT_FOUND only.' },
      },
    },
  ],
});

/** Shared schemas, registered on the app by $id (in this order they appear in the document). */
export const SHARED_SCHEMAS = [
  ReadinessChecksSchema,
  ErrorSchema,
  NameSchema,
  ExtismManifestSchema,
  PluginManifestSchema,
  PluginSchema,
  CallRequestSchema,
  LogEntrySchema,
  EgressAttemptSchema,
  EgressReasonSchema,
  HostPatternSchema,
  CallResponseSchema,
  CallErrorSchema,
];

// ---- Parameters and responses shared by routes ----

export const PluginRefParams = Type.Object({
  id: Type.String({
    minLength: 1,
    description: 'A plugin id (64 lowercase hex digits) or a name. Longer than 100 characters is `404 PLUGIN_NOT_FOUND`.',
  }),
});

const RETRY_AFTER = (description: string) => ({ 'Retry-After': { type: 'string', description } });

interface ErrorResponseOptions {
  /** The error shape: Error (default) or CallError (the call route). */
  shape?: 'Error' | 'CallError';
  /** Fields some of these errors add, and those all of them carry. */
  properties?: Record<string, unknown>;
  required?: string[];
  headers?: Record<string, unknown>;
  examples?: Record<string, { value: unknown }>;
}

/** A documented error answer: `codes` are the codes it may carry. */
export function errorResponse(description: string, codes: readonly string[], options: ErrorResponseOptions = {}) {
  const code = codes.length === 1 ? { const: codes[0] } : { enum: codes };
  return {
    description,
    ...(options.headers ? { headers: options.headers } : {}),
    content: {
      'application/json': {
        schema: {
          allOf: [
            { $ref: `${options.shape ?? 'Error'}#` },
            { ...(options.required ? { required: options.required } : {}), properties: { code, ...options.properties } },
          ],
        },
        ...(options.examples ? { examples: options.examples } : {}),
      },
    },
  };
}

export const Unauthorized = errorResponse(
  '`UNAUTHORIZED`: tokens are configured and none (or an unknown one) was given.',
  ['UNAUTHORIZED'],
  { headers: { 'WWW-Authenticate': { type: 'string', description: 'Bearer challenge.' } } },
);
export const Forbidden = errorResponse(
  "`FORBIDDEN`: the token's role does not allow this route. `CROSS_SITE_REQUEST`: a request that changes something (not GET, HEAD or OPTIONS) sent by a page of another site (its `Origin` is not this service, or `Sec-Fetch-Site` is not `same-origin`). `UNTRUSTED_HOST`: while the service runs open, a `Host` it does not answer to (`ALLOWED_HOST_NAMES`; on a loopback address, by default localhost, 127.0.0.1 and [::1]).",
  ['FORBIDDEN', 'CROSS_SITE_REQUEST', 'UNTRUSTED_HOST'],
);
export const RateLimited = errorResponse(
  '`RATE_LIMITED`: too many requests from this token (or address), or AUTH_FAILURE_MAX failed token attempts from this address within the window (then, until it ends, every request of it that needs a token is refused, a valid token too); retry after Retry-After seconds.',
  ['RATE_LIMITED'],
  { headers: RETRY_AFTER('Seconds to wait.') },
);
export const ShuttingDown = errorResponse(
  '`SHUTTING_DOWN`: the server is shutting down. `STORE_UNAVAILABLE`: the PostgreSQL store cannot be reached and this replica cannot answer from what it has cached, or the process is out of file descriptors or memory to read the stored bytes; retry after Retry-After seconds. `OVERLOADED`: every PostgreSQL connection of this replica (PG_POOL_MAX) is in use and enough requests wait for one; retry after Retry-After seconds.',
  ['SHUTTING_DOWN', 'STORE_UNAVAILABLE', 'OVERLOADED'],
  { headers: RETRY_AFTER('Seconds to wait (STORE_UNAVAILABLE, OVERLOADED).') },
);
export const PluginNotFound = errorResponse('`PLUGIN_NOT_FOUND`: no plugin has this id or name.', ['PLUGIN_NOT_FOUND'], {
  examples: {
    notFound: {
      value: { statusCode: 404, code: 'PLUGIN_NOT_FOUND', error: 'Not Found', message: 'no plugin with id or name "nope"' },
    },
  },
});
export const MalformedPath = errorResponse(
  '`INVALID_REQUEST`: the path is not valid percent-encoding (answered before tokens are checked).',
  ['INVALID_REQUEST'],
);
export const StoreError = errorResponse('`STORE_ERROR`: the plugin store could not be written (disk full, permissions).', [
  'STORE_ERROR',
]);

export const RequestTimeout = errorResponse(
  '`REQUEST_TIMEOUT`: the body did not arrive within BODY_TIMEOUT_MS or at BODY_MIN_BYTES_PER_SECOND; nothing was stored and the upload slot is free again.',
  ['REQUEST_TIMEOUT'],
);

/** What every route behind tokens may also answer. */
export const PROTECTED_ROUTE_ERRORS = { 401: Unauthorized, 403: Forbidden, 429: RateLimited } as const;
