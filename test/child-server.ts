// The service as a process of its own (node src/main.ts on loopback), for tests whose failure could
// take the process down: a regression then fails the test instead of killing the test runner. Also
// the one place that reads the service's RSS and restart counters the way an operator would, over
// HTTP (/metrics).
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, expect, onTestFinished } from 'vitest';
import { makeTempDir, readPlugin, removeDir, repoRoot } from './helpers.ts';
import { parsePrometheusText, sampleValue } from './prom-text.ts';
import { TestClient } from './test-client.ts';
import { closedPort } from './upstream.ts';

export interface ChildServer {
  url: string;
  /** The service's API, typed from the contract. */
  api: TestClient;
  process: ChildProcess;
  dataDir: string;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
  /** The process has not exited. */
  alive(): boolean;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills the process (if still running) and removes its data dir unless `keepData`. */
  stop(keepData?: boolean): Promise<void>;
}

/**
 * A service process's whole environment: PATH and HOME from the runner, then `env`. Nothing else
 * (AUTH_TOKENS, limits exported in the shell) may change what a test checks.
 */
export function serviceEnv(env: Record<string, string>): Record<string, string> {
  const inherited: Record<string, string> = {};
  for (const name of ['PATH', 'HOME']) {
    const value = process.env[name];
    if (value !== undefined) inherited[name] = value;
  }
  return { ...inherited, ...env };
}

/** What a service process writes to stdout and stderr (the last `keepChars` of it), and its exit. */
export function watchProcess(
  child: ChildProcess,
  keepChars = Infinity,
): { output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  let output = '';
  const add = (d: Buffer) => {
    output += d.toString();
    if (output.length > keepChars) output = output.slice(-keepChars);
  };
  child.stdout!.on('data', add);
  child.stderr!.on('data', add);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return { output: () => output, exited };
}

export interface ChildServerOptions {
  /** The process's open-files limit (`ulimit -n`, soft and hard), for tests of descriptor exhaustion. */
  openFiles?: number;
}

/**
 * Starts `node src/main.ts` (the Node running the tests) with only PATH and HOME inherited plus `env`,
 * and waits until /healthz answers. `dataDir`: reuse one (a restart).
 */
export async function startChildServer(
  env: Record<string, string> = {},
  dataDir?: string,
  options: ChildServerOptions = {},
): Promise<ChildServer> {
  const dir = dataDir ?? (await makeTempDir());
  const port = await closedPort();
  // Through sh for ulimit; exec keeps the pid the service's.
  const [command, args] =
    options.openFiles === undefined
      ? [process.execPath, ['src/main.ts']]
      : ['/bin/sh', ['-c', `ulimit -n ${options.openFiles} && exec "$0" src/main.ts`, process.execPath]];
  const child = spawn(command, args, {
    cwd: repoRoot,
    env: serviceEnv({ HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dir, LOG_LEVEL: 'warn', WORKERS: '2', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { output, exited } = watchProcess(child, 200_000);
  const alive = () => child.exitCode === null && child.signalCode === null;
  const url = `http://127.0.0.1:${port}`;
  const server: ChildServer = {
    url,
    api: new TestClient(url),
    process: child,
    dataDir: dir,
    output,
    alive,
    exited,
    async stop(keepData = false) {
      if (alive()) {
        child.kill('SIGKILL');
        await exited;
      }
      if (!keepData) await removeDir(dir);
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (!alive()) throw new Error(`the service exited while starting:\n${output()}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`the service did not answer /healthz within 30 s:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A service process for the running test only, stopped when the test finishes, pass or fail. Its data
 * dir is removed then, unless it was given (a restart over another server's data).
 */
export async function childServerForTest(
  env: Record<string, string> = {},
  dataDir?: string,
  options: ChildServerOptions = {},
): Promise<ChildServer> {
  const server = await startChildServer(env, dataDir, options);
  onTestFinished(() => server.stop(dataDir !== undefined));
  return server;
}

/** The service's /metrics, parsed. */
export async function metricsOf(server: { url: string }): Promise<ReturnType<typeof parsePrometheusText>> {
  return parsePrometheusText(await (await fetch(`${server.url}/metrics`)).text());
}

/** process_resident_memory_bytes as /metrics reports it. */
export async function rssOf(server: { url: string }): Promise<number> {
  return sampleValue(await metricsOf(server), 'process_resident_memory_bytes');
}

/** Uploads count_vowels as `count_vowels` (once per server) so healthCheck can call it. */
async function uploadCountVowels(server: { api: TestClient }): Promise<void> {
  await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
}

/** /healthz answers 200 and a normal call (count_vowels) answers its count: the service still serves. */
async function serves(server: {
  url: string;
  api: TestClient;
}): Promise<{ healthz: number; vowels: number; count: number | null }> {
  const healthz = (await fetch(`${server.url}/healthz`)).status;
  const vowels = await server.api.call('count_vowels', { function: 'count_vowels', input: 'Hello, World!' });
  const count = vowels.status === 200 ? (JSON.parse(vowels.data.output!) as { count: number }).count : null;
  return { healthz, vowels: vowels.status, count };
}

/**
 * One service process for a test file's hostile cases, checked after every case: still alive, health
 * answering, a normal call right, RSS under `rssLimit`. `use` receives the server once it has started.
 */
export function useContainedServer(env: Record<string, string>, rssLimit: number, use: (server: ChildServer) => void): void {
  let server: ChildServer | undefined;
  beforeAll(async () => {
    server = await startChildServer(env);
    use(server);
    await uploadCountVowels(server);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });
  afterEach(async () => {
    expect(server!.alive(), server!.output().slice(-2000)).toBe(true);
    expect(await serves(server!)).toEqual({ healthz: 200, vowels: 200, count: 3 });
    expect(await rssOf(server!)).toBeLessThan(rssLimit);
  });
}
