// The worker pool alone, for what HTTP cannot provoke: workers that die while starting.
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';
import { WorkerPool } from '../src/engine/pool/pool.ts';

describe('WorkerPool', () => {
  let pool: WorkerPool | null = null;

  afterEach(async () => {
    await pool?.close();
    pool = null;
  });

  it('respawns workers that die while starting with a growing delay, not in a hot loop, and is not ready meanwhile', async () => {
    pool = new WorkerPool({
      size: 1,
      queueMax: 4,
      queueMaxBytes: 1024,
      workerUrl: new URL('./fixtures/crash-worker.mjs', import.meta.url),
    });
    await new Promise((r) => setTimeout(r, 1200));
    const { restarts, ready, size } = pool.stats();
    // Each start fails within ~30-60 ms: without a delay that is 20+ restarts in 1.2 s; with 50, 100,
    // 200, 400 ms... (shared by the core worker and the standby) a handful.
    expect(restarts.crash).toBeGreaterThanOrEqual(1);
    expect(restarts.crash).toBeLessThanOrEqual(8);
    expect({ ready, size }).toEqual({ ready: 0, size: 1 });
    await expect(pool.whenReady(50)).rejects.toThrow('no worker thread is ready (0 of 1)');
  });

  it('takes worker heap and instance cache sizes from config (defaults 256 MB / 256 MiB; a heap too small to start is refused)', () => {
    const defaults = loadConfig({}).engine;
    expect([defaults.workerHeapMb, defaults.workerInstanceCacheBytes]).toEqual([256, 256 * 1024 * 1024]);
    const set = loadConfig({ WORKER_HEAP_MB: '64', WORKER_INSTANCE_CACHE_BYTES: '0' }).engine;
    expect([set.workerHeapMb, set.workerInstanceCacheBytes]).toEqual([64, 0]);
    expect(() => loadConfig({ WORKER_HEAP_MB: '8' })).toThrow(ConfigError);
  });
});
