// POST /plugins/:id/call through real HTTP against a listening server, with real plugins built from
// plugins/ (npm run build:plugins) and a real upstream on 127.0.0.1 for plugin HTTP.
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, serverForTest, useServer, wat, type TestServer } from './helpers.ts';
import { checkEveryResponse } from './openapi-contract.ts';
import { startUpstream, type Upstream } from './upstream.ts';

/** `grow`: grows memory by the first input byte's value; outputs "ok" or "refused". `_initialize` uses host functions. */
const GROWER_WAT = `(module
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (memory (export "memory") 1 3)
  (data (i32.const 0) "okrefused")
  (global $started (mut i32) (i32.const 0))
  (func $out (param $at i32) (param $len i32)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $at) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output_set (local.get $block) (i64.extend_i32_u (local.get $len))))
  (func (export "_initialize")
    (call $log_info (call $alloc (i64.const 0)))
    (global.set $started (i32.const 1)))
  (func (export "grow") (result i32)
    (if (i32.eqz (global.get $started)) (then unreachable))
    (if (i32.eq (memory.grow (call $input_load_u8 (i64.const 0))) (i32.const -1))
      (then (call $out (i32.const 2) (i32.const 7)))
      (else (call $out (i32.const 0) (i32.const 2))))
    (i32.const 0)))`;

/** `log_then_spin`: logs "about to spin" at info, then loops forever. */
const LOG_THEN_SPIN_WAT = `(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "about to spin")
  (func (export "log_then_spin") (result i32)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.const 13)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 13)))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $log_info (local.get $block))
    (loop $forever (br $forever))
    (i32.const 0)))`;

interface TitleServer {
  url: string;
  hits: number;
  close(): Promise<void>;
}

async function startTitleServer(title: string): Promise<TitleServer> {
  const state = { hits: 0 };
  const server = http.createServer((_req, res) => {
    state.hits++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ userId: 1, id: 1, title }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/todos/1`,
    get hits() {
      return state.hits;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('POST /plugins/:id/call', () => {
  const contractProblems: string[] = [];
  const server = useServer({
    env: { WORKERS: '2', EGRESS_ALLOW_PRIVATE: 'true', MAX_INPUT_BYTES: '65536', RATE_LIMIT_MAX: '0' },
    appOptions: { onRoute: checkEveryResponse(contractProblems) },
  });
  let titles: TitleServer;

  beforeAll(async () => {
    titles = await startTitleServer('delectus aut autem');
    for (const name of [
      'hello',
      'count_vowels',
      'echo',
      'fail',
      'logs',
      'loop',
      'trap',
      'membomb',
      'huge_output',
      'log_flood',
      'wasi_io',
      'state',
      'rust_vowels',
      'rust_regex',
      'segments',
    ]) {
      await server.api.uploaded(await readPlugin(name), { name });
    }
  });

  afterAll(async () => {
    await titles?.close();
  });

  describe('hello (HTTP, config, logs)', () => {
    it('fetches the configured route through the allow-list and returns the title with both info logs in order', async () => {
      const { status, data: body } = await server.api.call('hello', {
        function: 'say_hello',
        input: 'Benjamin',
        config: { route: titles.url },
        allowedHosts: ['127.0.0.1'],
        logLevel: 'info',
      });
      expect(status).toBe(200);
      expect(body.output).toBe('param: Benjamin title: delectus aut autem');
      expect(body.logs.map((l) => [l.level, l.message])).toEqual([
        ['info', 'hello this is wasm'],
        ['info', `calling ${titles.url}`],
      ]);
      expect(body.logsTruncated).toBe(false);
      expect(body.plugin.name).toBe('hello');
      expect(body.function).toBe('say_hello');
      expect(body.egress).toHaveLength(1);
      for (const log of body.logs) expect(Number.isNaN(Date.parse(log.time))).toBe(false);
    });

    it('keeps concurrent HTTP-making calls apart (each suspends on its request while others queue)', async () => {
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) =>
          server.api.call('hello', {
            function: 'say_hello',
            input: `caller-${i}`,
            config: { route: titles.url },
            allowedHosts: ['127.0.0.1'],
          }),
        ),
      );
      results.forEach(({ status, data: body }, i) => {
        expect(status).toBe(200);
        expect(body.output).toBe(`param: caller-${i} title: delectus aut autem`);
        expect(body.logs.map((l) => l.message)).toEqual(['hello this is wasm', `calling ${titles.url}`]);
      });
    });

    it('drops info logs when the call asks for error level', async () => {
      const { status, data: body } = await server.api.call('hello', {
        function: 'say_hello',
        input: 'x',
        config: { route: titles.url },
        allowedHosts: ['127.0.0.1'],
        logLevel: 'error',
      });
      expect(status).toBe(200);
      expect(body.output).toBe('param: x title: delectus aut autem');
      expect(body.logs).toEqual([]);
    });

    it('refuses a host outside the allow-list with 422 HOST_NOT_ALLOWED naming the host, and never reaches it', async () => {
      const before = titles.hits;
      const { status, error: body } = await server.api.call('hello', {
        function: 'say_hello',
        input: 'x',
        config: { route: titles.url },
      });
      expect(status).toBe(422);
      expect(body.code).toBe('HOST_NOT_ALLOWED');
      expect(body.message).toContain('127.0.0.1');
      expect(body.logs.map((l) => l.message)).toEqual(['hello this is wasm', `calling ${titles.url}`]);
      expect(titles.hits).toBe(before);
    });
  });

  describe('fresh state per call', () => {
    it('count_vowels returns total == count on three calls in a row', async () => {
      for (let i = 0; i < 3; i++) {
        const { status, data: body } = await server.api.call('count_vowels', {
          function: 'count_vowels',
          input: 'Hello, World!',
        });
        expect(status).toBe(200);
        expect(JSON.parse(body.output!)).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU' });
      }
    });

    it('config vowels changes the result per request', async () => {
      const { data: body } = await server.api.call('count_vowels', {
        function: 'count_vowels',
        input: 'Hello, World!',
        config: { vowels: 'lo' },
      });
      expect(JSON.parse(body.output!)).toEqual({ count: 5, total: 5, vowels: 'lo' });
    });

    it('200 interleaved concurrent calls with different config each get their own answer', async () => {
      const sets = ['a', 'e', 'o', 'lo', 'xyz', 'aeiou', 'H', 'W'];
      const input = 'Hello, World! A quick brown fox jumps over the lazy dog.';
      const expected = (v: string) => [...input].filter((c) => v.includes(c)).length;
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const vowels = sets[i % sets.length]!;
          return server.api.call('count_vowels', { function: 'count_vowels', input, config: { vowels } }).then((r) => ({
            vowels,
            r,
          }));
        }),
      );
      const mixups = results.filter(({ vowels, r }) => {
        if (r.status !== 200) return true;
        const out = JSON.parse(r.data.output!) as { count: number; total: number; vowels: string };
        return out.vowels !== vowels || out.count !== expected(vowels) || out.total !== out.count;
      });
      expect(mixups).toEqual([]);
    });

    it('state probe reads initial memory, non-exported global, var and no leftover input on every call, from every caller', async () => {
      const fresh = { memCounter: 0, globalCounter: 0, var: 0, leftover: '0'.repeat(32) };
      for (let i = 0; i < 50; i++) {
        const { status, data: body } = await server.api.call('state', { function: 'probe', input: `secret of caller ${i % 3}` });
        expect(status).toBe(200);
        expect(JSON.parse(body.output!)).toEqual(fresh);
      }
      const concurrent = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          server.api.call('state', {
            function: 'probe',
            input: `concurrent secret ${i}`,
            ...(i % 2 ? { memoryMaxPages: 8 } : {}),
          }),
        ),
      );
      for (const { status, data: body } of concurrent) {
        expect(status).toBe(200);
        expect(JSON.parse(body.output!)).toEqual(fresh);
      }
    });

    it('gives every call its passive data and element segments back, though each call drops them', async () => {
      for (let i = 0; i < 5; i++) {
        const { status, data: body } = await server.api.call('segments', { function: 'take' });
        expect({ status, output: body.output }).toEqual({ status: 200, output: 'fresh' });
      }
    });
  });

  describe('a realistic Rust plugin (1+ MiB initial memory, allocator that grows on first use)', () => {
    it('reads calls == 1 and total == count on every one of 500 calls, and its memory stays flat', async () => {
      const input = 'Rust allocates: a String for the input, a Vec for the output.';
      const expected = [...input].filter((c) => 'aeiouAEIOU'.includes(c)).length;
      for (let round = 0; round < 50; round++) {
        const results = await Promise.all(
          Array.from({ length: 10 }, () => server.api.call('rust_vowels', { function: 'count_vowels', input })),
        );
        for (const { status, data: body } of results) {
          expect(status).toBe(200);
          expect(JSON.parse(body.output!)).toEqual({ count: expected, total: expected, vowels: 'aeiouAEIOU', calls: 1 });
        }
      }
      // Fresh, the plugin grows a little on its first allocation; recycled, the same holds on every
      // call: what the workers' cached instances hold does not creep up from call to call.
      const held: number[] = [];
      for (let i = 0; i < 30; i++) {
        expect((await server.api.call('rust_vowels', { function: 'count_vowels', input })).status).toBe(200);
        held.push(server.app.engine.stats().instanceBytes);
      }
      expect(Math.min(...held)).toBeGreaterThan(17 * 65536);
      expect(Math.max(...held)).toBeLessThanOrEqual(Math.min(...held) + 2 * 2 * 65536);
    });
  });

  describe('a real-toolchain Rust plugin (cargo, serde_json + regex, over 1 MiB)', () => {
    it('extracts with named groups and logs, 100 times in a row and concurrently, each call from fresh state', async () => {
      const text = 'mail bob@example.com or ann@test.org, call 555-1234';
      const request = { text, patterns: { email: '(?P<user>\\w+)@(?P<domain>[\\w.]+)', phone: '\\d{3}-\\d{4}' } };
      const expected = {
        counts: { email: 2, phone: 1 },
        matches: {
          email: [
            { match: 'bob@example.com', start: 5, end: 20, groups: { domain: 'example.com', user: 'bob' } },
            { match: 'ann@test.org', start: 24, end: 36, groups: { domain: 'test.org', user: 'ann' } },
          ],
          phone: [{ match: '555-1234', start: 43, end: 51 }],
        },
      };
      for (let round = 0; round < 10; round++) {
        const results = await Promise.all(
          Array.from({ length: 10 }, () =>
            server.api.call('rust_regex', { function: 'extract', input: JSON.stringify(request) }),
          ),
        );
        for (const { status, data: body } of results) {
          expect(status).toBe(200);
          expect(JSON.parse(body.output!)).toEqual(expected);
          expect(body.logs.map((l) => [l.level, l.message])).toEqual([['info', 'extract: 2 patterns over 51 bytes of text']]);
        }
      }
      const vowels = await server.api.call('rust_regex', { function: 'count_vowels', input: 'Hello, World!' });
      expect(JSON.parse(vowels.data.output!)).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU', calls: 1 });
    });

    it('answers 422 PLUGIN_ERROR with the regex error for a bad pattern, and the next call succeeds', async () => {
      const bad = await server.api.call('rust_regex', {
        function: 'extract',
        input: JSON.stringify({ text: 'x', patterns: { broken: '(' } }),
      });
      expect(bad.status).toBe(422);
      expect(bad.error.code).toBe('PLUGIN_ERROR');
      expect(bad.error.message).toMatch(/^extract: pattern `broken`: regex parse error:[\s\S]*unclosed group/);
      const good = await server.api.call('rust_regex', {
        function: 'redact',
        input: JSON.stringify({ text: 'pin 1234', rules: [{ pattern: '\\d+', replacement: '#' }] }),
      });
      expect({ status: good.status, output: JSON.parse(good.data.output!) }).toEqual({
        status: 200,
        output: { text: 'pin #', matched: [0] },
      });
    });
  });

  describe('hostile plugins', () => {
    it('stops an infinite loop at its timeoutMs with 504 TIMEOUT naming that deadline, replacing its worker', async () => {
      const restartsBefore = server.app.engine.stats().restarts.timeout;
      const { status, error: body } = await server.api.call('loop', { function: 'spin', timeoutMs: 200 });
      expect(status).toBe(504);
      expect(body.code).toBe('TIMEOUT');
      expect(body.message).toContain('200 ms');
      expect(server.app.engine.stats().restarts.timeout).toBe(restartsBefore + 1);
    });

    it('answers a stopped call with the logs it wrote before it hung', async () => {
      await server.api.uploaded(await wat(LOG_THEN_SPIN_WAT), { name: 'log_then_spin' });
      const { status, error: body } = await server.api.call('log_then_spin', { function: 'log_then_spin', timeoutMs: 300 });
      expect(status).toBe(504);
      expect(body.code).toBe('TIMEOUT');
      expect(body.logs.map((l) => [l.level, l.message])).toEqual([['info', 'about to spin']]);
    });

    it('keeps answering other calls and health checks while two loops spin, then is back at full size', async () => {
      const restartsBefore = server.app.engine.stats().restarts.timeout;
      let spinning = 2;
      const spins = [1, 2].map(() => server.api.call('loop', { function: 'spin', timeoutMs: 3000 }).finally(() => spinning--));
      while (server.app.engine.stats().busy < 2) await new Promise((r) => setTimeout(r, 10));
      const health = await fetch(`${server.url}/healthz`);
      expect(health.status).toBe(200);
      // Both core workers are held: a burst worker (or the warm standby) takes the call.
      const vowels = await server.api.call('count_vowels', { function: 'count_vowels', input: 'aaa', timeoutMs: 5000 });
      expect(vowels.status).toBe(200);
      // Answered while both loops still ran: nothing waited for them.
      expect(spinning).toBe(2);
      for (const spin of await Promise.all(spins)) expect(spin.status).toBe(504);
      await new Promise((r) => setTimeout(r, 50));
      const stats = server.app.engine.stats();
      expect(stats.restarts.timeout).toBe(restartsBefore + 2);
      // Both replacements are started threads that serve: WORKERS short calls at once all run.
      const after = await Promise.all(
        [1, 2].map(() => server.api.call('count_vowels', { function: 'count_vowels', input: 'aeiou', timeoutMs: 2000 })),
      );
      for (const r of after) {
        expect(r.status).toBe(200);
        expect(JSON.parse(r.data.output!).count).toBe(5);
      }
      expect(server.app.engine.stats()).toMatchObject({ size: 2, ready: 2, busy: 0, queued: 0 });
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ checks: { workers: 'ok' } });
    });

    it('reports a trap as 422 PLUGIN_ERROR', async () => {
      const { status, error: body } = await server.api.call('trap', { function: 'trap' });
      expect(status).toBe(422);
      expect(body.code).toBe('PLUGIN_ERROR');
      expect(body.message).toMatch(/trap|unreachable/);
    });

    it('reports a plugin-set error as 422 with its message', async () => {
      const { status, error: body } = await server.api.call('fail', { function: 'fail', input: 'boom' });
      expect(status).toBe(422);
      expect(body.code).toBe('PLUGIN_ERROR');
      expect(body.message).toContain('boom');
    });

    it('caps the memory bomb at memoryMaxPages: 422 MEMORY_LIMIT and server RSS grows < 64 MiB', async () => {
      const rssBefore = process.memoryUsage().rss;
      const { status, error: body } = await server.api.call('membomb', { function: 'grow', memoryMaxPages: 32 });
      const growth = process.memoryUsage().rss - rssBefore;
      expect(status).toBe(422);
      expect(body.code).toBe('MEMORY_LIMIT');
      expect(body.message).toContain('32');
      expect(growth).toBeLessThan(64 * 1024 * 1024);
    });

    it('refuses output beyond the limit with a clear code and keeps serving', async () => {
      const big = await server.api.call('huge_output', { function: 'huge', input: String(8 * 1024 * 1024) });
      expect(big.status).toBe(422);
      expect(big.error.code).toBe('OUTPUT_TOO_LARGE');
      const default64 = await server.api.call('huge_output', { function: 'huge' });
      expect(default64.status).toBe(422);
      expect(['OUTPUT_TOO_LARGE', 'MEMORY_LIMIT']).toContain(default64.error.code);
      const lowered = await server.api.call('huge_output', { function: 'huge', input: '2000', maxOutputBytes: 1000 });
      expect(lowered.error.code).toBe('OUTPUT_TOO_LARGE');
      const small = await server.api.call('huge_output', { function: 'huge', input: '10' });
      expect(small.data.output).toBe('x'.repeat(10));
    });

    it('truncates a log flood and keeps the response bounded', async () => {
      const { status, data: body, size } = await server.api.call('log_flood', { function: 'flood' });
      expect(status).toBe(200);
      expect(body.output).toBe('done');
      expect(body.logsTruncated).toBe(true);
      expect(body.logs.length).toBeLessThanOrEqual(server.config.engine.limits.logEntries.default);
      expect(size).toBeLessThan(server.config.engine.limits.logBytes.default * 2 + 200_000);
    });

    it('keeps fewer log entries or bytes when the caller lowers maxLogEntries or maxLogBytes, never more than the ceiling', async () => {
      const all = await server.api.call('logs', { function: 'log_all', logLevel: 'trace' });
      expect({ count: all.data.logs.length, truncated: all.data.logsTruncated }).toEqual({ count: 5, truncated: false });
      const two = await server.api.call('logs', { function: 'log_all', logLevel: 'trace', maxLogEntries: 2 });
      expect(two.status).toBe(200);
      expect({ messages: two.data.logs.map((l) => l.message), truncated: two.data.logsTruncated }).toEqual({
        messages: ['trace message', 'debug message'],
        truncated: true,
      });
      const bytes = await server.api.call('logs', { function: 'log_all', logLevel: 'trace', maxLogBytes: 30 });
      const kept = bytes.data.logs.reduce((sum, l) => sum + Buffer.byteLength(l.message), 0);
      expect({ keptAtMost30: kept <= 30, some: bytes.data.logs.length > 0, truncated: bytes.data.logsTruncated }).toEqual({
        keptAtMost30: true,
        some: true,
        truncated: true,
      });
      const above = await server.api.call('logs', {
        function: 'log_all',
        maxLogEntries: server.config.engine.limits.logEntries.ceiling + 1,
      });
      expect({ status: above.status, code: above.error.code }).toEqual({ status: 400, code: 'LIMIT_ABOVE_CEILING' });
      expect(above.error.message).toContain('CALL_LOG_ENTRIES_CEILING');
    });
  });

  describe('WASI', () => {
    it('captures stdout and stderr as log entries', async () => {
      const { status, data: body } = await server.api.call('wasi_io', { function: 'write_both' });
      expect(status).toBe(200);
      expect(body.output).toBe('ok');
      expect(body.logs.map((l) => [l.level, l.message])).toEqual([
        ['stdout', 'to stdout'],
        ['stderr', 'to stderr'],
      ]);
      const off = await server.api.call('wasi_io', { function: 'write_both', logLevel: 'off' });
      expect(off.data.logs).toEqual([]);
    });

    it('maps a non-zero exit to 422 PLUGIN_ERROR', async () => {
      const { status, error: body } = await server.api.call('wasi_io', { function: 'exit_nonzero' });
      expect(status).toBe(422);
      expect(body.code).toBe('PLUGIN_ERROR');
      expect(body.message).toContain('3');
    });
  });

  describe('request handling', () => {
    it('round-trips binary input and output as base64', async () => {
      const bytes = Buffer.from([0, 255, 1, 254, 0x80, 0x81]);
      const { status, data: body } = await server.api.call('echo', { function: 'echo', inputBase64: bytes.toString('base64') });
      expect(status).toBe(200);
      expect(body.outputBase64).toBe(bytes.toString('base64'));
      const text = await server.api.call('echo', { function: 'echo', input: 'héllo', outputEncoding: 'base64' });
      expect(Buffer.from(text.data.outputBase64!, 'base64').toString()).toBe('héllo');
    });

    it('treats a non-zero return without an error as PLUGIN_ERROR, and an export without a result as success', async () => {
      await server.api.uploaded(
        await wat(`(module
        (memory (export "memory") 1)
        (func (export "seven") (result i32) (i32.const 7))
        (func (export "nothing")))`),
        { name: 'return_codes' },
      );
      const seven = await server.api.call('return_codes', { function: 'seven' });
      expect(seven.status).toBe(422);
      expect(seven.error.code).toBe('PLUGIN_ERROR');
      expect(seven.error.message).toContain('7');
      const nothing = await server.api.call('return_codes', { function: 'nothing' });
      expect(nothing.status).toBe(200);
      expect(nothing.data.output).toBe('');
    });

    it('answers 404 FUNCTION_NOT_FOUND listing the exports', async () => {
      const { status, error: body } = await server.api.call('count_vowels', { function: 'nope' });
      expect(status).toBe(404);
      expect(body.code).toBe('FUNCTION_NOT_FOUND');
      expect(body.message).toContain('count_vowels');
    });

    it('answers 404 PLUGIN_NOT_FOUND for an unknown or deleted plugin', async () => {
      expect((await server.api.call('no-such-plugin', { function: 'x' })).error.code).toBe('PLUGIN_NOT_FOUND');
      const { id } = await server.api.uploaded(await readPlugin('echo'), { name: 'doomed' });
      expect((await server.api.call(id, { function: 'echo', input: 'a' })).status).toBe(200);
      // echo's bytes are shared with the "echo" name; delete by the name of the copy only after checking it works.
      const del = await server.api.delete('doomed');
      expect(del.status).toBe(204);
      const after = await server.api.call('doomed', { function: 'echo', input: 'a' });
      expect(after.status).toBe(404);
      expect(after.error.code).toBe('PLUGIN_NOT_FOUND');
      await server.api.uploaded(await readPlugin('echo'), { name: 'echo' });
    });

    it('answers 413 INPUT_TOO_LARGE above MAX_INPUT_BYTES', async () => {
      const { status, error: body } = await server.api.call('echo', { function: 'echo', input: 'x'.repeat(65537) });
      expect(status).toBe(413);
      expect(body.code).toBe('INPUT_TOO_LARGE');
      const huge = await server.api.call('echo', { function: 'echo', input: 'x'.repeat(200_000) });
      expect(huge.status).toBe(413);
      expect(huge.error.code).toBe('INPUT_TOO_LARGE');
    });

    it('rejects unknown fields, both inputs, bad types and limits above a ceiling with 400', async () => {
      const unknown = await server.api.callUnchecked('echo', { function: 'echo', input: 'a', extra: 1 });
      expect(unknown.status).toBe(400);
      expect(unknown.error.code).toBe('INVALID_REQUEST');
      const both = await server.api.call('echo', { function: 'echo', input: 'a', inputBase64: 'YQ==' });
      expect(both.error.code).toBe('INVALID_REQUEST');
      const level = await server.api.callUnchecked('echo', { function: 'echo', logLevel: 'loud' });
      expect(level.error.code).toBe('INVALID_REQUEST');
      const ceiling = await server.api.call('echo', { function: 'echo', timeoutMs: 10_000_000 });
      expect(ceiling.status).toBe(400);
      expect(ceiling.error.code).toBe('LIMIT_ABOVE_CEILING');
      expect(ceiling.error.message).toContain(String(server.config.engine.limits.timeoutMs.ceiling));
      const pages = await server.api.call('echo', { function: 'echo', memoryMaxPages: 1_000_000 });
      expect(pages.error.code).toBe('LIMIT_ABOVE_CEILING');
    });
  });

  describe('memory limits', () => {
    it("keeps the plugin's own declared maximum and the caller's cap, whichever is lower; start-up may use host functions", async () => {
      await server.api.uploaded(await wat(GROWER_WAT), { name: 'grower' });
      const grow = async (pages: number, memoryMaxPages?: number) => {
        const input = Buffer.from([pages]).toString('base64');
        const r = await server.api.call('grower', {
          function: 'grow',
          inputBase64: input,
          ...(memoryMaxPages ? { memoryMaxPages } : {}),
        });
        expect(r.status).toBe(200);
        return r.data.output;
      };
      expect(await grow(2)).toBe('ok'); // 1 + 2 = its declared maximum of 3
      expect(await grow(2)).toBe('ok'); // fresh state: back at 1 page
      expect(await grow(3)).toBe('refused'); // beyond its own maximum, whatever the cap (default 256)
      expect(await grow(1, 1)).toBe('refused'); // the caller's cap is lower than its maximum
      expect(await grow(1, 2)).toBe('ok');
    });

    it('reports an ordinary trap in a plugin whose memory is at its cap as PLUGIN_ERROR; MEMORY_LIMIT only after refused memory', async () => {
      await server.api.uploaded(
        await wat(`(module (memory (export "memory") 1 1) (func (export "trap") (result i32) unreachable))`),
        { name: 'full_trap' },
      );
      const full = await server.api.call('full_trap', { function: 'trap' });
      expect(full.status).toBe(422);
      expect(full.error.code).toBe('PLUGIN_ERROR');
      expect(full.error.message).toContain('unreachable');
      // A refused memory.grow, then a trap (membomb): MEMORY_LIMIT, also at a cap below the module's.
      const bomb = await server.api.call('membomb', { function: 'grow', memoryMaxPages: 4 });
      expect(bomb.error.code).toBe('MEMORY_LIMIT');
      // The flag is per call: the same instance traps plainly on the next call.
      expect((await server.api.call('full_trap', { function: 'trap' })).error.code).toBe('PLUGIN_ERROR');
      // A host allocation beyond the call's host memory cap.
      await server.api.uploaded(
        await wat(`(module
        (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
        (memory (export "memory") 1)
        (func (export "big") (result i32) (drop (call $alloc (i64.const 1099511627776))) (i32.const 0)))`),
        { name: 'host_alloc' },
      );
      const host = await server.api.call('host_alloc', { function: 'big' });
      expect(host.status).toBe(422);
      expect(host.error.code).toBe('MEMORY_LIMIT');
    });

    it('keeps a trap PLUGIN_ERROR for a module run without the grow shim (too many locals to rewrite), hinting at memory near its cap', async () => {
      // (memory 1 1), export "trap": 49,995 i32 locals (no room for the rewrite's scratch locals), unreachable.
      const bytes = new Uint8Array([
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, 0x03, 0x02, 0x01, 0x00, 0x05,
        0x04, 0x01, 0x01, 0x01, 0x01, 0x07, 0x08, 0x01, 0x04, 0x74, 0x72, 0x61, 0x70, 0x00, 0x00, 0x0a, 0x09, 0x01, 0x07, 0x01,
        0xcb, 0x86, 0x03, 0x7f, 0x00, 0x0b,
      ]);
      await server.api.uploaded(bytes, { name: 'no_shim_trap' });
      const { status, error: body } = await server.api.call('no_shim_trap', { function: 'trap' });
      expect(status).toBe(422);
      expect(body.code).toBe('PLUGIN_ERROR');
      expect(body.message).toContain('1 of 1 pages');
    });

    it("refuses a cap below the plugin's initial memory with 422 MEMORY_LIMIT", async () => {
      const { status, error: body } = await server.api.call('rust_vowels', {
        function: 'count_vowels',
        input: 'x',
        memoryMaxPages: 4,
      });
      expect(status).toBe(422);
      expect(body.code).toBe('MEMORY_LIMIT');
      expect(body.message).toContain('17 pages');
    });
  });

  it('answered every request above as openapi.yaml documents it', () => {
    // Only this route's answers: other routes' documentation is tested by their owners.
    expect(contractProblems.filter((p) => p.startsWith('POST /plugins/')).join('\n')).toBe('');
  });
});

describe('queue overflow', () => {
  const server = useServer({ env: { WORKERS: '1', QUEUE_MAX: '2', BURST_WORKERS: '0' } });

  beforeAll(async () => {
    await server.api.uploaded(await readPlugin('loop'), { name: 'loop' });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
  });

  it('answers 503 OVERLOADED with Retry-After beyond the queue, and completes every accepted call', async () => {
    const spin = server.api.call('loop', { function: 'spin', timeoutMs: 500 });
    await new Promise((r) => setTimeout(r, 50));
    const calls = Array.from({ length: 6 }, () => server.api.call('count_vowels', { function: 'count_vowels', input: 'aei' }));
    const results = await Promise.all(calls);
    const overloaded = results.filter((r) => r.status === 503);
    const accepted = results.filter((r) => r.status !== 503);
    expect(overloaded).toHaveLength(4);
    for (const r of overloaded) {
      expect(r.error.code).toBe('OVERLOADED');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    expect(accepted).toHaveLength(2);
    for (const r of accepted) {
      expect(r.status).toBe(200);
      expect(JSON.parse(r.data.output!).count).toBe(3);
    }
    expect((await spin).status).toBe(504);
  });
});

describe('WASI output as UTF-8', () => {
  const server = useServer({ env: { WORKERS: '1', CALL_LOG_BYTES: '100', RATE_LIMIT_MAX: '0' } });
  /** `split`: writes "h" + the first byte of "é", then its second byte + "\n". `wide`: one line of 60 "é" (120 bytes). */
  const UTF8_WAT = `(module
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "h\\c3")
    (data (i32.const 32) "\\a9\\n")
    (func $write (param $ptr i32) (param $len i32)
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func (export "split") (result i32)
      (call $write (i32.const 16) (i32.const 2))
      (call $write (i32.const 32) (i32.const 2))
      (i32.const 0))
    (func (export "wide") (result i32)
      (local $i i32)
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 60)))
        (i32.store8 (i32.add (i32.const 64) (i32.mul (local.get $i) (i32.const 2))) (i32.const 0xc3))
        (i32.store8 (i32.add (i32.const 65) (i32.mul (local.get $i) (i32.const 2))) (i32.const 0xa9))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (i32.store8 (i32.const 184) (i32.const 10))
      (call $write (i32.const 64) (i32.const 121))
      (i32.const 0)))`;

  beforeAll(async () => {
    await server.api.uploaded(await wat(UTF8_WAT), { name: 'utf8_out' });
  });

  it('decodes a character split across two writes whole, and counts the log byte cap in UTF-8 bytes', async () => {
    const split = await server.api.call('utf8_out', { function: 'split' });
    expect(split.status).toBe(200);
    expect(split.data.logs.map((l) => [l.level, l.message])).toEqual([['stdout', 'hé']]);
    expect(split.data.logsTruncated).toBe(false);
    // 60 characters but 120 bytes: over CALL_LOG_BYTES=100.
    const wide = await server.api.call('utf8_out', { function: 'wide' });
    expect(wide.status).toBe(200);
    expect(wide.data.logs).toEqual([]);
    expect(wide.data.logsTruncated).toBe(true);
  });
});

describe('queue overflow by bytes', () => {
  const server = useServer({
    env: { WORKERS: '1', BURST_WORKERS: '0', QUEUE_MAX_BYTES: '100000', MAX_INPUT_BYTES: '65536', RATE_LIMIT_MAX: '0' },
  });

  beforeAll(async () => {
    await server.api.uploaded(await readPlugin('loop'), { name: 'loop' });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
  });

  it('answers 503 OVERLOADED with Retry-After once the waiting calls would hold more than QUEUE_MAX_BYTES of input', async () => {
    const spin = server.api.call('loop', { function: 'spin', timeoutMs: 1000 });
    await new Promise((r) => setTimeout(r, 50));
    const big = 'a'.repeat(40_000);
    const results = await Promise.all([
      ...Array.from({ length: 3 }, () => server.api.call('count_vowels', { function: 'count_vowels', input: big })),
      server.api.call('count_vowels', { function: 'count_vowels', input: 'aei' }),
    ]);
    const overloaded = results.filter((r) => r.status === 503);
    expect(overloaded).toHaveLength(1);
    expect(overloaded[0]!.error.code).toBe('OVERLOADED');
    expect(overloaded[0]!.error.message).toContain('QUEUE_MAX_BYTES');
    expect(Number(overloaded[0]!.headers.get('retry-after'))).toBeGreaterThan(0);
    const accepted = results.filter((r) => r.status !== 503);
    expect(accepted.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(accepted.map((r) => JSON.parse(r.data.output!).count).sort((a, b) => a - b)).toEqual([3, 40_000, 40_000]);
    expect((await spin).status).toBe(504);
    expect(server.app.engine.stats().queuedBytes).toBe(0);
  });
});

describe('long calls on a one-worker pool', () => {
  const server = useServer({ env: { WORKERS: '1', EGRESS_ALLOW_PRIVATE: 'true', RATE_LIMIT_MAX: '0' } });
  let titles: TitleServer;

  beforeAll(async () => {
    titles = await startTitleServer('once');
    await server.api.uploaded(await readPlugin('loop'), { name: 'loop' });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
    await server.api.uploaded(await readPlugin('hello'), { name: 'hello' });
  });

  afterAll(async () => {
    await titles?.close();
  });

  it('runs a call that arrived right behind an endless loop elsewhere, long before the loop times out', async () => {
    // Sent together, the second call may be sent ahead to the worker that is about to spin: the pool
    // must take it back and run it on another worker.
    let spinning = true;
    const spin = server.api.call('loop', { function: 'spin', timeoutMs: 3000 }).finally(() => (spinning = false));
    const quick = await server.api.call('count_vowels', { function: 'count_vowels', input: 'aeiou' });
    expect(quick.status).toBe(200);
    expect(JSON.parse(quick.data.output!).count).toBe(5);
    // Answered while the loop still ran: the call was not left behind it until its deadline.
    expect(spinning).toBe(true);
    expect((await spin).status).toBe(504);
  });

  it('runs each call exactly once, also those taken back from behind a loop (upstream hit count)', async () => {
    const before = titles.hits;
    const spin = server.api.call('loop', { function: 'spin', timeoutMs: 1500 });
    const calls = Array.from({ length: 3 }, (_, i) =>
      server.api.call('hello', {
        function: 'say_hello',
        input: `n${i}`,
        config: { route: titles.url },
        allowedHosts: ['127.0.0.1'],
        // What is checked is that each call runs once, not how soon: a loaded CI machine may need long.
        timeoutMs: 30_000,
      }),
    );
    for (const [i, r] of (await Promise.all(calls)).entries()) {
      expect(r.status).toBe(200);
      expect(r.data.output).toBe(`param: n${i} title: once`);
    }
    expect((await spin).status).toBe(504);
    await new Promise((r) => setTimeout(r, 200)); // a duplicate run, if any, would land by now
    expect(titles.hits - before).toBe(3);
  });

  it('never leaves its worker running a loop the pool forgot: calls whose deadline passes before they start, then short calls succeed', async () => {
    // Deadlines of a few ms pass while the call is on its way to the worker (or re-sent with its
    // module): the worker must then never start it, or stop it at the deadline.
    for (let i = 0; i < 20; i++) {
      const { status, error: body } = await server.api.call('loop', { function: 'spin', timeoutMs: 1 + (i % 5) });
      expect(status).toBe(504);
      expect(body.code).toBe('TIMEOUT');
    }
    for (let i = 0; i < 3; i++) {
      const { status, data: body } = await server.api.call('count_vowels', {
        function: 'count_vowels',
        input: 'aeiou',
        timeoutMs: 1000,
      });
      expect(status).toBe(200);
      expect(JSON.parse(body.output!).count).toBe(5);
    }
    expect(server.app.engine.stats()).toMatchObject({ size: 1, ready: 1, busy: 0, queued: 0 });
  });
});

describe('calls waiting on HTTP (one worker, BURST_WORKERS=0)', () => {
  const server = useServer({ env: { WORKERS: '1', BURST_WORKERS: '0', EGRESS_ALLOW_PRIVATE: 'true', RATE_LIMIT_MAX: '0' } });
  let upstream: Upstream;

  beforeAll(async () => {
    upstream = await startUpstream();
    await server.api.uploaded(await readPlugin('http'), { name: 'http' });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
  });

  afterAll(async () => {
    await upstream?.close();
  });

  it('do not hold the only worker: another call runs on a burst worker while the upstream hangs', async () => {
    let hungSettled = false;
    const hung = server.api
      .call('http', {
        function: 'fetch',
        input: JSON.stringify({ url: `${upstream.url}/hang` }),
        allowedHosts: ['127.0.0.1'],
        timeoutMs: 3000,
      })
      .finally(() => (hungSettled = true));
    while (upstream.received.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));

    const quick = await server.api.call('count_vowels', { function: 'count_vowels', input: 'aeiou' });
    expect({ status: quick.status, count: JSON.parse(quick.data.output!).count, hungSettled }).toEqual({
      status: 200,
      count: 5,
      hungSettled: false,
    });
    expect((await hung).status).toBe(504);
  });
});

describe('a module cache smaller than the stored plugins', () => {
  const SMALL_CACHE = String(2 * 1024 * 1024);
  const server = useServer({ env: { WORKERS: '2', MODULE_CACHE_BYTES: SMALL_CACHE } });

  /** A server on the default cache stores a plugin with `store`, then starts again on the same data with SMALL_CACHE. */
  async function restartedUnderSmallCache(store: (server: TestServer) => Promise<unknown>): Promise<TestServer> {
    const first = await serverForTest();
    await store(first);
    await first.close();
    return serverForTest({ dataDir: first.dataDir, env: { MODULE_CACHE_BYTES: SMALL_CACHE } });
  }
  beforeAll(async () => {
    // Room for about two small compiled modules: every upload and call evicts one, and workers let it go too.
  });

  it('keeps answering every plugin in turn, preparing evicted ones again', async () => {
    const names = ['count_vowels', 'echo', 'state', 'logs', 'fail'];
    for (const name of names) await server.api.uploaded(await readPlugin(name), { name });
    for (let round = 0; round < 3; round++) {
      expect(
        JSON.parse((await server.api.call('count_vowels', { function: 'count_vowels', input: 'aeiou' })).data.output!),
      ).toMatchObject({
        count: 5,
      });
      expect((await server.api.call('echo', { function: 'echo', input: `round ${round}` })).data.output).toBe(`round ${round}`);
      expect((await server.api.call('logs', { function: 'log_all' })).data.output).toBe('done');
      expect((await server.api.call('fail', { function: 'fail', input: 'x' })).status).toBe(422);
    }
    expect(server.app.moduleCache.stats().entries).toBeLessThanOrEqual(3);
  });
  it('refuses a module it could never hold compiled (413 PLUGIN_TOO_LARGE), storing nothing', async () => {
    const before = (await server.api.list()).data.plugins.length;
    const res = await server.api.upload(await readPlugin('rust_regex'), { name: 'too-large-to-cache' });
    expect(res.status).toBe(413);
    expect(res.error.code).toBe('PLUGIN_TOO_LARGE');
    expect(res.error.message).toMatch(/MODULE_CACHE_BYTES/);
    expect((await server.api.list()).data.plugins.length).toBe(before);
  });

  it('refuses a manifest whose modules fit one by one but not together (413 PLUGIN_TOO_LARGE), and answers 422 for one stored under a larger cache', async () => {
    // Two modules of ~70 KB each: each fits this 2 MiB cache compiled (~1.5 MiB), both together do not.
    const big = (name: string) =>
      wat(
        `(module (memory 2) (data (i32.const 0) "${'a'.repeat(70_000)}") (func (export "${name}") (result i32) (i32.const 0)))`,
      );
    const [lib, main] = [await big('lib_fn'), await big('run')];
    const manifest = {
      wasm: [
        { data: Buffer.from(lib).toString('base64'), name: 'lib' },
        { data: Buffer.from(main).toString('base64'), name: 'main' },
      ],
    };
    const before = (await server.api.list()).data.plugins.length;
    const refused = await server.api.uploadManifest(manifest, undefined, { name: 'set-too-large' });
    expect(refused.status).toBe(413);
    expect(refused.error.message).toMatch(/MODULE_CACHE_BYTES/);
    expect((await server.api.list()).data.plugins.length).toBe(before);

    const small = await restartedUnderSmallCache(async (first) =>
      expect((await first.api.uploadManifest(manifest, undefined, { name: 'set-stored' })).status).toBe(201),
    );
    for (let i = 0; i < 2; i++) {
      const res = await small.api.call('set-stored', { function: 'run' });
      expect(res.status).toBe(422);
      expect(res.error.message).toMatch(/MODULE_CACHE_BYTES/);
    }
    expect(small.app.moduleCache.stats().misses).toBe(2 * 2);
    const compiled = await fetch(`${small.url}/metrics`).then((r) => r.text());
    expect(compiled).toMatch(/^wasmhost_compile_duration_seconds_count 0$/m);
  });

  it('answers 422 PLUGIN_ERROR for a stored plugin it could never hold, instead of preparing it on every call', async () => {
    const small = await restartedUnderSmallCache(async (first) =>
      first.api.uploaded(await readPlugin('rust_regex'), { name: 'stored-large' }),
    );
    for (let i = 0; i < 2; i++) {
      const res = await small.api.call('stored-large', { function: 'count_vowels', input: 'aeiou' });
      expect(res.status).toBe(422);
      expect(res.error).toMatchObject({ code: 'PLUGIN_ERROR' });
      expect(res.error.message).toMatch(/MODULE_CACHE_BYTES/);
    }
  });
});
