import { describe, expect, it } from 'vitest';
import { compiledBytes, ModuleCache } from '../src/engine/compile/module-cache.ts';
import { prepareModule, type PreparedModule } from '../src/engine/compile/prepare.ts';
import { defaultModuleLimits, tinyPluginWat, wat } from './helpers.ts';

async function compiled(marker: number): Promise<PreparedModule> {
  return prepareModule(await wat(tinyPluginWat(marker)), defaultModuleLimits());
}

describe('ModuleCache', () => {
  it('counts hits and misses and evicts the least recently used beyond its byte budget (estimated compiled size)', async () => {
    const [sizeA, sizeC] = [compiledBytes(100), compiledBytes(150)];
    const cache = new ModuleCache(sizeA + sizeC + 10);
    const evicted: string[] = [];
    cache.onEvict((id) => evicted.push(id));
    const [a, b, c] = await Promise.all([compiled(1), compiled(2), compiled(3)]);
    cache.set('a', a, 100);
    cache.set('b', b, 100);
    expect(cache.get('a')).toBe(a); // a is now more recent than b
    expect(cache.get('x')).toBeUndefined();
    cache.set('c', c, 150); // over the budget: b goes
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('c')).toBe(c);
    expect(cache.stats()).toEqual({ entries: 2, bytes: sizeA + sizeC, maxBytes: sizeA + sizeC + 10, hits: 2, misses: 2 });
    cache.set('c', c, 150); // replaced, not let go
    cache.delete('a');
    expect(cache.get('a')).toBeUndefined();
    expect(cache.stats().entries).toBe(1);
    expect(evicted).toEqual(['b', 'a']);
  });

  it('estimates a compiled module at ~0.6 MiB plus 12 bytes per byte of Wasm (measured: 0.7 MiB at 12 KB, 12x at 1.1 MB)', () => {
    expect(compiledBytes(12_000)).toBeGreaterThan(0.6 * 1048576);
    expect(compiledBytes(12_000)).toBeLessThan(0.9 * 1048576);
    expect(compiledBytes(1_100_000) / 1_100_000).toBeGreaterThan(11);
  });

  it('does not keep a module larger than the whole budget, nor anything when disabled', async () => {
    const module = await compiled(1);
    const small = new ModuleCache(compiledBytes(100));
    small.set('big', module, 101);
    expect(small.get('big')).toBeUndefined();
    const disabled = new ModuleCache(0);
    disabled.set('a', module, 10);
    expect(disabled.get('a')).toBeUndefined();
    expect(disabled.stats()).toEqual({ entries: 0, bytes: 0, maxBytes: 0, hits: 0, misses: 1 });
  });
});
