import { describe, expect, it } from 'vitest';
import { ModuleCache } from '../src/engine/compile/module-cache.ts';
import { prepareModule, type PreparedModule } from '../src/engine/compile/prepare.ts';
import { tinyPluginWat, wat } from './helpers.ts';

async function compiled(marker: number): Promise<PreparedModule> {
  return prepareModule(await wat(tinyPluginWat(marker)));
}

describe('ModuleCache', () => {
  it('counts hits and misses and evicts the least recently used beyond its byte budget', async () => {
    const cache = new ModuleCache(300);
    const [a, b, c] = await Promise.all([compiled(1), compiled(2), compiled(3)]);
    cache.set('a', a, 100);
    cache.set('b', b, 100);
    expect(cache.get('a')).toBe(a); // a is now more recent than b
    expect(cache.get('x')).toBeUndefined();
    cache.set('c', c, 150); // 350 > 300: b goes
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('c')).toBe(c);
    expect(cache.stats()).toEqual({ entries: 2, bytes: 250, maxBytes: 300, hits: 2, misses: 2 });
    cache.delete('a');
    expect(cache.get('a')).toBeUndefined();
    expect(cache.stats().entries).toBe(1);
  });

  it('does not keep a module larger than the whole budget, nor anything when disabled', async () => {
    const module = await compiled(1);
    const small = new ModuleCache(100);
    small.set('big', module, 101);
    expect(small.get('big')).toBeUndefined();
    const disabled = new ModuleCache(0);
    disabled.set('a', module, 10);
    expect(disabled.get('a')).toBeUndefined();
    expect(disabled.stats()).toEqual({ entries: 0, bytes: 0, maxBytes: 0, hits: 0, misses: 1 });
  });
});
