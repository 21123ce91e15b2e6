import { WasmhostError } from '../../src/client/client.ts';

/** Any failure as the service's code and message (a network failure has no code). */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof WasmhostError) return { code: err.code, message: err.message };
  return { code: 'NETWORK', message: err instanceof Error ? err.message : String(err) };
}

export function ErrorBox({ error }: { error: unknown }) {
  if (error === null || error === undefined) return null;
  const { code, message } = describeError(error);
  return (
    <div class="error" role="alert">
      <strong>{code}</strong> {message}
    </div>
  );
}
