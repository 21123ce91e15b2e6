// REDIS_URL: two replicas (two apps that share nothing else) count one token's calls and one address's
// failed tokens in the same Redis, so the sum over both is capped; each run uses a key prefix of its own.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logCapture, readPlugin, serverForTest, useServer } from './helpers.ts';
import { msUntil } from './replica-process.ts';
import { startTcpProxy } from './tcp-proxy.ts';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const ADMIN = 'redis-admin-token-000000001';
const INVOKE = 'redis-invoke-token-00000001';

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

describe('limits shared through Redis by two replicas', () => {
  const prefix = `wasmhost-test-${process.pid}-${randomBytes(4).toString('hex')}:`;
  const env = {
    AUTH_TOKENS: `${ADMIN}:admin,${INVOKE}:invoke`,
    RATE_LIMIT_MAX: '6',
    RATE_LIMIT_WINDOW_MS: '60000',
    AUTH_FAILURE_MAX: '4',
    REDIS_URL,
    REDIS_KEY_PREFIX: prefix,
    // No shedding on event-loop lag on this shared machine: every call here must reach the rate limit.
    MAX_EVENT_LOOP_DELAY_MS: '0',
  };

  afterAll(async () => {
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  // Closed (after their last test) before the afterAll above removes the run's keys.
  const servers = [useServer({ env }), useServer({ env })];

  beforeAll(async () => {
    const echo = await readPlugin('echo');
    for (const server of servers) expect((await server.api.as(ADMIN).upload(echo, { name: 'echo' })).status).toBe(201);
  });

  it("caps a token's calls at RATE_LIMIT_MAX summed over both replicas", async () => {
    const statuses: number[] = [];
    // Alternating: 4 on each replica, 8 in all, against a limit of 6.
    for (let i = 0; i < 8; i++) {
      const res = await servers[i % 2]!.api.as(INVOKE).call('echo', { function: 'echo', input: 'hi', timeoutMs: 30_000 });
      statuses.push(res.status);
      if (res.status === 429) {
        expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
        expect(res.error).toMatchObject({ code: 'RATE_LIMITED' });
      }
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 429, 429]);
    // The counters live in Redis under this run's prefix.
    const redis = new Redis(REDIS_URL);
    expect((await redis.keys(`${prefix}rate-limit:*`)).length).toBeGreaterThan(0);
    await redis.quit();
  });

  it('counts failed token attempts from one address on both replicas together', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${servers[i % 2]!.url}/plugins`, { headers: bearer(`wrong-token-guess-${i}-0000000`) });
      statuses.push(res.status);
    }
    // Four failures in all (two per replica) reach AUTH_FAILURE_MAX: the fifth attempt, anywhere, is refused.
    expect(statuses).toEqual([401, 401, 401, 401, 429]);
    const valid = await fetch(`${servers[1]!.url}/plugins`, { headers: bearer(ADMIN) });
    expect(valid.status).toBe(429);
  });
});

describe('a replica whose Redis is down when it starts', () => {
  it('starts and serves without it (it exited: ECONNREFUSED), the rate limit not enforced meanwhile, and says why in its log', async () => {
    // A loopback port with nothing listening: a proxy closed before the server starts.
    const proxy = await startTcpProxy(1, '127.0.0.1');
    const port = proxy.port;
    await proxy.close();
    const log = logCapture();
    const server = await serverForTest({
      env: { REDIS_URL: `redis://127.0.0.1:${port}`, LOG_LEVEL: 'info', RATE_LIMIT_MAX: '2' },
      appOptions: { logStream: log.stream },
    });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${server.url}/plugins`)).status);
    // README: while Redis is unreachable the rate limit is not enforced (calls are not refused for it).
    expect(statuses).toEqual([200, 200, 200]);
    expect(log.lines().some((line) => String(line.msg).startsWith('redis: unavailable'))).toBe(true);
  });
});

describe('a replica whose Redis goes away', () => {
  it("logs why (the client's message), not [object Object]", async () => {
    const redis = new URL(REDIS_URL);
    const proxy = await startTcpProxy(Number(redis.port || 6379), redis.hostname);
    try {
      const viaProxy = new URL(REDIS_URL);
      viaProxy.port = String(proxy.port);
      const log = logCapture();
      await serverForTest({
        env: { REDIS_URL: viaProxy.toString(), LOG_LEVEL: 'info' },
        appOptions: { logStream: log.stream },
      });
      await proxy.cut();
      const warned = () => log.lines().find((line) => String(line.msg).startsWith('redis: unavailable'));
      expect(await msUntil(async () => warned() !== undefined)).toBeLessThan(Infinity);
      expect(warned()?.err).toMatchObject({ message: expect.stringMatching(/ECONNREFUSED|Connection is closed|ECONNRESET/) });
      expect(log.text()).not.toContain('[object Object]');
    } finally {
      await proxy.close();
    }
  });
});
