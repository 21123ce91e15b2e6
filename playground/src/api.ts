// The playground's view of the service: the typed client (src/client/), aimed at the origin that
// served the page, with the token from the token field (kept in sessionStorage: gone with the tab).
import { createWasmhostClient } from '../../src/client/client.ts';

const TOKEN_KEY = 'wasmhost.token';

export function storedToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function storeToken(token: string): void {
  if (token === '') sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

export const client = createWasmhostClient({ baseUrl: location.origin, token: () => storedToken() || null });
