// A manifest's modules, linked as @extism/extism links them (its foreground-plugin.ts): the main
// module is instantiated first, and each import of a module name of the manifest is satisfied by
// that module's export (instantiated on first need, depth first, in import order); a function import
// from a module still being instantiated (a cycle) goes through a lazy trampoline; any other kind of
// import in a cycle cannot be satisfied. Checked at upload, so a manifest that could not link is
// refused there, naming the import, rather than failing on every call.
import { AppError } from '../../errors.ts';
import { formatSignature } from '../runtime/signatures.ts';
import { isHostImport, SIZE_NAMES, type ModuleSize } from './module-check.ts';
import type { ExternalType, ImportSummary, ModuleInterface } from './wasm-summary.ts';

/** The name the main module is linked by, whatever the manifest calls it (as the SDK does). */
export const MAIN_MODULE_NAME = 'main';

export interface LinkedModule {
  /** The name other modules import it by (the main module's is MAIN_MODULE_NAME), or null. */
  name: string | null;
  interface: ModuleInterface;
}

function linkError(importer: string, i: ImportSummary, reason: string): AppError {
  return new AppError('LINK_ERROR', `module "${importer}" imports ${i.kind} "${i.module}" "${i.name}": ${reason}`, {
    details: { importer, import: { module: i.module, name: i.name, kind: i.kind }, reason },
  });
}

function describe(type: ExternalType): string {
  switch (type.kind) {
    case 'function':
      return type.signature ? formatSignature(type.signature) : 'a function type with reference or vector types';
    case 'memory':
    case 'table':
      return `${type.kind === 'table' ? `a table of ${type.element} ` : ''}{min ${type.min}${type.max === null ? '' : `, max ${type.max}`}}`;
    case 'global':
      return `${type.mutable ? 'mutable ' : ''}global ${type.value}`;
    default:
      return type.kind;
  }
}

/** Why an export of `given` type cannot satisfy an import of `wanted` type, or null when it can (Wasm's import matching). */
function mismatch(wanted: ExternalType, given: ExternalType): string | null {
  const limitsFit = (w: { min: number; max: number | null }, g: { min: number; max: number | null }) =>
    g.min >= w.min && (w.max === null || (g.max !== null && g.max <= w.max));
  let fits: boolean;
  if (wanted.kind === 'function' && given.kind === 'function') fits = wanted.type === given.type;
  else if (wanted.kind === 'memory' && given.kind === 'memory') fits = limitsFit(wanted, given);
  else if (wanted.kind === 'table' && given.kind === 'table') fits = wanted.element === given.element && limitsFit(wanted, given);
  else if (wanted.kind === 'global' && given.kind === 'global')
    fits = wanted.value === given.value && wanted.mutable === given.mutable;
  else fits = false;
  return fits ? null : `it is declared as ${describe(wanted)}, the module exports ${describe(given)}`;
}

/**
 * Throws LINK_ERROR for the first import of any module that no host module and no module of the
 * manifest satisfies (or satisfies with another type), and for a non-function import caught in a
 * cycle. `main`: the index of the main module.
 */
export function checkLinks(modules: readonly LinkedModule[], main: number): void {
  const byName = new Map<string, number>();
  modules.forEach((m, i) => {
    const name = i === main ? MAIN_MODULE_NAME : m.name;
    if (name !== null) byName.set(name, i);
  });
  const nameOf = (i: number) => (i === main ? MAIN_MODULE_NAME : (modules[i]!.name ?? `wasm[${i}]`));
  for (const [index, module] of modules.entries()) {
    for (const i of module.interface.imports) {
      if (isHostImport(i)) continue;
      const provider = byName.get(i.module);
      if (provider === undefined) {
        const names = [...byName.keys()].map((n) => `"${n}"`).join(', ');
        throw linkError(
          nameOf(index),
          i,
          `no module of the manifest is named "${i.module}" (names: ${names}) and it is not a host module`,
        );
      }
      const exported = modules[provider]!.interface.exports.find((e) => e.name === i.name && e.kind === i.kind);
      if (!exported) throw linkError(nameOf(index), i, `module "${i.module}" exports no ${i.kind} "${i.name}"`);
      const why = mismatch(i.type, exported.type);
      if (why !== null) throw linkError(nameOf(index), i, why);
    }
  }
  // Instantiation order as the SDK walks it: only a function may be imported from a module still being instantiated.
  const state = new Map<number, 'linking' | 'done'>();
  const visit = (index: number) => {
    state.set(index, 'linking');
    for (const i of modules[index]!.interface.imports) {
      const provider = isHostImport(i) ? undefined : byName.get(i.module);
      if (provider === undefined) continue;
      const s = state.get(provider);
      if (s === undefined) visit(provider);
      else if (s === 'linking' && i.kind !== 'function') {
        throw linkError(
          nameOf(index),
          i,
          `module "${i.module}" is still being instantiated (an import cycle): only functions may be imported in a cycle`,
        );
      }
    }
    state.set(index, 'done');
  };
  visit(main);
}

/**
 * Throws INVALID_WASM when the modules together pass a module limit (each one was checked alone).
 * `limits`: what a manifest's modules may hold together, the module limits counted over all of them.
 */
export function checkTotals(sizes: readonly ModuleSize[], limits: ModuleSize): void {
  // Each instance's share of a worker's heap is bounded by the module limits; a set's, by their totals.
  for (const key of Object.keys(SIZE_NAMES) as (keyof ModuleSize)[]) {
    const total = sizes.reduce((n, s) => n + s[key], 0);
    if (total > limits[key]) {
      const { what, env } = SIZE_NAMES[key];
      throw new AppError(
        'INVALID_WASM',
        `the manifest's modules together have ${total} ${what}; the limit is ${limits[key]} (${env})`,
        {
          details: { limit: env, value: total, max: limits[key] },
        },
      );
    }
  }
}
