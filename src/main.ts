// Process entry: read config once, build the app, listen, shut down gracefully.
import { readFileSync } from 'node:fs';
import { shutdown } from './api/lifecycle.ts';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';

let config: Config;
try {
  config = loadConfig(process.env, { readFile: (file) => readFileSync(file, 'utf8'), descriptorLimit: openFilesLimit() });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`wasmhost: invalid configuration: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const app = await buildApp(config);
try {
  await app.listen({ port: config.port, host: config.host });
} catch (err) {
  const problem = listenProblem(err, config);
  if (problem === null) throw err;
  // A newcomer's most likely first error: one line that says what to do, not a stack trace.
  console.error(`wasmhost: ${problem}`);
  process.exit(1);
}

/** After shutdown the process should end by itself; if something still holds it open, that is a bug to report. */
const EXIT_GRACE_MS = 3_000;
let stopping = false;

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal during shutdown: exiting now');
      process.exit(1);
    }
    stopping = true;
    app.log.info({ signal, drainMs: config.ops.shutdownDrainMs }, 'shutting down: no new requests, draining running calls');
    shutdown(app, config.ops.shutdownDrainMs).then(
      () => {
        app.log.info('stopped');
        // No process.exit(0): exiting by itself proves no worker thread, socket or timer was left behind.
        setTimeout(() => {
          app.log.error({ resources: process.getActiveResourcesInfo() }, 'still running after shutdown');
          process.exit(1);
        }, EXIT_GRACE_MS).unref();
      },
      (err: unknown) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}

/**
 * The soft "Max open files" of /proc/self/limits, which Node raised to the hard limit as it started;
 * null where there is no /proc (MAX_CONNECTIONS then has a fixed default).
 */
function openFilesLimit(): number | null {
  let limits: string;
  try {
    limits = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return null;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
  if (soft === 'unlimited') return Number.MAX_SAFE_INTEGER;
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : null;
}

/** Why listening failed, in one line, when it is the machine's doing rather than a bug. */
function listenProblem(err: unknown, { host, port }: Config): string | null {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return `cannot listen on ${host}:${port}: the port is already in use (another wasmhost?); stop that process or choose another PORT`;
    case 'EACCES':
      return `cannot listen on ${host}:${port}: permission denied; choose a PORT above 1023`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${host}:${port}: this machine has no such address; set HOST to one of its addresses (or 0.0.0.0)`;
    default:
      return null;
  }
}
