// The engine runs plugins with its own implementation of the Extism host ABI (so instances can be
// recycled with fresh per-call state). This checks it against the reference: a fresh
// @extism/extism plugin per call must give the same output, error text and logs as our HTTP call.
import createPlugin from '@extism/extism';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, removeDir, startServer, type TestServer } from './helpers.ts';

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

interface Outcome {
  output: string | null;
  error: string | null;
  logs: [string, string][];
}

async function viaSdk(
  plugin: string,
  fn: string,
  input: string,
  config: Record<string, string>,
  logLevel: Level,
): Promise<Outcome> {
  const logs: [string, string][] = [];
  const logger = Object.fromEntries(
    (['trace', 'debug', 'info', 'warn', 'error'] as const).map((level) => [level, (text: string) => logs.push([level, text])]),
  ) as unknown as Console;
  const sdk = await createPlugin(
    { wasm: [{ data: new Uint8Array(await readPlugin(plugin)) }] },
    { useWasi: false, config, logger, logLevel },
  );
  try {
    const out = await sdk.call(fn, input);
    return { output: out === null ? '' : out.text(), error: null, logs };
  } catch (err) {
    return { output: null, error: (err as Error).message.replace(/^Plugin-originated error: /, ''), logs };
  } finally {
    await sdk.close();
  }
}

async function viaService(
  server: TestServer,
  plugin: string,
  fn: string,
  input: string,
  config: Record<string, string>,
  logLevel: Level,
): Promise<Outcome> {
  const res = await fetch(`${server.url}/plugins/${plugin}/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ function: fn, input, config, logLevel }),
  });
  const body = (await res.json()) as { output?: string; message?: string; logs: { level: string; message: string }[] };
  return {
    output: res.status === 200 ? (body.output ?? '') : null,
    error: res.status === 200 ? null : (body.message ?? ''),
    logs: body.logs.map((l) => [l.level, l.message]),
  };
}

const cases: {
  plugin: string;
  fn: string;
  input: string;
  config?: Record<string, string>;
  logLevel?: Level;
  /** What both must answer, where the case pins it (a known bug's reproduction). */
  output?: string;
}[] = [
  { plugin: 'count_vowels', fn: 'count_vowels', input: 'Hello, World!' },
  { plugin: 'count_vowels', fn: 'count_vowels', input: 'Hello, World!', config: { vowels: 'lo' } },
  { plugin: 'rust_vowels', fn: 'count_vowels', input: 'A realistic Rust plugin' },
  { plugin: 'rust_vowels', fn: 'count_vowels', input: 'with config', config: { vowels: 'cfg' } },
  {
    plugin: 'rust_vowels',
    fn: 'analyze',
    input: '{"text":"The cat sat. The cat ran! 𝐀𝐁 don’t?","top":3,"ascii":true}',
    logLevel: 'debug',
  },
  { plugin: 'rust_vowels', fn: 'analyze', input: '{"text": "x", "stopwords": ["a", 2]}' },
  { plugin: 'segments', fn: 'take', input: '' },
  { plugin: 'echo', fn: 'echo', input: 'héllo wörld ✓' },
  { plugin: 'fail', fn: 'fail', input: 'boom' },
  { plugin: 'logs', fn: 'log_all', input: 'x', logLevel: 'trace' },
  { plugin: 'logs', fn: 'log_all', input: 'x', logLevel: 'warn' },
  { plugin: 'hello', fn: 'say_hello', input: 'no route configured', logLevel: 'debug' },
  { plugin: 'state', fn: 'probe', input: 'secret' },
  // Block ownership as PDKs exercise it: config_get, var_get and log_* take their block, some PDKs free
  // it again (the Haskell PDK's getConfig frees its key), and a freed block's length is 0.
  { plugin: 'block_ownership', fn: 'greet', input: 'John', config: { greeting: 'Howdy' }, output: 'Howdy, John' },
  { plugin: 'block_ownership', fn: 'greet', input: 'John', output: 'Hello, John' },
  { plugin: 'block_ownership', fn: 'var_again', input: '' },
  { plugin: 'block_ownership', fn: 'log_then_free', input: '' },
  { plugin: 'block_ownership', fn: 'free_twice', input: '' },
  { plugin: 'block_ownership', fn: 'lengths', input: '', config: { greeting: 'x' } },
  { plugin: 'block_ownership', fn: 'input_freed', input: 'John' },
];

describe('engine vs a fresh @extism/extism plugin', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer({ env: { WORKERS: '1', RATE_LIMIT_MAX: '0' } });
    for (const name of new Set(cases.map((c) => c.plugin))) {
      const res = await fetch(`${server.url}/plugins?name=${name}`, {
        method: 'POST',
        headers: { 'content-type': 'application/wasm' },
        body: new Uint8Array(await readPlugin(name)),
      });
      expect(res.status).toBe(201);
    }
  });

  afterAll(async () => {
    await server?.close();
    if (server) await removeDir(server.dataDir);
  });

  it.each(cases)('$plugin.$fn($input) with config $config at $logLevel gives the same output, error and logs', async (c) => {
    const config = c.config ?? {};
    const level = c.logLevel ?? 'info';
    const expected = await viaSdk(c.plugin, c.fn, c.input, config, level);
    if (c.output !== undefined) expect(expected.output).toBe(c.output);
    // Twice: the second call runs on the recycled instance.
    for (let i = 0; i < 2; i++) expect(await viaService(server, c.plugin, c.fn, c.input, config, level)).toEqual(expected);
  });
});
