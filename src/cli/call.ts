// `wasmhost call <file.wasm|manifest.json|id|name> <function>`: `extism call` against the service.
// A local module is uploaded first, only when its sha256 (its id) is not stored yet. The output goes
// raw to stdout; plugin logs (and with --log-level debug or trace, the egress audit) go to stderr.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  outputBytes,
  sha256Hex,
  unwrap,
  uploadManifest,
  uploadPlugin,
  WasmhostError,
  type CallRequest,
  type CallResponse,
  type WasmhostClient,
} from '../client/client.ts';
import { CliError } from './errors.ts';
import { EGRESS_AUDIT_LEVELS, formatEgressLine, formatLogLine } from './report.ts';
import { escapeControls } from './terminal.ts';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** What `extism call` uses when no --log-level is given. */
export const DEFAULT_LOG_LEVEL: LogLevel = 'error';

/** The `extism call` flags (same names and meaning) plus wasmhost's own `--json` and `--output-max`. */
export interface CallOptions {
  input?: string;
  stdin?: boolean;
  loop: number;
  wasi?: boolean;
  allowPath: string[];
  allowHost: string[];
  enableHttpResponseHeaders?: boolean;
  timeout?: number;
  memoryMax?: number;
  httpResponseMax?: number;
  varMax?: number;
  outputMax?: number;
  config: string[];
  setConfig?: string;
  manifest?: boolean;
  logLevel?: LogLevel;
  link: string[];
  json?: boolean;
}

export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readStdin: () => Promise<Buffer>;
}

export async function runCall(client: WasmhostClient, target: string, fn: string, options: CallOptions, io: Io): Promise<void> {
  refuseUnsupported(target, options);
  const logLevel = options.logLevel ?? DEFAULT_LOG_LEVEL;
  const debug = (line: string) => {
    if (EGRESS_AUDIT_LEVELS.has(logLevel)) io.stderr.write(`wasmhost: ${line}\n`);
  };
  const links = options.link.map(parseLink);
  const asManifest = options.manifest || target.toLowerCase().endsWith('.json');
  const plugin =
    asManifest || links.length > 0
      ? await resolveManifest(client, target, asManifest, links, debug)
      : await resolvePlugin(client, target, debug);
  const input = options.stdin ? await io.readStdin() : undefined;
  const request = callRequest(fn, options, logLevel, input);

  for (let i = 0; i < options.loop; i++) {
    let response: CallResponse;
    try {
      response = unwrap(await client.POST('/plugins/{id}/call', { params: { path: { id: plugin } }, body: request }));
    } catch (err) {
      if (err instanceof WasmhostError && !options.json) report(io, logLevel, err.logs, err.egress);
      throw err;
    }
    if (options.json) {
      io.stdout.write(`${JSON.stringify(response)}\n`);
      continue;
    }
    report(io, logLevel, response.logs, response.egress);
    const bytes = outputBytes(response);
    // Raw bytes when piped; on a terminal, control characters escaped (the output is the plugin's).
    io.stdout.write(io.stdout.isTTY ? escapeControls(Buffer.from(bytes).toString('utf8'), { multiline: true }) : bytes);
    // Raw bytes when piped; a terminal gets a line end so the prompt does not follow the output.
    if (options.loop > 1 || (io.stdout.isTTY && bytes.at(-1) !== 0x0a)) io.stdout.write('\n');
  }
}

function refuseUnsupported(target: string, options: CallOptions): void {
  if (options.allowPath.length > 0) {
    throw new CliError('--allow-path has no counterpart: wasmhost gives plugins no files (their WASI has no file system)');
  }
  if (options.stdin && options.input !== undefined) throw new CliError('give --input or --stdin, not both');
}

/**
 * A local file becomes the id of the stored copy (uploaded only when that id is not stored yet);
 * anything else is an id or a name as the service knows it.
 */
async function resolvePlugin(client: WasmhostClient, target: string, debug: (line: string) => void): Promise<string> {
  const file = await stat(target).catch(() => null);
  if (file === null) {
    // A name never holds a slash: this was meant as a path.
    if (target.includes('/')) throw new CliError(`no such file: ${target}`);
    return target;
  }
  if (!file.isFile()) throw new CliError(`not a file: ${target}`);
  const bytes = new Uint8Array(await readFile(target));
  const id = await sha256Hex(bytes);
  const stored = await client.GET('/plugins/{id}', { params: { path: { id } } });
  if (stored.response.ok) {
    debug(`${target} is stored as ${id}`);
    return id;
  }
  if (stored.response.status !== 404) unwrap(stored);
  const { plugin } = await uploadPlugin(client, bytes);
  debug(`uploaded ${target} as ${plugin.id}`);
  return plugin.id;
}

interface Link {
  name: string;
  path: string;
}

/** `--link NAME=PATH`, as `extism call` reads it. */
export function parseLink(value: string): Link {
  const at = value.indexOf('=');
  const link = { name: value.slice(0, at), path: value.slice(at + 1) };
  if (at <= 0 || link.path === '') throw new CliError(`invalid value for --link: "${value}" (NAME=PATH expected)`);
  return link;
}

type ManifestEntry = Record<string, unknown>;

/** Form part name → the module file it is read from, and the manifest naming that file as a `path` (for errors). */
type ModuleFiles = Map<string, { file: string; manifest?: string }>;

/**
 * An Extism manifest uploaded with the modules its `path` entries name, each sent as a form part the
 * entry's path names; its id is what is called. The manifest is `target` read as one (its paths relative
 * to it, as `extism call` reads them; uploaded as written when nothing is linked to it), or, with only
 * links, the module `target` (a file, an id or a name) linked as "main". `--link NAME=PATH` modules
 * (paths relative to the working directory) come first, so the manifest's main module stays its main
 * module. Other sources (`url`, `hash`, `data`) go as they are: the service refuses what it does not take.
 */
async function resolveManifest(
  client: WasmhostClient,
  target: string,
  asManifest: boolean,
  links: Link[],
  debug: (line: string) => void,
): Promise<string> {
  let manifest: { wasm: unknown[] } & ManifestEntry;
  let written: string | null = null;
  const files: ModuleFiles = new Map();
  if (asManifest) {
    written = await readFile(target, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new CliError(err.code === 'ENOENT' ? `no such file: ${target}` : `cannot read ${target}: ${err.message}`);
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(written);
    } catch (err) {
      throw new CliError(`${target} is not valid JSON: ${(err as Error).message}`);
    }
    const entries = (parsed as { wasm?: unknown } | null)?.wasm;
    manifest = { ...(parsed as ManifestEntry), wasm: Array.isArray(entries) ? entries : [] };
    for (const entry of manifest.wasm) {
      const file = (entry as { path?: unknown } | null)?.path;
      if (typeof file === 'string' && !files.has(file)) {
        files.set(file, { file: path.resolve(path.dirname(target), file), manifest: target });
      }
    }
  } else {
    manifest = { wasm: [{ ...(await mainSource(client, target, files)), name: 'main' }] };
  }
  const linked: ManifestEntry[] = links.map((link) => {
    const key = `link:${link.name}`;
    files.set(key, { file: path.resolve(link.path) });
    return { path: key, name: link.name };
  });
  manifest.wasm = [...linked, ...manifest.wasm];
  const modules = new Map<string, Uint8Array>();
  for (const [key, { file, manifest: from }] of files) {
    const bytes = await readFile(file).catch(() => {
      throw new CliError(`no such file: ${file}${from === undefined ? '' : ` (wasm path in ${from})`}`);
    });
    modules.set(key, new Uint8Array(bytes));
  }
  const text = links.length === 0 && written !== null ? written : JSON.stringify(manifest);
  const { plugin, created } = await uploadManifest(client, text, modules);
  const what = links.length === 0 ? target : `${target} with ${links.map((l) => l.name).join(', ')} linked`;
  debug(`${created ? 'uploaded' : 'already stored:'} ${what} as ${plugin.id}`);
  return plugin.id;
}

/** The main module for --link: a local file (sent as a part), else a stored plugin by its hash. */
async function mainSource(client: WasmhostClient, target: string, files: ModuleFiles): Promise<ManifestEntry> {
  const file = await stat(target).catch(() => null);
  if (file !== null) {
    if (!file.isFile()) throw new CliError(`not a file: ${target}`);
    files.set('main', { file: path.resolve(target) });
    return { path: 'main' };
  }
  if (target.includes('/')) throw new CliError(`no such file: ${target}`);
  const stored = unwrap(await client.GET('/plugins/{id}', { params: { path: { id: target } } }));
  if (stored.manifest) throw new CliError(`${target} is a manifest: give its manifest file to link more modules to it`);
  return { hash: stored.id };
}

/** The request body from the flags, as `extism call` reads them. */
export function callRequest(fn: string, options: CallOptions, logLevel: LogLevel, stdin?: Buffer): CallRequest {
  const request: CallRequest = { function: fn, logLevel };
  if (stdin !== undefined) request.inputBase64 = stdin.toString('base64');
  else if (options.input !== undefined) request.input = options.input;
  const config = callConfig(options);
  if (Object.keys(config).length > 0) request.config = config;
  if (options.allowHost.length > 0) request.allowedHosts = options.allowHost;
  if (options.enableHttpResponseHeaders) request.httpResponseHeaders = true;
  // extism call: 0 means "no timeout" / "no page limit", -1 "the default": both leave the service's default.
  if (options.timeout !== undefined && options.timeout > 0) request.timeoutMs = options.timeout;
  if (options.memoryMax !== undefined && options.memoryMax > 0) request.memoryMaxPages = options.memoryMax;
  if (options.httpResponseMax !== undefined && options.httpResponseMax >= 0)
    request.maxHttpResponseBytes = options.httpResponseMax;
  if (options.varMax !== undefined && options.varMax >= 0) request.maxVarBytes = options.varMax;
  if (options.outputMax !== undefined) request.maxOutputBytes = options.outputMax;
  return request;
}

/** --set-config's JSON object first, then each --config KEY=VALUE over it (a bare KEY is ""). */
export function callConfig(options: Pick<CallOptions, 'config' | 'setConfig'>): Record<string, string> {
  const config: Record<string, string> = {};
  if (options.setConfig !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(options.setConfig);
    } catch (err) {
      throw new CliError(`invalid value for --set-config: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new CliError('invalid value for --set-config: a JSON object of strings is expected');
    }
    for (const [key, value] of Object.entries(parsed)) {
      if (typeof value !== 'string') throw new CliError(`invalid value for --set-config: "${key}" is not a string`);
      config[key] = value;
    }
  }
  for (const pair of options.config) {
    const at = pair.indexOf('=');
    if (at === -1) config[pair] = '';
    else config[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return config;
}

function report(io: Io, logLevel: LogLevel, logs: CallResponse['logs'], egress: CallResponse['egress']): void {
  // A terminal gets control characters escaped; a file or pipe gets the lines as the plugin wrote them.
  const shown = (line: string) => (io.stderr.isTTY ? escapeControls(line, { multiline: true }) : line);
  for (const entry of logs) io.stderr.write(`${shown(formatLogLine(entry))}\n`);
  if (!EGRESS_AUDIT_LEVELS.has(logLevel)) return;
  const now = new Date();
  for (const attempt of egress) io.stderr.write(`${shown(formatEgressLine(attempt, now))}\n`);
}
