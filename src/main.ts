// Process entry: read config once, build the app, listen, shut down gracefully.
import { readFileSync } from 'node:fs';
import { shutdown } from './api/lifecycle.ts';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';

let config: Config;
try {
  config = loadConfig(process.env, { readFile: (file) => readFileSync(file, 'utf8') });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`wasmhost: invalid configuration: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const app = await buildApp(config);
await app.listen({ port: config.port, host: config.host });

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
