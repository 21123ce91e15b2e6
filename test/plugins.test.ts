// Loads each built test plugin (plugins/dist, built by `npm run build:plugins`) with the Extism SDK
// directly and checks it behaves as plugins/README.md says, so other tests can rely on them.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import createPlugin from '@extism/extism';
import type { ExtismPluginOptions, Plugin } from '@extism/extism';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const distDir = fileURLToPath(new URL('../plugins/dist/', import.meta.url));
const wasmOf = (name: string): Uint8Array<ArrayBuffer> => new Uint8Array(readFileSync(`${distDir}${name}.wasm`));

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
type LogLine = { level: Level; text: string };

function recordingLogger(lines: LogLine[]): Console {
  const at = (level: Level) => (text: string) => {
    lines.push({ level, text });
  };
  const logger = { trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return logger as unknown as Console;
}

/** `wasm` with its single memory (declared without a maximum) capped at `maxPages`. */
function withMemoryMax(wasm: Uint8Array, maxPages: number): Uint8Array<ArrayBuffer> {
  const memorySection = [0x05, 0x03, 0x01, 0x00, 0x01]; // id, size, 1 memory, no max, 1 page
  const at = wasm.findIndex((_, i) => memorySection.every((b, j) => wasm[i + j] === b));
  if (at < 8 || maxPages > 127) throw new Error('withMemoryMax only handles a 1-page memory without a maximum');
  const capped = [0x05, 0x04, 0x01, 0x01, 0x01, maxPages];
  return Uint8Array.from([...wasm.subarray(0, at), ...capped, ...wasm.subarray(at + memorySection.length)]);
}

async function load(name: string, options: ExtismPluginOptions = {}): Promise<Plugin> {
  return createPlugin({ wasm: [{ data: wasmOf(name) }] }, { useWasi: false, ...options });
}

async function callText(plugin: Plugin, fn: string, input: string | Uint8Array = ''): Promise<string> {
  const output = await plugin.call(fn, input);
  if (output === null) throw new Error(`${fn} returned no output`);
  return output.text();
}

describe('AssemblyScript plugins', () => {
  it('echo returns arbitrary bytes unchanged', async () => {
    const plugin = await load('echo');
    const bytes = new Uint8Array(1000).map((_, i) => (i * 7 + 3) % 256);
    const output = await plugin.call('echo', bytes);
    expect(output?.bytes()).toEqual(bytes);
    expect(await callText(plugin, 'echo', 'héllo ✓')).toBe('héllo ✓');
    await plugin.close();
  });

  it('count_vowels counts, keeps a running total in a var, and honours the vowels config', async () => {
    const plugin = await load('count_vowels');
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'Hello World'))).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU' });
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'aaaa'))).toEqual({ count: 4, total: 7, vowels: 'aeiouAEIOU' });
    await plugin.close();

    const custom = await load('count_vowels', { config: { vowels: 'lé' } });
    expect(JSON.parse(await callText(custom, 'count_vowels', 'hello é'))).toEqual({ count: 3, total: 3, vowels: 'lé' });
    await custom.close();
  });

  it('fail sets a plugin error with the input or a default message', async () => {
    const plugin = await load('fail');
    await expect(plugin.call('fail', 'boom')).rejects.toThrow('fail: boom');
    await expect(plugin.call('fail', '')).rejects.toThrow('fail: this plugin always fails');
    await plugin.close();
  });

  it('logs logs one message per level in order and returns done', async () => {
    const lines: LogLine[] = [];
    const plugin = await load('logs', { logger: recordingLogger(lines), logLevel: 'trace' });
    expect(await callText(plugin, 'log_all')).toBe('done');
    expect(lines).toEqual([
      { level: 'trace', text: 'trace message' },
      { level: 'debug', text: 'debug message' },
      { level: 'info', text: 'info message' },
      { level: 'warn', text: 'warn message' },
      { level: 'error', text: 'error message' },
    ]);
    await plugin.close();
  });
});

describe('AssemblyScript plugins that make HTTP requests', () => {
  let server: Server;
  let base: string;
  const seen: { method: string; url: string; header: string | undefined; body: string }[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        seen.push({ method: req.method ?? '', url: req.url ?? '', header: req.headers['x-test'] as string | undefined, body });
        if (req.url === '/todo') {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ id: 1, title: 'délire "quoted"' }));
        } else if (req.url === '/echo') {
          res.end(`${req.method} ${body}`);
        } else {
          res.statusCode = 404;
          res.end('not here');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('hello GETs the configured route and returns the JSON title', async () => {
    const lines: LogLine[] = [];
    const plugin = await load('hello', {
      config: { route: `${base}/todo` }, allowedHosts: ['127.0.0.1'], logger: recordingLogger(lines), logLevel: 'info',
    });
    expect(await callText(plugin, 'say_hello', 'benjamin')).toBe('param: benjamin title: délire "quoted"');
    expect(lines).toEqual([
      { level: 'info', text: 'hello this is wasm' },
      { level: 'info', text: `calling ${base}/todo` },
    ]);
    await plugin.close();
  });

  it('hello fails with a clear error on a non-2xx status', async () => {
    const plugin = await load('hello', { config: { route: `${base}/missing` }, allowedHosts: ['127.0.0.1'] });
    await expect(plugin.call('say_hello', 'x')).rejects.toThrow(`say_hello: GET ${base}/missing failed with HTTP status 404`);
    await plugin.close();
  });

  it('http fetch and fetch_all send method, headers and body and report status and body', async () => {
    const plugin = await load('http', { allowedHosts: ['127.0.0.1'] });
    const one = await callText(plugin, 'fetch', JSON.stringify({
      url: `${base}/echo`, method: 'POST', headers: { 'x-test': 'yes' }, body: 'payload ✓',
    }));
    expect(JSON.parse(one)).toEqual({ status: 200, body: 'POST payload ✓' });
    expect(seen.at(-1)).toEqual({ method: 'POST', url: '/echo', header: 'yes', body: 'payload ✓' });

    const all = await callText(plugin, 'fetch_all', JSON.stringify([{ url: `${base}/todo` }, { url: `${base}/nope` }]));
    expect(JSON.parse(all)).toEqual([
      { status: 200, body: JSON.stringify({ id: 1, title: 'délire "quoted"' }) },
      { status: 404, body: 'not here' },
    ]);
    await plugin.close();
  });

  it('http fetch rejects input that is not a request object', async () => {
    const plugin = await load('http', { allowedHosts: ['127.0.0.1'] });
    await expect(plugin.call('fetch', 'not json')).rejects.toThrow('fetch: input must be a JSON object');
    await plugin.close();
  });
});

describe('WAT plugins', () => {
  it('trap traps', async () => {
    const plugin = await load('trap');
    await expect(plugin.call('trap')).rejects.toThrow(WebAssembly.RuntimeError);
    await plugin.close();
  });

  it('loop exports spin and never returns (not called here: it would block the thread)', async () => {
    const plugin = await load('loop');
    expect(await plugin.functionExists('spin')).toBe(true);
    await plugin.close();
  });

  it('membomb grows memory until a grow is refused, then traps', async () => {
    // Uncapped it would take a minute to reach 4 GiB; cap its memory at 64 pages like an engine would.
    const plugin = await createPlugin({ wasm: [{ data: withMemoryMax(wasmOf('membomb'), 64) }] }, { useWasi: false });
    await expect(plugin.call('grow')).rejects.toThrow(WebAssembly.RuntimeError);
    await plugin.close();
  });

  it('huge_output outputs as many bytes as the input asks for', async () => {
    const plugin = await load('huge_output');
    const output = await plugin.call('huge', '1000003');
    expect(output?.bytes().length).toBe(1_000_003);
    expect(output?.bytes().every((b) => b === 0x78)).toBe(true);
    const defaultSize = await plugin.call('huge', '');
    expect(defaultSize?.bytes().length).toBe(64 * 1024 * 1024);
    await plugin.close();
  });

  it('log_flood logs as many 100-byte info lines as asked', async () => {
    let count = 0;
    let last = '';
    const logger = { ...recordingLogger([]), info: (text: string) => { count++; last = text; } } as unknown as Console;
    const plugin = await load('log_flood', { logger, logLevel: 'info' });
    expect(await callText(plugin, 'flood', '30000')).toBe('done');
    expect(count).toBe(30_000);
    expect(Buffer.byteLength(last)).toBe(100);
    await plugin.close();
  });

  it('log_flood by default (100000 lines) overruns the stock SDK, which holds 32767 blocks per call', async () => {
    let infos = 0;
    const errors: string[] = [];
    const logger = { ...recordingLogger([]), info: () => { infos++; }, error: (text: string) => { errors.push(text); } };
    const plugin = await load('log_flood', { logger: logger as unknown as Console, logLevel: 'info' });
    await expect(plugin.call('flood')).rejects.toThrow();
    expect(infos).toBe(32_767);
    expect(errors[0]).toMatch(/bad block reference/);
    await plugin.close();
  });

  it('wasi_io writes to stdout and stderr and returns ok; exit_nonzero exits', async () => {
    const plugin = await load('wasi_io', { useWasi: true });
    expect(await callText(plugin, 'write_both')).toBe('ok');
    await expect(plugin.call('exit_nonzero')).rejects.toBeDefined();
    await plugin.close();
  });

  it('state reports zeros on a fresh instance and shows what a reused one leaks', async () => {
    const fresh = { memCounter: 0, globalCounter: 0, var: 0, leftover: '0'.repeat(32) };
    const plugin = await load('state');
    expect(JSON.parse(await callText(plugin, 'probe', 'secret-of-call-1'))).toEqual(fresh);
    expect(JSON.parse(await callText(plugin, 'probe', 'x'))).toEqual({
      memCounter: 1, globalCounter: 1, var: 1, leftover: Buffer.from('secret-of-call-1').toString('hex'),
    });
    await plugin.close();

    const another = await load('state');
    expect(JSON.parse(await callText(another, 'probe', 'y'))).toEqual(fresh);
    await another.close();
  });

  it('upload fixtures: bad_import does not link; no_exports has no functions', async () => {
    const badImports = WebAssembly.Module.imports(new WebAssembly.Module(wasmOf('bad_import')));
    expect(badImports.map((i) => `${i.module}.${i.name}`)).toEqual(['env.abort', 'foo.bar']);
    await expect(load('bad_import')).rejects.toThrow(/cannot resolve import "env" "abort"/);

    const noExports = WebAssembly.Module.exports(new WebAssembly.Module(wasmOf('no_exports')));
    expect(noExports).toEqual([{ name: 'memory', kind: 'memory' }]);
  });
});

describe('Rust plugin', () => {
  it('rust_vowels counts, keeps total in a var, counts calls in a static, and honours the vowels config', async () => {
    const wasm = wasmOf('rust_vowels');
    const memory = WebAssembly.Module.exports(new WebAssembly.Module(wasm)).find((e) => e.kind === 'memory');
    expect(memory?.name).toBe('memory');

    const plugin = await load('rust_vowels');
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'Hello World'))).toEqual({
      count: 3, total: 3, vowels: 'aeiouAEIOU', calls: 1,
    });
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'aéiou'))).toEqual({
      count: 4, total: 7, vowels: 'aeiouAEIOU', calls: 2,
    });
    await plugin.close();

    const custom = await load('rust_vowels', { config: { vowels: 'é"' } });
    expect(JSON.parse(await callText(custom, 'count_vowels', 'é "é"'))).toEqual({ count: 4, total: 4, vowels: 'é"', calls: 1 });
    await custom.close();
  });

  it('rust_vowels starts with at least 1 MiB of linear memory (the Rust stack)', async () => {
    const module = new WebAssembly.Module(wasmOf('rust_vowels'));
    const env = Object.fromEntries(WebAssembly.Module.imports(module).map((i) => [i.name, () => 0n]));
    const instance = new WebAssembly.Instance(module, { 'extism:host/env': env });
    const memory = instance.exports.memory as WebAssembly.Memory;
    expect(memory.buffer.byteLength).toBeGreaterThanOrEqual(1024 * 1024);
  });
});
