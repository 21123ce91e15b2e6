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
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'Hello World'))).toEqual({
      count: 3,
      total: 3,
      vowels: 'aeiouAEIOU',
    });
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
      config: { route: `${base}/todo` },
      allowedHosts: ['127.0.0.1'],
      logger: recordingLogger(lines),
      logLevel: 'info',
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
    const one = await callText(
      plugin,
      'fetch',
      JSON.stringify({
        url: `${base}/echo`,
        method: 'POST',
        headers: { 'x-test': 'yes' },
        body: 'payload ✓',
      }),
    );
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
    const logger = {
      ...recordingLogger([]),
      info: (text: string) => {
        count++;
        last = text;
      },
    } as unknown as Console;
    const plugin = await load('log_flood', { logger, logLevel: 'info' });
    expect(await callText(plugin, 'flood', '30000')).toBe('done');
    expect(count).toBe(30_000);
    expect(Buffer.byteLength(last)).toBe(100);
    await plugin.close();
  });

  it('log_flood by default (100000 lines) overruns the stock SDK, which holds 32767 blocks per call', async () => {
    let infos = 0;
    const errors: string[] = [];
    const logger = {
      ...recordingLogger([]),
      info: () => {
        infos++;
      },
      error: (text: string) => {
        errors.push(text);
      },
    };
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
      memCounter: 1,
      globalCounter: 1,
      var: 1,
      leftover: Buffer.from('secret-of-call-1').toString('hex'),
    });
    await plugin.close();

    const another = await load('state');
    expect(JSON.parse(await callText(another, 'probe', 'y'))).toEqual(fresh);
    await another.close();
  });

  it('segments outputs fresh on a fresh instance and traps on a reused one (its segments were dropped)', async () => {
    const plugin = await load('segments');
    expect(await callText(plugin, 'take')).toBe('fresh');
    await expect(plugin.call('take')).rejects.toThrow(/out of bounds/);
    await plugin.close();
  });

  it('mem_small and mem_large output the first input byte, kept in memory, from 1 and 1024 pages of memory', async () => {
    for (const [name, pages] of [
      ['mem_small', 1],
      ['mem_large', 1024],
    ] as const) {
      const module = new WebAssembly.Module(wasmOf(name));
      const env = Object.fromEntries(WebAssembly.Module.imports(module).map((i) => [i.name, () => 0n]));
      const memory = new WebAssembly.Instance(module, { 'extism:host/env': env }).exports.memory as WebAssembly.Memory;
      expect(memory.buffer.byteLength).toBe(pages * 65536);
      const plugin = await load(name);
      expect(await callText(plugin, 'first_byte', 'xyz')).toBe('x');
      // The byte stays in memory: an empty input outputs the previous call's byte on a reused instance.
      expect(await callText(plugin, 'first_byte', '')).toBe('x');
      await plugin.close();
    }
  });

  it('upload fixtures: bad_import does not link; no_exports has no functions', async () => {
    const badImports = WebAssembly.Module.imports(new WebAssembly.Module(wasmOf('bad_import')));
    expect(badImports.map((i) => `${i.module}.${i.name}`)).toEqual(['env.abort', 'foo.bar']);
    await expect(load('bad_import')).rejects.toThrow(/cannot resolve import "env" "abort"/);

    const noExports = WebAssembly.Module.exports(new WebAssembly.Module(wasmOf('no_exports')));
    expect(noExports).toEqual([{ name: 'memory', kind: 'memory' }]);
  });
});

describe('Rust plugin built with cargo (serde_json + regex from Debian packages)', () => {
  it('rust_regex is over 1 MiB, like plugins built with the Extism Rust PDK', () => {
    expect(wasmOf('rust_regex').length).toBeGreaterThan(1024 * 1024);
  });

  it('rust_regex count_vowels counts with a regex, keeps total in a var, counts calls in a static, honours config', async () => {
    const plugin = await load('rust_regex');
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'Hello World'))).toEqual({
      count: 3,
      total: 3,
      vowels: 'aeiouAEIOU',
      calls: 1,
    });
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'aéiou'))).toEqual({
      count: 4,
      total: 7,
      vowels: 'aeiouAEIOU',
      calls: 2,
    });
    await plugin.close();
    const custom = await load('rust_regex', { config: { vowels: 'é]' } });
    expect(JSON.parse(await callText(custom, 'count_vowels', 'é ]é['))).toEqual({ count: 3, total: 3, vowels: 'é]', calls: 1 });
    await custom.close();
  });

  it('rust_regex extract lists matches with named groups up to the limit, counts all, and logs what it scans', async () => {
    const lines: LogLine[] = [];
    const plugin = await load('rust_regex', { logger: recordingLogger(lines), logLevel: 'info' });
    const request = {
      text: 'mail bob@example.com or ann@test.org, call 555-1234',
      patterns: { email: '(?P<user>\\w+)@(?P<domain>[\\w.]+)', phone: '\\d{3}-\\d{4}' },
      limit: 1,
    };
    expect(JSON.parse(await callText(plugin, 'extract', JSON.stringify(request)))).toEqual({
      counts: { email: 2, phone: 1 },
      matches: {
        email: [{ match: 'bob@example.com', start: 5, end: 20, groups: { domain: 'example.com', user: 'bob' } }],
        phone: [{ match: '555-1234', start: 43, end: 51 }],
      },
    });
    expect(lines).toEqual([{ level: 'info', text: 'extract: 2 patterns over 51 bytes of text' }]);
    await expect(plugin.call('extract', '{"text": "x", "patterns": {"bad": "("}}')).rejects.toThrow(
      /extract: pattern `bad`: regex parse error:[\s\S]*unclosed group/,
    );
    await expect(plugin.call('extract', '{"text": 1}')).rejects.toThrow(
      'extract: invalid request: invalid type: integer `1`, expected a string at line 1 column 10',
    );
    await plugin.close();
  });

  it('rust_regex redact applies every rule in order and says which matched; json_stats walks any JSON', async () => {
    const plugin = await load('rust_regex');
    const redact = {
      text: 'card 4111-1111-1111-1111 for Bob',
      rules: [
        { pattern: '\\d{4}-\\d{4}-\\d{4}-(\\d{4})', replacement: '****-$1' },
        { pattern: 'Alice', replacement: 'X' },
      ],
    };
    expect(JSON.parse(await callText(plugin, 'redact', JSON.stringify(redact)))).toEqual({
      text: 'card ****-1111 for Bob',
      matched: [0],
    });
    const document = { a: [1, 'héllo', null, { a: true }], b: { c: { d: [] } } };
    expect(JSON.parse(await callText(plugin, 'json_stats', JSON.stringify(document)))).toEqual({
      depth: 4,
      keys: [
        ['a', 2],
        ['b', 1],
        ['c', 1],
        ['d', 1],
      ],
      longest_string: 5,
      values: { array: 2, bool: 1, null: 1, number: 1, object: 4, string: 1 },
    });
    await expect(plugin.call('json_stats', '{')).rejects.toThrow('json_stats: invalid JSON: EOF while parsing an object');
    await plugin.close();
  });
});

describe('Rust plugin', () => {
  it('rust_vowels counts, keeps total in a var, counts calls in a static, and honours the vowels config', async () => {
    const wasm = wasmOf('rust_vowels');
    const memory = WebAssembly.Module.exports(new WebAssembly.Module(wasm)).find((e) => e.kind === 'memory');
    expect(memory?.name).toBe('memory');

    const plugin = await load('rust_vowels');
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'Hello World'))).toEqual({
      count: 3,
      total: 3,
      vowels: 'aeiouAEIOU',
      calls: 1,
    });
    expect(JSON.parse(await callText(plugin, 'count_vowels', 'aéiou'))).toEqual({
      count: 4,
      total: 7,
      vowels: 'aeiouAEIOU',
      calls: 2,
    });
    await plugin.close();

    const custom = await load('rust_vowels', { config: { vowels: 'é"' } });
    expect(JSON.parse(await callText(custom, 'count_vowels', 'é "é"'))).toEqual({ count: 4, total: 4, vowels: 'é"', calls: 1 });
    await custom.close();
  });

  it('rust_vowels analyze: word counts, top words by count then alphabet, sentences, classes and logs', async () => {
    const lines: LogLine[] = [];
    const plugin = await load('rust_vowels', { logger: recordingLogger(lines), logLevel: 'debug' });
    const text = 'The cat sat on the mat. The cat ran! Did the dog see it? Yes.';
    const output = await callText(plugin, 'analyze', JSON.stringify({ text, top: 3, stopwords: ['ON'] }));
    expect(output).toBe(
      '{"average_word_length":2.87,"bytes":61,"characters":61,' +
        '"classes":{"alphabetic":43,"lowercase":39,"numeric":0,"other":0,"punctuation":4,"uppercase":4,"whitespace":14},' +
        '"lines":1,"longest_word":"cat","sentences":4,"stopwords_removed":1,' +
        '"top":[{"count":4,"word":"the"},{"count":2,"word":"cat"},{"count":1,"word":"did"}],' +
        '"top_bigrams":[{"count":2,"word":"the cat"}],"unique_words":10,"word_lengths":[[2,2],[3,13]],"words":15}',
    );
    expect(lines).toEqual([
      { level: 'debug', text: 'analyze: 61 bytes of text, top 3, lowercase true, 1 stopwords' },
      { level: 'info', text: 'analyze: 15 words (10 unique) in 4 sentences' },
    ]);

    // Case kept, min_length drops short words from the counts (not from `words`).
    const cased = JSON.parse(
      await callText(plugin, 'analyze', JSON.stringify({ text, lowercase: false, min_length: 3, top: 2 })),
    );
    expect(cased.top).toEqual([
      { count: 2, word: 'The' },
      { count: 2, word: 'cat' },
    ]);
    expect(cased.words).toBe(15);
    expect(cased.unique_words).toBe(10);
    await plugin.close();
  });

  it('rust_vowels analyze: Unicode lowercasing, apostrophes, \\u escapes with surrogate pairs, pretty output', async () => {
    const plugin = await load('rust_vowels');
    // The input spells everything as JSON \u escapes (𝐀𝐁 as surrogate pairs); `ascii` escapes the output.
    const input = String.raw`{"text":"\u00c9cole \u00e9COLE don\u2019t \ud835\udc00\ud835\udc01 12\u00bd. \ud83d\ude00","top":4,"ascii":true}`;
    expect(await callText(plugin, 'analyze', input)).toBe(
      '{"average_word_length":4,"bytes":41,"characters":27,' +
        '"classes":{"alphabetic":16,"lowercase":9,"numeric":3,"other":1,"punctuation":2,"uppercase":7,"whitespace":5},' +
        String.raw`"lines":1,"longest_word":"don\u2019t","sentences":1,"stopwords_removed":0,` +
        String.raw`"top":[{"count":2,"word":"\u00e9cole"},{"count":1,"word":"12\u00bd"},{"count":1,"word":"don\u2019t"},` +
        String.raw`{"count":1,"word":"\ud835\udc00\ud835\udc01"}],` +
        '"top_bigrams":[],"unique_words":4,"word_lengths":[[2,1],[3,1],[5,3]],"words":5}',
    );
    // Without `ascii` the same text comes back as UTF-8.
    expect(JSON.parse(await callText(plugin, 'analyze', input.replace('"ascii":true', '"ascii":false'))).top[3]).toEqual({
      count: 1,
      word: '𝐀𝐁',
    });

    const pretty = await callText(plugin, 'analyze', '{"text": "Hi", "pretty": true, "top": 1}');
    expect(pretty).toBe(JSON.stringify(JSON.parse(pretty), null, 2));
    expect(JSON.parse(pretty).top).toEqual([{ count: 1, word: 'hi' }]);
    await plugin.close();
  });

  it('rust_vowels analyze: malformed JSON and bad requests fail with the position or the field', async () => {
    const plugin = await load('rust_vowels');
    const fails = (input: string) => plugin.call('analyze', input);
    await expect(fails('{"text": "x", "top": 5,}')).rejects.toThrow(
      `analyze: invalid JSON: unexpected character '}', expected a string key at line 1, column 24 (byte 23)`,
    );
    await expect(fails('{\n  "text": tru}')).rejects.toThrow(
      `analyze: invalid JSON: unexpected character '}', expected true at line 2, column 14 (byte 15)`,
    );
    await expect(fails('{"text": "x"')).rejects.toThrow(
      `analyze: invalid JSON: unexpected end of input, expected ',' or '}' at line 1, column 13 (byte 12)`,
    );
    await expect(fails(String.raw`{"text": "\u00e9\ud800x"}`)).rejects.toThrow(
      'analyze: invalid JSON: lone UTF-16 surrogate \\uD800 at line 1, column 17 (byte 16)',
    );
    await expect(fails('{"text": "x"} x')).rejects.toThrow(
      `analyze: invalid JSON: trailing character 'x' after the JSON value at line 1, column 15 (byte 14)`,
    );
    await expect(fails('{"text": "x", "top": 1e400}')).rejects.toThrow(
      'analyze: invalid JSON: number out of range at line 1, column 22 (byte 21)',
    );
    await expect(fails('['.repeat(200))).rejects.toThrow(
      'analyze: invalid JSON: nesting deeper than 128 levels at line 1, column 129 (byte 128)',
    );
    await expect(fails('[1, 2]')).rejects.toThrow('analyze: the input must be a JSON object, found array');
    await expect(fails('{"txt": "x"}')).rejects.toThrow('analyze: field `text`: missing');
    await expect(fails('{"text": "x", "top": -1}')).rejects.toThrow(
      'analyze: field `top`: expected a non-negative integer, found -1',
    );
    await expect(fails('{"text": "x", "stopwords": ["a", 2]}')).rejects.toThrow(
      'analyze: field `stopwords[1]`: expected a string, found number',
    );
    await expect(fails('{"text": "x", "tops": 1}')).rejects.toThrow(
      'analyze: field `tops`: unknown field, expected one of: text, top, lowercase, stopwords, min_length, pretty, ascii',
    );
    // A failed call leaves the plugin usable.
    expect(JSON.parse(await callText(plugin, 'analyze', '{"text": "ok"}')).words).toBe(1);
    await plugin.close();
  });

  it('rust_vowels starts with at least 1 MiB of linear memory (the Rust stack)', async () => {
    const module = new WebAssembly.Module(wasmOf('rust_vowels'));
    const env = Object.fromEntries(WebAssembly.Module.imports(module).map((i) => [i.name, () => 0n]));
    const instance = new WebAssembly.Instance(module, { 'extism:host/env': env });
    const memory = instance.exports.memory as WebAssembly.Memory;
    expect(memory.buffer.byteLength).toBeGreaterThanOrEqual(1024 * 1024);
  });
});
