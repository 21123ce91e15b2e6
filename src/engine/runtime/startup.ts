// How a module is started once instantiated, as @extism/extism does it (its instantiateModule), and
// the host state start-up runs under. Shared by recycled instances (instance.ts) and linked plugins
// (linker.ts).
import { CallFailure } from './call-failure.ts';
import { CallState, type HostSlot } from './host-env.ts';
import { LogCollector } from './logs.ts';

/** An export as the engine calls it: its i32 result, or a promise of it under JSPI. */
export type PluginExport = () => number | Promise<number>;

const promising = (WebAssembly as unknown as { promising?: (f: unknown) => () => Promise<number> }).promising;

/** `fn` through JSPI when the module may suspend on HTTP (`jspi`), so its http_request can. */
export function pluginExport(fn: unknown, jspi: boolean): PluginExport {
  return jspi && promising ? promising(fn) : (fn as () => number);
}

const resultOf = (rc: unknown): number => (typeof rc === 'number' ? rc : 0);

/**
 * Runs `fn` with `call` installed in `slot` and gives its i32 result (0 for an export without
 * one): at once, unless `fn` goes through JSPI (then a promise). Most plugins never suspend, and an
 * async run would cost every call its promises and a turn of the microtask queue.
 */
export function runExport(fn: PluginExport, slot: HostSlot, call: CallState): number | Promise<number> {
  slot.call = call;
  let rc: number | Promise<number>;
  try {
    rc = fn();
  } catch (err) {
    slot.call = null;
    throw err;
  }
  if (!(rc instanceof Promise)) {
    slot.call = null;
    return resultOf(rc);
  }
  return rc.then(
    (value) => {
      slot.call = null;
      return resultOf(value);
    },
    (err: unknown) => {
      slot.call = null;
      throw err;
    },
  );
}

/** Host state while a plugin starts (a wasm start function, _initialize): no input, no config, no HTTP, logs dropped. */
export function startupState(): CallState {
  const limits = { hostBytes: 16 * 1024 * 1024, outputBytes: 0, varBytes: 1024 * 1024, httpResponseBytes: 0 };
  return new CallState(null, {}, new LogCollector('off', 0, 0), limits, null, true);
}

/**
 * WASI reactors get _initialize then hs_init; others hs_init, else _initialize, then _start. A failure
 * becomes a CallFailure saying the plugin failed to start (a failed host call's code first).
 */
export function startModule(instance: WebAssembly.Instance, wasi: boolean, slot: HostSlot): void {
  const exports = instance.exports as Record<string, unknown>;
  const run = (name: string) => {
    const fn = exports[name];
    if (typeof fn === 'function') (fn as () => void)();
  };
  try {
    if (wasi) {
      run('_initialize');
      run('hs_init');
    } else if (typeof exports.hs_init === 'function') run('hs_init');
    else if (typeof exports._initialize === 'function') run('_initialize');
    if (!wasi && typeof exports._start === 'function') run('_start');
  } catch (err) {
    const failure = slot.call?.failure ?? err;
    const code = failure instanceof CallFailure ? failure.code : 'PLUGIN_ERROR';
    throw new CallFailure(code, `the plugin failed to start: ${(failure as Error).message}`);
  }
}
