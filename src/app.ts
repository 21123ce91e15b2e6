// Builds the Fastify app from a Config. Tests build it directly; main.ts only listens.
import Fastify, { type FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import type { Config } from './config.ts';
import { installErrorHandler } from './api/error-handler.ts';

export interface AppOptions {
  /** Where pino writes (tests capture logs here); stdout by default. */
  logStream?: DestinationStream;
}

export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logStream
      ? { level: config.logLevel, stream: options.logStream }
      : { level: config.logLevel },
    bodyLimit: 1024 * 1024,
  });
  installErrorHandler(app);

  app.get('/healthz', async () => ({ status: 'ok' }));

  return app;
}
