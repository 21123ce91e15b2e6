// Replicas as real processes (`node src/main.ts`, the Node running the tests: 24 under npm), each with
// its own DATA_DIR and port, all given the environment the test passes (e.g. one DATABASE_URL).
import { type ChildProcess, spawn } from 'node:child_process';
import { serviceEnv, watchProcess } from './child-server.ts';
import { makeTempDir, removeDir, repoRoot } from './helpers.ts';
import { TestClient } from './test-client.ts';
import { closedPort } from './upstream.ts';

export interface Replica {
  name: string;
  process: ChildProcess;
  url: string;
  /** Its API, typed from the contract. */
  api: TestClient;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running, then removes its data dir. */
  stop(): Promise<void>;
}

export interface ReplicaOptions {
  /** Reuse this data dir (a restart); it is kept when the replica stops. */
  dataDir?: string;
  /**
   * Runs the service through a shell command (e.g. to mount something first or set a ulimit); it must
   * end with `exec "$NODE" src/main.ts`. $NODE and $DATA_DIR are set.
   */
  shell?: string;
}

/** Starts a replica and waits until it listens. */
export async function startReplica(name: string, env: Record<string, string>, options: ReplicaOptions = {}): Promise<Replica> {
  const dataDir = options.dataDir ?? (await makeTempDir(`wasmhost-replica-${name}-`));
  const port = await closedPort();
  const [command, args] = options.shell === undefined ? [process.execPath, ['src/main.ts']] : ['sh', ['-c', options.shell]];
  const child = spawn(command, args, {
    cwd: repoRoot,
    env: serviceEnv({
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'info',
      WORKERS: '1',
      NODE: process.execPath,
      ...env,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
    // A group of its own: a shell wrapper (unshare, ulimit) may leave node as its child, and a kill
    // must reach that too.
    detached: options.shell !== undefined,
  });
  const { output, exited } = watchProcess(child);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      if (options.shell !== undefined) process.kill(-child.pid!, 'SIGKILL');
      else child.kill('SIGKILL');
      await exited;
    }
    if (options.dataDir === undefined) await removeDir(dataDir);
  };
  // Generous: several replicas start at once on a shared 2-core machine.
  const deadline = Date.now() + 60_000;
  while (!output().includes('Server listening')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`replica ${name} did not start:\n${output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const url = `http://127.0.0.1:${port}`;
  return { name, process: child, url, api: new TestClient(url), output, exited, stop };
}

/**
 * Asks `probe` every 10 ms until it returns true: how long that took in ms from the call, or Infinity
 * when it never did within `giveUpMs`.
 */
export async function msUntil(probe: () => Promise<boolean>, giveUpMs = 10_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < giveUpMs) {
    if (await probe()) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return Infinity;
}
