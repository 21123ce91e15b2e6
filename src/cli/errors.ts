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
