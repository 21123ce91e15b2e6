// Wasm function signatures of the host functions, as upload checks them against a module's imports.
// A JS import accepts any signature, so a module declaring the wrong one would link and then fail on
// every call (a BigInt where a number was expected, or the reverse): upload refuses it instead.

export type ValType = 'i32' | 'i64' | 'f32' | 'f64';

export interface Signature {
  params: readonly ValType[];
  results: readonly ValType[];
}

/** `(i64, i32) -> i32`; `() -> ()` for neither. */
export function formatSignature(signature: Signature): string {
  const results = signature.results.length === 1 ? signature.results[0] : `(${signature.results.join(', ')})`;
  return `(${signature.params.join(', ')}) -> ${results}`;
}

/** `sig('i64 i32', 'i32')`: parameter and result types, space-separated. */
export function sig(params: string, results: string): Signature {
  const list = (text: string) => text.split(' ').filter((t) => t !== '') as ValType[];
  return { params: list(params), results: list(results) };
}

export function sameSignature(a: Signature, b: Signature): boolean {
  return a.params.join() === b.params.join() && a.results.join() === b.results.join();
}
