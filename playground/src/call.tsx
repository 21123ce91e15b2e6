// The call form (function, text or file input, config, allowed hosts, log level, limits) and what
// the call answered: output, logs, the egress audit, the duration, and the same call as command lines.
import { useState } from 'preact/hooks';
import {
  bytesToBase64,
  outputBytes,
  unwrap,
  WasmhostError,
  type CallRequest,
  type CallResponse,
  type EgressAttempt,
  type LogEntry,
  type Plugin,
} from '../../src/client/client.ts';
import { client, storedToken } from './api.ts';
import { cliCommand, curlCommand } from './commands.ts';
import { describeError } from './errors.tsx';
import { formatBytes, formatMs, hexDump } from './format.ts';
import { KeyValueRows, parseHosts, rowsToRecord, type Row } from './rows.tsx';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'off'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

/** Limits a caller may lower: request field, label, extism flag name. */
const LIMITS = [
  ['timeoutMs', 'timeout (ms)'],
  ['memoryMaxPages', 'memory (64 KiB pages)'],
  ['maxOutputBytes', 'output (bytes)'],
  ['maxHttpResponseBytes', 'HTTP response (bytes)'],
  ['maxVarBytes', 'vars (bytes)'],
] as const;
type LimitField = (typeof LIMITS)[number][0];

interface Outcome {
  request: CallRequest;
  inputFile: string | undefined;
  /** Round trip as the browser saw it. */
  elapsedMs: number;
  response?: CallResponse;
  error?: unknown;
}

/** One per plugin (keyed by its id): picking another plugin starts a fresh form. */
export function CallPanel({ plugin }: { plugin: Plugin }) {
  const [fn, setFn] = useState(plugin.exports[0] ?? '');
  const [inputMode, setInputMode] = useState<'text' | 'file'>('text');
  const [input, setInput] = useState('');
  const [inputFile, setInputFile] = useState<File | null>(null);
  const [config, setConfig] = useState<Row[]>([]);
  const [hosts, setHosts] = useState('');
  const [logLevel, setLogLevel] = useState<LogLevel>('info');
  const [limits, setLimits] = useState<Partial<Record<LimitField, string>>>({});
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);

  const submit = async (event: Event) => {
    event.preventDefault();
    const request: CallRequest = { function: fn, logLevel };
    if (inputMode === 'file' && inputFile) request.inputBase64 = bytesToBase64(new Uint8Array(await inputFile.arrayBuffer()));
    else if (inputMode === 'text') request.input = input;
    const configRecord = rowsToRecord(config);
    if (Object.keys(configRecord).length > 0) request.config = configRecord;
    const allowedHosts = parseHosts(hosts);
    if (allowedHosts.length > 0) request.allowedHosts = allowedHosts;
    for (const [field] of LIMITS) {
      const value = limits[field]?.trim();
      if (value) request[field] = Number(value);
    }
    const file = inputMode === 'file' && inputFile ? inputFile.name : undefined;
    setBusy(true);
    const started = performance.now();
    try {
      const result = await client.POST('/plugins/{id}/call', { params: { path: { id: plugin.id } }, body: request });
      const response = unwrap(result);
      setOutcome({ request, inputFile: file, elapsedMs: performance.now() - started, response });
    } catch (error) {
      setOutcome({ request, inputFile: file, elapsedMs: performance.now() - started, error });
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <form class="card call" onSubmit={submit}>
        <h2>Call</h2>
        <label>
          Function
          <select value={fn} onChange={(e) => setFn(e.currentTarget.value)} aria-label="function">
            {plugin.exports.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <div class="tabs" role="radiogroup" aria-label="input kind">
          <label>
            <input type="radio" name="input-mode" checked={inputMode === 'text'} onChange={() => setInputMode('text')} /> text
            input
          </label>
          <label>
            <input type="radio" name="input-mode" checked={inputMode === 'file'} onChange={() => setInputMode('file')} /> file
            input
          </label>
        </div>
        {inputMode === 'text' ? (
          <textarea aria-label="input text" rows={3} value={input} onInput={(e) => setInput(e.currentTarget.value)} />
        ) : (
          <input type="file" aria-label="input file" onChange={(e) => setInputFile(e.currentTarget.files?.[0] ?? null)} />
        )}
        <KeyValueRows label="Config" rows={config} onChange={setConfig} />
        <label>
          Allowed hosts
          <input
            value={hosts}
            aria-label="call allowed hosts"
            placeholder={
              plugin.allowedHosts.length > 0
                ? `plugin default: ${plugin.allowedHosts.join(', ')}`
                : 'none: no HTTP (e.g. *, api.example.com)'
            }
            onInput={(e) => setHosts(e.currentTarget.value)}
          />
        </label>
        <label>
          Log level
          <select value={logLevel} aria-label="log level" onChange={(e) => setLogLevel(e.currentTarget.value as LogLevel)}>
            {LOG_LEVELS.map((level) => (
              <option key={level} value={level}>
                {level}
              </option>
            ))}
          </select>
        </label>
        <details class="limits">
          <summary>Limits (lower than the service's defaults only)</summary>
          {LIMITS.map(([field, label]) => (
            <label key={field}>
              {label}
              <input
                type="number"
                min={field === 'timeoutMs' || field === 'memoryMaxPages' ? 1 : 0}
                aria-label={field}
                placeholder="default"
                value={limits[field] ?? ''}
                onInput={(e) => setLimits({ ...limits, [field]: e.currentTarget.value })}
              />
            </label>
          ))}
        </details>
        <button type="submit" disabled={busy || fn === ''}>
          {busy ? 'Calling…' : `Call ${fn}`}
        </button>
      </form>
      {outcome && <Result plugin={plugin} outcome={outcome} />}
    </>
  );
}

function Result({ plugin, outcome }: { plugin: Plugin; outcome: Outcome }) {
  const { response, error } = outcome;
  const logs: LogEntry[] = response?.logs ?? (error instanceof WasmhostError ? error.logs : []);
  const egress: EgressAttempt[] = response?.egress ?? (error instanceof WasmhostError ? error.egress : []);
  const commandInput = {
    origin: location.origin,
    plugin: plugin.name ?? plugin.id,
    request: outcome.request,
    inputFile: outcome.inputFile,
    withToken: storedToken() !== '',
  };
  return (
    <section class="card result" aria-label="result">
      <div class="heading">
        <h2>{response ? 'Output' : 'Failed'}</h2>
        <span class="duration" aria-label="duration">
          {response ? `${formatMs(response.durationMs)} in the service · ` : ''}
          {formatMs(outcome.elapsedMs)} round trip
        </span>
      </div>
      {response ? <Output response={response} /> : <CallError error={error} />}
      <h3>Logs {response?.logsTruncated ? '(truncated)' : ''}</h3>
      {logs.length === 0 ? (
        <p class="empty">none</p>
      ) : (
        <ol class="logs" aria-label="logs">
          {logs.map((entry, i) => (
            <li key={i} class={`log level-${entry.level}`}>
              <span class="level">{entry.level}</span>
              <span class="message">{entry.message}</span>
            </li>
          ))}
        </ol>
      )}
      <h3>Egress</h3>
      {egress.length === 0 ? (
        <p class="empty">no HTTP requests</p>
      ) : (
        <table class="egress" aria-label="egress">
          <thead>
            <tr>
              <th>method</th>
              <th>url</th>
              <th>status</th>
              <th>bytes</th>
              <th>time</th>
              <th>allowed</th>
              <th>reason</th>
            </tr>
          </thead>
          <tbody>
            {egress.map((attempt, i) => (
              <tr key={i} class={attempt.allowed ? '' : 'refused'}>
                <td>{attempt.method}</td>
                <td class="url">{attempt.url}</td>
                <td>{attempt.status ?? '—'}</td>
                <td>{attempt.bytes}</td>
                <td>{formatMs(attempt.durationMs)}</td>
                <td>{attempt.allowed ? 'yes' : 'no'}</td>
                <td>{attempt.reason ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>The same call from a terminal</h3>
      <CopyLine label="curl" text={curlCommand(commandInput)} />
      <CopyLine label="wasmhost" text={cliCommand(commandInput)} />
    </section>
  );
}

function Output({ response }: { response: CallResponse }) {
  if (typeof response.outputBase64 === 'string') {
    const bytes = outputBytes(response);
    return (
      <>
        <p class="note">{formatBytes(bytes.length)} of binary output (not UTF-8), in hex:</p>
        <pre class="output hex" aria-label="output">
          {hexDump(bytes)}
        </pre>
      </>
    );
  }
  return (
    <pre class="output" aria-label="output">
      {response.output}
    </pre>
  );
}

function CallError({ error }: { error: unknown }) {
  const { code, message } = describeError(error);
  return (
    <div class="error" role="alert" aria-label="call error">
      <strong>{code}</strong> {message}
    </div>
  );
}

function CopyLine({ label, text }: { label: string; text: string }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(text);
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return (
    <div class="copy">
      <span class="label">{label}</span>
      <code aria-label={`${label} command`}>{text}</code>
      <button type="button" onClick={() => void copy()}>
        {copied ? 'copied' : 'copy'}
      </button>
    </div>
  );
}
