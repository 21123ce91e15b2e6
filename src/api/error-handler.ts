// The one place where errors become HTTP responses: { statusCode, code, error, message, ...details }.
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { AppError, type AppErrorOptions, type ErrorCode, isAppError } from '../errors.ts';
import type { Static } from 'typebox';
import { statusOf } from './error-status.ts';
import { routePolicy } from './route-policy.ts';
import type { ErrorSchema } from './schemas.ts';

/** The error shape (api/schemas.ts), with a code from the catalogue. */
export type ErrorBody = Omit<Static<typeof ErrorSchema>, 'code'> & { code: ErrorCode; [extra: string]: unknown };

/** An error raised in api/ that needs response headers of its own (WWW-Authenticate); below api/ errors carry none. */
export class HttpError extends AppError {
  readonly headers: Record<string, string>;
  constructor(code: ErrorCode, message: string, headers: Record<string, string>, options: AppErrorOptions = {}) {
    super(code, message, options);
    this.headers = headers;
  }
}

export function errorBody(err: AppError): ErrorBody {
  const statusCode = statusOf(err.code);
  return {
    ...err.details,
    statusCode,
    code: err.code,
    error: STATUS_CODES[statusCode] ?? 'Error',
    message: err.message,
  };
}

/** The response headers of an error: Retry-After from its retryAfterMs, and an HttpError's own. */
export function errorHeaders(err: AppError): Record<string, string> {
  const headers: Record<string, string> = err instanceof HttpError ? { ...err.headers } : {};
  if (err.retryAfterMs !== null) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
  return headers;
}

/** Translates Fastify's own errors (schema, body size, media type) into our codes. */
export function fromFastifyError(err: FastifyError, request: FastifyRequest): AppError {
  if (err.validation) return new AppError('INVALID_REQUEST', err.message);
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
    case 'FST_REQ_FILE_TOO_LARGE':
      return request.routeOptions.config?.tooLargeCode
        ? new AppError(request.routeOptions.config.tooLargeCode, request.routeOptions.config.tooLargeMessage ?? err.message)
        : new AppError('INVALID_REQUEST', err.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', err.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('INVALID_REQUEST', err.message);
  }
  const status = err.statusCode ?? 500;
  if (status === 429) return new AppError('RATE_LIMITED', err.message);
  if (status >= 400 && status < 500) return new AppError('INVALID_REQUEST', err.message);
  return new AppError('INTERNAL_ERROR', 'internal server error', { cause: err });
}

/**
 * Every answer of a call carries its logs and egress audit: an error of a call has them from the engine,
 * or, when the call never ran, empty ones from here (the one place that adds them).
 */
const CALL_ERROR_DEFAULTS = Object.freeze({ logs: [], logsTruncated: false, egress: [] });

function answerOf(body: ErrorBody, isCall: boolean): ErrorBody {
  return isCall ? { ...CALL_ERROR_DEFAULTS, ...body } : body;
}

/** Whether a request not routed yet is a call (by its method and path). */
export type IsCallPath = (method: string, path: string) => boolean;

/**
 * Fastify's `frameworkErrors`: errors found while routing, before any hook or route runs (so before
 * tokens are checked: they reveal nothing stored). A path that is not valid percent-encoding is
 * 400 INVALID_REQUEST; a path parameter over maxParamLength is 404 PLUGIN_NOT_FOUND, the answer for any
 * unknown plugin, as no id (64 hex) or name (at most 63 characters) is that long.
 */
export function frameworkErrorHandler(isCallPath: IsCallPath) {
  return (err: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    const path = request.raw.url?.split('?')[0] ?? '';
    const appError =
      err.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? new AppError('PLUGIN_NOT_FOUND', 'no plugin with that id or name (a path segment is longer than any id or name)')
        : err.code === 'FST_ERR_BAD_URL'
          ? new AppError('INVALID_REQUEST', 'the URL path is not valid (malformed percent-encoding)')
          : new AppError('INTERNAL_ERROR', 'internal server error', { cause: err });
    if (appError.code === 'INTERNAL_ERROR') request.log.error({ err }, 'unhandled error');
    const body = errorBody(appError);
    request.log.info(
      { method: request.method, route: null, url: request.raw.url, statusCode: body.statusCode, code: appError.code },
      'request completed',
    );
    void reply
      .code(body.statusCode)
      .header('x-request-id', request.id)
      .send(answerOf(body, isCallPath(request.method, path)));
  };
}

async function errorHandler(app: FastifyInstance): Promise<void> {
  app.setErrorHandler((err: FastifyError | AppError, request: FastifyRequest, reply: FastifyReply) => {
    const appError = isAppError(err) ? err : fromFastifyError(err, request);
    if (appError.code === 'INTERNAL_ERROR') {
      // The logger's err serializer (api/telemetry.ts) keeps code, message, stack and cause: never details (plugin logs).
      request.log.error({ err }, 'unhandled error');
    }
    const body = errorBody(appError);
    // A route may fail after it began another kind of answer (a download whose bytes turn out damaged
    // as the stream starts): those headers describe a body that is not sent.
    for (const header of ['content-length', 'content-disposition', 'etag', 'cache-control']) reply.removeHeader(header);
    // The documented error responses name the codes each status may carry (a `const` among them); the
    // answer is the error itself, never rewritten by a serializer compiled from that documentation.
    void reply
      .code(body.statusCode)
      .type('application/json; charset=utf-8')
      .headers(errorHeaders(appError))
      .serializer(JSON.stringify)
      .send(answerOf(body, routePolicy(request).kind === 'call'));
  });
  app.setNotFoundHandler((request, reply) => {
    const err = new AppError('NOT_FOUND', `route ${request.method} ${request.url} not found`);
    const body = errorBody(err);
    void reply.code(body.statusCode).send(body);
  });
}

/** Errors in the service's shape, everywhere (the routes' policy says which are a call's). */
export const errorHandlerPlugin = fp(errorHandler, { name: 'error-handler', dependencies: ['route-policy'] });

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Error code answered when this route's body exceeds its limit. */
    tooLargeCode?: ErrorCode;
    /** Message answered with `tooLargeCode` (default: Fastify's). */
    tooLargeMessage?: string;
  }
}
