// Graceful shutdown: stop taking work, let running calls finish until the drain deadline, then cancel
// what is left with 503 SHUTTING_DOWN. main.ts calls shutdown(); readiness reads `shuttingDown`.
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply } from 'fastify';
import fp from 'fastify-plugin';
import { AppError } from '../errors.ts';
import { routePolicy } from './route-policy.ts';

/** After cancelling, how long the engine gets to end a call itself before the reply is sent for it. */
const CANCEL_GRACE_MS = 250;
/** After the cancelled replies, how long sockets may linger before they are closed. */
const CLOSE_CONNECTIONS_AFTER_MS = 1_000;

function shuttingDownError(message: string): AppError {
  // Connection: close comes from the onSend hook below, on every answer while shutting down.
  return new AppError('SHUTTING_DOWN', message, { retryAfterMs: 1_000 });
}

export class Lifecycle {
  #shuttingDown = false;
  readonly #drain = new AbortController();
  readonly #calls = new Set<FastifyReply>();
  /** Responses not yet closed (sent or abandoned), whatever the route. */
  #openResponses = 0;
  #onNoResponses: (() => void) | null = null;

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Aborted (reason: an AppError SHUTTING_DOWN) when the drain deadline passes; the engine should stop the call. */
  get drainSignal(): AbortSignal {
    return this.#drain.signal;
  }

  get callsInFlight(): number {
    return this.#calls.size;
  }

  beginShutdown(): void {
    this.#shuttingDown = true;
  }

  track(reply: FastifyReply): void {
    this.#calls.add(reply);
  }

  untrack(reply: FastifyReply): void {
    this.#calls.delete(reply);
  }

  trackResponse(res: ServerResponse): void {
    this.#openResponses++;
    // One listener shared by every response, not a closure per request; 'close' comes once per response.
    res.on('close', this.#responseClosed);
  }

  readonly #responseClosed = (): void => {
    if (--this.#openResponses === 0) this.#onNoResponses?.();
  };

  /** Runs `callback` once no response is open (now, if none is). */
  whenNoResponses(callback: () => void): void {
    if (this.#openResponses === 0) {
      callback();
      return;
    }
    this.#onNoResponses = () => {
      this.#onNoResponses = null;
      callback();
    };
  }

  /** Cancels the calls still running; returns how many there were. */
  cancelInFlight(): number {
    const count = this.#calls.size;
    if (count === 0) return 0;
    this.#drain.abort(shuttingDownError('the server is shutting down: the call was cancelled at the drain timeout'));
    setTimeout(() => {
      for (const reply of this.#calls) {
        if (!reply.sent)
          reply.send(shuttingDownError('the server is shutting down: the call was cancelled at the drain timeout'));
      }
    }, CANCEL_GRACE_MS).unref();
    return count;
  }
}

async function lifecycleHooks(app: FastifyInstance, { lifecycle }: { lifecycle: Lifecycle }): Promise<void> {
  // `done` hooks, not async ones: they run on every request (see telemetry.ts).
  app.addHook('onRequest', (request, reply, done) => {
    const policy = routePolicy(request);
    if (lifecycle.shuttingDown && policy.kind !== 'ops') {
      done(shuttingDownError('the server is shutting down and takes no new requests'));
      return;
    }
    if (policy.kind === 'call') lifecycle.track(reply);
    done();
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    // Keep-alive sockets would hold the listener open past the drain.
    if (lifecycle.shuttingDown) void reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onResponse', (_request, reply, done) => {
    lifecycle.untrack(reply);
    done();
  });
  // server.close() waits for every connection Node does not count as idle: one holding half a request
  // (until headersTimeout), and, seen here under load, now and then a keep-alive connection whose
  // responses are all sent (until KEEP_ALIVE_TIMEOUT_MS). Once no response is open, the rest go.
  app.server.on('request', (_req, res: ServerResponse) => lifecycle.trackResponse(res));
  app.addHook('preClose', (done) => {
    lifecycle.whenNoResponses(() => app.server.closeAllConnections());
    done();
  });
}

/** Shutdown: refuses new requests (but ops), tracks calls to drain. After telemetry: every answer has its request id. */
export const lifecyclePlugin = fp(lifecycleHooks, { name: 'lifecycle', dependencies: ['route-policy', 'telemetry'] });

/**
 * Readiness turns 503 and new requests get 503 SHUTTING_DOWN, the listener closes, running calls get
 * `drainMs` to finish and are then cancelled; resolves once the app (and with it the engine) is closed.
 */
export async function shutdown(app: FastifyInstance, drainMs: number): Promise<void> {
  const { lifecycle } = app;
  lifecycle.beginShutdown();
  const deadline = setTimeout(() => {
    const cancelled = lifecycle.cancelInFlight();
    if (cancelled > 0) app.log.warn({ cancelled, drainMs }, 'drain timeout: cancelled the calls still running');
    setTimeout(() => app.server.closeAllConnections(), CANCEL_GRACE_MS + CLOSE_CONNECTIONS_AFTER_MS).unref();
  }, drainMs);
  try {
    await app.close();
  } finally {
    clearTimeout(deadline);
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle;
  }
}
