// The server side of bench/call.ts, run as a child process: the real app (same setup as main.ts),
// plus one bare POST route inside it (to show what the app's hooks cost before any plugin runs).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROUTE_POLICIES } from '../src/api/route-policy.ts';
import { buildApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';

const dataDir = mkdtempSync(path.join(tmpdir(), 'wasmhost-bench-'));
const config = loadConfig({ ...process.env, DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1' });
const app = await buildApp(config);
// Every route declares its policy (the app refuses to start otherwise); open: no token, no rate limit.
app.post('/bench/bare', { config: { policy: ROUTE_POLICIES.open } }, async () => ({ ok: true }));
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');
process.send?.({ kind: 'ready', port: address.port, workers: config.engine.workers });

// Marks let the bench split CPU per request: main thread and whole process (workers included).
process.on('message', (msg: { kind?: string }) => {
  if (msg.kind === 'stats') {
    process.send?.({
      kind: 'stats',
      engine: app.engine.stats(),
      moduleCache: app.moduleCache.stats(),
      rss: process.memoryUsage().rss,
      // The bounds the caches must hold to (README: MODULE_CACHE_BYTES, WORKER_INSTANCE_CACHE_BYTES).
      bounds: { moduleCacheBytes: config.moduleCacheBytes, workerInstanceCacheBytes: config.engine.workerInstanceCacheBytes },
    });
  }
  if (msg.kind === 'mark') {
    const cpu = process.cpuUsage();
    const main = process.threadCpuUsage();
    process.send?.({
      kind: 'mark',
      cpuUs: cpu.user + cpu.system,
      mainCpuUs: main.user + main.system,
      mainSystemUs: main.system,
      systemUs: cpu.system,
      monotonicUs: Number(process.hrtime.bigint() / 1000n),
    });
  }
});
process.on('disconnect', () => {
  void app.close().finally(() => {
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(0);
  });
});
