// The worker pool alone, for what HTTP cannot provoke: workers that die while starting.
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';
import { resolveLimits } from '../src/engine/limits.ts';
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
      defaultLimits: resolveLimits(loadConfig({}).engine.limits, {}),
      workerUrl: new URL('./fixtures/crash-worker.mjs', import.meta.url),
    });
    // Each failed start doubles the delay before the next one (shared by the core worker and the standby).
    const delays: number[] = [];
    while (delays.length < 4) {
      const { restarts, respawnDelayMs } = pool.stats();
      if (restarts.crash > 0 && respawnDelayMs !== delays.at(-1)) delays.push(respawnDelayMs);
      await new Promise((r) => setTimeout(r, 5));
    }
    // Never 0 (a hot loop) once a start failed: 50 ms, doubled per failure in a row (two failures at
    // once may skip a step between two looks).
    expect(delays[0]! % 50 === 0 && Number.isInteger(Math.log2(delays[0]! / 50))).toBe(true);
    for (let i = 1; i < delays.length; i++)
      expect(delays[i], `delays ${delays.join(', ')}`).toBeGreaterThanOrEqual(2 * delays[i - 1]!);
    const { ready, size } = pool.stats();
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
