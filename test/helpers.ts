// Shared test helpers: a real app listening on 127.0.0.1 over a temporary DATA_DIR, built plugins,
// and Wasm fixtures compiled from WAT text.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import wabtInit from 'wabt';
import { buildApp, type AppOptions } from '../src/app.ts';
import { loadConfig, type Config } from '../src/config.ts';

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
  /** Closes the app; the data dir stays (pass it to startServer again to "restart"). */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Environment as the service reads it (DATA_DIR and LOG_LEVEL default to a temp dir and silent). */
  env?: Record<string, string>;
  /** Reuse a data dir (restart); a fresh temp dir otherwise. */
  dataDir?: string;
  appOptions?: AppOptions;
}

/** Builds the app from env like main.ts does and listens on an ephemeral loopback port. */
export async function startServer(options: StartOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await makeTempDir());
  const config = loadConfig({ LOG_LEVEL: 'silent', ...options.env, DATA_DIR: dataDir });
  const app = await buildApp(config, options.appOptions);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  return { app, config, url: `http://127.0.0.1:${address.port}`, dataDir, close: () => app.close() };
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

let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** Compiles WebAssembly text to binary with the wabt npm package. */
export async function wat(source: string): Promise<Uint8Array> {
  wabt ??= await wabtInit();
  const parsed = wabt.parseWat('fixture.wat', source);
  try {
    parsed.resolveNames();
    parsed.validate();
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
