// The engine runs plugins with its own implementation of the Extism host ABI (so instances can be
// recycled with fresh per-call state). This checks it against the reference: a fresh
// @extism/extism plugin per call must give the same output, error text and logs as our HTTP call.
import createPlugin from '@extism/extism';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, useServer, type TestServer } from './helpers.ts';
import { startUpstream, type Upstream } from './upstream.ts';

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

interface Outcome {
  output: string | null;
  error: string | null;
  logs: [string, string][];
}

/** One call on a fresh SDK plugin made from `manifest`, its logs collected as the service reports them. */
async function callSdk(
  manifest: Parameters<typeof createPlugin>[0],
  options: Omit<NonNullable<Parameters<typeof createPlugin>[1]>, 'logger'>,
  fn: string,
  input: string,
): Promise<Outcome> {
  const logs: [string, string][] = [];
  const logger = Object.fromEntries(
    (['trace', 'debug', 'info', 'warn', 'error'] as const).map((level) => [level, (text: string) => logs.push([level, text])]),
  ) as unknown as Console;
  const sdk = await createPlugin(manifest, { ...options, logger });
  try {
    const out = await sdk.call(fn, input);
    return { output: out === null ? '' : out.text(), error: null, logs };
  } catch (err) {
    return { output: null, error: (err as Error).message.replace(/^Plugin-originated error: /, ''), logs };
  } finally {
    await sdk.close();
  }
}

async function viaSdk(
  plugin: string,
  fn: string,
  input: string,
  config: Record<string, string>,
  logLevel: Level,
): Promise<Outcome> {
  return callSdk({ wasm: [{ data: new Uint8Array(await readPlugin(plugin)) }] }, { useWasi: false, config, logLevel }, fn, input);
}

async function viaService(
  server: TestServer,
  plugin: string,
  fn: string,
  input: string,
  config: Record<string, string>,
  logLevel: Level,
): Promise<Outcome> {
  const res = await server.api.call(plugin, { function: fn, input, config, logLevel });
  const { logs } = res.ok ? res.data : res.error;
  return {
    output: res.status === 200 ? (res.data.output ?? '') : null,
    error: res.status === 200 ? null : res.error.message,
    logs: logs.map((l) => [l.level, l.message]),
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
  const server = useServer({ env: { WORKERS: '1', RATE_LIMIT_MAX: '0' } });

  beforeAll(async () => {
    for (const name of new Set(cases.map((c) => c.plugin))) {
      expect((await server.api.upload(await readPlugin(name), { name })).status).toBe(201);
    }
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

/** A manifest as the service takes it (Extism's JSON form: snake_case, modules as base64 `data`). */
interface ManifestCase {
  title: string;
  plugin: string;
  fn: string;
  input: string;
  config?: Record<string, string>;
  allowedHosts?: (upstream: Upstream) => string[];
  configFor?: (upstream: Upstream) => Record<string, string>;
  memory?: { max_pages?: number; max_http_response_bytes?: number; max_var_bytes?: number };
  timeoutMs?: number;
  /** The error both must answer with, where the case is about one. */
  error?: RegExp;
}

const manifestCases: ManifestCase[] = [
  { title: 'config', plugin: 'count_vowels', fn: 'count_vowels', input: 'Hello, World!', config: { vowels: 'lo' } },
  // The key "total" (5 bytes) fits; the service caps keys too (at the same size), which the SDK does not.
  // (A max_var_bytes of 0 differs by design: vars off here and in the Rust runtime, unlimited in the SDK.)
  {
    title: 'memory.max_var_bytes that var_set stays under',
    plugin: 'count_vowels',
    fn: 'count_vowels',
    input: 'aaa',
    memory: { max_var_bytes: 5 },
  },
  {
    title: 'memory.max_var_bytes that var_set passes',
    plugin: 'count_vowels',
    fn: 'count_vowels',
    input: 'a'.repeat(100_000),
    memory: { max_var_bytes: 5 },
    error: /^var memory limit exceeded: 6 bytes requested, 5 allowed$/,
  },
  {
    title: 'memory limits that hold',
    plugin: 'rust_vowels',
    fn: 'count_vowels',
    input: 'limits',
    memory: { max_pages: 64, max_http_response_bytes: 4096, max_var_bytes: 1024 },
  },
  {
    title: 'allowed_hosts and config for an HTTP plugin',
    plugin: 'hello',
    fn: 'say_hello',
    input: 'manifest',
    configFor: (u) => ({ route: `${u.url}/todo?title=from%20the%20manifest` }),
    allowedHosts: () => ['127.0.0.1'],
  },
  { title: 'timeout_ms that the call meets', plugin: 'count_vowels', fn: 'count_vowels', input: 'in time', timeoutMs: 5000 },
];

async function manifestViaSdk(c: ManifestCase, upstream: Upstream): Promise<Outcome> {
  const memory = c.memory
    ? {
        maxPages: c.memory.max_pages,
        maxHttpResponseBytes: c.memory.max_http_response_bytes,
        maxVarBytes: c.memory.max_var_bytes,
      }
    : undefined;
  return callSdk(
    {
      wasm: [{ data: new Uint8Array(await readPlugin(c.plugin)) }],
      config: c.configFor?.(upstream) ?? c.config ?? {},
      allowedHosts: c.allowedHosts?.(upstream) ?? [],
      ...(memory ? { memory } : {}),
      ...(c.timeoutMs ? { timeoutMs: c.timeoutMs } : {}),
    },
    // SDK call timeouts exist only for plugins in a worker thread.
    { useWasi: false, logLevel: 'info', runInWorker: c.timeoutMs !== undefined },
    c.fn,
    c.input,
  );
}

describe('manifest plugins vs @extism/extism given the same manifest', () => {
  const server = useServer({
    env: { WORKERS: '1', RATE_LIMIT_MAX: '0', EGRESS_ALLOW_PRIVATE: 'true', EGRESS_ALLOWED_HOSTS: '127.0.0.1' },
  });
  let upstream: Upstream;

  beforeAll(async () => {
    upstream = await startUpstream('127.0.0.1');
  });

  afterAll(async () => {
    await upstream?.close();
  });

  it.each(manifestCases)('$title: the same output, error and logs, first and recycled call', async (c) => {
    const manifest = {
      wasm: [{ data: Buffer.from(await readPlugin(c.plugin)).toString('base64') }],
      config: c.configFor?.(upstream) ?? c.config ?? {},
      allowed_hosts: c.allowedHosts?.(upstream) ?? [],
      ...(c.memory ? { memory: c.memory } : {}),
      ...(c.timeoutMs ? { timeout_ms: c.timeoutMs } : {}),
    };
    const { id } = (await server.api.uploadManifest(manifest)).data;
    const expected = await manifestViaSdk(c, upstream);
    if (c.error) expect(expected.error).toMatch(c.error);
    else expect(expected.error).toBeNull();
    for (let i = 0; i < 2; i++) expect(await viaService(server, id, c.fn, c.input, {}, 'info')).toEqual(expected);
  });
});

/** A linked manifest: its modules (plugins/dist names) with the names they are linked by. */
interface LinkedCase {
  title: string;
  modules: { plugin: string; name?: string }[];
  fn: string;
  input: string;
  wasi?: boolean;
  /** What both must answer (pinned: the case is about it). */
  output?: string;
  error?: string;
  logs?: [string, string][];
}

const linkedCases: LinkedCase[] = [
  {
    title: 'a circular pair (main imports from lhs, lhs from main), with a log from lhs',
    modules: [
      { plugin: 'link_circular_lhs', name: 'lhs' },
      { plugin: 'link_circular_main', name: 'main' },
    ],
    fn: 'run',
    input: 'abcd',
    output: '13',
    logs: [['info', 'hello from lhs']],
  },
  {
    title: 'a circular pair whose linked module sets the error',
    modules: [
      { plugin: 'link_circular_main', name: 'main' },
      { plugin: 'link_circular_lhs', name: 'lhs' },
    ],
    fn: 'fail',
    input: '',
    error: 'lhs says no',
  },
  {
    title: 'a WASI side module (a reactor: _initialize runs at start-up)',
    modules: [{ plugin: 'link_wasi_side', name: 'wasi_side' }, { plugin: 'link_wasi_main' }],
    fn: 'probe',
    input: '',
    wasi: true,
    output: '40',
  },
  {
    title: 'a shared memory (exported by one module, imported by main), fresh for every call',
    modules: [{ plugin: 'link_memory_side', name: 'mem_side' }, { plugin: 'link_memory_main' }],
    fn: 'run',
    input: 'hello',
    output: 'shared:  from side#1 532',
  },
  {
    title: 'state in both modules (globals, memory past the data segments) that a recycled set must not keep',
    modules: [{ plugin: 'link_state_side', name: 'counter' }, { plugin: 'link_state_main' }],
    fn: 'run',
    input: '',
    output: '102',
  },
];

async function linkedViaSdk(c: LinkedCase): Promise<Outcome> {
  const wasm = await Promise.all(
    c.modules.map(async (m) => ({ data: new Uint8Array(await readPlugin(m.plugin)), ...(m.name ? { name: m.name } : {}) })),
  );
  return callSdk({ wasm }, { useWasi: c.wasi ?? false, logLevel: 'info' }, c.fn, c.input);
}

describe('linked manifests vs @extism/extism linking the same modules', () => {
  const server = useServer({ env: { WORKERS: '1', RATE_LIMIT_MAX: '0' } });

  it.each(linkedCases)('$title: the same output, error and logs, first and recycled call', async (c) => {
    const wasm = await Promise.all(
      c.modules.map(async (m) => ({
        data: Buffer.from(await readPlugin(m.plugin)).toString('base64'),
        ...(m.name ? { name: m.name } : {}),
      })),
    );
    const res = await server.api.uploadManifest({ wasm });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const body = res.data;
    expect(body.manifest?.modules).toHaveLength(c.modules.length);
    const expected = await linkedViaSdk(c);
    if (c.output !== undefined) expect(expected.output).toBe(c.output);
    if (c.error !== undefined) expect(expected.error).toBe(c.error);
    if (c.logs !== undefined) expect(expected.logs).toEqual(c.logs);
    // Three times: the second and third calls run on the recycled set of instances.
    for (let i = 0; i < 3; i++) expect(await viaService(server, body.id, c.fn, c.input, {}, 'info')).toEqual(expected);
  });
});
