// Environment → Config: invalid values stop the service with a message naming the variable, and an
// operator's lowered ceiling is what the call API enforces.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compiledBytes, ConfigError, loadConfig } from '../src/config.ts';
import { makeTempDir, readPlugin, removeDir, repoRoot, serverForTest } from './helpers.ts';

const MiB = 1024 * 1024;
const TOKEN_A = 'config-token-a-0123456789';
const TOKEN_B = 'config-token-b-0123456789';
const TOKEN_C = 'config-token-c-0123456789';
const SPACED = 'config token 0123456789';

describe('loadConfig', () => {
  it('holds MAX_PLUGIN_BYTES to the largest module MODULE_CACHE_BYTES holds compiled (none: one it cannot hold is prepared on every call)', () => {
    const MiB = 1024 * 1024;
    expect(loadConfig({}).maxPluginBytes).toBe(32 * MiB);
    expect(loadConfig({ MODULE_CACHE_BYTES: String(256 * MiB) }).maxPluginBytes).toBe(Math.floor((256 * MiB - 640 * 1024) / 12));
    expect(compiledBytes(loadConfig({ MODULE_CACHE_BYTES: String(100 * MiB) }).maxPluginBytes)).toBeLessThanOrEqual(100 * MiB);
    // No cache: every call prepares its module anyway; MAX_PLUGIN_BYTES alone.
    expect(loadConfig({ MODULE_CACHE_BYTES: '0', MAX_PLUGIN_BYTES: String(40 * MiB) }).maxPluginBytes).toBe(40 * MiB);
  });

  it('gives every setting its default from an empty environment', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      host: '127.0.0.1',
      logLevel: 'info',
      maxPluginBytes: 32 * MiB,
      uploadConcurrency: 2,
    });
    expect(config.engine.limits.timeoutMs).toEqual({ default: 5_000, ceiling: 60_000 });
    expect(config.store).toEqual({ kind: 'filesystem' });
    expect(config.listLimit).toEqual({ default: 100, ceiling: 1000 });
    expect(config.ops.redis).toBeNull();
    expect(config.requests).toEqual({
      headersTimeoutMs: 10_000,
      bodyTimeoutMs: 60_000,
      bodyMinBytesPerSecond: 4096,
      responseTimeoutMs: 120_000,
      responseMinBytesPerSecond: 4096,
      keepAliveTimeoutMs: 30_000,
    });
    expect(config.pluginConfig).toEqual({ maxKeys: 256, maxBytes: 64 * 1024 });
    expect(config.engine.prepareTimeoutMs).toBe(30_000);
    expect(config.engine.moduleLimits).toMatchObject({
      controlDepth: 10_000,
      localsTimesControl: 10_000_000,
      loopAssignments: 1_000_000,
    });
  });

  it('lets an operator lower or raise the per-function module limits up to their maxima', () => {
    const env = { MODULE_MAX_CONTROL_DEPTH: '500', MODULE_MAX_LOCALS_X_CONTROL: '100000000', MODULE_MAX_LOOP_ASSIGNMENTS: '0' };
    expect(loadConfig(env).engine.moduleLimits).toMatchObject({
      controlDepth: 500,
      localsTimesControl: 100_000_000,
      loopAssignments: 0,
    });
  });

  it('reads the PostgreSQL store and Redis settings with their defaults', () => {
    const config = loadConfig({ STORE: 'postgres', DATABASE_URL: 'postgres://u:p@db:5432/w', REDIS_URL: 'redis://cache:6379' });
    expect(config.store).toEqual({
      kind: 'postgres',
      url: 'postgres://u:p@db:5432/w',
      poolMax: 10,
      statementTimeoutMs: 5_000,
      connectTimeoutMs: 2_000,
      pollMs: 250,
      blobCacheBytes: 1024 * MiB,
    });
    expect(config.ops.redis).toEqual({ url: 'redis://cache:6379', keyPrefix: 'wasmhost:' });
  });

  it('reads AUTH_TOKENS (# entries are comments) and a METRICS_TOKEN that follow the token rules', () => {
    const config = loadConfig({
      AUTH_TOKENS: ` ${TOKEN_A}:admin , #retired, ${TOKEN_B}:invoke `,
      METRICS_TOKEN: ` ${TOKEN_C}\n`,
    });
    expect([...config.ops.authTokens]).toEqual([
      [TOKEN_A, 'admin'],
      [TOKEN_B, 'invoke'],
    ]);
    expect(config.ops.metricsToken).toBe(TOKEN_C);
    expect(loadConfig({ AUTH_TOKENS: '', METRICS_TOKEN: '' }).ops).toMatchObject({ authTokens: new Map(), metricsToken: null });
  });

  // Token sources that come out empty must stop the service, never leave it open; no message holds a token.
  const invalid: { env: Record<string, string>; file?: string; message: RegExp }[] = [
    { env: { AUTH_TOKENS: ' , ' }, message: /^AUTH_TOKENS is set but holds no tokens; unset it to run open/ },
    { env: { AUTH_TOKENS: '# none yet' }, message: /^AUTH_TOKENS is set but holds no tokens/ },
    { env: { AUTH_TOKENS_FILE: '/run/secrets/tokens' }, file: '', message: /^AUTH_TOKENS_FILE is set but holds no tokens/ },
    {
      env: { AUTH_TOKENS_FILE: '/run/secrets/tokens' },
      file: '# operators\n\n  # none yet\n',
      message: /^AUTH_TOKENS_FILE is set but holds no tokens/,
    },
    {
      env: { AUTH_TOKENS: `${TOKEN_A}:admin,${TOKEN_A}:invoke` },
      message: /^AUTH_TOKENS: entry 2 repeats the token of entry 1 \(one role per token\)$/,
    },
    {
      env: { AUTH_TOKENS_FILE: '/run/secrets/tokens' },
      file: `# operators\n${TOKEN_A}:admin\n${TOKEN_B}:invoke\n${TOKEN_A}:invoke\n`,
      message: /^AUTH_TOKENS_FILE: line 4 repeats the token of line 2/,
    },
    {
      env: { AUTH_TOKENS: `${TOKEN_A}:admin,${SPACED}:invoke` },
      message: /^AUTH_TOKENS: entry 2 must be a token without whitespace/,
    },
    { env: { AUTH_TOKENS: `${TOKEN_A} :admin` }, message: /^AUTH_TOKENS: entry 1 must be a token without whitespace/ },
    // Token and role swapped: the "role" is the token, so it is not echoed.
    { env: { AUTH_TOKENS: `admin:${TOKEN_A}` }, message: /^AUTH_TOKENS: entry 1 must be a token of 16\+ chars$/ },
    { env: { AUTH_TOKENS: `${TOKEN_A}:root` }, message: /^AUTH_TOKENS: entry 1: role must be admin or invoke$/ },
    { env: { AUTH_TOKENS: TOKEN_A }, message: /^AUTH_TOKENS: entry 1 must be "<token of 16\+ chars>:<role>"$/ },
    { env: { METRICS_TOKEN: 'abc' }, message: /^METRICS_TOKEN must be a token of 16\+ chars$/ },
    { env: { METRICS_TOKEN: '  ' }, message: /^METRICS_TOKEN must be a token of 16\+ chars$/ },
    { env: { METRICS_TOKEN: SPACED }, message: /^METRICS_TOKEN must be a token without whitespace/ },
    {
      env: { AUTH_TOKENS: `${TOKEN_A}:admin`, METRICS_TOKEN: TOKEN_A },
      message: /^METRICS_TOKEN repeats a token of AUTH_TOKENS \(one role per token\)$/,
    },
    { env: { PORT: 'abc' }, message: /^PORT must be a non-negative integer, got "abc"$/ },
    {
      env: { MODULE_MAX_CONTROL_DEPTH: '100001' },
      message: /^MODULE_MAX_CONTROL_DEPTH must be between 1 and 100000, got 100001$/,
    },
    {
      env: { MODULE_MAX_LOCALS_X_CONTROL: '100000001' },
      message: /^MODULE_MAX_LOCALS_X_CONTROL must be between 1 and 100000000, got 100000001$/,
    },
    {
      env: { MODULE_MAX_LOOP_ASSIGNMENTS: '10000001' },
      message: /^MODULE_MAX_LOOP_ASSIGNMENTS must be between 0 and 10000000, got 10000001$/,
    },
    { env: { PORT: '-1' }, message: /^PORT must be a non-negative integer, got "-1"$/ },
    { env: { PORT: '70000' }, message: /^PORT must be between 0 and 65535, got 70000$/ },
    {
      env: { CALL_TIMEOUT_MS: '60001' },
      message: /^CALL_TIMEOUT_MS \(60001\) must not exceed CALL_TIMEOUT_MS_CEILING \(60000\)$/,
    },
    {
      env: { CALL_TIMEOUT_MS_CEILING: '1000', CALL_TIMEOUT_MS: '2000' },
      message: /^CALL_TIMEOUT_MS \(2000\) must not exceed CALL_TIMEOUT_MS_CEILING \(1000\)$/,
    },
    {
      env: { CALL_MEMORY_PAGES: '5000' },
      message: /^CALL_MEMORY_PAGES \(5000\) must not exceed CALL_MEMORY_PAGES_CEILING \(4096\)$/,
    },
    { env: { CALL_OUTPUT_BYTES_CEILING: '0' }, message: /^CALL_OUTPUT_BYTES_CEILING must be between 1 and \d+, got 0$/ },
    { env: { MAX_PLUGIN_BYTES: '32MiB' }, message: /^MAX_PLUGIN_BYTES must be a non-negative integer, got "32MiB"$/ },
    { env: { MAX_PLUGIN_BYTES: '4' }, message: /^MAX_PLUGIN_BYTES must be between 8 and \d+, got 4$/ },
    {
      env: { LOG_LEVEL: 'verbose' },
      message: /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"$/,
    },
    { env: { UPLOAD_CONCURRENCY: '0' }, message: /^UPLOAD_CONCURRENCY must be between 1 and 256, got 0$/ },
    { env: { EGRESS_ALLOW_PRIVATE: 'maybe' }, message: /^EGRESS_ALLOW_PRIVATE must be true or false, got "maybe"$/ },
    {
      env: { EGRESS_ALLOWED_HOSTS: 'ok.test,*x.com' },
      message: /^EGRESS_ALLOWED_HOSTS: invalid host pattern "\*x\.com": .*wildcard/,
    },
    { env: { TRUST_PROXY: '10.0.0.0/33' }, message: /^TRUST_PROXY: "10\.0\.0\.0\/33" is not an address, a CIDR/ },
    { env: { TRUST_PROXY: 'loopback,proxy.internal' }, message: /^TRUST_PROXY: "proxy\.internal" is not an address/ },
    { env: { TRUST_PROXY: '65' }, message: /^TRUST_PROXY must be between 1 and 64, got 65$/ },
    { env: { STORE: 'mysql' }, message: /^STORE must be one of filesystem, postgres, got "mysql"$/ },
    { env: { STORE: 'postgres' }, message: /^STORE=postgres needs DATABASE_URL/ },
    { env: { STORE: 'postgres', DATABASE_URL: 'mysql://x' }, message: /^DATABASE_URL must start with postgres:\/\// },
    // It ended the process with the driver's TypeError; the password must not be in the message.
    {
      env: { STORE: 'postgres', DATABASE_URL: 'postgres://u:pw-secret@db:port/w' },
      message: /^DATABASE_URL is not a valid URL \(its value is not shown/,
    },
    {
      env: { STORE: 'postgres', DATABASE_URL: 'postgres://h/db', PG_POOL_MAX: '0' },
      message: /^PG_POOL_MAX must be between 1 and 1000, got 0$/,
    },
    { env: { REDIS_URL: 'http://redis' }, message: /^REDIS_URL must start with redis:\/\// },
    { env: { REDIS_URL: 'redis://127.0.0.1', REDIS_KEY_PREFIX: 'a b' }, message: /^REDIS_KEY_PREFIX must be/ },
    { env: { LIST_LIMIT: '2000' }, message: /^LIST_LIMIT \(2000\) must not exceed LIST_LIMIT_CEILING \(1000\)$/ },
    { env: { HEADERS_TIMEOUT_MS: '0' }, message: /^HEADERS_TIMEOUT_MS must be between 100 and 600000, got 0$/ },
    { env: { BODY_TIMEOUT_MS: '3600001' }, message: /^BODY_TIMEOUT_MS must be between 100 and 3600000, got 3600001$/ },
    { env: { MODULE_PREPARE_TIMEOUT_MS: '99' }, message: /^MODULE_PREPARE_TIMEOUT_MS must be between 100 and 600000, got 99$/ },
    {
      env: { MODULE_PREPARE_TIMEOUT_MS: '600001' },
      message: /^MODULE_PREPARE_TIMEOUT_MS must be between 100 and 600000, got 600001$/,
    },
    { env: { CONFIG_MAX_KEYS: '100001' }, message: /^CONFIG_MAX_KEYS must be between 0 and 100000, got 100001$/ },
    { env: { CONFIG_MAX_BYTES: '16777217' }, message: /^CONFIG_MAX_BYTES must be between 0 and 16777216, got 16777217$/ },
  ];
  for (const c of invalid) {
    it(`refuses ${JSON.stringify(c.env)} with a ConfigError naming the variable`, () => {
      let thrown: unknown;
      try {
        loadConfig(c.env, { readFile: c.file === undefined ? undefined : () => c.file! });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ConfigError);
      expect((thrown as Error).message).toMatch(c.message);
      for (const token of [TOKEN_A, TOKEN_B, TOKEN_C, SPACED]) expect((thrown as Error).message).not.toContain(token);
    });
  }

  it('reads TRUST_PROXY as off (default), on, a hop count or a list of proxies', () => {
    expect(loadConfig({}).ops.trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'false' }).ops.trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'true' }).ops.trustProxy).toBe(true);
    expect(loadConfig({ TRUST_PROXY: '2' }).ops.trustProxy).toBe(2);
    expect(loadConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8, fd00::1' }).ops.trustProxy).toEqual([
      'loopback',
      '10.0.0.0/8',
      'fd00::1',
    ]);
  });

  it('derives MAX_CONNECTIONS from the open-files limit and the settings that use descriptors', () => {
    const env = { WORKERS: '1', BURST_WORKERS: '0' };
    // 64 + 8 per worker thread (1 + 0 + 4 + 1) + 2 per upload slot (2): 116 kept, 2 per connection.
    expect(loadConfig(env, { descriptorLimit: 1024 }).connections).toEqual({
      max: 454,
      perAddress: 227,
      descriptorLimit: 1024,
      descriptorsReserved: 116,
    });
    // More workers and a PostgreSQL pool keep more.
    const pg = { ...env, WORKERS: '2', STORE: 'postgres', DATABASE_URL: 'postgres://u@db/w', PG_POOL_MAX: '20' };
    expect(loadConfig(pg, { descriptorLimit: 1024 }).connections.descriptorsReserved).toBe(64 + 8 * 11 + 22 + 4);
    expect(loadConfig(env, { descriptorLimit: 1_048_576 }).connections.max).toBe(16_384);
    expect(loadConfig(env).connections.max).toBe(1024);
    expect(loadConfig({ ...env, TRUST_PROXY: 'loopback' }, { descriptorLimit: 1024 }).connections.perAddress).toBe(0);
    expect(
      loadConfig({ ...env, MAX_CONNECTIONS: '100', MAX_CONNECTIONS_PER_ADDRESS: '10' }, { descriptorLimit: 1024 }).connections,
    ).toMatchObject({
      max: 100,
      perAddress: 10,
    });
    expect(() => loadConfig({ ...env, MAX_CONNECTIONS: '100', MAX_CONNECTIONS_PER_ADDRESS: '101' })).toThrow(
      /MAX_CONNECTIONS_PER_ADDRESS/,
    );
    expect(() => loadConfig(env, { descriptorLimit: 100 })).toThrow(/ulimit -n/);
  });

  it('answers only to the names of a loopback address while open, unless ALLOWED_HOST_NAMES says', () => {
    expect(loadConfig({}).ops.allowedHostNames).toEqual(['localhost', '127.0.0.1', '[::1]']);
    expect(loadConfig({ HOST: '::1' }).ops.allowedHostNames).toEqual(['localhost', '127.0.0.1', '[::1]']);
    expect(loadConfig({ HOST: '127.0.0.2' }).ops.allowedHostNames).toEqual(['localhost', '127.0.0.1', '[::1]', '127.0.0.2']);
    expect(loadConfig({ HOST: '0.0.0.0' }).ops.allowedHostNames).toBeNull();
    expect(loadConfig({ HOST: '0.0.0.0', ALLOWED_HOST_NAMES: 'Wasmhost.internal, 10.0.0.5' }).ops.allowedHostNames).toEqual([
      'wasmhost.internal',
      '10.0.0.5',
    ]);
    expect(loadConfig({ ALLOWED_HOST_NAMES: '*' }).ops.allowedHostNames).toBeNull();
    expect(() => loadConfig({ ALLOWED_HOST_NAMES: 'example.com:8080' })).toThrow(/ALLOWED_HOST_NAMES/);
  });

  it('takes a lowered ceiling as the default too when no default is given', () => {
    expect(loadConfig({ CALL_TIMEOUT_MS_CEILING: '1000' }).engine.limits.timeoutMs).toEqual({ default: 1000, ceiling: 1000 });
  });
});

describe('the service process with an invalid environment', () => {
  const cases = [
    { env: { PORT: 'abc' }, message: 'PORT must be a non-negative integer, got "abc"' },
    // An empty token source (an empty Secret) stops the service instead of starting it open.
    { env: { AUTH_TOKENS: ' , ' }, message: 'AUTH_TOKENS is set but holds no tokens' },
  ];
  for (const c of cases) {
    it(`exits non-zero at start (${JSON.stringify(c.env)}) and says why on stderr`, async () => {
      const dataDir = await makeTempDir();
      try {
        // process.execPath is the pinned Node 24 under `npm test` (it runs src/main.ts as TypeScript).
        const child = spawn(process.execPath, [path.join('src', 'main.ts')], {
          cwd: repoRoot,
          env: { PATH: process.env.PATH ?? '', ...c.env, DATA_DIR: dataDir, LOG_LEVEL: 'silent' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.stdout.resume();
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
        clearTimeout(timer);
        expect(signal).toBeNull();
        expect(code).not.toBe(0);
        expect(stderr).toContain(`wasmhost: invalid configuration: ${c.message}`);
      } finally {
        await removeDir(dataDir);
      }
    });
  }
});

describe('an operator-lowered ceiling (CALL_TIMEOUT_MS_CEILING=1000)', () => {
  it('refuses a call asking for more with 400 LIMIT_ABOVE_CEILING naming the ceiling, and runs one within it', async () => {
    const server = await serverForTest({ env: { CALL_TIMEOUT_MS_CEILING: '1000' } });
    const upload = await server.api.upload(await readPlugin('count_vowels'), { name: 'count_vowels' });
    expect(upload.status).toBe(201);

    const refused = await server.api.call('count_vowels', { function: 'count_vowels', input: 'Hello', timeoutMs: 1001 });
    expect(refused.status).toBe(400);
    const body = refused.error;
    expect(body).toMatchObject({
      statusCode: 400,
      code: 'LIMIT_ABOVE_CEILING',
      field: 'timeoutMs',
      requested: 1001,
      ceiling: 1000,
    });
    expect(body.message).toContain('ceiling of 1000 (CALL_TIMEOUT_MS_CEILING)');

    // The default ceiling (60 s) would have allowed this; the operator's does not.
    const defaultCeiling = await server.api.call('count_vowels', { function: 'count_vowels', input: 'Hello', timeoutMs: 30_000 });
    expect(defaultCeiling.status).toBe(400);
    expect(defaultCeiling.error.code).toBe('LIMIT_ABOVE_CEILING');

    const ok = await server.api.call('count_vowels', { function: 'count_vowels', input: 'Hello', timeoutMs: 1000 });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.data.output!)).toEqual({ count: 2, total: 2, vowels: 'aeiouAEIOU' });
  });
});
