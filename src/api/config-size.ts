// A plugin's config (at upload) and a call's config are bounded: each key is handed to the plugin,
// shown (redacted) in the request log and kept in memory for the call.
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';

/** Throws 400 INVALID_CONFIG when `config` has more keys or bytes than CONFIG_MAX_KEYS / CONFIG_MAX_BYTES. */
export function checkConfigSize(config: Record<string, string>, limits: Config['pluginConfig'], whose: string): void {
  let keys = 0;
  let bytes = 0;
  for (const key in config) {
    keys++;
    bytes += Buffer.byteLength(key) + Buffer.byteLength(config[key]!);
  }
  if (keys > limits.maxKeys)
    throw new AppError('INVALID_CONFIG', `${whose} config has ${keys} keys; the limit is ${limits.maxKeys} (CONFIG_MAX_KEYS)`);
  if (bytes > limits.maxBytes) {
    throw new AppError(
      'INVALID_CONFIG',
      `${whose} config holds ${bytes} bytes of keys and values; the limit is ${limits.maxBytes} (CONFIG_MAX_BYTES)`,
    );
  }
}
