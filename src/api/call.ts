// POST /plugins/:id/call — run one exported function of a stored plugin for an HTTP caller.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { validateHostPatterns } from '../host-patterns.ts';
import { AppError, isAppError } from '../errors.ts';
import type { CallEngine, CallResult } from '../engine/engine.ts';
import { resolveLimits } from '../engine/limits.ts';
import { hiddenConfigValues, redactValues } from './auth.ts';
import { checkConfigSize } from './config-size.ts';
import type { EgressAuditEntry } from '../egress/fetch.ts';
import type { LogEntry } from '../engine/runtime/logs.ts';
import {
  CallRequestSchema,
  CallResponseSchema,
  PluginRefParams,
  PROTECTED_ROUTE_ERRORS,
  REFUSED_EGRESS_EXAMPLE,
  errorResponse,
  ref,
} from './schemas.ts';
import { ROUTE_POLICIES } from './route-policy.ts';
import { type CallReport, reportFromDetails } from './telemetry.ts';

/** A documented error answer of a call: the CallError shape (with logs and egress). */
const callError = (description: string, codes: readonly string[], options: Parameters<typeof errorResponse>[2] = {}) =>
  errorResponse(description, codes, { ...options, shape: 'CallError' });

const CALL_SCHEMA = {
  tags: ['plugins'],
  operationId: 'callPlugin',
  summary: 'Call an exported function of a plugin',
  description: `Role: \`invoke\` (or \`admin\`). Runs the function with the given input, config (merged over the
plugin's stored defaults), egress allow-list and log level, on a fresh plugin state: nothing
(memory, globals, vars) is left over from any earlier call. Plugins that import WASI get it,
sandboxed (no files, no environment); what they write to stdout/stderr becomes log entries.
Limits default to the operator's settings; a caller may lower them, never raise them above
the ceilings (\`400 LIMIT_ABOVE_CEILING\` names the ceiling). Every error carries the \`logs\`,
\`logsTruncated\` and \`egress\` captured so far (empty when the call never started).`,
  params: PluginRefParams,
  body: ref(CallRequestSchema),
  response: {
    200: {
      description: "The function's output and the plugin's logs.",
      content: { 'application/json': { schema: ref(CallResponseSchema) } },
    },
    400: callError(
      '`INVALID_REQUEST` (schema, unknown field, both inputs, a path that is not valid percent-encoding), `INVALID_ALLOWED_HOSTS`, `LIMIT_ABOVE_CEILING`, `INVALID_CONFIG` (`config` over CONFIG_MAX_KEYS keys or CONFIG_MAX_BYTES bytes).',
      ['INVALID_REQUEST', 'INVALID_ALLOWED_HOSTS', 'LIMIT_ABOVE_CEILING', 'INVALID_CONFIG'],
    ),
    404: callError('`PLUGIN_NOT_FOUND`, or `FUNCTION_NOT_FOUND` (the message and `exports` list what can be called).', [
      'PLUGIN_NOT_FOUND',
      'FUNCTION_NOT_FOUND',
    ]),
    408: callError(
      '`REQUEST_TIMEOUT`: the body did not arrive within BODY_TIMEOUT_MS or at BODY_MIN_BYTES_PER_SECOND; nothing was run.',
      ['REQUEST_TIMEOUT'],
    ),
    413: callError('`INPUT_TOO_LARGE`: the input is larger than MAX_INPUT_BYTES.', ['INPUT_TOO_LARGE']),
    415: callError(
      '`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json` (the message names what was sent); refused before the body is read.',
      ['UNSUPPORTED_MEDIA_TYPE'],
    ),
    422: callError(
      `The call ran and failed: \`PLUGIN_ERROR\` (the plugin set an error, trapped, or exited
non-zero; the message carries its text), \`MEMORY_LIMIT\` (memory was refused during the
call: a \`memory.grow\` past \`memoryMaxPages\` or the module's maximum, or Extism blocks past
the host memory limit; any other trap is \`PLUGIN_ERROR\`), \`OUTPUT_TOO_LARGE\`,
\`HOST_NOT_ALLOWED\` (a plugin HTTP request was refused before anything was sent),
\`EGRESS_ERROR\` (a plugin HTTP request hit a limit or failed upstream). For the last two the
message and the fields \`host\`, \`reason\` (see \`EgressReason\`), \`url\` and, for a refused
redirect, \`targetReason\` name the request; the plugin cannot catch these failures.`,
      ['PLUGIN_ERROR', 'MEMORY_LIMIT', 'OUTPUT_TOO_LARGE', 'HOST_NOT_ALLOWED', 'EGRESS_ERROR'],
      {
        examples: {
          privateAddress: {
            value: {
              statusCode: 422,
              code: 'HOST_NOT_ALLOWED',
              error: 'Unprocessable Entity',
              message:
                'request to 169.254.169.254 refused: resolves to a private or reserved address (169.254.169.254 is linkLocal)',
              reason: 'private_address',
              host: '169.254.169.254',
              url: 'http://169.254.169.254/latest/meta-data/',
              logs: [],
              logsTruncated: false,
              egress: [REFUSED_EGRESS_EXAMPLE],
            },
          },
        },
      },
    ),
    503: callError(
      '`OVERLOADED` (every worker busy and the queue full: QUEUE_MAX calls, or QUEUE_MAX_BYTES of their input; or every PostgreSQL connection of this replica in use; retry after Retry-After seconds), `UNDER_PRESSURE` (event-loop delay or heap above MAX_EVENT_LOOP_DELAY_MS / MAX_HEAP_USED_BYTES; retry after Retry-After seconds), `STORE_UNAVAILABLE` (the plugin is not cached on this replica and the PostgreSQL store cannot be reached, or the process is out of file descriptors or memory to read it; retry after Retry-After seconds), `SHUTTING_DOWN` (refused, or cancelled at the drain timeout).',
      ['OVERLOADED', 'UNDER_PRESSURE', 'STORE_UNAVAILABLE', 'SHUTTING_DOWN'],
      {
        headers: {
          'Retry-After': {
            type: 'string',
            description: 'Seconds to wait (OVERLOADED, UNDER_PRESSURE, STORE_UNAVAILABLE, SHUTTING_DOWN).',
          },
        },
      },
    ),
    504: callError(
      `\`TIMEOUT\`: the call ran past \`timeoutMs\` and was stopped, or never got a worker in time; a
plugin HTTP request still waiting at the deadline is cut just before it (\`reason: deadline\`,
with \`host\` and \`url\`). \`EGRESS_TIMEOUT\`: a plugin HTTP request took longer than
EGRESS_TIMEOUT_MS (\`reason: timeout\`).`,
      ['TIMEOUT', 'EGRESS_TIMEOUT'],
    ),
    500: callError(
      `\`INTERNAL_ERROR\`: the worker running the call died (crashed, or exited) for a reason other
than the call's deadline; the pool replaces it. The call is not retried (it may have had
effects, e.g. HTTP requests). The server log carries the cause, never the plugin's logs.
\`STORE_ERROR\`: the plugin's stored bytes no longer hash to its id or are missing (damaged on
disk); nothing ran. Uploading the same bytes again repairs the stored copy.`,
      ['INTERNAL_ERROR', 'STORE_ERROR'],
    ),
    ...PROTECTED_ROUTE_ERRORS,
  },
};

const CALL_PATH = /^\/plugins\/[^/]*\/call\/?$/;

/** For errors answered before routing (api/error-handler.ts frameworkErrorHandler), when there is no route policy yet. */
export function isCallPath(method: string, path: string): boolean {
  return method === 'POST' && CALL_PATH.test(path);
}

export interface CallRoutesOptions {
  config: Config;
  engine: CallEngine;
}

/** The call body is JSON; any other media type is refused before the body is read, naming what was sent. */
function requireJson(request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void {
  const header = request.headers['content-type'];
  if (header === 'application/json') return done();
  const mediaType = header?.split(';')[0]!.trim().toLowerCase();
  // No content type and no body: the schema answers (400, body required).
  if ((mediaType === undefined && !hasBody(request)) || mediaType === 'application/json') return done();
  done(
    new AppError(
      'UNSUPPORTED_MEDIA_TYPE',
      `send the call as application/json, not ${mediaType || 'a body without a content type'}`,
    ),
  );
}

function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** JSON quoting and base64 make a body bigger than the input and config it carries; both are checked exactly. */
export function callBodyLimit(maxInputBytes: number, configMaxBytes: number): number {
  return Math.ceil((maxInputBytes * 4) / 3) + 2 * configMaxBytes + 1024 * 1024;
}

export async function callRoutes(root: FastifyInstance, opts: CallRoutesOptions): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const { config, engine } = opts;
  const { maxInputBytes } = config.engine;
  const { store } = app;

  app.post(
    '/plugins/:id/call',
    {
      bodyLimit: callBodyLimit(maxInputBytes, config.pluginConfig.maxBytes),
      config: { policy: ROUTE_POLICIES.call, tooLargeCode: 'INPUT_TOO_LARGE' },
      onRequest: requireJson,
      schema: CALL_SCHEMA,
    },
    async (request, reply) => {
      const body = request.body;
      const inputBytes =
        body.input !== undefined
          ? Buffer.byteLength(body.input, 'utf8')
          : body.inputBase64 !== undefined
            ? Math.floor((body.inputBase64.length * 3) / 4) -
              (body.inputBase64.endsWith('==') ? 2 : body.inputBase64.endsWith('=') ? 1 : 0)
            : 0;
      if (inputBytes > maxInputBytes) {
        throw new AppError(
          'INPUT_TOO_LARGE',
          `the input is ${inputBytes} bytes; the limit is ${maxInputBytes} bytes (MAX_INPUT_BYTES)`,
        );
      }
      if (body.config) checkConfigSize(body.config, config.pluginConfig, "the call's");
      if (body.allowedHosts) validateHostPatterns(body.allowedHosts);
      const plugin = await store.get(request.params.id);
      if (!plugin) throw new AppError('PLUGIN_NOT_FOUND', `no plugin with id or name "${request.params.id.slice(0, 80)}"`);
      const limits = resolveLimits(config.engine.limits, body, plugin.manifest?.limits);
      // One report, filled in as the call goes (read by telemetry when the response is done).
      const report: CallReport = {
        plugin: { id: plugin.id, name: plugin.name },
        config: body.config ? { ...plugin.config, ...body.config } : plugin.config,
      };
      if (plugin.exports.includes(body.function)) report.function = body.function;
      request.callReport = report;

      const engineStarted = performance.now();
      // The client went away before its answer: a call still waiting for a worker gives up its place.
      const clientGone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) {
          clientGone.abort(new AppError('CLIENT_CLOSED', 'the client closed the connection before the call was answered'));
        }
      };
      reply.raw.once('close', onClose);
      // A stored secret (a key in a URL's query, say) must not reach a caller who may not read the config
      // (configForCaller) through what the service reports of the call: its egress audit, its failure,
      // the plugin's log lines. The output is the plugin's answer and stays as it is.
      const hidden = hiddenConfigValues(request, plugin.config, body.config);
      let result: CallResult;
      try {
        result = await engine.call({
          plugin,
          function: body.function,
          input: body.input ?? body.inputBase64 ?? null,
          inputEncoding: body.inputBase64 !== undefined ? 'base64' : 'utf8',
          config: body.config,
          allowedHosts: body.allowedHosts,
          logLevel: body.logLevel ?? 'info',
          limits,
          outputEncoding: body.outputEncoding,
          httpResponseHeaders: body.httpResponseHeaders,
          signal: clientGone.signal,
        });
      } catch (err) {
        if (isAppError(err)) {
          if (hidden.length > 0) redactError(err, hidden);
          Object.assign(report, reportFromDetails(err.details));
          report.engineMs = performance.now() - engineStarted;
        }
        throw err;
      } finally {
        reply.raw.off('close', onClose);
      }
      report.queueMs = result.queueMs;
      report.runMs = result.runMs;
      if (hidden.length > 0) {
        result.egress = redactAudit(result.egress, hidden);
        result.logs = redactLogs(result.logs, hidden);
      }
      report.egress = result.egress;
      report.logs = result.logs;
      report.logsTruncated = result.logsTruncated;
      return {
        ...(result.outputBase64 !== undefined ? { outputBase64: result.outputBase64 } : { output: result.output ?? '' }),
        logs: result.logs,
        logsTruncated: result.logsTruncated,
        durationMs: Math.round(result.durationMs * 1000) / 1000,
        plugin: { id: plugin.id, name: plugin.name },
        function: body.function,
        egress: result.egress,
      };
    },
  );
}

function redactAudit(audit: readonly EgressAuditEntry[], hidden: readonly string[]): EgressAuditEntry[] {
  return audit.map((entry) => ({ ...entry, url: redactValues(entry.url, hidden) }));
}

/** A call's failure as a caller who may not read the config sees it: its message, URL and audit. */
function redactError(err: AppError, hidden: readonly string[]): void {
  err.message = redactValues(err.message, hidden);
  const details = err.details;
  if (typeof details.url === 'string') details.url = redactValues(details.url, hidden);
  if (typeof details.host === 'string') details.host = redactValues(details.host, hidden);
  if (Array.isArray(details.egress)) details.egress = redactAudit(details.egress as EgressAuditEntry[], hidden);
  if (Array.isArray(details.logs)) details.logs = redactLogs(details.logs as LogEntry[], hidden);
}

function redactLogs(logs: readonly LogEntry[], hidden: readonly string[]): LogEntry[] {
  return logs.map((entry) => ({ ...entry, message: redactValues(entry.message, hidden) }));
}
