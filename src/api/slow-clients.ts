// Request hygiene: a client must send its request in time, or it is cut with the service's error shape
// and lets go of what it holds (an upload slot, a place in memory). Headers: Node's headersTimeout,
// answered here instead of by Node or Fastify. Bodies: a deadline and a minimum rate, measured on the
// socket's byte count so the body parser's stream is left alone; a body cut fails that parser with
// 408 REQUEST_TIMEOUT, and the request ends through the normal error path. Responses: the same two
// limits on the client taking them; one that does not is closed, and the answer it held is freed
// (nothing else bounds it: a 16 MiB call output stayed in memory as long as the client kept still).
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import { errorBody } from './error-handler.ts';

/** A transfer's rate is judged over windows this long: a client may pause briefly, not trickle. */
export const RATE_WINDOW_MS = 5_000;
/** How often the connection checker looks for headers past their timeout (Node's default is 30 s). */
const HEADERS_CHECK_MS = 1_000;
/** How long an answered bad connection is drained before it is closed. */
const LINGER_MS = 1_000;
/** When the body parser is not listening yet (a hook still runs), how soon to try cutting again. */
const RETRY_CUT_MS = 100;
/**
 * Answers shorter than this (UTF-16 units or bytes) fit in the socket's buffers and go out at once:
 * they are not watched. Larger ones, and streams (downloads), are watched one turn after they start.
 */
const WATCHED_RESPONSE_LENGTH = 16 * 1024;

type RequestsConfig = Config['requests'];

/** Fastify's `clientErrorHandler`: malformed requests and headers past their timeout, in our error shape. */
export function clientErrorHandler(requests: RequestsConfig) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const appError =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new AppError(
            'REQUEST_TIMEOUT',
            `the request headers did not arrive within ${requests.headersTimeoutMs} ms (HEADERS_TIMEOUT_MS)`,
          )
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? new AppError('HEADERS_TOO_LARGE', 'the request headers are larger than the server accepts')
          : new AppError('INVALID_REQUEST', `the request is not valid HTTP (${err.code ?? 'parse error'})`);
    const body = errorBody(appError);
    const text = JSON.stringify(body);
    // Only when no response of this connection has begun: anything else would corrupt it.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!socket.writable || inFlight?.headersSent) {
      socket.destroy(err);
      return;
    }
    socket.end(
      `HTTP/1.1 ${body.statusCode} ${STATUS_CODES[body.statusCode]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
    );
    lingerThenClose(socket);
  };
}

/**
 * Closing at once while the client is still sending (a trickle of headers) resets the connection, and
 * the reset can discard the answer before the client reads it. So what still comes is read and
 * dropped (not parsed: no request may start on an answered connection) for a moment, then it closes.
 */
function lingerThenClose(socket: Socket): void {
  socket.removeAllListeners('data');
  socket.on('data', () => {}).resume();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** Headers timeout on the server, and a watch on every body still arriving. */
async function slowClientLimits(app: FastifyInstance, { requests }: { requests: RequestsConfig }): Promise<void> {
  app.server.headersTimeout = requests.headersTimeoutMs;
  // Read when the server starts listening.
  (app.server as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.min(
    HEADERS_CHECK_MS,
    requests.headersTimeoutMs,
  );
  // Fastify's 72 s let idle connections hold MAX_CONNECTIONS slots; Node's 5 s races clients that reuse
  // an idle connection just as it closes (seen here: a fetch's upload failed with EPIPE).
  app.server.keepAliveTimeout = requests.keepAliveTimeoutMs;
  // A `done` hook, not an async one: it runs on every request (see telemetry.ts).
  app.addHook('onRequest', (request, reply, done) => {
    if (!request.raw.complete && hasBody(request)) setImmediate(watchIfArriving, request, reply, requests);
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    if (mayWait(payload)) setImmediate(watchIfPending, request, reply, requests);
    done(null, payload);
  });
}

export const slowClientLimitsPlugin = fp(slowClientLimits, { name: 'slow-client-limits', dependencies: ['error-handler'] });

function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * At onRequest a body is never complete: the parser reads it after the headers' hooks. A body that
 * came with its headers (most calls) is complete one turn later and needs no timer or listeners.
 */
function watchIfArriving(request: FastifyRequest, reply: FastifyReply, requests: RequestsConfig): void {
  if (!request.raw.complete && !request.raw.destroyed) watchBody(request, reply, requests);
}

function watchBody(request: FastifyRequest, reply: FastifyReply, { bodyTimeoutMs, bodyMinBytesPerSecond }: RequestsConfig): void {
  const raw = request.raw;
  const socket = raw.socket;
  const stop = watchTransfer({
    timeoutMs: bodyTimeoutMs,
    minBytesPerSecond: bodyMinBytesPerSecond,
    progress: () => socket.bytesRead,
    finished: () => raw.complete,
    late: `the request body did not arrive within ${bodyTimeoutMs} ms (BODY_TIMEOUT_MS)`,
    slow: (rate) =>
      `the request body arrived at ${rate} bytes/s, below the minimum of ${bodyMinBytesPerSecond} (BODY_MIN_BYTES_PER_SECOND)`,
    cut: (message) => {
      // The body's reader (Fastify's body parser, or the multipart reader) fails with this error.
      if (raw.listenerCount('error') === 0) {
        // Answered without reading the body (a 415 before it is read, a route that takes none): Node keeps
        // the connection until the rest arrives, which is the slow client this watch is for.
        if (reply.raw.writableFinished) {
          socket.destroy();
          return;
        }
        return RETRY_CUT_MS;
      }
      raw.emit('error', new AppError('REQUEST_TIMEOUT', message));
    },
  });
  raw.once('end', stop);
  raw.once('close', stop);
}

interface Transfer {
  timeoutMs: number;
  /** 0: no minimum. */
  minBytesPerSecond: number;
  /** Bytes moved so far, as a running count. */
  progress: () => number;
  finished: () => boolean;
  /** Whether a low rate is the client's doing, given the bytes moved; when not, its window starts over. */
  clientBehind?: (bytes: number) => boolean;
  /** Why a transfer past its deadline is cut. */
  late: string;
  /** Why a transfer below the minimum rate is cut. */
  slow: (bytesPerSecond: number) => string;
  /** Cuts the transfer; or, when it cannot be cut yet, says how soon to judge it again. */
  cut: (message: string) => number | undefined;
}

/**
 * Judges a transfer against a deadline and a minimum rate, without touching its stream. Returns the
 * watch's stop, for the events that end the transfer.
 */
function watchTransfer({
  timeoutMs,
  minBytesPerSecond,
  progress,
  finished,
  clientBehind,
  late,
  slow,
  cut,
}: Transfer): () => void {
  const started = performance.now();
  const deadline = started + timeoutMs;
  let windowStart = started;
  let windowBytes = progress();
  let timer: NodeJS.Timeout | undefined;
  let done = false;
  const stop = () => {
    done = true;
    clearTimeout(timer);
  };
  const schedule = (ms: number) => {
    // setImmediate: judge after the I/O already waiting has been handled (a busy event loop is not a slow client).
    timer = setTimeout(() => setImmediate(check), Math.max(0, ms));
    timer.unref();
  };
  const cutOrRetry = (message: string) => {
    const retryMs = cut(message);
    if (retryMs === undefined) stop();
    else schedule(retryMs);
  };
  const check = () => {
    if (done || finished()) return stop();
    const now = performance.now();
    if (now >= deadline) return cutOrRetry(late);
    if (minBytesPerSecond > 0 && now - windowStart >= RATE_WINDOW_MS) {
      const bytes = progress();
      const rate = ((bytes - windowBytes) * 1000) / (now - windowStart);
      if (rate < minBytesPerSecond && (clientBehind?.(bytes) ?? true)) return cutOrRetry(slow(Math.floor(rate)));
      windowStart = now;
      windowBytes = bytes;
    }
    schedule(Math.min(deadline - now, minBytesPerSecond > 0 ? windowStart + RATE_WINDOW_MS - now : Infinity));
  };
  schedule(Math.min(timeoutMs, minBytesPerSecond > 0 ? RATE_WINDOW_MS : Infinity));
  return stop;
}

function mayWait(payload: unknown): boolean {
  if (payload === null || payload === undefined) return false;
  if (typeof payload === 'string' || payload instanceof Uint8Array) return payload.length >= WATCHED_RESPONSE_LENGTH;
  return true;
}

type SocketInternals = Socket & { _bytesDispatched?: number; _handle?: { writeQueueSize?: number } | null };

/**
 * Bytes the kernel took from the socket. A large answer is one write, pending until its last byte is
 * taken (writableLength stays at its full size); libuv's write queue shows how much of it is left.
 */
function bytesSent(socket: Socket): number {
  const internals = socket as SocketInternals;
  return (internals._bytesDispatched ?? socket.bytesWritten) - (internals._handle?.writeQueueSize ?? 0);
}

/** One turn after a large answer began: most are in the kernel's buffers by then and need no watch. */
function watchIfPending(request: FastifyRequest, reply: FastifyReply, requests: RequestsConfig): void {
  const socket = reply.raw.socket;
  if (!reply.raw.writableFinished && socket !== null && !socket.destroyed) watchResponse(request, reply, socket, requests);
}

function watchResponse(
  request: FastifyRequest,
  reply: FastifyReply,
  socket: Socket,
  { responseTimeoutMs, responseMinBytesPerSecond }: RequestsConfig,
): void {
  const res = reply.raw;
  const stop = watchTransfer({
    timeoutMs: responseTimeoutMs,
    minBytesPerSecond: responseMinBytesPerSecond,
    progress: () => bytesSent(socket),
    finished: () => res.writableFinished,
    // Bytes waiting on the socket: the client is what is slow (else the answer's source is, e.g. a disk).
    clientBehind: (sent) => socket.bytesWritten > sent,
    late: `the client did not take the response within ${responseTimeoutMs} ms (RESPONSE_TIMEOUT_MS): connection closed`,
    slow: (rate) =>
      `the client took the response at ${rate} bytes/s, below the minimum of ${responseMinBytesPerSecond} (RESPONSE_MIN_BYTES_PER_SECOND): connection closed`,
    cut: (message) => {
      // The status went out long ago: all that is left is to close, which frees what the answer held.
      request.log.info({ bytesUnsent: socket.bytesWritten - bytesSent(socket) }, message);
      socket.destroy();
      return undefined;
    },
  });
  // 'finish': the last byte is in the kernel's buffers; 'close': the connection went.
  res.once('finish', stop);
  res.once('close', stop);
}
