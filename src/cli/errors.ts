// Failures of the CLI itself (bad flags, a missing file): a message and an exit code. Service errors
// arrive as WasmhostError (client.ts) and are printed as their code and message.

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class CliError extends Error {
  override name = 'CliError';
  readonly exitCode: number;

  constructor(message: string, exitCode = EXIT_USAGE) {
    super(message);
    this.exitCode = exitCode;
  }
}

/**
 * `extism call` flags the service has no counterpart for yet. Each is accepted and refused with one
 * clear message; when the service learns one, its entry goes and the flag maps to a request field in
 * call.ts (see callRequest).
 */
export const PENDING_SERVER_FEATURES = {
  link: '--link (linking extra modules by name)',
} as const;

export type PendingFeature = keyof typeof PENDING_SERVER_FEATURES;

export function notSupportedYet(feature: PendingFeature): CliError {
  return new CliError(`${PENDING_SERVER_FEATURES[feature]} is not supported by this server yet`);
}
