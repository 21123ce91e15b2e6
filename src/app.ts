// Builds the Fastify app from a Config. Tests build it directly; main.ts only listens.
import Fastify, { type FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import type { Config } from './config.ts';
import { installErrorHandler } from './api/error-handler.ts';
import { pluginRoutes } from './api/plugins.ts';
import { ModuleCache } from './engine/module-cache.ts';
import { FsPluginStore } from './store/fs-store.ts';
import type { PluginStore } from './store/store.ts';

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

  // Opened before any route is served: the index must be loaded before the first request.
  const store = await FsPluginStore.open(config.dataDir, app.log);
  app.decorate('store', store);
  app.decorate('moduleCache', new ModuleCache(config.moduleCacheBytes));

  app.get('/healthz', async () => ({ status: 'ok' }));
  await app.register(pluginRoutes, { config });

  return app;
}

declare module 'fastify' {
  interface FastifyInstance {
    store: PluginStore;
    moduleCache: ModuleCache;
  }
}
