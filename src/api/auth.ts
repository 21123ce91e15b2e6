// Access control: bearer tokens with a role each (route-policy.ts says which role a route needs),
// a per-token (per-address when open) rate limit on calls and uploads, and a per-address limit on
// failed token attempts (so tokens cannot be guessed at full speed).
import { createHash, timingSafeEqual } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config, Role } from '../config.ts';
import { AppError } from '../errors.ts';
import { type FailedTokenLimiter, RedisFailedTokenLimiter, connectRedis } from './auth-failures.ts';
import { HttpError } from './error-handler.ts';
import { type Access, routePolicy } from './route-policy.ts';

export type Grant = Role | 'metrics';

export interface Principal {
  grant: Grant;
  /** Short digest of the token: safe to log and to key rate limits by. */
  tokenId: string;
}

const SATISFIES: Record<Grant, ReadonlySet<Access>> = {
  admin: new Set<Access>(['admin', 'invoke', 'metrics']),
  invoke: new Set<Access>(['invoke']),
  metrics: new Set<Access>(['metrics']),
};

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Compares two equal-length digests; must take the same time wherever they differ. */
export type DigestCompare = (a: Buffer, b: Buffer) => boolean;

/** The comparison every token check goes through (tests assert it is crypto's constant-time one). */
export const compareDigests: DigestCompare = timingSafeEqual;

/** Compares a presented token against every known one in constant time (equal-length digests, no early exit). */
export class TokenVerifier {
  readonly #known: { digest: Buffer; principal: Principal }[] = [];
  readonly #compare: DigestCompare;

  /** `compare` is injectable so a test can watch every comparison; production uses compareDigests. */
  constructor(tokens: ReadonlyMap<string, Role>, metricsToken: string | null, compare: DigestCompare = compareDigests) {
    this.#compare = compare;
    const add = (token: string, grant: Grant): void => {
      const digest = sha256(token);
      this.#known.push({ digest, principal: { grant, tokenId: digest.subarray(0, 6).toString('hex') } });
    };
    for (const [token, role] of tokens) add(token, role);
    if (metricsToken !== null) add(metricsToken, 'metrics');
  }

  verify(token: string): Principal | null {
    const presented = sha256(token);
    let found: Principal | null = null;
    for (const known of this.#known) {
      if (this.#compare(presented, known.digest) && found === null) found = known.principal;
    }
    return found;
  }
}

const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * Failed token attempts per client address in fixed windows. Once an address has `max` failures in
 * its window, every request of it that needs a token is refused until the window ends, valid token
 * or not: answering a right guess differently would keep the guessing useful.
 */
export class AuthFailureLimiter {
  readonly #windows = new Map<string, { failures: number; endsAt: number }>();
  readonly #max: number;
  readonly #windowMs: number;

  constructor(max: number, windowMs: number) {
    this.#max = max;
    this.#windowMs = windowMs;
  }

  /** Seconds until `address` may try again, or 0 when it may try now. */
  retryAfterSeconds(address: string, now = Date.now()): number {
    const window = this.#windows.get(address);
    if (!window || window.endsAt <= now || window.failures < this.#max) return 0;
    return Math.max(1, Math.ceil((window.endsAt - now) / 1000));
  }

  recordFailure(address: string, now = Date.now()): void {
    let window = this.#windows.get(address);
    if (!window || window.endsAt <= now) {
      this.#windows.delete(address);
      if (this.#windows.size >= MAX_TRACKED_ADDRESSES) this.#evict(now);
      window = { failures: 0, endsAt: now + this.#windowMs };
      this.#windows.set(address, window);
    }
    window.failures += 1;
  }

  /** Drops ended windows; if all are live, the oldest (Map order is insertion order). */
  #evict(now: number): void {
    for (const [address, window] of this.#windows) if (window.endsAt <= now) this.#windows.delete(address);
    if (this.#windows.size >= MAX_TRACKED_ADDRESSES) this.#windows.delete(this.#windows.keys().next().value!);
  }
}

export const REDACTED_VALUE = '[REDACTED]';

/**
 * A stored plugin config as this caller may see it. Its values are secrets (API keys a plugin
 * uses): only an admin token reads them, or anyone while the service runs open (anyone may then
 * upload and delete too). Everyone else sees the keys, each value replaced by "[REDACTED]".
 */
export function configForCaller(request: FastifyRequest, config: Readonly<Record<string, string>>): Record<string, string> {
  if (request.readsConfigValues) return { ...config };
  return Object.fromEntries(Object.keys(config).map((key) => [key, REDACTED_VALUE]));
}

/**
 * The stored config values a call's answer must not show this caller (configForCaller hides them from
 * it): those the call does not override itself, long enough to be secrets (shorter ones would redact
 * ordinary text). Empty for a caller who reads them.
 */
export function hiddenConfigValues(
  request: FastifyRequest,
  stored: Readonly<Record<string, string>>,
  overrides: Readonly<Record<string, string>> | undefined,
): string[] {
  if (request.readsConfigValues) return [];
  const values = Object.entries(stored)
    .filter(([key, value]) => value.length >= MIN_HIDDEN_VALUE_CHARS && !(overrides && key in overrides))
    .map(([, value]) => value);
  // Longest first: a value inside another is replaced after it.
  return [...new Set(values)].sort((a, b) => b.length - a.length);
}
const MIN_HIDDEN_VALUE_CHARS = 4;

/** `text` with every occurrence of `values` (as they are, and as a URL encodes them) replaced by "[REDACTED]". */
export function redactValues(text: string, values: readonly string[]): string {
  let redacted = text;
  for (const value of values) {
    for (const form of new Set([value, encodeURIComponent(value), new URLSearchParams({ v: value }).toString().slice(2)])) {
      redacted = redacted.replaceAll(form, REDACTED_VALUE);
    }
  }
  return redacted;
}

/** The token of an `Authorization: Bearer <token>` header; undefined when absent, null when malformed. */
function bearerToken(request: FastifyRequest): string | null | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer +([^\s]+) *$/i.exec(header);
  return match ? match[1]! : null;
}

function unauthorized(message: string, invalid: boolean): AppError {
  const challenge = invalid ? 'Bearer realm="wasmhost", error="invalid_token"' : 'Bearer realm="wasmhost"';
  return new HttpError('UNAUTHORIZED', message, { 'www-authenticate': challenge });
}

async function accessControl(app: FastifyInstance, { config }: { config: Config }): Promise<void> {
  const { authTokens, metricsToken, rateLimitMax, rateLimitWindowMs, authFailureMax } = config.ops;
  const verifier = new TokenVerifier(authTokens, metricsToken);
  // With REDIS_URL every replica counts into the same rate-limit and failed-token counters.
  const redis = config.ops.redis ? await connectRedis(config.ops.redis.url, config.ops.redis.keyPrefix, app.log) : null;
  if (redis) app.addHook('onClose', async () => void (await redis.quit().catch(() => redis.disconnect())));
  const local = authFailureMax > 0 ? new AuthFailureLimiter(authFailureMax, rateLimitWindowMs) : null;
  const failures: FailedTokenLimiter | null =
    local && redis ? new RedisFailedTokenLimiter(redis, authFailureMax, rateLimitWindowMs, local) : local;
  const open = authTokens.size === 0;
  if (open) {
    app.log.warn(
      'AUTH_TOKENS and AUTH_TOKENS_FILE are not set: the API is open, anyone who can reach it may upload, delete and call plugins',
    );
  }

  app.decorateRequest('principal', null);
  app.decorateRequest('readsConfigValues', false);
  // Requests that need no token check finish here without a promise (this runs on every request);
  // the rest may wait on the failed-token counters (Redis).
  const check = async (request: FastifyRequest, token: string | null | undefined, access: Access): Promise<void> => {
    const retryAfter = (await failures?.retryAfterSeconds(request.ip)) ?? 0;
    if (retryAfter > 0) {
      throw new AppError(
        'RATE_LIMITED',
        `too many failed token attempts from this address (AUTH_FAILURE_MAX ${authFailureMax} per ${rateLimitWindowMs} ms), retry in ${retryAfter} s`,
        { retryAfterMs: retryAfter * 1000 },
      );
    }
    if (token === undefined) throw unauthorized('this route needs a bearer token (Authorization: Bearer <token>)', false);
    if (request.principal === null) {
      await failures?.recordFailure(request.ip);
      throw unauthorized('the bearer token is not valid', true);
    }
    if (!SATISFIES[request.principal.grant].has(access)) {
      throw new AppError('FORBIDDEN', `this route needs a token with the ${access} role`);
    }
  };
  app.addHook('onRequest', (request, _reply, done) => {
    const token = bearerToken(request);
    if (typeof token === 'string') request.principal = verifier.verify(token);
    request.readsConfigValues = open || request.principal?.grant === 'admin';

    const { access } = routePolicy(request);
    if (access === 'open' || (access === 'metrics' ? metricsToken === null : open)) {
      done();
      return;
    }
    check(request, token, access).then(() => done(), done);
  });

  if (rateLimitMax === 0) return;
  // Registered before the routes: the plugin attaches its hook to each route as it is added, after ours.
  await app.register(rateLimit, {
    global: true,
    max: rateLimitMax,
    timeWindow: rateLimitWindowMs,
    ...(redis ? { redis, nameSpace: 'rate-limit:', skipOnError: true } : {}),
    allowList: (request) => routePolicy(request).rateLimit === null,
    keyGenerator: (request) =>
      `${routePolicy(request).rateLimit}:${request.principal ? `token:${request.principal.tokenId}` : `ip:${request.ip}`}`,
    errorResponseBuilder: (_request, context) =>
      new AppError(
        'RATE_LIMITED',
        `rate limit of ${context.max} requests per ${rateLimitWindowMs} ms exceeded, retry in ${context.after}`,
        { retryAfterMs: context.ttl },
      ),
  });
}

/** Tokens and rate limits by each route's policy; after shutdown's refusal. */
export const accessControlPlugin = fp(accessControl, { name: 'access-control', dependencies: ['route-policy', 'lifecycle'] });

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the bearer token belongs to; null without a valid token. */
    principal: Principal | null;
    /** Whether stored plugin config values are shown to this caller (see configForCaller). */
    readsConfigValues: boolean;
  }
}
