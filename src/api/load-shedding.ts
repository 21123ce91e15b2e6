// Load shedding: under event-loop delay or heap pressure new calls get 503 UNDER_PRESSURE rather than
// a timeout. Sampled here rather than by @fastify/under-pressure: its timer reads the RSS through
// process.memoryUsage(), which opens /proc/self/stat and throws EMFILE once the process has no
// descriptor left, uncaught in a timer, which ended the process. Nothing sampled here needs a file.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import { routePolicy } from './route-policy.ts';

const SAMPLE_INTERVAL_MS = 500;
/** The delay histogram's resolution; a sample's mean includes it, so it is taken off. */
const RESOLUTION_MS = 10;
const UNDER_PRESSURE_RETRY_AFTER_MS = 5_000;

/** What was last measured; `null` while nothing passes its limit. */
class PressureSampler {
  #pressure: { type: string; value: number } | null = null;
  readonly #timer: NodeJS.Timeout;
  readonly #histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  readonly #maxEventLoopDelayMs: number;
  readonly #maxHeapUsedBytes: number;

  constructor(maxEventLoopDelayMs: number, maxHeapUsedBytes: number) {
    this.#maxEventLoopDelayMs = maxEventLoopDelayMs;
    this.#maxHeapUsedBytes = maxHeapUsedBytes;
    this.#histogram.enable();
    this.#timer = setInterval(() => this.#sample(), SAMPLE_INTERVAL_MS).unref();
  }

  get pressure(): { type: string; value: number } | null {
    return this.#pressure;
  }

  #sample(): void {
    // No sample at all: the loop was blocked for the whole interval.
    const mean = this.#histogram.count === 0 ? Infinity : this.#histogram.mean / 1e6;
    this.#histogram.reset();
    const delay = Math.max(0, mean - RESOLUTION_MS);
    if (this.#maxEventLoopDelayMs > 0 && delay > this.#maxEventLoopDelayMs) {
      this.#pressure = { type: 'eventLoopDelay', value: delay };
      return;
    }
    if (this.#maxHeapUsedBytes > 0) {
      const heapUsed = getHeapStatistics().used_heap_size;
      if (heapUsed > this.#maxHeapUsedBytes) {
        this.#pressure = { type: 'heapUsedBytes', value: heapUsed };
        return;
      }
    }
    this.#pressure = null;
  }

  close(): void {
    clearInterval(this.#timer);
    this.#histogram.disable();
  }
}

/** Registered on the root app: every call route is checked. */
async function loadShedding(app: FastifyInstance, { config }: { config: Config }): Promise<void> {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = config.ops;
  if (maxEventLoopDelayMs === 0 && maxHeapUsedBytes === 0) return;
  const sampler = new PressureSampler(maxEventLoopDelayMs, maxHeapUsedBytes);
  app.addHook('onClose', async () => sampler.close());
  // Only new calls are shed: health, metrics and plugin management keep answering.
  app.addHook('onRequest', (request, _reply, done) => {
    const pressure = sampler.pressure;
    if (pressure === null || routePolicy(request).kind !== 'call') return done();
    done(
      new AppError(
        'UNDER_PRESSURE',
        `the server is under pressure (${pressure.type}: ${Math.round(pressure.value)}), retry later`,
        {
          retryAfterMs: UNDER_PRESSURE_RETRY_AFTER_MS,
        },
      ),
    );
  });
}

export const loadSheddingPlugin = fp(loadShedding, { name: 'load-shedding', dependencies: ['route-policy', 'access-control'] });
