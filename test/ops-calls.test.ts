// Operability of calls: call metrics after a known sequence, bounded label sets, load shedding, and
// the call log line (request id, outcome, redacted config, forwarded plugin logs). Real servers on
// 127.0.0.1, real plugins from plugins/dist, upstreams on loopback only.
import { afterEach, describe, expect, it } from 'vitest';
import { logCapture, readPlugin, serverForTest, type TestServer } from './helpers.ts';
import { parsePrometheusText, sampleValue, seriesCount, type MetricFamily } from './prom-text.ts';
import { startUpstream, type Upstream } from './upstream.ts';

const upstreams: Upstream[] = [];
afterEach(async () => {
  for (const upstream of upstreams.splice(0)) await upstream.close();
});

async function scrape(server: TestServer): Promise<Map<string, MetricFamily>> {
  const res = await fetch(`${server.url}/metrics`);
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
}

describe('call metrics', () => {
  it('count a cache miss when a stored plugin is first called after a restart, then hits', async () => {
    const first = await serverForTest();
    await first.api.uploaded(await readPlugin('count_vowels'), { name: 'count-vowels' });
    await first.close();

    const restarted = await serverForTest({ dataDir: first.dataDir });
    for (const input of ['one', 'two', 'three']) {
      const res = await restarted.api.call('count-vowels', { function: 'count_vowels', input });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    const families = await scrape(restarted);
    expect(sampleValue(families, 'wasmhost_module_cache_misses_total')).toBe(1);
    expect(sampleValue(families, 'wasmhost_module_cache_hits_total')).toBe(2);
    expect(sampleValue(families, 'wasmhost_compile_duration_seconds_count')).toBe(1);
    expect(sampleValue(families, 'wasmhost_module_cache_entries')).toBe(1);
  });

  it('count a known sequence of calls exactly, with durations, cache, egress, restarts, and valid exposition text', async () => {
    const env = { EGRESS_ALLOW_PRIVATE: 'true', RATE_LIMIT_MAX: '0' };
    const server = await serverForTest({ env });
    // Each upload prepares (rewrites and compiles) its module once and caches it: every call hits.
    for (const plugin of ['count_vowels', 'loop', 'fail', 'http'])
      await server.api.uploaded(await readPlugin(plugin), { name: plugin.replaceAll('_', '-') });
    const upstream = await startUpstream('127.0.0.1');
    upstreams.push(upstream);

    for (const input of ['Hello World', 'aaaa', 'xyz']) {
      const res = await server.api.call('count-vowels', { function: 'count_vowels', input });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    const timeout = await server.api.call('loop', { function: 'spin', timeoutMs: 200 });
    expect(timeout.status).toBe(504);
    expect(timeout.body).toMatchObject({ code: 'TIMEOUT' });
    const failed = await server.api.call('fail', { function: 'fail', input: 'boom' });
    expect(failed.status).toBe(422);
    expect(failed.body).toMatchObject({ code: 'PLUGIN_ERROR' });
    // The plugin may reach nothing: its request to the loopback upstream is refused by the allow-list.
    const denied = await server.api.call('http', {
      function: 'fetch',
      input: JSON.stringify({ url: `${upstream.url}/ok` }),
      allowedHosts: [],
    });
    expect(denied.status).toBe(422);
    expect(denied.body).toMatchObject({ code: 'HOST_NOT_ALLOWED' });
    expect(upstream.received).toHaveLength(0);

    const families = await scrape(server);
    const calls = 'wasmhost_calls_total';
    expect(families.get(calls)?.type).toBe('counter');
    expect(sampleValue(families, calls, { plugin: 'count-vowels', function: 'count_vowels', outcome: 'ok' })).toBe(3);
    expect(sampleValue(families, calls, { plugin: 'loop', function: 'spin', outcome: 'timeout' })).toBe(1);
    expect(sampleValue(families, calls, { plugin: 'fail', function: 'fail', outcome: 'plugin_error' })).toBe(1);
    expect(sampleValue(families, calls, { plugin: 'http', function: 'fetch', outcome: 'host_not_allowed' })).toBe(1);
    const total = families.get(calls)!.samples.reduce((sum, s) => sum + s.value, 0);
    expect(total).toBe(6);

    const duration = 'wasmhost_call_duration_seconds_count';
    expect(families.get('wasmhost_call_duration_seconds')?.type).toBe('histogram');
    expect(sampleValue(families, duration, { plugin: 'count-vowels', phase: 'queue' })).toBe(3);
    expect(sampleValue(families, duration, { plugin: 'count-vowels', phase: 'run' })).toBe(3);
    for (const plugin of ['loop', 'fail', 'http']) {
      expect(sampleValue(families, duration, { plugin, phase: 'run' })).toBe(1);
    }
    // A call stopped at its deadline counts its time as run time.
    expect(sampleValue(families, 'wasmhost_call_duration_seconds_sum', { plugin: 'loop', phase: 'run' })).toBeGreaterThan(0);

    expect(sampleValue(families, 'wasmhost_module_cache_misses_total')).toBe(0);
    expect(sampleValue(families, 'wasmhost_module_cache_hits_total')).toBe(6);
    expect(sampleValue(families, 'wasmhost_module_cache_entries')).toBe(4);
    expect(sampleValue(families, 'wasmhost_module_cache_bytes')).toBeGreaterThan(0);
    expect(sampleValue(families, 'wasmhost_compile_duration_seconds_count')).toBe(4);

    expect(sampleValue(families, 'wasmhost_egress_requests_total', { outcome: 'refused' })).toBe(1);
    expect(sampleValue(families, 'wasmhost_worker_restarts_total', { reason: 'timeout' })).toBe(1);
    // The help names exactly the reasons the pool uses (memory_limit is a call outcome, not a restart).
    const restartHelp = families.get('wasmhost_worker_restarts_total')!.help;
    expect([...restartHelp.matchAll(/(\w+) \(/g)].map((m) => m[1])).toEqual([
      'timeout',
      'stuck',
      'out_of_memory',
      'crash',
      'exit',
    ]);
    expect(restartHelp).not.toContain('memory_limit');
    expect(sampleValue(families, 'wasmhost_workers')).toBe(server.config.engine.workers);
    expect(families.get('wasmhost_workers_ready')?.type).toBe('gauge');
    expect(sampleValue(families, 'wasmhost_workers_ready')).toBeGreaterThanOrEqual(1);
    expect(sampleValue(families, 'wasmhost_workers_busy')).toBe(0);
    expect(families.get('wasmhost_workers_busy_without_call')?.type).toBe('gauge');
    expect(sampleValue(families, 'wasmhost_worker_instance_bytes')).toBeGreaterThan(0);
    expect(sampleValue(families, 'wasmhost_queue_depth')).toBe(0);
    expect(sampleValue(families, 'wasmhost_plugins_stored')).toBe(4);
    expect(
      sampleValue(families, 'wasmhost_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/plugins/:id/call',
        status_class: '2xx',
      }),
    ).toBe(3);
    expect(
      sampleValue(families, 'wasmhost_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/plugins/:id/call',
        status_class: '4xx',
      }),
    ).toBe(2);
    expect(
      sampleValue(families, 'wasmhost_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/plugins/:id/call',
        status_class: '5xx',
      }),
    ).toBe(1);
  });

  it('counts allowed egress, plugin log lines by level, and log truncations', async () => {
    const server = await serverForTest({ env: { EGRESS_ALLOW_PRIVATE: 'true', RATE_LIMIT_MAX: '0', CALL_LOG_ENTRIES: '20' } });
    const upstream = await startUpstream('127.0.0.1');
    upstreams.push(upstream);
    await server.api.uploaded(await readPlugin('http'), { name: 'http' });
    await server.api.uploaded(await readPlugin('logs'), { name: 'logs' });
    await server.api.uploaded(await readPlugin('log_flood'), { name: 'log-flood' });
    const ok = await server.api.call('http', {
      function: 'fetch',
      input: JSON.stringify({ url: `${upstream.url}/ok` }),
      allowedHosts: ['127.0.0.1'],
    });
    expect(ok.status).toBe(200);
    expect((await server.api.call('logs', { function: 'log_all', logLevel: 'debug' })).status).toBe(200);
    const flood = await server.api.call('log-flood', { function: 'flood', input: '50' });
    expect(flood.status).toBe(200);
    expect(flood.body).toMatchObject({ logsTruncated: true });

    const families = await scrape(server);
    expect(sampleValue(families, 'wasmhost_egress_requests_total', { outcome: 'ok' })).toBe(1);
    expect(sampleValue(families, 'wasmhost_plugin_log_lines_total', { level: 'trace' })).toBe(0);
    for (const level of ['debug', 'warn', 'error']) {
      expect(sampleValue(families, 'wasmhost_plugin_log_lines_total', { level })).toBe(1);
    }
    // One from log_all, 20 kept of the flood's 50.
    expect(sampleValue(families, 'wasmhost_plugin_log_lines_total', { level: 'info' })).toBe(21);
    expect(sampleValue(families, 'wasmhost_plugin_log_truncations_total')).toBe(1);
  });

  it('counts an egress request whose response is over the cap as failed, not ok', async () => {
    const server = await serverForTest({ env: { EGRESS_ALLOW_PRIVATE: 'true', RATE_LIMIT_MAX: '0' } });
    const upstream = await startUpstream('127.0.0.1');
    upstreams.push(upstream);
    await server.api.uploaded(await readPlugin('http'), { name: 'http' });
    const res = await server.api.call('http', {
      function: 'fetch',
      input: JSON.stringify({ url: `${upstream.url}/bytes?n=4096` }),
      allowedHosts: ['127.0.0.1'],
      maxHttpResponseBytes: 100,
    });
    expect(res.status).toBe(422);
    const body = res.body as { code: string; egress: { status: number | null; reason?: string }[] };
    expect(body.code).toBe('EGRESS_ERROR');
    // The upstream answered (a status arrived), yet the plugin got nothing: a failure.
    expect(body.egress).toMatchObject([{ status: 200, reason: 'response_too_large' }]);
    expect(upstream.received).toHaveLength(1);

    const families = await scrape(server);
    expect(sampleValue(families, 'wasmhost_egress_requests_total', { outcome: 'failed' })).toBe(1);
    expect(sampleValue(families, 'wasmhost_egress_requests_total', { outcome: 'ok' })).toBe(0);
  });

  it('does not grow the calls series with 1,000 distinct unknown function names', async () => {
    const server = await serverForTest({ env: { RATE_LIMIT_MAX: '0' } });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count-vowels' });
    await server.api.uploaded(await readPlugin('echo'), { name: 'echo' });
    expect((await server.api.call('count-vowels', { function: 'count_vowels', input: 'a' })).status).toBe(200);
    const before = seriesCount(await scrape(server), 'wasmhost_calls_total');

    for (let i = 0; i < 1000; i++) {
      const res = await server.api.call(i % 2 ? 'count-vowels' : 'echo', { function: `no_such_function_${i}` });
      expect(res.status).toBe(404);
    }
    // Unknown plugins do not mint label values either.
    for (let i = 0; i < 50; i++) await server.api.call(`no-such-plugin-${i}`, { function: 'x' });
    // Nor do bodies the schema rejects.
    for (let i = 0; i < 5; i++) expect((await server.api.call('echo', { function: 'echo', [`field_${i}`]: 1 })).status).toBe(400);

    const families = await scrape(server);
    const after = seriesCount(families, 'wasmhost_calls_total');
    expect(after - before).toBeLessThanOrEqual(4);
    const notFound = families.get('wasmhost_calls_total')!.samples.filter((s) => s.labels.outcome === 'function_not_found');
    expect(notFound.reduce((sum, s) => sum + s.value, 0)).toBe(1000);
    expect(notFound.every((s) => s.labels.function === '')).toBe(true);
    expect(sampleValue(families, 'wasmhost_calls_total', { plugin: '', function: '', outcome: 'plugin_not_found' })).toBe(50);
    expect(sampleValue(families, 'wasmhost_calls_total', { plugin: '', function: '', outcome: 'invalid_request' })).toBe(5);
  });
});

describe('metric series of deleted plugins', () => {
  it('are dropped at the next scrape, so series stay bounded by the plugins stored', async () => {
    const server = await serverForTest({ env: { RATE_LIMIT_MAX: '0' } });
    await server.api.uploaded(await readPlugin('echo'), { name: 'echo' });
    const { id } = await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count-vowels' });
    for (const plugin of ['echo', 'count-vowels']) {
      const fn = plugin === 'echo' ? 'echo' : 'count_vowels';
      expect((await server.api.call(plugin, { function: fn, input: 'a' })).status).toBe(200);
    }
    let families = await scrape(server);
    expect(sampleValue(families, 'wasmhost_calls_total', { plugin: 'count-vowels', outcome: 'ok' })).toBe(1);

    expect((await fetch(`${server.url}/plugins/${id}`, { method: 'DELETE' })).status).toBe(204);
    families = await scrape(server);
    const plugins = (name: string) => new Set(families.get(name)!.samples.map((s) => s.labels.plugin));
    expect(plugins('wasmhost_calls_total')).toEqual(new Set(['echo']));
    expect(plugins('wasmhost_call_duration_seconds')).toEqual(new Set(['echo']));
  });
});

describe('load shedding', () => {
  it('answers new calls with 503 UNDER_PRESSURE and Retry-After under heap pressure, while health and management still answer', async () => {
    // A heap ceiling of 1 byte: the process is "under pressure" from the first sample on.
    const server = await serverForTest({ env: { MAX_HEAP_USED_BYTES: '1', RATE_LIMIT_MAX: '0' } });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count-vowels' });
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    const res = await server.api.call('count-vowels', { function: 'count_vowels', input: 'a' });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(res.body).toMatchObject({ statusCode: 503, code: 'UNDER_PRESSURE' });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${server.url}/plugins`)).status).toBe(200);
    const families = await scrape(server);
    expect(sampleValue(families, 'wasmhost_calls_total', { plugin: '', function: '', outcome: 'under_pressure' })).toBe(1);
  });
});

describe('call logs', () => {
  it('logs one line per call with request id, plugin, function, outcome, durations, egress count and redacted config', async () => {
    const logs = logCapture();
    const server = await serverForTest({ env: { LOG_LEVEL: 'info' }, appOptions: { logStream: logs.stream } });
    await server.api.uploaded(await readPlugin('count_vowels'), { name: 'count-vowels' });
    const secret = 'secret-vowels-7f3a9c';
    const res = await server.api.call(
      'count-vowels',
      { function: 'count_vowels', input: 'Hello', config: { vowels: secret } },
      { headers: { 'x-request-id': 'call-log-1' } },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('call-log-1');
    const failed = await server.api.call(
      'count-vowels',
      { function: 'nope', config: { vowels: secret } },
      { headers: { 'x-request-id': 'call-log-2' } },
    );
    expect(failed.status).toBe(404);

    const lines = logs.lines();
    const ok = lines.filter((l) => l.reqId === 'call-log-1');
    expect(ok).toHaveLength(1);
    expect(ok[0]).toMatchObject({
      msg: 'request completed',
      route: '/plugins/:id/call',
      statusCode: 200,
      call: { plugin: 'count-vowels', function: 'count_vowels', outcome: 'ok', egressCount: 0, config: { vowels: '[REDACTED]' } },
    });
    const callFacts = ok[0]!.call as Record<string, unknown>;
    expect(typeof callFacts.queueMs).toBe('number');
    expect(typeof callFacts.runMs).toBe('number');
    expect(lines.find((l) => l.reqId === 'call-log-2')).toMatchObject({ call: { outcome: 'function_not_found', function: '' } });
    expect(logs.text()).not.toContain(secret);

    // A caller chooses the keys: the line names the first 20, each cut to 64 characters, and counts them.
    const many = Object.fromEntries(
      Array.from({ length: 200 }, (_, i) => [`${String(i).padStart(3, '0')}${'k'.repeat(200)}`, secret]),
    );
    const big = await server.api.call(
      'count-vowels',
      { function: 'count_vowels', input: 'x', config: many },
      { headers: { 'x-request-id': 'call-log-3' } },
    );
    expect(big.status).toBe(200);
    const line = logs.lines().find((l) => l.reqId === 'call-log-3')!;
    const logged = line.call as { config: Record<string, string>; configKeys: number };
    expect(Object.keys(logged.config)).toHaveLength(20);
    for (const key of Object.keys(logged.config)) expect(key.length).toBeLessThanOrEqual(64);
    expect(logged.configKeys).toBe(200);
    expect(JSON.stringify(line).length).toBeLessThan(4096);
    expect(logs.text()).not.toContain(secret);
  });

  it('keeps plugin log lines out of the server log unless FORWARD_PLUGIN_LOGS=true, then forwards them at debug', async () => {
    const quiet = logCapture();
    const server = await serverForTest({ env: { LOG_LEVEL: 'trace' }, appOptions: { logStream: quiet.stream } });
    await server.api.uploaded(await readPlugin('logs'), { name: 'logs' });
    expect((await server.api.call('logs', { function: 'log_all', logLevel: 'trace' })).status).toBe(200);
    expect(quiet.text()).not.toContain('warn message');

    const forwarded = logCapture();
    const loud = await serverForTest({
      env: { LOG_LEVEL: 'debug', FORWARD_PLUGIN_LOGS: 'true' },
      appOptions: { logStream: forwarded.stream },
    });
    await loud.api.uploaded(await readPlugin('logs'), { name: 'logs' });
    const res = await loud.api.call('logs', { function: 'log_all', logLevel: 'trace' }, { headers: { 'x-request-id': 'fwd-1' } });
    expect(res.status).toBe(200);
    const pluginLines = forwarded.lines().filter((l) => l.pluginLevel !== undefined);
    expect(pluginLines.map((l) => l.msg)).toEqual([
      'trace message',
      'debug message',
      'info message',
      'warn message',
      'error message',
    ]);
    for (const line of pluginLines) {
      expect(line).toMatchObject({ level: 20, reqId: 'fwd-1', plugin: 'logs', function: 'log_all' });
    }
  });
});
