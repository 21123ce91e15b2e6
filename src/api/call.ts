// POST /plugins/:id/call — run one exported function of a stored plugin for an HTTP caller.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { validateHostPatterns } from '../host-patterns.ts';
import { AppError, isAppError } from '../errors.ts';
import type { CallEngine } from '../engine/engine.ts';
import { resolveLimits } from '../engine/limits.ts';
import { CALL_LOG_LEVELS, type CallLogLevel } from '../engine/runtime/logs.ts';
import { checkConfigSize } from './config-size.ts';
import { errorSchema, pluginParamsSchema } from './schemas.ts';
import { reportCall, reportFromDetails } from './telemetry.ts';

export interface CallBody {
  function: string;
  input?: string;
  inputBase64?: string;
  config?: Record<string, string>;
  allowedHosts?: string[];
  logLevel?: CallLogLevel;
  timeoutMs?: number;
  memoryMaxPages?: number;
  maxOutputBytes?: number;
  maxHttpResponseBytes?: number;
  maxVarBytes?: number;
  maxLogEntries?: number;
  maxLogBytes?: number;
  outputEncoding?: 'utf8' | 'base64';
  httpResponseHeaders?: boolean;
}

export const callBodySchema = {
  type: 'object',
  required: ['function'],
  additionalProperties: false,
  properties: {
    function: { type: 'string', minLength: 1, maxLength: 1024 },
    input: { type: 'string' },
    inputBase64: { type: 'string', pattern: '^[A-Za-z0-9+/]*={0,2}$' },
    config: { type: 'object', additionalProperties: { type: 'string' } },
    allowedHosts: { type: 'array', items: { type: 'string' }, maxItems: 256 },
    logLevel: { type: 'string', enum: [...CALL_LOG_LEVELS] },
    timeoutMs: { type: 'integer', minimum: 1 },
    memoryMaxPages: { type: 'integer', minimum: 1 },
    maxOutputBytes: { type: 'integer', minimum: 0 },
    maxHttpResponseBytes: { type: 'integer', minimum: 0 },
    maxVarBytes: { type: 'integer', minimum: 0 },
    maxLogEntries: { type: 'integer', minimum: 0 },
    maxLogBytes: { type: 'integer', minimum: 0 },
    outputEncoding: { type: 'string', enum: ['utf8', 'base64'] },
    httpResponseHeaders: { type: 'boolean' },
  },
  not: { required: ['input', 'inputBase64'] },
} as const;

const logEntrySchema = {
  type: 'object',
  required: ['level', 'message', 'time'],
  properties: { level: { type: 'string' }, message: { type: 'string' }, time: { type: 'string' } },
} as const;

const egressEntrySchema = {
  type: 'object',
  required: ['method', 'url', 'status', 'bytes', 'durationMs', 'allowed'],
  properties: {
    method: { type: 'string' },
    url: { type: 'string' },
    status: { type: ['integer', 'null'] },
    bytes: { type: 'integer' },
    durationMs: { type: 'number' },
    allowed: { type: 'boolean' },
    reason: { type: 'string' },
  },
} as const;

export const callResponseSchema = {
  type: 'object',
  required: ['logs', 'logsTruncated', 'durationMs', 'plugin', 'function', 'egress'],
  properties: {
    output: { type: 'string' },
    outputBase64: { type: 'string' },
    logs: { type: 'array', items: logEntrySchema },
    logsTruncated: { type: 'boolean' },
    durationMs: { type: 'number' },
    plugin: {
      type: 'object',
      required: ['id', 'name'],
      properties: { id: { type: 'string' }, name: { type: ['string', 'null'] } },
    },
    function: { type: 'string' },
    egress: { type: 'array', items: egressEntrySchema },
  },
} as const;

const CALL_ERROR_DEFAULTS = Object.freeze({ logs: [], logsTruncated: false, egress: [] });
const CALL_PATH = /^\/plugins\/[^/]*\/call\/?$/;

/** For errors answered before routing (api/error-handler.ts frameworkErrorHandler): a call's errors carry logs and egress. */
export function callErrorDefaults(method: string, path: string): Readonly<Record<string, unknown>> | undefined {
  return method === 'POST' && CALL_PATH.test(path) ? CALL_ERROR_DEFAULTS : undefined;
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

export async function callRoutes(app: FastifyInstance, opts: CallRoutesOptions): Promise<void> {
  const { config, engine } = opts;
  const { maxInputBytes } = config.engine;
  const { store } = app;

  app.post<{ Params: { id: string }; Body: CallBody }>(
    '/plugins/:id/call',
    {
      bodyLimit: callBodyLimit(maxInputBytes, config.pluginConfig.maxBytes),
      // Every answer of a call carries logs and egress, even when the call never started.
      config: { tooLargeCode: 'INPUT_TOO_LARGE', errorDefaults: CALL_ERROR_DEFAULTS },
      onRequest: requireJson,
      schema: {
        params: pluginParamsSchema,
        body: callBodySchema,
        response: { 200: callResponseSchema, '4xx': errorSchema, '5xx': errorSchema },
      },
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
      reportCall(request, {
        plugin: { id: plugin.id, name: plugin.name },
        config: body.config ? { ...plugin.config, ...body.config } : plugin.config,
        ...(plugin.exports.includes(body.function) ? { function: body.function } : {}),
      });

      const engineStarted = performance.now();
      // The client went away before its answer: a call still waiting for a worker gives up its place.
      const clientGone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) {
          clientGone.abort(new AppError('CLIENT_CLOSED', 'the client closed the connection before the call was answered'));
        }
      };
      reply.raw.once('close', onClose);
      const result = await engine
        .call({
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
        })
        .catch((err: unknown) => {
          if (isAppError(err))
            reportCall(request, { ...reportFromDetails(err.details), engineMs: performance.now() - engineStarted });
          throw err;
        })
        .finally(() => reply.raw.off('close', onClose));
      const { queueMs, runMs, egress, logs, logsTruncated } = result;
      reportCall(request, { queueMs, runMs, egress, logs, logsTruncated });
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
