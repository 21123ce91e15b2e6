// Graceful shutdown of the real server process (node src/main.ts): SIGTERM lets a running call finish,
// refuses new connections, cancels what outlives the drain timeout, and the process exits 0 by itself.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, readPlugin, removeDir, repoRoot } from './helpers.ts';
import { closedPort } from './upstream.ts';

interface Child {
  process: ChildProcess;
  url: string;
  port: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

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
 * The child's whole environment: PATH and HOME from the runner, then what the test sets. Nothing else
 * (AUTH_TOKENS, EGRESS_*, limits exported in the shell) may change what the test checks.
 */
function serviceEnv(env: Record<string, string>): Record<string, string> {
  const inherited: Record<string, string> = {};
  for (const name of ['PATH', 'HOME']) {
    const value = process.env[name];
    if (value !== undefined) inherited[name] = value;
  }
  return { ...inherited, ...env };
}

/** Starts `node src/main.ts` (the Node running the tests: 24 under npm) and waits until it listens. */
async function startMain(env: Record<string, string>): Promise<Child> {
  const dataDir = await makeTempDir();
  const port = await closedPort();
  const child = spawn(process.execPath, ['src/main.ts'], {
    cwd: repoRoot,
    env: serviceEnv({ HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'info', WORKERS: '2', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await removeDir(dataDir);
  });
  const deadline = Date.now() + 20_000;
  while (!output.includes('Server listening')) {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`server did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { process: child, port, url: `http://127.0.0.1:${port}`, output: () => output, exited };
}

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

async function uploadHttpPlugin(child: Child): Promise<void> {
  const res = await fetch(`${child.url}/plugins?name=http`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: new Uint8Array(await readPlugin('http')),
  });
  expect(res.status).toBe(201);
}

function startCall(child: Child, url: string): Promise<Response> {
  return fetch(`${child.url}/plugins/http/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ function: 'fetch', input: JSON.stringify({ url }), allowedHosts: ['127.0.0.1'], timeoutMs: 10_000 }),
  });
}

describe('graceful shutdown', () => {
  it('on SIGTERM finishes a running 1 s call with 200, refuses new connections, and exits 0 within the drain timeout', async () => {
    const drainMs = 5_000;
    const child = await startMain({ EGRESS_ALLOW_PRIVATE: 'true', SHUTDOWN_DRAIN_MS: String(drainMs) });
    await uploadHttpPlugin(child);
    const upstream = await slowUpstream(1_000);

    const pending = startCall(child, upstream.url);
    await upstream.arrived;
    child.process.kill('SIGTERM');

    let refused = false;
    for (let i = 0; i < 80 && !refused; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      refused = await connectionRefused(child.port);
    }
    expect(refused).toBe(true);

    const res = await pending;
    const body = (await res.json()) as { output?: string; code?: string };
    expect({ status: res.status, body }).toMatchObject({ status: 200, body: { output: expect.stringContaining('slow') } });

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
    const keepAlive = net.connect({ host: '127.0.0.1', port: child.port });
    await once(keepAlive, 'connect');
    keepAlive.write(`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n\r\n`);
    const [answer] = (await once(keepAlive, 'data')) as [Buffer];
    expect(answer.toString()).toMatch(/^HTTP\/1\.1 200 /);
    const halfRequest = net.connect({ host: '127.0.0.1', port: child.port });
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
    await uploadHttpPlugin(child);
    const upstream = await slowUpstream(8_000);

    const pending = startCall(child, upstream.url);
    await upstream.arrived;
    child.process.kill('SIGTERM');

    const res = await pending;
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'SHUTTING_DOWN' });
    const exit = await child.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(child.output()).toContain('drain timeout: cancelled the calls still running');
  });
});
