// The command lines that repeat a call from the playground: curl against the API, and the CLI.
// The token is never written out: the lines read it from $WASMHOST_TOKEN.
import type { CallRequest } from '../../src/client/client.ts';

/** One shell word, single-quoted unless it is plainly safe. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Stands for the file's base64 in the JSON until the shell's $(base64 …) replaces it (no JSON escaping). */
const INPUT_PLACEHOLDER = 'INPUT_BASE64_OF_FILE';

export interface CallCommandInput {
  origin: string;
  /** The plugin's name when it has one (what a person would type), else its id. */
  plugin: string;
  request: CallRequest;
  /** The input came from a file of this name (sent as inputBase64). */
  inputFile?: string | undefined;
  withToken: boolean;
}

export function curlCommand({ origin, plugin, request, inputFile, withToken }: CallCommandInput): string {
  const url = `${origin}/plugins/${encodeURIComponent(plugin)}/call`;
  const parts = ['curl -s', shellQuote(url), "-H 'Content-Type: application/json'"];
  if (withToken) parts.push('-H "Authorization: Bearer $WASMHOST_TOKEN"');
  if (inputFile === undefined) {
    parts.push(`-d ${shellQuote(JSON.stringify(request))}`);
  } else {
    // The file's bytes as base64, spliced into the JSON by the shell.
    const { inputBase64: _bytes, ...rest } = request;
    const json = JSON.stringify({ ...rest, inputBase64: INPUT_PLACEHOLDER });
    const [before, after] = json.split(`"${INPUT_PLACEHOLDER}"`) as [string, string];
    parts.push(`-d ${shellQuote(`${before}"`)}"$(base64 -w0 ${shellQuote(inputFile)})"${shellQuote(`"${after}`)}`);
  }
  return parts.join(' ');
}

export function cliCommand({ origin, plugin, request, inputFile, withToken }: CallCommandInput): string {
  const env = [`WASMHOST_URL=${shellQuote(origin)}`];
  if (withToken) env.push('WASMHOST_TOKEN="$WASMHOST_TOKEN"');
  const args = ['npx wasmhost call', shellQuote(plugin), shellQuote(request.function)];
  if (inputFile !== undefined) args.push('--stdin');
  else if (request.input !== undefined && request.input !== '') args.push('--input', shellQuote(request.input));
  for (const host of request.allowedHosts ?? []) args.push('--allow-host', shellQuote(host));
  for (const [key, value] of Object.entries(request.config ?? {})) args.push('--config', shellQuote(`${key}=${value}`));
  args.push('--log-level', request.logLevel ?? 'info');
  const flags: [keyof CallRequest, string][] = [
    ['timeoutMs', '--timeout'],
    ['memoryMaxPages', '--memory-max'],
    ['maxHttpResponseBytes', '--http-response-max'],
    ['maxVarBytes', '--var-max'],
    ['maxOutputBytes', '--output-max'],
  ];
  for (const [field, flag] of flags) if (request[field] !== undefined) args.push(flag, String(request[field]));
  const line = [...env, ...args].join(' ');
  return inputFile === undefined ? line : `${line} < ${shellQuote(inputFile)}`;
}
