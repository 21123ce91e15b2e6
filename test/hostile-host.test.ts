// Host-function abuse, through HTTP against the service in a process of its own: every Extism host
// function and WASI called with bad addresses, negative and huge sizes, freed blocks, floods, and
// failures caught with Wasm exception handling. Each call must end in a clear answer for that call;
// afterwards /healthz answers, a normal call works, no worker was replaced, and RSS stays bounded.
import { describe, expect, it } from 'vitest';
import { metricsOf, rssOf, type ChildServer, useContainedServer } from './child-server.ts';
import { hostPlugin, type HostPluginOptions } from './hostile-wat.ts';
import { sampleValue } from './prom-text.ts';

const MiB = 1024 * 1024;
/** Settings of the service under test (the RSS bound below follows from them). */
const ENV = {
  WORKERS: '2',
  BURST_WORKERS: '1',
  WORKER_HEAP_MB: '128',
  WORKER_INSTANCE_CACHE_BYTES: String(64 * MiB),
  CALL_MEMORY_PAGES_CEILING: '1024',
  CALL_OUTPUT_BYTES_CEILING: String(4 * MiB),
  MAX_INPUT_BYTES: String(MiB),
  // The machine running the tests may lag: load shedding is tested elsewhere.
  MAX_EVENT_LOOP_DELAY_MS: '0',
};
/**
 * Well inside the README's bound for these settings (threads × (heap + instance cache + a call's
 * memory) + base): what a regression that lets a plugin hold memory beyond its caps would pass.
 */
const RSS_LIMIT = 1024 * MiB;

let server: ChildServer;
let plugins = 0;

useContainedServer(ENV, RSS_LIMIT, (started) => (server = started));

/** Uploads a plugin with `body` as its `run` and calls it once (with `call` fields). */
async function runPlugin(
  body: string,
  options: HostPluginOptions = {},
  call: Record<string, unknown> = {},
): Promise<{
  status: number;
  code: string | undefined;
  message: string;
  output: string | undefined;
  size: number;
  logs: { level: string; message: string }[];
  logsTruncated: boolean;
}> {
  const name = `host-${++plugins}`;
  const upload = await server.api.upload(await hostPlugin(body, options), { name });
  expect(upload.status, JSON.stringify(upload.body)).toBe(201);
  const answer = await server.api.call(name, { function: 'run', ...call });
  const { logs, logsTruncated } = answer.ok ? answer.data : answer.error;
  return {
    status: answer.status,
    code: answer.ok ? undefined : answer.error.code,
    message: answer.ok ? '' : answer.error.message,
    output: answer.ok ? answer.data.output : undefined,
    size: answer.size,
    logs,
    logsTruncated,
  };
}

/** A `try … catch_all` around `call`: the plugin swallows the host function's exception. */
const swallow = (call: string) => `(try (do ${call}) (catch_all))`;

describe('alloc', () => {
  it('refuses a negative size with 422 PLUGIN_ERROR before counting anything', async () => {
    const r = await runPlugin('(drop (call $alloc (i64.const -1))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('alloc: invalid size -1');
  });

  it('refuses the most negative i64 size with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(drop (call $alloc (i64.const 0x8000000000000000))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses 2^62 bytes with 422 MEMORY_LIMIT', async () => {
    const r = await runPlugin('(drop (call $alloc (i64.const 0x4000000000000000))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'MEMORY_LIMIT']);
  });

  it('refuses a block just over the host memory cap with 422 MEMORY_LIMIT', async () => {
    // memoryMaxPages 16: 1 MiB + maxOutputBytes 1 MiB + no input.
    const r = await runPlugin(
      '(drop (call $alloc (i64.const 2097153))) (i32.const 0)',
      {},
      { memoryMaxPages: 16, maxOutputBytes: MiB },
    );
    expect([r.status, r.code]).toEqual([422, 'MEMORY_LIMIT']);
    expect(r.message).toContain('2097152');
  });

  it('refuses many small blocks past the cap with 422 MEMORY_LIMIT', async () => {
    const r = await runPlugin(
      `(local $i i32)
       (loop $l (drop (call $alloc (i64.const 65536))) (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
       (i32.const 0)`,
      {},
      { memoryMaxPages: 16, maxOutputBytes: MiB },
    );
    expect([r.status, r.code]).toEqual([422, 'MEMORY_LIMIT']);
  });

  it('refuses more than 65535 blocks held at once with 422 MEMORY_LIMIT', async () => {
    const r = await runPlugin(
      `(local $i i32)
       (loop $l (drop (call $alloc (i64.const 0))) (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br_if $l (i32.lt_u (local.get $i) (i32.const 70000))))
       (i32.const 0)`,
    );
    expect([r.status, r.code]).toEqual([422, 'MEMORY_LIMIT']);
    expect(r.message).toContain('65535 Extism blocks');
  });

  it('never runs out of block addresses in a long call that frees what it allocates: freed indices are reused oldest first once all were used (200)', async () => {
    const r = await runPlugin(
      `(local $i i32) (local $b i64) (local $first i64)
       (local.set $first (call $alloc (i64.const 1)))
       (call $free (local.get $first))
       (loop $l (local.set $b (call $alloc (i64.const 1))) (call $free (local.get $b))
         (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br_if $l (i32.lt_u (local.get $i) (i32.const 200000))))
       ;; 200001 allocations: three times as many as there are block indices.
       (call $output (i32.const 0) (i32.const 2))
       (i32.const 0)`,
      { fields: '(data (i32.const 0) "ok")' },
    );
    expect([r.status, r.output]).toEqual([200, 'ok']);
  });

  it('keeps a negative alloc caught with catch_all as the answer, even after 12 allocations of 256 MiB and a 0 return', async () => {
    const before = await rssOf(server);
    const r = await runPlugin(
      `(local $i i32)
       ${swallow('(drop (call $alloc (i64.const -1099511627776)))')}
       (loop $l
         ${swallow('(drop (call $alloc (i64.const 268435456)))')}
         (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br_if $l (i32.lt_u (local.get $i) (i32.const 12))))
       ${swallow('(call $output_set (call $alloc (i64.const 2)) (i64.const 2))')}
       (i32.const 0)`,
      { exceptions: true },
      { memoryMaxPages: 1024 },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('alloc: invalid size -1099511627776');
    expect((await rssOf(server)) - before).toBeLessThan(256 * MiB);
  });

  it('keeps an allocation over the cap caught with catch_all as the answer (422 MEMORY_LIMIT, not 200)', async () => {
    const r = await runPlugin(
      `${swallow('(drop (call $alloc (i64.const 0x100000000)))')}
       ${swallow('(call $output_set (call $alloc (i64.const 2)) (i64.const 2))')}
       (i32.const 0)`,
      { exceptions: true },
    );
    expect([r.status, r.code]).toEqual([422, 'MEMORY_LIMIT']);
  });
});

describe('free and freed blocks', () => {
  it('ignores freeing address 0, an unknown block and the same block twice, like the SDK (200)', async () => {
    const r = await runPlugin(
      `(local $b i64) (local.set $b (call $alloc (i64.const 4)))
       (call $free (i64.const 0)) (call $free (i64.const 0x00ff000000000000))
       (call $free (local.get $b)) (call $free (local.get $b))
       (i32.const 0)`,
    );
    expect([r.status, r.output]).toEqual([200, '']);
  });

  it('refuses to read a freed block with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      `(local $b i64) (local.set $b (call $alloc (i64.const 4))) (call $free (local.get $b))
       (drop (call $load_u8 (local.get $b))) (i32.const 0)`,
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toMatch(/load_u8|invalid Extism block/);
  });

  it('refuses output_set on a freed block with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      `(local $b i64) (local.set $b (call $alloc (i64.const 4))) (call $free (local.get $b))
       (call $output_set (local.get $b) (i64.const 4)) (i32.const 0)`,
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('answers with no output when the output block is freed after output_set (200, empty)', async () => {
    const r = await runPlugin(
      `(local $b i64) (local.set $b (call $alloc (i64.const 4)))
       (call $output_set (local.get $b) (i64.const 4)) (call $free (local.get $b)) (i32.const 0)`,
    );
    expect([r.status, r.output]).toEqual([200, '']);
  });

  it('reads zeros (and length 0) from the input once the plugin freed it, like the SDK and the runtime (200)', async () => {
    const r = await runPlugin(
      `(call $free (call $input_offset))
       (if (i32.or (i32.wrap_i64 (call $input_length)) (call $input_load_u8 (i64.const 0))) (then unreachable))
       (i32.const 0)`,
      {},
      { input: 'abc' },
    );
    expect([r.status, r.output]).toEqual([200, '']);
  });
});

describe('load and store', () => {
  it('refuses load_u8 past the end of its block with 422 PLUGIN_ERROR naming the function', async () => {
    const r = await runPlugin('(drop (call $load_u8 (i64.add (call $alloc (i64.const 4)) (i64.const 4)))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toMatch(/^load_u8: /);
  });

  it('refuses store_u64 that would straddle the end of its block with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(call $store_u64 (i64.add (call $alloc (i64.const 8)) (i64.const 4)) (i64.const 1)) (i32.const 0)',
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toMatch(/^store_u64: /);
  });

  it('refuses load_u64 from address 0 (no block) with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(drop (call $load_u64 (i64.const 0))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses an address whose block index is negative as an i64 with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(call $store_u8 (i64.const -1) (i32.const 1)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses input_load_u8 when the call has no input with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(drop (call $input_load_u8 (i64.const 0))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses input_load_u64 past the input with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(drop (call $input_load_u64 (i64.const 2))) (i32.const 0)', {}, { input: 'abcdefgh' });
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('carries every bit of an i64 both ways: a u64 with the top bit set, an address above 2^53, lengths (200)', async () => {
    // Each check returns its own number on a mismatch (then 422, "returned N").
    const check = `(func $check (result i32) (local $b i64) (local $i i32)
      (loop $more
        (local.set $b (call $alloc (i64.const 16)))
        (br_if $more (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 40))))
      (if (i64.le_u (local.get $b) (i64.const 0x20000000000000)) (then (return (i32.const 1))))
      (if (i64.ne (call $length (local.get $b)) (i64.const 16)) (then (return (i32.const 2))))
      (call $store_u64 (i64.add (local.get $b) (i64.const 8)) (i64.const 0x8123456789abcdef))
      (if (i64.ne (call $load_u64 (i64.add (local.get $b) (i64.const 8))) (i64.const 0x8123456789abcdef))
        (then (return (i32.const 3))))
      (if (i32.ne (call $load_u8 (i64.add (local.get $b) (i64.const 15))) (i32.const 0x81)) (then (return (i32.const 4))))
      (if (i64.ne (call $input_load_u64 (i64.const 0)) (i64.const 0x6867666564636261)) (then (return (i32.const 5))))
      (if (i64.ne (call $input_length) (i64.const 8)) (then (return (i32.const 6))))
      (i32.const 0))`;
    const r = await runPlugin('(call $check)', { fields: check }, { input: 'abcdefgh' });
    expect(r.status, r.message).toBe(200);
  });

  it('answers length 0 for an unknown block, like the SDK (200)', async () => {
    const r = await runPlugin(
      `(if (i64.ne (call $length (i64.const 0x0123000000000000)) (i64.const 0)) (then (return (i32.const 1))))
       (if (i64.ne (call $length_unsafe (i64.const -5)) (i64.const 0)) (then (return (i32.const 1))))
       (i32.const 0)`,
    );
    expect(r.status).toBe(200);
  });
});

describe('output_set and error_set', () => {
  it('refuses a negative output length with 422 PLUGIN_ERROR (it answered 200 before)', async () => {
    const r = await runPlugin('(call $output_set (call $alloc (i64.const 8)) (i64.const -5)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('output_set: length -5');
  });

  it('refuses an output length past its block with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(call $output_set (call $alloc (i64.const 8)) (i64.const 9)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses an offset plus length past its block with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(call $output_set (i64.add (call $alloc (i64.const 8)) (i64.const 6)) (i64.const 4)) (i32.const 0)',
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses output over maxOutputBytes with 422 OUTPUT_TOO_LARGE', async () => {
    const r = await runPlugin(
      '(call $output_set (call $alloc (i64.const 2000)) (i64.const 2000)) (i32.const 0)',
      {},
      { maxOutputBytes: 1000 },
    );
    expect([r.status, r.code]).toEqual([422, 'OUTPUT_TOO_LARGE']);
  });

  it('refuses output_set on an invalid address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(call $output_set (i64.const 0x0777000000000000) (i64.const 1)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('keeps the last of two output_set calls (200)', async () => {
    const r = await runPlugin(
      `(call $output (i32.const 0) (i32.const 5)) (call $output (i32.const 5) (i32.const 3)) (i32.const 0)`,
      { fields: '(data (i32.const 0) "firstlast")' },
    );
    expect([r.status, r.output]).toEqual([200, 'las']);
  });

  it('cuts a 16 MiB error text to 64 KiB in a bounded answer (422 PLUGIN_ERROR)', async () => {
    const r = await runPlugin(
      `(local $b i64) (local.set $b (call $alloc (i64.const 16777216)))
       (call $store_u8 (local.get $b) (i32.const 69))
       (call $error_set (local.get $b)) (i32.const 1)`,
      {},
      { memoryMaxPages: 512 },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain("(cut: the plugin's error text is 16777216 bytes)");
    // 64 KiB of NUL bytes, each \u0000 in JSON.
    expect(r.size).toBeLessThan(6 * 64 * 1024 + 4096);
  });

  it('refuses error_set on an invalid address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(call $error_set (i64.const 0x0abc000000000000)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('answers a set error with 422 even when the export returns 0', async () => {
    const r = await runPlugin('(call $error_set (call $block_of (i32.const 0) (i32.const 4))) (i32.const 0)', {
      fields: '(data (i32.const 0) "oops")',
    });
    expect([r.status, r.code, r.message]).toEqual([422, 'PLUGIN_ERROR', 'oops']);
  });
});

describe('vars and config', () => {
  it('refuses vars beyond maxVarBytes with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(call $var_set (call $block_of (i32.const 0) (i32.const 1)) (call $alloc (i64.const 2000))) (i32.const 0)',
      { fields: '(data (i32.const 0) "k")' },
      { maxVarBytes: 1000 },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('var memory limit exceeded');
  });

  it('refuses a var key longer than maxVarBytes without decoding it (422 PLUGIN_ERROR)', async () => {
    const r = await runPlugin(
      '(call $var_set (call $alloc (i64.const 8388608)) (call $alloc (i64.const 1))) (i32.const 0)',
      {},
      {
        maxVarBytes: 1024,
        memoryMaxPages: 512,
      },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('answers var_get of an 8 MiB key with 0 (no such var), 200', async () => {
    const r = await runPlugin(
      '(if (i64.ne (call $var_get (call $alloc (i64.const 8388608))) (i64.const 0)) (then (return (i32.const 1)))) (i32.const 0)',
      {},
      { memoryMaxPages: 512 },
    );
    expect(r.status).toBe(200);
  });

  it('answers config_get of an 8 MiB key with 0 (no such key), 200', async () => {
    const r = await runPlugin(
      '(if (i64.ne (call $config_get (call $alloc (i64.const 8388608))) (i64.const 0)) (then (return (i32.const 1)))) (i32.const 0)',
      {},
      { memoryMaxPages: 512, config: { a: 'b' } },
    );
    expect(r.status).toBe(200);
  });

  it('refuses config_get of an invalid address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(drop (call $config_get (i64.const 0x0042000000000000))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses var_set with an invalid value address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(call $var_set (call $block_of (i32.const 0) (i32.const 1)) (i64.const 0x0042000000000000)) (i32.const 0)',
      {
        fields: '(data (i32.const 0) "k")',
      },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });
});

describe('logs', () => {
  it('drops a 16 MiB log message undecoded and says the logs were truncated (200, bounded answer)', async () => {
    const r = await runPlugin('(call $log_info (call $alloc (i64.const 16777216))) (i32.const 0)', {}, { memoryMaxPages: 512 });
    expect([r.status, r.logsTruncated, r.logs.length]).toEqual([200, true, 0]);
    expect(r.size).toBeLessThan(64 * 1024);
  });

  it('keeps 100,000 log calls to maxLogEntries (200, truncated)', async () => {
    const r = await runPlugin(
      `(local $i i32)
       (loop $l (call $log_warn (call $block_of (i32.const 0) (i32.const 4)))
         (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
       (i32.const 0)`,
      { fields: '(data (i32.const 0) "spam")' },
      { maxLogEntries: 100 },
    );
    expect([r.status, r.logsTruncated, r.logs.length]).toEqual([200, true, 100]);
  });

  it('refuses a log of an invalid address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin('(call $log_error (i64.const 0x0099000000000000)) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses logging a block twice (a log frees its block) with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(local $b i64) (local.set $b (call $block_of (i32.const 0) (i32.const 2))) (call $log_info (local.get $b)) (call $log_info (local.get $b)) (i32.const 0)',
      { fields: '(data (i32.const 0) "hi")' },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.logs.map((l) => l.message)).toEqual(['hi']);
  });
});

describe('http_request', () => {
  const request = (json: string) => ({ fields: `(data (i32.const 0) ${JSON.stringify(json)})` });
  const send = (length: number) =>
    `(drop (call $http_request (call $block_of (i32.const 0) (i32.const ${length})) (i64.const 0))) (i32.const 0)`;

  it('refuses a request when the call allows no host with 422 HOST_NOT_ALLOWED', async () => {
    const json = '{"url":"https://example.com/"}';
    const r = await runPlugin(send(json.length), request(json));
    expect([r.status, r.code]).toEqual([422, 'HOST_NOT_ALLOWED']);
  });

  it('refuses a loopback address even with allowedHosts ["*"] with 422 HOST_NOT_ALLOWED', async () => {
    const json = '{"url":"http://127.0.0.1:9/"}';
    const r = await runPlugin(send(json.length), request(json), { allowedHosts: ['*'] });
    expect([r.status, r.code]).toEqual([422, 'HOST_NOT_ALLOWED']);
  });

  it('refuses a description that is not JSON with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(send(8), request('not json'), { allowedHosts: ['*'] });
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('not valid JSON');
  });

  it('refuses JSON without a url (null, an array, a number url) with 422 PLUGIN_ERROR', async () => {
    for (const json of ['null', '[]', '{"url":5}']) {
      const r = await runPlugin(send(json.length), request(json), { allowedHosts: ['*'] });
      expect([r.status, r.code], json).toEqual([422, 'PLUGIN_ERROR']);
    }
  });

  it('refuses a 2 MiB description with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(drop (call $http_request (call $alloc (i64.const 2097152)) (i64.const 0))) (i32.const 0)',
      {},
      { allowedHosts: ['*'] },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('description is over');
  });

  it('refuses an invalid description address with 422 PLUGIN_ERROR', async () => {
    const r = await runPlugin(
      '(drop (call $http_request (i64.const 0x0055000000000000) (i64.const 0))) (i32.const 0)',
      {},
      { allowedHosts: ['*'] },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('keeps a refused request caught with catch_all as the answer (422 HOST_NOT_ALLOWED, not 200)', async () => {
    const json = '{"url":"https://example.com/"}';
    const r = await runPlugin(
      `${swallow(`(drop (call $http_request (call $block_of (i32.const 0) (i32.const ${json.length})) (i64.const 0)))`)}
       (call $output (i32.const 0) (i32.const 4)) (i32.const 0)`,
      { ...request(json), exceptions: true },
    );
    expect([r.status, r.code]).toEqual([422, 'HOST_NOT_ALLOWED']);
  });

  it('answers http_status_code 0 before any request (200)', async () => {
    const r = await runPlugin('(if (i32.ne (call $http_status_code) (i32.const 0)) (then (return (i32.const 1)))) (i32.const 0)');
    expect(r.status).toBe(200);
  });
});

describe('a failure is sticky', () => {
  it('fails every later host function with the first failure, whatever the plugin catches (get_log_level too)', async () => {
    const r = await runPlugin(
      `${swallow('(drop (call $load_u8 (i64.const 0)))')}
       ${swallow('(drop (call $get_log_level))')}
       ${swallow('(call $error_set (call $alloc (i64.const 1)))')}
       (i32.const 0)`,
      { exceptions: true },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toMatch(/invalid Extism block 0/);
  });

  it('answers the first failure although the plugin then traps', async () => {
    const r = await runPlugin(`${swallow('(drop (call $alloc (i64.const -7)))')} (unreachable)`, { exceptions: true });
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('alloc: invalid size -7');
  });

  it('fails WASI calls too after a failed Extism call', async () => {
    const r = await runPlugin(
      `${swallow('(drop (call $alloc (i64.const -1)))')}
       ${swallow('(drop (call $wasi_sched_yield))')}
       (i32.const 0)`,
      { exceptions: true, wasi: true },
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toContain('alloc: invalid size -1');
  });
});

describe('WASI', () => {
  const wasi = (body: string, fields = '', call: Record<string, unknown> = {}) => runPlugin(body, { wasi: true, fields }, call);

  it('refuses fd_write with an iovec array outside memory with 422 PLUGIN_ERROR', async () => {
    const r = await wasi(
      '(drop (call $wasi_fd_write (i32.const 1) (i32.const 65530) (i32.const 4) (i32.const 0))) (i32.const 0)',
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
    expect(r.message).toMatch(/^fd_write: /);
  });

  it('refuses an iovec whose length runs past memory with 422 PLUGIN_ERROR', async () => {
    const r = await wasi(
      '(i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 0x7fffffff)) (drop (call $wasi_fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))) (i32.const 0)',
    );
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('keeps 64 MiB written to stdout to the log caps (200, truncated, bounded answer)', async () => {
    const r = await runPlugin(
      `(drop (memory.grow (i32.const 1023)))
       (i32.store (i32.const 0) (i32.const 8)) (i32.store (i32.const 4) (i32.const 67000000))
       (drop (call $wasi_fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))) (i32.const 0)`,
      { wasi: true },
      { memoryMaxPages: 1024 },
    );
    expect([r.status, r.logsTruncated]).toEqual([200, true]);
    expect(r.size).toBeLessThan(2 * MiB);
  });

  it('answers a million empty iovecs (200)', async () => {
    const r = await runPlugin(
      `(drop (memory.grow (i32.const 128)))
       (drop (call $wasi_fd_write (i32.const 1) (i32.const 0) (i32.const 1000000) (i32.const 8000000))) (i32.const 0)`,
      { wasi: true },
    );
    expect(r.status).toBe(200);
  });

  it('answers EBADF for fd_write to an unknown descriptor (200, errno 8)', async () => {
    const r = await wasi(
      '(if (i32.ne (call $wasi_fd_write (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 16)) (i32.const 8)) (then (return (i32.const 1)))) (i32.const 0)',
    );
    expect(r.status).toBe(200);
  });

  it('answers proc_exit(0) as success (200)', async () => {
    const r = await wasi('(call $wasi_proc_exit (i32.const 0)) (i32.const 1)');
    expect(r.status).toBe(200);
  });

  it('answers proc_exit(7) with 422 PLUGIN_ERROR naming the code', async () => {
    const r = await wasi('(call $wasi_proc_exit (i32.const 7)) (i32.const 0)');
    expect([r.status, r.code, r.message]).toEqual([422, 'PLUGIN_ERROR', 'plugin exited with code 7']);
  });

  it('keeps proc_exit(7) caught with catch_all as the answer', async () => {
    const r = await runPlugin(
      `${swallow('(call $wasi_proc_exit (i32.const 7))')} (call $output (i32.const 0) (i32.const 1)) (i32.const 0)`,
      {
        wasi: true,
        exceptions: true,
      },
    );
    expect([r.status, r.code, r.message]).toEqual([422, 'PLUGIN_ERROR', 'plugin exited with code 7']);
  });

  it('refuses random_get into memory that does not exist with 422 PLUGIN_ERROR', async () => {
    const r = await wasi('(drop (call $wasi_random_get (i32.const 65000) (i32.const 1000))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses clock_time_get with its result pointer outside memory with 422 PLUGIN_ERROR', async () => {
    const r = await wasi('(drop (call $wasi_clock_time_get (i32.const 1) (i64.const 0) (i32.const 65535))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('refuses args_sizes_get with pointers outside memory with 422 PLUGIN_ERROR', async () => {
    const r = await wasi('(drop (call $wasi_args_sizes_get (i32.const -4) (i32.const 0))) (i32.const 0)');
    expect([r.status, r.code]).toEqual([422, 'PLUGIN_ERROR']);
  });

  it('answers path_open with ENOTCAPABLE and poll_oneoff with ENOSYS: no files, no sleeping (200)', async () => {
    const r = await wasi(
      `(if (i32.ne (call $wasi_path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64)) (i32.const 76)) (then (return (i32.const 1))))
       (if (i32.ne (call $wasi_poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)) (i32.const 52)) (then (return (i32.const 2))))
       (i32.const 0)`,
    );
    expect(r.status).toBe(200);
  });

  it('reads nothing from stdin (200)', async () => {
    const r = await wasi(
      `(i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 10))
       (drop (call $wasi_fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
       (if (i32.ne (i32.load (i32.const 16)) (i32.const 0)) (then (return (i32.const 1)))) (i32.const 0)`,
    );
    expect(r.status).toBe(200);
  });

  it('fills all of a 64 MiB memory with random bytes within the call (200)', async () => {
    const r = await runPlugin(
      '(drop (memory.grow (i32.const 1023))) (drop (call $wasi_random_get (i32.const 0) (i32.const 67108864))) (i32.const 0)',
      { wasi: true },
      {
        memoryMaxPages: 1024,
      },
    );
    expect(r.status).toBe(200);
  });
});

describe('after the battery', () => {
  it('replaced no worker: every failure above ended its call, not its worker', async () => {
    const metrics = await metricsOf(server);
    for (const reason of ['timeout', 'stuck', 'out_of_memory', 'crash', 'exit']) {
      expect(sampleValue(metrics, 'wasmhost_worker_restarts_total', { reason }), reason).toBe(0);
    }
    expect(sampleValue(metrics, 'wasmhost_worker_instance_bytes')).toBeLessThanOrEqual(2 * 64 * MiB);
  });
});
