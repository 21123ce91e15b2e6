// The `wasmhost` command line, run as a person runs it: the real bin/wasmhost.mjs in a child process
// against a real service on loopback (and, for the seed's call, a loopback upstream the plugin fetches).
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, pluginPath, removeDir, repoRoot, serverForTest, useServer } from './helpers.ts';
import { closedPort, startUpstream, type Upstream } from './upstream.ts';

const BIN = path.join(repoRoot, 'bin', 'wasmhost.mjs');
/** Go's log.LstdFlags prefix, as `extism call` prints plugin log lines. */
const EXTISM_LOG_LINE = /^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d (.*)$/;

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function wasmhost(args: string[], options: { url?: string; stdin?: Buffer; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      BIN,
      args,
      {
        cwd: repoRoot,
        encoding: 'buffer',
        timeout: 120_000,
        env: { ...process.env, WASMHOST_URL: options.url ?? server.url, WASMHOST_TOKEN: '', ...options.env },
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(err);
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr: stderr.toString('utf8') });
      },
    );
    child.stdin!.end(options.stdin ?? Buffer.alloc(0));
  });
}

const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');

// The upstream is on loopback, which egress refuses unless the operator allows it.
const server = useServer({ env: { EGRESS_ALLOW_PRIVATE: 'true' } });
let upstream: Upstream;

beforeAll(async () => {
  upstream = await startUpstream();
});

afterAll(async () => {
  await upstream?.close();
});

async function storedPlugins(): Promise<{ id: string; name: string | null }[]> {
  return (await server.api.list()).data.plugins;
}

// Each run starts a Node process (about a second here, many on a busy machine).
describe('wasmhost call', { timeout: 120_000 }, () => {
  it("runs the seed's extism call line: the output on stdout, the plugin's two info lines on stderr, exit 0", async () => {
    const route = `${upstream.url}/todos/1`;
    const run = await wasmhost([
      'call',
      'plugins/dist/hello.wasm',
      'say_hello',
      '--input',
      '😀 Hello World 🌍! (from TinyGo)',
      '--wasi',
      '--log-level',
      'info',
      '--allow-host',
      '*',
      '--config',
      `route=${route}`,
    ]);
    expect(run.stderr).not.toMatch(/Error|at /);
    expect(run.code).toBe(0);
    expect(run.stdout.toString('utf8')).toBe('param: 😀 Hello World 🌍! (from TinyGo) title: delectus aut autem');
    const logged = lines(run.stderr).map((line) => EXTISM_LOG_LINE.exec(line)?.[1]);
    expect(logged).toEqual(['hello this is wasm', `calling ${route}`]);
    expect(upstream.received.map((r) => `${r.method} ${r.url}`)).toContain('GET /todos/1');
  });

  it('uploads a local module only when its sha256 is not stored yet, then calls it by id', async () => {
    const bytes = await readFile(pluginPath('count_vowels'));
    const args = ['call', pluginPath('count_vowels'), 'count_vowels', '-i', 'Hello, World!', '--log-level', 'debug'];
    const first = await wasmhost(args);
    const second = await wasmhost(args);
    expect([first.code, second.code]).toEqual([0, 0]);
    expect(first.stderr).toMatch(/^wasmhost: uploaded .*count_vowels\.wasm as [0-9a-f]{64}$/m);
    expect(second.stderr).not.toContain('uploaded');
    expect(second.stderr).toMatch(/^wasmhost: .*count_vowels\.wasm is stored as [0-9a-f]{64}$/m);
    expect(JSON.parse(second.stdout.toString())).toMatchObject({ count: 3 });
    const { createHash } = await import('node:crypto');
    const id = createHash('sha256').update(bytes).digest('hex');
    expect((await storedPlugins()).filter((p) => p.id === id)).toHaveLength(1);
  });

  it('passes binary input from --stdin and writes binary output to stdout byte for byte', async () => {
    const bytes = Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7) % 256));
    const run = await wasmhost(['call', pluginPath('echo'), 'echo', '--stdin'], { stdin: bytes });
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    expect(Buffer.compare(run.stdout, bytes)).toBe(0);
  });

  it('prints the egress audit on stderr with --log-level debug', async () => {
    const route = `${upstream.url}/todos/1`;
    const run = await wasmhost([
      'call',
      'plugins/dist/hello.wasm',
      'say_hello',
      '-i',
      'x',
      '--allow-host',
      '127.0.0.1',
      '--config',
      `route=${route}`,
      '--log-level',
      'debug',
    ]);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(
      new RegExp(`^\\d{4}/\\d\\d/\\d\\d \\d\\d:\\d\\d:\\d\\d egress: GET ${route} → 200, 83 bytes, [\\d.]+ ms$`, 'm'),
    );
  });

  it('prints the whole response with --json', async () => {
    const run = await wasmhost(['call', 'plugins/dist/echo.wasm', 'echo', '-i', 'hi', '--json']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout.toString())).toMatchObject({ output: 'hi', function: 'echo', logs: [], egress: [] });
  });

  it('calls N times with --loop N, each output on its own line', async () => {
    const run = await wasmhost(['call', 'plugins/dist/echo.wasm', 'echo', '-i', 'again', '--loop', '3']);
    expect(run.code).toBe(0);
    expect(run.stdout.toString()).toBe('again\nagain\nagain\n');
  });

  it('exits non-zero with the code and message of a failed call', async () => {
    const run = await wasmhost(['call', 'plugins/dist/fail.wasm', 'fail', '-i', 'on purpose']);
    expect(run.code).toBe(1);
    expect(run.stdout.length).toBe(0);
    expect(run.stderr).toBe('wasmhost: PLUGIN_ERROR (422): fail: on purpose\n');
  });

  it('exits non-zero with the code when the refusal comes from the egress policy, naming the operator setting', async () => {
    const plain = await serverForTest();
    const run = await wasmhost(
      ['call', 'plugins/dist/hello.wasm', 'say_hello', '--allow-host', '*', '--config', `route=${upstream.url}/todos/1`],
      { url: plain.url },
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^wasmhost: HOST_NOT_ALLOWED \(422\): .*EGRESS_ALLOW_PRIVATE=true$/m);
  });

  it('--enable-http-response-headers lets the plugin read the response headers', async () => {
    const request = JSON.stringify({ url: `${upstream.url}/todos/1` });
    const call = (flags: string[]) =>
      wasmhost(['call', 'plugins/dist/http.wasm', 'fetch_headers', '-i', request, '--allow-host', '127.0.0.1', ...flags]);
    const withHeaders = await call(['--enable-http-response-headers']);
    expect(withHeaders.code).toBe(0);
    const answer = JSON.parse(withHeaders.stdout.toString()) as { status: number; headers: Record<string, string> };
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toMatch(/^application\/json/);
    const without = await call([]);
    expect(JSON.parse(without.stdout.toString())).toMatchObject({ status: 200, headers: null });
  });

  it('calls an Extism manifest: uploads it with the modules its paths name, with its config as the default', async () => {
    const dir = await makeTempDir('wasmhost-cli-manifest-');
    try {
      await writeFile(path.join(dir, 'count_vowels.wasm'), await readFile(pluginPath('count_vowels')));
      await writeFile(
        path.join(dir, 'manifest.json'),
        JSON.stringify({ wasm: [{ path: 'count_vowels.wasm' }], config: { vowels: 'o' }, timeout_ms: 5000 }),
      );
      const run = await wasmhost(['call', path.join(dir, 'manifest.json'), 'count_vowels', '-i', 'foo boo']);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(JSON.parse(run.stdout.toString())).toMatchObject({ count: 4, vowels: 'o' });
      // -m reads any file as a manifest; the same manifest is the same plugin.
      await rename(path.join(dir, 'manifest.json'), path.join(dir, 'plugin.txt'));
      const again = await wasmhost([
        'call',
        '-m',
        path.join(dir, 'plugin.txt'),
        'count_vowels',
        '-i',
        'o',
        '--config',
        'vowels=x',
      ]);
      expect(JSON.parse(again.stdout.toString())).toMatchObject({ count: 0, vowels: 'x' });
    } finally {
      await removeDir(dir);
    }
  });

  it('says what the service refuses in a manifest (a url source)', async () => {
    const dir = await makeTempDir('wasmhost-cli-manifest-');
    try {
      await writeFile(path.join(dir, 'manifest.json'), JSON.stringify({ wasm: [{ url: 'https://example.com/x.wasm' }] }));
      const run = await wasmhost(['call', path.join(dir, 'manifest.json'), 'run']);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^wasmhost: UNSUPPORTED_MANIFEST \(400\): .*url sources are not supported/);
    } finally {
      await removeDir(dir);
    }
  });

  it('links modules with --link NAME=PATH (the module given is main), with the call flags applying', async () => {
    const run = await wasmhost([
      'call',
      'plugins/dist/link_circular_main.wasm',
      'run',
      '--link',
      'lhs=plugins/dist/link_circular_lhs.wasm',
      '-i',
      'abcd',
      '--log-level',
      'info',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.toString()).toBe('13');
    expect(lines(run.stderr).map((l) => EXTISM_LOG_LINE.exec(l)?.[1])).toEqual(['hello from lhs']);
    const stored = await storedPlugins();
    const linked = (await server.api.describe(stored[0]!.id)).data;
    expect(linked.manifest?.modules.map((m) => m.name)).toEqual(['lhs', 'main']);
  });

  it('links --link modules to a manifest file, and to a stored plugin by name', async () => {
    const dir = await makeTempDir('wasmhost-cli-link-');
    try {
      await writeFile(path.join(dir, 'main.wasm'), await readFile(pluginPath('link_memory_main')));
      await writeFile(path.join(dir, 'manifest.json'), JSON.stringify({ wasm: [{ path: 'main.wasm' }] }));
      const run = await wasmhost([
        'call',
        path.join(dir, 'manifest.json'),
        'run',
        '--link',
        `mem_side=${pluginPath('link_memory_side')}`,
        '-i',
        'hello',
      ]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout.toString()).toBe('shared:  from side#1 532');
    } finally {
      await removeDir(dir);
    }
    // A stored plugin (by name) is linked as main by its hash; the side module need not be used.
    expect((await wasmhost(['push', pluginPath('echo'), '--name', 'echo-main'])).code).toBe(0);
    const byName = await wasmhost([
      'call',
      'echo-main',
      'echo',
      '--link',
      `wasi_side=${pluginPath('link_wasi_side')}`,
      '-i',
      'hi',
    ]);
    expect(byName.code, byName.stderr).toBe(0);
    expect(byName.stdout.toString()).toBe('hi');
  });

  it('says what is wrong with a --link: no NAME=PATH, a missing file, an import nothing links (LINK_ERROR)', async () => {
    const bad = await wasmhost(['call', 'plugins/dist/link_circular_main.wasm', 'run', '--link', 'lhs']);
    expect([bad.code, bad.stderr]).toEqual([2, 'wasmhost: invalid value for --link: "lhs" (NAME=PATH expected)\n']);
    const missing = await wasmhost(['call', 'plugins/dist/link_circular_main.wasm', 'run', '--link', 'lhs=nowhere.wasm']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^wasmhost: no such file: .*nowhere\.wasm\n$/);
    const unlinked = await wasmhost([
      'call',
      'plugins/dist/link_circular_main.wasm',
      'run',
      '--link',
      'other=plugins/dist/link_circular_lhs.wasm',
    ]);
    expect(unlinked.code).toBe(1);
    expect(unlinked.stderr).toMatch(
      /^wasmhost: LINK_ERROR \(400\): module "main" imports function "lhs" "triple_plus_one": no module of the manifest is named "lhs"/,
    );
  });

  it('says in one line when the service cannot be reached', async () => {
    const run = await wasmhost(['ls'], { url: `http://127.0.0.1:${await closedPort()}` });
    expect(run.code).toBe(1);
    expect(lines(run.stderr)).toHaveLength(1);
    expect(run.stderr).toMatch(/^wasmhost: cannot reach the service at http:\/\/127\.0\.0\.1:\d+ \(connection refused\)/);
  });
});

describe('wasmhost push, ls, info, rm', { timeout: 180_000 }, () => {
  it('uploads with a name, config and allowed hosts, lists, describes and deletes it', async () => {
    const push = await wasmhost([
      'push',
      'plugins/dist/logs.wasm',
      '--name',
      'cli-logs',
      '--description',
      'from the CLI',
      '--config',
      'a=1',
      '--allow-host',
      'api.example.com',
    ]);
    expect(push.code).toBe(0);
    expect(push.stdout.toString()).toMatch(/^stored [0-9a-f]{64} as cli-logs\n$/);
    const again = await wasmhost(['push', 'plugins/dist/logs.wasm']);
    expect(again.stdout.toString()).toMatch(/^already stored [0-9a-f]{64} as cli-logs\n$/);

    const ls = await wasmhost(['ls', '--name', 'cli-logs']);
    expect(lines(ls.stdout.toString())).toHaveLength(2);
    expect(ls.stdout.toString()).toMatch(/^ID +NAME +SIZE +CREATED +EXPORTS\n[0-9a-f]{12} +cli-logs /);

    const info = await wasmhost(['info', 'cli-logs', '--json']);
    expect(JSON.parse(info.stdout.toString())).toMatchObject({
      name: 'cli-logs',
      description: 'from the CLI',
      config: { a: '1' },
      allowedHosts: ['api.example.com'],
    });

    // A name, description and config an uploader chose reach a person's terminal escaped, the JSON exact.
    const hostile = 'harmless\x1b[2J\x1b[H\x1b]0;pwned-title\x07\x1b[31mRED\x1b[0m\rOVERWRITTEN';
    expect(
      (
        await wasmhost([
          'push',
          // Bytes no other test here uploads: a first upload, so its description is the one given.
          'plugins/dist/state.wasm',
          '--name',
          'cli-ansi',
          '--description',
          hostile,
          '--config',
          `k=${hostile}`,
        ])
      ).code,
    ).toBe(0);
    const shown = await wasmhost(['info', 'cli-ansi']);
    expect([...shown.stdout].filter((byte) => (byte < 0x20 && byte !== 0x0a) || byte === 0x7f)).toEqual([]);
    expect(shown.stdout.toString()).toContain(
      'description:   harmless\\x1b[2J\\x1b[H\\x1b]0;pwned-title\\x07\\x1b[31mRED\\x1b[0m\\x0d',
    );
    expect(shown.stdout.toString()).toContain('config:        k=harmless\\x1b[2J');
    const stored = (await server.api.describe('cli-ansi')).data;
    expect(JSON.parse((await wasmhost(['info', 'cli-ansi', '--json'])).stdout.toString())).toMatchObject({
      description: stored.description,
      config: { k: hostile },
    });
    expect((await wasmhost(['rm', 'cli-ansi'])).code).toBe(0);

    const rm = await wasmhost(['rm', 'cli-logs']);
    expect(rm.code).toBe(0);
    const gone = await wasmhost(['info', 'cli-logs']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe('wasmhost: PLUGIN_NOT_FOUND (404): no plugin with id or name "cli-logs"\n');
  });
});

describe('wasmhost serve', { timeout: 180_000 }, () => {
  it('starts the service from the environment, and a busy port is a one-line error', async () => {
    const dataDir = await makeTempDir();
    const port = await closedPort();
    const env = { ...process.env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    const child = spawn(BIN, ['serve'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok === true);
      const run = await wasmhost(['call', 'plugins/dist/echo.wasm', 'echo', '-i', 'served'], { url });
      expect(run.stdout.toString()).toBe('served');

      const busy = await wasmhost(['serve', '--port', String(port), '--data-dir', dataDir], { env: { LOG_LEVEL: 'silent' } });
      expect(busy.code).toBe(1);
      expect(busy.stderr).toBe(
        `wasmhost: cannot listen on 127.0.0.1:${port}: the port is already in use (another wasmhost?); stop that process or choose another PORT\n`,
      );
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await removeDir(dataDir);
    }
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
