// Graceful shutdown of the real server process (node src/main.ts): SIGTERM lets a running call finish,
// refuses new connections, cancels what outlives the drain timeout, and the process exits 0 by itself.
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { childServerForTest, type ChildServer } from './child-server.ts';
import { readPlugin } from './helpers.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

// A runner with service settings exported (tokens, a tiny rate limit, a low timeout ceiling) must not change these tests.
const RUNNER_SERVICE_ENV = {
  AUTH_TOKENS: 'runner-token-0123456789:admin',
  RATE_LIMIT_MAX: '1',
  CALL_TIMEOUT_MS_CEILING: '50',
  SHUTDOWN_DRAIN_MS: '1',
};
const savedEnv = new Map<string, string | undefined>();
beforeAll(() => {
  for (const [name, value] of Object.entries(RUNNER_SERVICE_ENV)) {
    savedEnv.set(name, process.env[name]);
    process.env[name] = value;
  }
});
afterAll(() => {
  for (const [name, value] of savedEnv) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

/**
 * The service process for this test (only PATH and HOME inherited, so nothing exported in the shell
 * changes what the test checks), logging at info: the test reads what it logs while stopping.
 */
const startMain = (env: Record<string, string>): Promise<ChildServer> => childServerForTest({ LOG_LEVEL: 'info', ...env });

const portOf = (child: ChildServer): number => Number(new URL(child.url).port);

/** A loopback upstream that answers each request after `delayMs`, and records when requests arrive. */
async function slowUpstream(delayMs: number): Promise<{ url: string; arrived: Promise<void> }> {
  let markArrived!: () => void;
  const arrived = new Promise<void>((resolve) => (markArrived = resolve));
  const server = http.createServer((_req, res) => {
    markArrived();
    setTimeout(() => res.end('{"slow":true}'), delayMs).unref();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(async () => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/slow`, arrived };
}

async function connectionRefused(port: number): Promise<boolean> {
  const socket = net.connect({ host: '127.0.0.1', port });
  try {
    await once(socket, 'connect');
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    socket.destroy();
  }
}

/** Asks the http plugin to GET `url`: a call that lasts as long as the upstream takes. */
const fetchThrough = (child: ChildServer, url: string) =>
  child.api.call('http', { function: 'fetch', input: JSON.stringify({ url }), allowedHosts: ['127.0.0.1'], timeoutMs: 10_000 });

describe('graceful shutdown', () => {
  it('on SIGTERM finishes a running 1 s call with 200, refuses new connections, and exits 0 within the drain timeout', async () => {
    const drainMs = 5_000;
    const child = await startMain({ EGRESS_ALLOW_PRIVATE: 'true', SHUTDOWN_DRAIN_MS: String(drainMs) });
    expect((await child.api.upload(await readPlugin('http'), { name: 'http' })).status).toBe(201);
    const upstream = await slowUpstream(1_000);

    const pending = fetchThrough(child, upstream.url);
    await upstream.arrived;
    child.process.kill('SIGTERM');

    let refused = false;
    for (let i = 0; i < 80 && !refused; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      refused = await connectionRefused(portOf(child));
    }
    expect(refused).toBe(true);

    const res = await pending;
    expect({ status: res.status, body: res.body }).toMatchObject({
      status: 200,
      body: { output: expect.stringContaining('slow') },
    });

    const exit = await child.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    // The call ended by itself: nothing was cancelled at the drain timeout.
    expect(child.output()).not.toContain('drain timeout');
    expect(child.output()).toContain('"msg":"stopped"');
    expect(child.output()).not.toContain('still running after shutdown');
  });

  it('on SIGTERM closes idle keep-alive connections and ones holding half a request at once, not at the drain timeout', async () => {
    // Longer than the test may take: the process must exit without waiting for it.
    const drainMs = 600_000;
    const child = await startMain({ SHUTDOWN_DRAIN_MS: String(drainMs) });
    const keepAlive = net.connect({ host: '127.0.0.1', port: portOf(child) });
    await once(keepAlive, 'connect');
    keepAlive.write(`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n\r\n`);
    const [answer] = (await once(keepAlive, 'data')) as [Buffer];
    expect(answer.toString()).toMatch(/^HTTP\/1\.1 200 /);
    const halfRequest = net.connect({ host: '127.0.0.1', port: portOf(child) });
    await once(halfRequest, 'connect');
    halfRequest.write(`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n`);
    const closed = [keepAlive, halfRequest].map(
      (socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())),
    );
    for (const socket of [keepAlive, halfRequest]) socket.on('error', () => {});

    child.process.kill('SIGTERM');
    await Promise.all(closed);
    // Node alone would keep the half request until the drain deadline cut it (past this test's timeout).
    const exit = await child.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
  });

  it('cancels a call that outlives the drain timeout with 503 SHUTTING_DOWN and still exits 0', async () => {
    const drainMs = 300;
    const child = await startMain({ EGRESS_ALLOW_PRIVATE: 'true', SHUTDOWN_DRAIN_MS: String(drainMs) });
    expect((await child.api.upload(await readPlugin('http'), { name: 'http' })).status).toBe(201);
    const upstream = await slowUpstream(8_000);

    const pending = fetchThrough(child, upstream.url);
    await upstream.arrived;
    child.process.kill('SIGTERM');

    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.error).toMatchObject({ code: 'SHUTTING_DOWN' });
    const exit = await child.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(child.output()).toContain('drain timeout: cancelled the calls still running');
  });
});
