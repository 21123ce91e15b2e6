// The server side of bench/call.ts, run as a child process: the real app (same setup as main.ts),
// plus one bare POST route inside it (to show what the app's hooks cost before any plugin runs).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

/**
 * CPU of the engine's worker threads and of V8's background threads (GC, compilation), µs, from
 * /proc (Linux; zeros elsewhere). Threads that ended since the last mark are missing from it.
 */
function threadCpuUs(): { engineUs: number; v8Us: number } {
  const ticksUs = 1e6 / 100; // USER_HZ
  let engineUs = 0;
  let v8Us = 0;
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // Fields after the ")" that closes the name: utime and stime are the 12th and 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const us = (Number(fields[11]) + Number(fields[12])) * ticksUs;
      if (name.startsWith('wasmhost-engin')) engineUs += us;
      else if (name.startsWith('V8Worker')) v8Us += us;
    }
  } catch {
    // no /proc: the columns read 0
  }
  return { engineUs, v8Us };
}

// Marks let the bench split CPU per request: main thread, engine workers, V8's threads, whole process.
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
      ...threadCpuUs(),
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
