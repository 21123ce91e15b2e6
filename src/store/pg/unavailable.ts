// Which driver errors mean "PostgreSQL cannot be reached or cannot answer now" (503, try again) rather
// than a bug or bad data (500).

/** SQLSTATE classes and codes that say the server is gone, starting, overloaded or cancelled us. */
const UNAVAILABLE_SQLSTATES = [
  /^08/, // connection exception
  /^53/, // insufficient resources (too many connections, disk full, out of memory)
  /^57P0[1-4]$/, // admin/crash shutdown, cannot connect now, database dropped
  /^57014$/, // query cancelled: statement_timeout
  /^40001$|^40P01$/, // serialization failure, deadlock: try again
  /^25006$/, // read-only transaction: a standby during failover
];

const UNAVAILABLE_SYSCALL = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** pg's own messages for a connection that failed, timed out or ended under a query. */
const UNAVAILABLE_MESSAGES =
  /Connection terminated|Query read timeout|not queryable|Client was closed|Connection ended|connect ECONNREFUSED/i;

export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (UNAVAILABLE_SYSCALL.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return UNAVAILABLE_SQLSTATES.some((re) => re.test(code));
  }
  if (err instanceof AggregateError) return err.errors.some(isUnavailable);
  return UNAVAILABLE_MESSAGES.test(err.message);
}

/**
 * pg-pool's answer to a query that waited connectTimeoutMs for one of the pool's connections, all of
 * them busy: this replica is overloaded, the database is not down (a connection that cannot be made
 * fails with "Connection terminated due to connection timeout" or a socket error instead).
 */
export function isPoolWait(err: unknown): boolean {
  return err instanceof Error && err.message === 'timeout exceeded when trying to connect';
}
