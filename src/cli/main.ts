// The `wasmhost` command line (bin/wasmhost.mjs runs this): call, push, ls, info, rm and serve,
// parsed by commander. WASMHOST_URL (default http://127.0.0.1:8080) and WASMHOST_TOKEN say which
// service and as whom.
import { Command, InvalidArgumentError, Option } from 'commander';
import { createWasmhostClient, WasmhostError, type WasmhostClient } from '../client/client.ts';
import { LOG_LEVELS, runCall, type CallOptions, type Io } from './call.ts';
import { CliError, EXIT_FAILURE } from './errors.ts';
import { runInfo, runList, runPush, runRemove, type PushOptions } from './plugins.ts';
import { escapeControls } from './terminal.ts';

const DEFAULT_URL = 'http://127.0.0.1:8080';

const io: Io = {
  stdout: process.stdout,
  stderr: process.stderr,
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  },
};

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function integer(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    return n;
  };
}

function serviceUrl(program: Command): string {
  return (program.opts<{ url?: string }>().url ?? process.env.WASMHOST_URL ?? DEFAULT_URL).replace(/\/+$/, '');
}

function client(program: Command): WasmhostClient {
  return createWasmhostClient({ baseUrl: serviceUrl(program), token: process.env.WASMHOST_TOKEN || null });
}

const program = new Command()
  .name('wasmhost')
  .description('Call, upload and manage Extism plugins on a wasmhost service (`extism call` against a service).')
  .option('--url <url>', `the service (env WASMHOST_URL, default ${DEFAULT_URL}); a token comes from env WASMHOST_TOKEN`)
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'wasmhost: ')) });

program
  .command('call')
  .description('call a function of a plugin: a local .wasm (uploaded when not stored yet), an id or a name')
  .argument('<plugin>', 'file.wasm, manifest.json, id or name')
  .argument('<function>', 'the exported function to call')
  .addOption(new Option('-i, --input <data>', 'input data').conflicts('stdin'))
  .option('--stdin', 'read the input from stdin (binary-safe)')
  .option('--loop <n>', 'number of times to call the function (each call starts from a fresh plugin state)', integer(1), 1)
  .option('--wasi', 'accepted for compatibility: plugins that import WASI always get it (sandboxed)')
  .option('--allow-path <path>', 'refused: plugins get no files', collect, [])
  .option('--allow-host <pattern>', 'allow HTTP to a host (repeatable); none: the plugin’s stored list', collect, [])
  .option('--enable-http-response-headers', 'let the plugin read HTTP response headers (http_headers)')
  .option('--timeout <ms>', 'call deadline in milliseconds (0: the service default)', integer(0))
  .option('--memory-max <pages>', 'plugin memory limit in 64 KiB pages (0: the service default)', integer(0))
  .option('--http-response-max <bytes>', 'largest HTTP response body the plugin may receive', integer(-1))
  .option('--var-max <bytes>', 'largest Extism var store', integer(-1))
  .option('--output-max <bytes>', 'largest output (wasmhost only)', integer(0))
  .option('--config <key=value>', 'a config value (repeatable), over --set-config', collect, [])
  .option('--set-config <json>', 'config as a JSON object of strings')
  .option('-m, --manifest', 'read <plugin> as an Extism manifest (also any <plugin> ending in .json)')
  .addOption(
    new Option('--log-level <level>', 'plugin log level; debug and trace also print the egress audit').choices(LOG_LEVELS),
  )
  .option(
    '--link <name=path>',
    'link another module by name (repeatable): uploaded with <plugin>, which is linked as main',
    collect,
    [],
  )
  .option('--json', 'print the whole JSON response instead of the raw output')
  .action((target: string, fn: string, options: CallOptions) => runCall(client(program), target, fn, options, io));

program
  .command('push')
  .description('upload a plugin (idempotent: the same bytes are stored once)')
  .argument('<file>', 'the .wasm module')
  .option('--name <name>', 'name it (moves the name from another plugin)')
  .option('--description <text>', 'a description')
  .option('--config <key=value>', 'a default config value (repeatable)', collect, [])
  .option('--set-config <json>', 'default config as a JSON object of strings')
  .option('--allow-host <pattern>', 'a default allowed host (repeatable)', collect, [])
  .option('--json', 'print the stored record as JSON')
  .action((file: string, options: PushOptions) => runPush(client(program), file, options, io));

program
  .command('ls')
  .description('list the stored plugins, newest first')
  .option('--name <name>', 'only the plugin with this name')
  .option('--json', 'print JSON')
  .action((options: { name?: string; json?: boolean }) => runList(client(program), options, io));

program
  .command('info')
  .description('describe a stored plugin')
  .argument('<plugin>', 'id or name')
  .option('--json', 'print JSON')
  .action((plugin: string, options: { json?: boolean }) => runInfo(client(program), plugin, options, io));

program
  .command('rm')
  .description('delete stored plugins')
  .argument('<plugins...>', 'ids or names')
  .action((plugins: string[]) => runRemove(client(program), plugins, io));

program
  .command('serve')
  .description('start the service here, configured by the environment like `npm start` (see README)')
  .option('--port <port>', 'listen on this port (env PORT)')
  .option('--host <host>', 'listen on this address (env HOST)')
  .option('--data-dir <dir>', 'store plugins here (env DATA_DIR)')
  .action(async (options: { port?: string; host?: string; dataDir?: string }) => {
    if (options.port !== undefined) process.env.PORT = options.port;
    if (options.host !== undefined) process.env.HOST = options.host;
    if (options.dataDir !== undefined) process.env.DATA_DIR = options.dataDir;
    await import('../main.ts');
  });

/** Why the service could not be reached, in one line. */
function networkProblem(err: unknown): string | null {
  if (!(err instanceof TypeError) || !(err.cause instanceof Error)) return null;
  const code = (err.cause as NodeJS.ErrnoException).code;
  const url = serviceUrl(program);
  if (code === 'ECONNREFUSED')
    return `cannot reach the service at ${url} (connection refused): start it (\`npx wasmhost serve\` or \`npm start\`) or set WASMHOST_URL`;
  return `cannot reach the service at ${url}: ${err.cause.message}`;
}

try {
  await program.parseAsync();
} catch (err) {
  process.exitCode = EXIT_FAILURE;
  if (err instanceof WasmhostError) {
    const { statusCode, code, message } = err;
    // The message may quote what a plugin or an upload said: shown escaped.
    process.stderr.write(`wasmhost: ${code} (${statusCode}): ${escapeControls(message, { multiline: true })}\n`);
  } else if (err instanceof CliError) {
    process.stderr.write(`wasmhost: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else {
    const problem = networkProblem(err);
    if (problem === null) throw err;
    process.stderr.write(`wasmhost: ${problem}\n`);
  }
}
