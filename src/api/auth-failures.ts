// Failed-token counters shared by every replica through Redis (REDIS_URL), so guessing tokens across
// replicas is as slow as against one. Fixed windows, like the in-process AuthFailureLimiter, which
// stays the fallback while Redis cannot answer (a guesser then meets each replica's own limit).
import { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';

/** What access control asks of a failed-token limiter (in-process or shared). */
export interface FailedTokenLimiter {
  /** Seconds until `address` may try again, or 0 when it may try now. */
  retryAfterSeconds(address: string): number | Promise<number>;
  recordFailure(address: string): void | Promise<void>;
}

const REDIS_READY_WAIT_MS = 2_000;

/** A Redis client that fails fast while Redis is away (callers fall back) and reconnects by itself. */
export async function connectRedis(url: string, keyPrefix: string, log: FastifyBaseLogger): Promise<Redis> {
  const redis = new Redis(url, {
    keyPrefix,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  let reported = false;
  redis.on('error', (err: Error) => {
    if (!reported) log.warn({ err }, 'redis: unavailable; limits count per process until it is back');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info('redis: connected again; limits are shared');
    reported = false;
  });
  // Not events.once: it rejects on the client's first 'error', which ended the process when Redis
  // was down at start; the service starts without it and counts per process until it is back.
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, REDIS_READY_WAIT_MS);
    function done(): void {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    }
    redis.once('ready', done);
  });
  return redis;
}

const INCREMENT_IN_WINDOW = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count`;

export class RedisFailedTokenLimiter implements FailedTokenLimiter {
  readonly #redis: Redis;
  readonly #max: number;
  readonly #windowMs: number;
  readonly #fallback: FailedTokenLimiter;

  constructor(redis: Redis, max: number, windowMs: number, fallback: FailedTokenLimiter) {
    this.#redis = redis;
    this.#max = max;
    this.#windowMs = windowMs;
    this.#fallback = fallback;
  }

  #key(address: string): string {
    return `auth-failures:${address}`;
  }

  async retryAfterSeconds(address: string): Promise<number> {
    try {
      const key = this.#key(address);
      const [count, ttl] = await Promise.all([this.#redis.get(key), this.#redis.pttl(key)]);
      if (count === null || Number(count) < this.#max || ttl <= 0) return 0;
      return Math.max(1, Math.ceil(ttl / 1000));
    } catch {
      return this.#fallback.retryAfterSeconds(address);
    }
  }

  async recordFailure(address: string): Promise<void> {
    try {
      await this.#redis.eval(INCREMENT_IN_WINDOW, 1, this.#key(address), String(this.#windowMs));
    } catch {
      await this.#fallback.recordFailure(address);
    }
  }
}
