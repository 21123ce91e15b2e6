// A recycled instance is, after every reset, byte for byte what a fresh one is, for real plugins
// from real toolchains, whose compiled stores the rewrite marks (many sharing one mark:
// compile/wasm-code.ts). On the engine's instances directly, without a server: the comparison
// needs the memories themselves.
import { describe, expect, it } from 'vitest';
import { rewriteForEngine } from '../src/engine/compile/wasm-rewrite.ts';
import { CallState } from '../src/engine/runtime/host-env.ts';
import { describeModule, PluginInstance } from '../src/engine/runtime/instance.ts';
import { LogCollector } from '../src/engine/runtime/logs.ts';
import { readPlugin, wat } from './helpers.ts';

const CAP_PAGES = 1024;
const text = 'The quick brown fox jumps over the lazy dog. Hello, World! Ünïcödé, 1234 and 5678.';

const CALLS: [plugin: string, fn: string, input: string, config?: Record<string, string>][] = [
  ['count_vowels', 'count_vowels', text],
  ['count_vowels', 'count_vowels', text, { vowels: 'xyz' }],
  ['rust_vowels', 'count_vowels', text],
  ['rust_vowels', 'analyze', JSON.stringify({ text: text.repeat(20), top: 5 })],
  ['rust_regex', 'count_vowels', text],
  ['rust_regex', 'extract', JSON.stringify({ text, patterns: { word: '\\b(?P<w>\\w+)\\b', digits: '[0-9]+' } })],
  ['rust_regex', 'redact', JSON.stringify({ text, rules: [{ pattern: '([0-9])', replacement: '<$1>' }] })],
  ['rust_regex', 'json_stats', JSON.stringify({ a: [1, 2, { b: 'text', c: null }], d: true, e: text.repeat(50) })],
];

async function instances(plugin: string): Promise<[recycled: PluginInstance, fresh: PluginInstance]> {
  const { bytes, ...layout } = rewriteForEngine(await readPlugin(plugin), { maxTableElements: 100_000 });
  const shape = describeModule(await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>), layout);
  expect(shape.dirtyTracking).toBe(true);
  return [new PluginInstance(shape, 65536, CAP_PAGES), new PluginInstance(shape, 65536, CAP_PAGES)];
}

async function run(instance: PluginInstance, fn: string, input: string, config: Record<string, string>): Promise<string> {
  const bytes = new TextEncoder().encode(input);
  const limits = { hostBytes: 64 << 20, outputBytes: 1 << 20, varBytes: 1 << 20, httpResponseBytes: 0 };
  const call = new CallState(bytes, config, new LogCollector('info', 100, 1 << 16), limits, null);
  try {
    const rc = await instance.run(fn, call, CAP_PAGES);
    const { output, error } = call.result();
    return `${rc} ${error ?? new TextDecoder().decode(output ?? new Uint8Array(0))}`;
  } finally {
    instance.reset();
  }
}

/** Offsets of the first bytes (up to 5) where two memories differ; the longer one's extra bytes must be zero. */
function differences(a: WebAssembly.Memory, b: WebAssembly.Memory): number[] {
  const [x, y] = [new Uint8Array(a.buffer), new Uint8Array(b.buffer)];
  const found: number[] = [];
  for (let i = 0; i < Math.max(x.length, y.length) && found.length < 5; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) found.push(i);
  return found;
}

describe('a recycled instance after reset', () => {
  it('has every byte of memory and its size as a fresh instance has them, call after call', async () => {
    for (const plugin of new Set(CALLS.map(([p]) => p))) {
      const [recycled, fresh] = await instances(plugin);
      const calls = CALLS.filter(([p]) => p === plugin);
      for (let round = 0; round < 3; round++) {
        for (const [, fn, input, config = {}] of calls) {
          const output = await run(recycled, fn, input, config);
          expect(output.startsWith('0 ')).toBe(true);
          expect({
            plugin,
            fn,
            round,
            pages: recycled.memoryPages(),
            differ: differences(recycled.memory, fresh.memory),
          }).toEqual({
            plugin,
            fn,
            round,
            pages: fresh.memoryPages(),
            differ: [],
          });
        }
      }
    }
  });
});

describe("host access past the plugin's own memory size on a recycled instance", () => {
  it('fails as on a fresh instance, though the Memory still holds what an earlier call grew (WASI bounds the virtual size)', async () => {
    const source = await wat(`(module
      (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "grow") (result i32) (drop (memory.grow (i32.const 10))) (i32.store (i32.const 300000) (i32.const 42)) (i32.const 0))
      (func (export "probe") (result i32) (drop (call $random_get (i32.const 200000) (i32.const 16))) (i32.const 0)))`);
    const { bytes, ...layout } = rewriteForEngine(source, { maxTableElements: 100_000 });
    const shape = describeModule(await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>), layout);
    expect(shape.virtualGrowth).toBe(true);
    const instance = new PluginInstance(shape, 65536, CAP_PAGES);
    const limits = { hostBytes: 64 << 20, outputBytes: 1 << 20, varBytes: 1 << 20, httpResponseBytes: 0 };
    const call = (fn: string) => {
      const state = new CallState(null, {}, new LogCollector('off', 0, 0), limits, null);
      try {
        instance.run(fn, state, CAP_PAGES);
        return state.failure?.message ?? 'ok';
      } catch (err) {
        return state.failure?.message ?? String(err);
      } finally {
        instance.reset();
      }
    };
    expect(call('probe')).toMatch(/out of bounds|Invalid typed array length/);
    expect(call('grow')).toBe('ok');
    expect(instance.memory.buffer.byteLength).toBeGreaterThan(200_016);
    // Back to one page for the plugin: the next call may not reach past it, through WASI either.
    expect(call('probe')).toMatch(/out of bounds/);
  });
});
