// What the CLI writes besides a call's output: plugin logs and the egress audit on stderr, in the
// shape `extism call` prints them (Go's log package: "2006/01/02 15:04:05 message", local time).
import type { EgressAttempt, LogEntry } from '../client/client.ts';

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** Go's log.LstdFlags timestamp, which the Extism CLI's plugin log lines start with. */
export function extismTimestamp(date: Date): string {
  return (
    `${date.getFullYear()}/${pad(date.getMonth() + 1)}/${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function formatLogLine(entry: LogEntry): string {
  return `${extismTimestamp(new Date(entry.time))} ${entry.message}`;
}

export function formatEgressLine(attempt: EgressAttempt, at: Date): string {
  const outcome = attempt.allowed
    ? `${attempt.status ?? 'no response'}${attempt.reason ? ` (${attempt.reason})` : ''}, ${attempt.bytes} bytes`
    : `refused (${attempt.reason ?? 'policy'})`;
  return `${extismTimestamp(at)} egress: ${attempt.method} ${attempt.url} → ${outcome}, ${attempt.durationMs.toFixed(1)} ms`;
}

/** Levels at which `--log-level` asks for the egress audit too. */
export const EGRESS_AUDIT_LEVELS: ReadonlySet<string> = new Set(['debug', 'trace']);
