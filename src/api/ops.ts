// Operator routes: liveness, readiness, Prometheus metrics; and load shedding of calls under pressure.
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import type { ServiceMetrics } from '../metrics.ts';
import { routePolicy } from './route-policy.ts';

/** Throws (or rejects) when the dependency it checks is not usable. */
export type ReadinessCheck = () => Promise<void> | void;

const CHECK_TIMEOUT_MS = 2_000;
const UNDER_PRESSURE_RETRY_AFTER_MS = 5_000;

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

export async function opsRoutes(app: FastifyInstance, { metrics, readiness }: OpsRoutesOptions): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (request, reply) => {
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

  app.get('/metrics', async (_request, reply) => {
    const text = await metrics.render();
    return reply.type(metrics.registry.contentType).send(text);
  });
}

/** Under event-loop delay or heap pressure new calls get 503 UNDER_PRESSURE rather than a timeout. Registered on the root app. */
export async function installLoadShedding(app: FastifyInstance, config: Config): Promise<void> {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = config.ops;
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    sampleInterval: 500,
    // Only new calls are shed: health, metrics and plugin management keep answering.
    pressureHandler: async (request, _reply, type, value) => {
      if (!routePolicy(request).call) return;
      throw new AppError('UNDER_PRESSURE', `the server is under pressure (${type}: ${Math.round(Number(value))}), retry later`, {
        retryAfterMs: UNDER_PRESSURE_RETRY_AFTER_MS,
      });
    },
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ServiceMetrics;
    readiness: Readiness;
  }
}
