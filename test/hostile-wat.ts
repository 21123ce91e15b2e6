// WAT building blocks for the hostile batteries: a plugin importing every host function (with the
// signatures the engine provides) under its own name, and small helpers written in WAT.
import { EXTISM_ENV, EXTISM_ENV_SIGNATURES } from '../src/engine/runtime/host-env.ts';
import type { Signature } from '../src/engine/runtime/signatures.ts';
import { WASI_PREVIEW1, WASI_SIGNATURES } from '../src/engine/runtime/wasi.ts';
import { wat } from './helpers.ts';

function funcType({ params, results }: Signature): string {
  const p = params.length > 0 ? ` (param ${params.join(' ')})` : '';
  const r = results.length > 0 ? ` (result ${results.join(' ')})` : '';
  return `(func${p}${r})`;
}

/** `(import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))` and so on, every one. */
const EXTISM_IMPORTS = [...EXTISM_ENV_SIGNATURES]
  .map(([name, sig]) => `(import "${EXTISM_ENV}" "${name}" ${funcType(sig).replace('(func', `(func $${name}`)})`)
  .join('\n  ');
const WASI_IMPORTS = [...WASI_SIGNATURES]
  .map(([name, sig]) => `(import "${WASI_PREVIEW1}" "${name}" ${funcType(sig).replace('(func', `(func $wasi_${name}`)})`)
  .join('\n  ');

/** WAT functions: $output (memory ptr, len → the call's output) and $block_of (memory ptr, len → a new Extism block). */
const HELPERS = `
  (func $block_of (param $ptr i32) (param $len i32) (result i64)
    (local $b i64) (local $i i32)
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $b))
  (func $output (param $ptr i32) (param $len i32)
    (call $output_set (call $block_of (local.get $ptr) (local.get $len)) (i64.extend_i32_u (local.get $len))))`;

export interface HostPluginOptions {
  /** Import WASI too (its functions as $wasi_<name>). */
  wasi?: boolean;
  /** Other module fields: data segments, globals, more functions. */
  fields?: string;
  /** Memory pages (default 1). */
  pages?: number;
  /** Compile with wabt's exception-handling support (try/catch_all, throw). */
  exceptions?: boolean;
}

/**
 * A plugin whose export `run` (→ i32) has `body`, with every Extism host function imported as
 * $<name>, the helpers $output/$block_of, and memory exported as "memory".
 */
export function hostPlugin(body: string, options: HostPluginOptions = {}): Promise<Uint8Array> {
  const source = `(module
  ${EXTISM_IMPORTS}
  ${options.wasi ? WASI_IMPORTS : ''}
  (memory (export "memory") ${options.pages ?? 1})
  ${options.fields ?? ''}
  ${HELPERS}
  (func (export "run") (result i32)
    ${body}))`;
  return wat(source, options.exceptions ? { exceptions: true } : undefined);
}
