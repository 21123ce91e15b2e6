// HTTP-side telemetry: request ids, one JSON log line per request (with the call's facts for calls),
// HTTP request metrics per route template, and call metrics from the report the call route fills in.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import fp from 'fastify-plugin';
import type { DestinationStream, Logger, LoggerOptions } from 'pino';
import type { Config } from '../config.ts';
import { type EgressAuditEntry, summarizeEgress } from '../egress/fetch.ts';
import { isAppError } from '../errors.ts';
import { type ServiceMetrics, UNMATCHED_ROUTE, UNRESOLVED, pluginLabel } from '../metrics.ts';
import { fromFastifyError } from './error-handler.ts';
import { routePolicy, routeUrl } from './route-policy.ts';

/** What the call route learns about a call, as it learns it; every field may stay unset (e.g. 404 before lookup). */
export interface CallReport {
  plugin?: { id: string; name: string | null };
  /** Set only once the name matched an export of the plugin (it becomes a metric label). */
  function?: string;
  /** Effective config handed to the plugin: logged with its values redacted. */
  config?: Record<string, string>;
  queueMs?: number;
  runMs?: number;
  /** Wall time spent in the engine, for failures that carry no queue/run split (timeouts, overload). */
  engineMs?: number;
  egress?: readonly EgressAuditEntry[];
  logs?: readonly { level: string; message: string }[];
  logsTruncated?: boolean;
}

/** What a failed call's error carries (the engine attaches its logs and egress audit to the AppError). */
export function reportFromDetails(details: Record<string, unknown>): CallReport {
  const report: CallReport = {};
  if (Array.isArray(details.logs)) report.logs = details.logs as CallReport['logs'];
  if (typeof details.logsTruncated === 'boolean') report.logsTruncated = details.logsTruncated;
  if (Array.isArray(details.egress)) report.egress = details.egress as CallReport['egress'];
  return report;
}

/** The facts of a finished call as logged on its request line. */
interface CallSummary {
  plugin: string;
  pluginId?: string;
  function: string;
  outcome: string;
  queueMs?: number;
  runMs?: number;
  egressCount: number;
  config?: Record<string, string>;
  /** The config's keys when there are more than LOGGED_CONFIG_KEYS (config shows the first ones). */
  configKeys?: number;
}

/** Keys of a call's config the log line names at most, each cut to LOGGED_KEY_CHARS: a caller chooses them. */
const LOGGED_CONFIG_KEYS = 20;
const LOGGED_KEY_CHARS = 64;

const REDACTED = '[REDACTED]';
/** Secrets never reach the log: credentials, and values of configs passed to plugins (keys stay). */
const REDACT_PATHS = ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'call.config.*', 'config.*'];

/** A logged error as it appears in the log. */
export interface LoggedError {
  type: string;
  message: string;
  code?: string;
  stack?: string;
  cause?: LoggedError | string;
}

const MAX_CAUSE_DEPTH = 4;

/**
 * The `err` serializer of every logger: name, code, message, stack and cause only. Never an error's
 * other own fields: an AppError's `details` carry plugin logs and egress URLs, which are the caller's.
 */
export function errorForLog(err: unknown, depth = 0): LoggedError | string {
  if (!(err instanceof Error)) return plainErrorForLog(err);
  const code = (err as { code?: unknown }).code;
  const logged: LoggedError = { type: err.name, message: messageOf(err) };
  if (typeof code === 'string') logged.code = code;
  if (err.stack !== undefined) logged.stack = err.stack;
  if (err.cause !== undefined && depth < MAX_CAUSE_DEPTH) logged.cause = errorForLog(err.cause, depth + 1);
  return logged;
}

/** A connect to a name with several addresses fails with an AggregateError whose own message is empty. */
function messageOf(err: Error): string {
  if (err.message === '' && err instanceof AggregateError) {
    return err.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ');
  }
  return err.message;
}

/** Something thrown or logged that is not an Error: its message and code when it has them, never its other fields. */
function plainErrorForLog(err: unknown): LoggedError | string {
  if (typeof err !== 'object' || err === null) return String(err);
  const { message, code } = err as { message?: unknown; code?: unknown };
  if (typeof message !== 'string') return Object.prototype.toString.call(err);
  return typeof code === 'string' ? { type: 'Object', message, code } : { type: 'Object', message };
}

export function loggerOptions(config: Config, stream?: DestinationStream): LoggerOptions & { stream?: DestinationStream } {
  return {
    level: config.logLevel,
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    serializers: { err: (err: unknown) => errorForLog(err) },
    ...(stream ? { stream } : {}),
  };
}

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A caller's X-Request-Id is kept when it is short and plain (it goes into every log line), else replaced. */
export function genRequestId(raw: IncomingMessage): string {
  const given = raw.headers['x-request-id'];
  return typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Replaces Fastify's two lines per request with one, carrying route template, status, duration and call facts. */
export class RequestLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const policy = routePolicy(request);
    const level = policy.kind === 'ops' && reply.statusCode < 500 ? 'debug' : error || reply.statusCode >= 500 ? 'warn' : 'info';
    // The line is built only when it is written (Fastify's request loggers are pino's).
    if (!(request.log as Logger).isLevelEnabled(level)) return;
    const line = {
      method: request.method,
      route: routeUrl(request) ?? null,
      url: request.url,
      // The client's address: X-Forwarded-For only from the proxies TRUST_PROXY names.
      remoteAddress: request.ip,
      statusCode: reply.statusCode,
      durationMs: round(reply.elapsedTime),
      ...(request.callSummary ? { call: request.callSummary } : {}),
      ...(error ? { err: error } : {}),
    };
    request.log[level](line, 'request completed');
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** Not timed: probes and preflights would only add series. */
const UNTIMED_METHODS = new Set(['HEAD', 'OPTIONS', 'TRACE', 'CONNECT']);

// Hooks here take `done` rather than being async: each runs on every request, and a promise per hook
// per request is measurable at the rates calls run.
async function telemetry(app: FastifyInstance, { config, metrics }: { config: Config; metrics: ServiceMetrics }): Promise<void> {
  app.decorateRequest('callReport', null);
  app.decorateRequest('callSummary', null);
  app.decorateRequest('errorCode', null);

  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    done();
  });

  app.addHook('onError', async (request, _reply, err) => {
    request.errorCode = isAppError(err) ? err.code : fromFastifyError(err, request).code;
  });

  app.addHook('onResponse', (request, reply, done) => {
    if (!UNTIMED_METHODS.has(request.method)) {
      metrics.observeHttp(request.method, routeUrl(request) ?? UNMATCHED_ROUTE, reply.statusCode, reply.elapsedTime / 1000);
    }
    if (routePolicy(request).kind === 'call') observeCall(request, reply, config, metrics);
    done();
  });
}

/** Request ids, the request log line, HTTP and call metrics: the first hooks of every request. */
export const telemetryPlugin = fp(telemetry, { name: 'telemetry', dependencies: ['route-policy'] });

function observeCall(request: FastifyRequest, reply: FastifyReply, config: Config, metrics: ServiceMetrics): void {
  const report = request.callReport ?? {};
  const plugin = report.plugin ? pluginLabel(report.plugin) : UNRESOLVED;
  const fn = report.plugin && report.function !== undefined ? report.function : UNRESOLVED;
  const outcome = reply.statusCode < 400 ? 'ok' : (request.errorCode?.toLowerCase() ?? `http_${reply.statusCode}`);

  // Without the engine's split (a call stopped at its deadline, refused by a full queue) its whole engine time counts as run.
  const runMs = report.runMs ?? report.engineMs;
  metrics.observeCall({
    plugin,
    function: fn,
    outcome,
    queueSeconds: report.queueMs !== undefined ? report.queueMs / 1000 : undefined,
    runSeconds: runMs !== undefined ? runMs / 1000 : undefined,
  });
  if (report.egress !== undefined && report.egress.length > 0) {
    const egress = summarizeEgress(report.egress);
    for (const outcome of ['ok', 'refused', 'failed'] as const) {
      if (egress[outcome] > 0) metrics.egressRequests(outcome, egress[outcome]);
    }
  }
  const logs = report.logs ?? [];
  for (const line of logs) metrics.pluginLogLines(line.level);
  if (report.logsTruncated) metrics.pluginLogsTruncated();

  if (config.ops.forwardPluginLogs) {
    for (const line of logs) request.log.debug({ plugin, function: fn, pluginLevel: line.level }, line.message);
  }
  // Only for the request's log line (requestCompleted): not built when that line is not written.
  const log = request.log as Logger;
  if (!log.isLevelEnabled('info') && !(reply.statusCode >= 400 && log.isLevelEnabled('warn'))) return;
  request.callSummary = {
    plugin,
    ...(report.plugin ? { pluginId: report.plugin.id } : {}),
    function: fn,
    outcome,
    ...(report.queueMs !== undefined ? { queueMs: round(report.queueMs) } : {}),
    ...(runMs !== undefined ? { runMs: round(runMs) } : {}),
    egressCount: report.egress?.length ?? 0,
    ...(report.config ? loggedConfig(report.config) : {}),
  };
}

/**
 * A call's config as its log line shows it (values redacted by REDACT_PATHS): its first keys, cut
 * short, and how many there are; 255 keys of 250 characters made a 69 KB line per request. A copy:
 * redaction rewrites the logged object.
 */
function loggedConfig(config: Record<string, string>): Pick<CallSummary, 'config' | 'configKeys'> {
  const keys = Object.keys(config);
  const shown: Record<string, string> = {};
  for (const key of keys.slice(0, LOGGED_CONFIG_KEYS)) shown[key.slice(0, LOGGED_KEY_CHARS)] = config[key]!;
  return keys.length > LOGGED_CONFIG_KEYS ? { config: shown, configKeys: keys.length } : { config: shown };
}

declare module 'fastify' {
  interface FastifyRequest {
    callReport: CallReport | null;
    callSummary: CallSummary | null;
    /** Code of the AppError this request ended with, if any. */
    errorCode: string | null;
  }
}
