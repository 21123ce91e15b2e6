// Shared test helpers: a real app listening on 127.0.0.1 over a temporary DATA_DIR, built plugins,
// and Wasm fixtures compiled from WAT text.
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, onTestFinished } from 'vitest';
import wabtInit from 'wabt';
import { buildApp, type AppOptions } from '../src/app.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { moduleCheckLimits, type ModuleCheckLimits } from '../src/engine/compile/module-check.ts';
import { pluginIdOf, type NewPlugin, type PluginMeta } from '../src/store/store.ts';
import { responsesBreakingContract } from './contract-problems.ts';
import { checkEveryResponse } from './openapi-contract.ts';
import { TestClient } from './test-client.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Path of a plugin built by `npm run build:plugins` (plugins/dist/<name>.wasm). */
export function pluginPath(name: string): string {
  return path.join(repoRoot, 'plugins', 'dist', `${name}.wasm`);
}

export async function readPlugin(name: string): Promise<Buffer> {
  return readFile(pluginPath(name));
}

export async function makeTempDir(prefix = 'wasmhost-test-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export interface TestServer {
  app: FastifyInstance;
  config: Config;
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  dataDir: string;
  /** The service's API, typed from the contract. */
  api: TestClient;
  /** Closes the app (once); the data dir stays (pass it to startServer again to "restart"). */
  close(): Promise<void>;
}

export interface StartOptions {
  /**
   * Environment as the service reads it (DATA_DIR and LOG_LEVEL default to a temp dir and silent).
   * Load shedding is off unless a test sets MAX_EVENT_LOOP_DELAY_MS: the server shares its event loop
   * with the test runner, and on a busy machine a 1 s stall would answer 503 UNDER_PRESSURE to any test.
   */
  env?: Record<string, string>;
  /** Reuse a data dir (restart); a fresh temp dir otherwise. */
  dataDir?: string;
  appOptions?: AppOptions;
}

/** Builds the app from env like main.ts does and listens on an ephemeral loopback port. */
export async function startServer(options: StartOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await makeTempDir());
  const config = loadConfig({ LOG_LEVEL: 'silent', MAX_EVENT_LOOP_DELAY_MS: '0', ...options.env, DATA_DIR: dataDir });
  const ownOnRoute = options.appOptions?.onRoute;
  const checkContract = checkEveryResponse(responsesBreakingContract);
  const app = await buildApp(config, {
    ...options.appOptions,
    onRoute: (route) => {
      ownOnRoute?.(route);
      checkContract(route);
    },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  const url = `http://127.0.0.1:${address.port}`;
  let closed: Promise<void> | undefined;
  return { app, config, url, dataDir, api: new TestClient(url), close: () => (closed ??= app.close()) };
}

/**
 * A server for the enclosing describe block (or file): started before its first test (after the
 * beforeAll hooks registered earlier, so `options` may name what they started), closed and its data
 * dir removed after its last. Its properties are readable from the first test on.
 */
export function useServer(options: StartOptions | (() => StartOptions) = {}): TestServer {
  let server: TestServer | undefined;
  beforeAll(async () => {
    server = await startServer(typeof options === 'function' ? options() : options);
  });
  afterAll(async () => {
    await server?.close();
    if (server) await removeDir(server.dataDir);
  });
  return new Proxy({} as TestServer, {
    get(_target, key) {
      if (server === undefined)
        throw new Error('useServer: the server starts before the first test; read it inside tests and hooks');
      return Reflect.get(server, key) as unknown;
    },
  });
}

/** A server for the running test only: closed and its data dir removed when the test finishes, pass or fail. */
export async function serverForTest(options: StartOptions = {}): Promise<TestServer> {
  const server = await startServer(options);
  onTestFinished(async () => {
    await server.close();
    await removeDir(server.dataDir);
  });
  return server;
}

/** Removes a temp dir made by makeTempDir/startServer. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Every file under `dir`, relative paths, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/** The module limits of a service on default settings (what upload checks a module against). */
export function defaultModuleLimits(): ModuleCheckLimits {
  return moduleCheckLimits(loadConfig({}).engine);
}

let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** wabt's proposal switches, e.g. `{ exceptions: true }` for try/catch_all. */
export type WatFeatures = Parameters<Awaited<ReturnType<typeof wabtInit>>['parseWat']>[2];

/** Compiles WebAssembly text to binary with the wabt npm package. */
export async function wat(source: string, features?: WatFeatures): Promise<Uint8Array> {
  wabt ??= await wabtInit();
  const parsed = wabt.parseWat('fixture.wat', source, features);
  try {
    parsed.resolveNames();
    // wabt's typings omit it, but validate takes the same proposal switches as parseWat.
    (parsed.validate as (features?: WatFeatures) => void).call(parsed, features);
    return parsed.toBinary({}).buffer;
  } finally {
    parsed.destroy();
  }
}

/** A minimal valid plugin with one export; `marker` changes the bytes (and so the id). */
export function tinyPluginWat(marker: number, exportName = 'run'): string {
  return `(module
  (memory (export "memory") 1)
  (func (export "${exportName}") (result i32) (i32.const ${marker})))`;
}

/** A tiny module (tinyPluginWat) as a store's put takes it, with the record an upload of it makes; `meta` overrides fields. */
export async function tinyNewPlugin(marker: number, meta: Partial<Omit<PluginMeta, 'id' | 'size'>> = {}): Promise<NewPlugin> {
  return newPluginOf(await wat(tinyPluginWat(marker)), meta);
}

/** `bytes` as a store's put takes them, with the record an upload of them makes; `meta` overrides fields. */
export function newPluginOf(bytes: Uint8Array, meta: Partial<Omit<PluginMeta, 'id' | 'size'>> = {}): NewPlugin {
  return {
    bytes,
    meta: {
      id: pluginIdOf(bytes),
      name: null,
      description: '',
      size: bytes.length,
      createdAt: new Date().toISOString(),
      exports: ['run'],
      imports: [],
      wasi: false,
      config: {},
      allowedHosts: [],
      ...meta,
    },
  };
}

export interface StreamedResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Body bytes the client had written when the response arrived. */
  bytesSent: number;
}

/**
 * Sends a request whose body comes from `chunks` over a raw socket, chunked unless a content-length
 * header is given, and stops sending as soon as the server answers (as a careful client does; fetch
 * would send the whole body first), so a test sees how much the server read before refusing it.
 * Loopback only.
 */
export async function sendStreaming(
  baseUrl: string,
  options: {
    method?: string;
    path: string;
    headers: Record<string, string>;
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  },
): Promise<StreamedResponse> {
  const { hostname, port } = new URL(baseUrl);
  if (hostname !== '127.0.0.1' && hostname !== 'localhost' && hostname !== '[::1]')
    throw new Error('sendStreaming is for loopback servers only');
  const socket = net.connect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port) });
  await once(socket, 'connect');
  const chunked = !Object.keys(options.headers).some((h) => h.toLowerCase() === 'content-length');
  const head = [`${options.method ?? 'POST'} ${options.path} HTTP/1.1`, `host: ${hostname}:${port}`];
  for (const [k, v] of Object.entries(options.headers)) head.push(`${k}: ${v}`);
  if (chunked) head.push('transfer-encoding: chunked');

  let received = Buffer.alloc(0);
  let answered = false;
  let bytesSent = 0;
  const ended = new Promise<void>((resolve) => {
    socket.on('data', (data: Buffer) => {
      received = Buffer.concat([received, data]);
      answered = true;
    });
    socket.on('close', () => resolve());
    // The server may reset the connection while we write; what it answered has been read by then.
    socket.on('error', () => resolve());
  });

  // Resolves when the socket can take more, or is gone (then the loop below stops).
  const write = (data: Uint8Array | string): Promise<void> =>
    new Promise((resolve) => {
      if (socket.destroyed || socket.write(data)) return resolve();
      const done = (): void => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  await write(`${head.join('\r\n')}\r\n\r\n`);
  for await (const chunk of options.chunks) {
    if (answered || socket.destroyed) break;
    // Framing written separately: copying each chunk would make the client's own garbage show in RSS.
    if (chunked) socket.write(`${chunk.length.toString(16)}\r\n`);
    await write(chunk);
    if (chunked) socket.write('\r\n');
    bytesSent += chunk.length;
  }
  if (!answered && !socket.destroyed && chunked) await write('0\r\n\r\n');
  if (!socket.destroyed) socket.end();
  await ended;

  const text = received.toString('latin1');
  const headerEnd = text.indexOf('\r\n\r\n');
  if (headerEnd < 0) throw new Error(`no HTTP response received (sent ${bytesSent} body bytes)`);
  const [statusLine = '', ...headerLines] = text.slice(0, headerEnd).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const sep = line.indexOf(':');
    headers[line.slice(0, sep).trim().toLowerCase()] = line.slice(sep + 1).trim();
  }
  let body = received.subarray(Buffer.byteLength(text.slice(0, headerEnd + 4), 'latin1'));
  if (headers['content-length'] !== undefined) body = body.subarray(0, Number(headers['content-length']));
  return { status: Number(statusLine.split(' ')[1]), headers, body: body.toString('utf8'), bytesSent };
}

export interface LogCapture {
  /** Give to AppOptions.logStream. */
  stream: Writable;
  text: () => string;
  /** Each pino line, parsed. */
  lines: () => Record<string, unknown>[];
}

/** Collects what a test server's pino logger writes. */
export function logCapture(): LogCapture {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const text = () => chunks.join('');
  return {
    stream,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
