// Process entry: read config once, build the app, listen, shut down gracefully.
import { readFileSync } from 'node:fs';
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

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'shutting down');
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}
