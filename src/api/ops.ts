// Operator routes: liveness, readiness, Prometheus metrics.
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { AppError } from '../errors.ts';
import type { ServiceMetrics } from '../metrics.ts';
import { ROUTE_POLICIES } from './route-policy.ts';
import { ReadinessChecksSchema, errorResponse, Forbidden, RateLimited, ref, Unauthorized } from './schemas.ts';

/** Throws (or rejects) when the dependency it checks is not usable. */
export type ReadinessCheck = () => Promise<void> | void;

const CHECK_TIMEOUT_MS = 2_000;

export interface ReadinessResult {
  ready: boolean;
  checks: Record<string, 'ok' | 'failed'>;
  /** Why each failed check failed: logged, not answered (the route is open; reasons name internal paths). */
  reasons: Record<string, string>;
}

/** Named checks run together on each /readyz; concurrent probes share one run. */
export class Readiness {
  readonly #checks = new Map<string, ReadinessCheck>();
  #running: Promise<ReadinessResult> | null = null;

  add(name: string, check: ReadinessCheck): void {
    this.#checks.set(name, check);
  }

  run(): Promise<ReadinessResult> {
    this.#running ??= this.#runAll().finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  async #runAll(): Promise<ReadinessResult> {
    const names = [...this.#checks.keys()];
    const outcomes = await Promise.allSettled([...this.#checks.values()].map((check) => withTimeout(check)));
    const checks: ReadinessResult['checks'] = {};
    const reasons: ReadinessResult['reasons'] = {};
    outcomes.forEach((outcome, i) => {
      const name = names[i]!;
      checks[name] = outcome.status === 'fulfilled' ? 'ok' : 'failed';
      if (outcome.status === 'rejected') reasons[name] = (outcome.reason as Error)?.message ?? String(outcome.reason);
    });
    return { ready: outcomes.every((o) => o.status === 'fulfilled'), checks, reasons };
  }
}

async function withTimeout(check: ReadinessCheck): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([Promise.resolve().then(check), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface OpsRoutesOptions {
  metrics: ServiceMetrics;
  readiness: Readiness;
}

const HEALTH_SCHEMA = {
  tags: ['ops'],
  operationId: 'getHealth',
  summary: 'Liveness',
  description: 'Answers whenever the event loop runs; checks no dependency. Open to everyone, also during shutdown.',
  security: [],
  response: {
    200: {
      description: 'Alive.',
      content: {
        'application/json': { schema: Type.Object({ status: Type.Literal('ok') }, { additionalProperties: false }) },
      },
    },
  },
};

const READINESS_SCHEMA = {
  tags: ['ops'],
  operationId: 'getReadiness',
  summary: 'Readiness',
  description: `Ready when the store is readable and writable (filesystem: a probe file is written, read back and
removed under DATA_DIR; PostgreSQL: a query on a connection of its own, so a pool busy with requests does
not make a replica unready) and the worker pool is up. Open to everyone.`,
  security: [],
  response: {
    200: {
      description: 'Ready; every check answered `ok`.',
      content: {
        'application/json': {
          schema: Type.Object(
            { status: Type.Literal('ok'), checks: ref(ReadinessChecksSchema) },
            { additionalProperties: false },
          ),
          examples: { ready: { value: { status: 'ok', checks: { store: 'ok', workers: 'ok' } } } },
        },
      },
    },
    503: errorResponse(
      '`NOT_READY` (the message and `checks` name the failing check; the reason is in the server log), or `SHUTTING_DOWN`.',
      ['NOT_READY', 'SHUTTING_DOWN'],
      {
        properties: { checks: { $ref: 'ReadinessChecks#' } },
        examples: {
          storeFailing: {
            value: {
              statusCode: 503,
              code: 'NOT_READY',
              error: 'Service Unavailable',
              message: 'not ready: check failed: store',
              checks: { store: 'failed', workers: 'ok' },
            },
          },
        },
      },
    ),
  },
};

const METRICS_SCHEMA = {
  tags: ['ops'],
  operationId: 'getMetrics',
  summary: 'Prometheus metrics',
  description: `The Prometheus text exposition format (every metric is listed in the README). Open, unless
METRICS_TOKEN is set: then it needs that token (or an \`admin\` token).`,
  security: [{}, { metricsToken: [] }, { bearerAuth: [] }] as Record<string, string[]>[],
  response: {
    200: { description: 'Metrics, text format 0.0.4.', content: { 'text/plain': { schema: Type.String() } } },
    401: Unauthorized,
    403: Forbidden,
    429: RateLimited,
  },
};

export async function opsRoutes(app: FastifyInstance, { metrics, readiness }: OpsRoutesOptions): Promise<void> {
  app.get('/healthz', { schema: HEALTH_SCHEMA, config: { policy: ROUTE_POLICIES.ops } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: READINESS_SCHEMA, config: { policy: ROUTE_POLICIES.ops } }, async (request, reply) => {
    if (app.lifecycle.shuttingDown) {
      throw new AppError('SHUTTING_DOWN', 'not ready: the server is shutting down', { details: { checks: {} } });
    }
    const result = await readiness.run();
    if (!result.ready) {
      request.log.warn({ reasons: result.reasons }, 'not ready');
      const failed = Object.keys(result.reasons).join(', ');
      throw new AppError('NOT_READY', `not ready: check failed: ${failed}`, { details: { checks: result.checks } });
    }
    return reply.send({ status: 'ok', checks: result.checks });
  });

  app.get('/metrics', { schema: METRICS_SCHEMA, config: { policy: ROUTE_POLICIES.metrics } }, async (_request, reply) => {
    const text = await metrics.render();
    return reply.type(metrics.registry.contentType).send(text);
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ServiceMetrics;
    readiness: Readiness;
  }
}
