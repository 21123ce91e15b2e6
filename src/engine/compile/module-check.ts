// What a module may declare before the engine builds anything from it: the limits of ModuleLimits
// (a worker's JS heap must hold an instance at every limit; V8 aborts the whole process when a
// worker runs out of heap inside it), no GC types (their objects live on the JS heap, unbounded),
// and only imports the engine provides, with the signatures it provides them with.
import type { Config, ModuleLimits } from '../../config.ts';
import type { ErrorCode } from '../../errors.ts';
import { EXTISM_ENV, EXTISM_ENV_SIGNATURES } from '../runtime/host-env.ts';
import { formatSignature, sameSignature, type Signature } from '../runtime/signatures.ts';
import { WASI_PREVIEW1, WASI_SIGNATURES } from '../runtime/wasi.ts';
import { functionCost, type FunctionCost, type FunctionCostLimits } from './function-cost.ts';
import { Reader, SECTION, splitSections, vector, WasmRewriteError } from './wasm-binary.ts';
import { functionParams, type ImportSummary, type ModuleInterface, type ModuleSummary } from './wasm-summary.ts';

/** What the engine checks a module against: ModuleLimits (the per-function ones too) and the page ceiling of any call. */
export interface ModuleCheckLimits extends ModuleLimits {
  /** CALL_MEMORY_PAGES_CEILING: a module needing more pages to start could never run. */
  memoryPages: number;
}

/** The limits of a service configured with `engine`. */
export function moduleCheckLimits(engine: Pick<Config['engine'], 'moduleLimits' | 'limits'>): ModuleCheckLimits {
  return { ...engine.moduleLimits, memoryPages: engine.limits.memoryPages.ceiling };
}

/** What a module counts against the module limits, which a manifest's modules share (link-check.ts). */
export interface ModuleSize {
  bytes: number;
  functions: number;
  tableElements: number;
  globals: number;
  exports: number;
  interfaceBytes: number;
  tags: number;
  memoryPages: number;
}

/** What each count of a ModuleSize is called in a refusal, and the setting that limits it. */
export const SIZE_NAMES: Readonly<Record<keyof ModuleSize, { what: string; env: string }>> = {
  bytes: { what: 'bytes', env: 'MAX_PLUGIN_BYTES' },
  functions: { what: 'functions', env: 'MODULE_MAX_FUNCTIONS' },
  tableElements: { what: 'table elements to start with', env: 'MODULE_MAX_TABLE_ELEMENTS' },
  globals: { what: 'globals', env: 'MODULE_MAX_GLOBALS' },
  exports: { what: 'exports', env: 'MODULE_MAX_EXPORTS' },
  interfaceBytes: { what: 'bytes of imports and exports (their names)', env: 'MODULE_MAX_INTERFACE_BYTES' },
  tags: { what: 'exception tags', env: 'MODULE_MAX_TAGS' },
  memoryPages: { what: 'pages of memory to start with', env: 'CALL_MEMORY_PAGES_CEILING' },
};

/** What the module of `byteLength` bytes summarized as `summary` counts against the module limits. */
export function moduleSize(summary: ModuleSummary, byteLength: number): ModuleSize {
  return {
    bytes: byteLength,
    functions: summary.importedFunctions + summary.functions,
    tableElements: summary.tables.reduce((n, t) => n + t.min, 0),
    globals: summary.globals,
    exports: summary.exports,
    interfaceBytes: summary.interfaceBytes,
    tags: summary.tags,
    memoryPages: summary.memory?.min ?? 0,
  };
}

/** A refused import, as the error body lists it (`expected`/`actual` for a signature mismatch). */
export interface RefusedImport {
  module: string;
  name: string;
  kind: ImportSummary['kind'];
  expected?: string;
  actual?: string;
}

/** A module the engine will not run, with the code and details its refusal answers with. */
export class ModuleRefusedError extends Error {
  override name = 'ModuleRefusedError';
  readonly code: Extract<ErrorCode, 'INVALID_WASM' | 'UNSUPPORTED_IMPORTS'>;
  readonly details: Record<string, unknown>;
  constructor(code: ModuleRefusedError['code'], message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

function overLimit(what: string, count: number, limit: number, env: string): ModuleRefusedError {
  return new ModuleRefusedError('INVALID_WASM', `the module has ${count} ${what}; the limit is ${limit} (${env})`, {
    limit: env,
    value: count,
    max: limit,
  });
}

/** Throws ModuleRefusedError for the first limit the module (summarized as `summary`, counting `size`) passes. */
export function checkModuleLimits(summary: ModuleSummary, size: ModuleSize, limits: ModuleCheckLimits): void {
  const counted = (key: Exclude<keyof ModuleSize, 'bytes'>): [string, number, number, string] => [
    SIZE_NAMES[key].what,
    size[key],
    limits[key],
    SIZE_NAMES[key].env,
  ];
  const checks: [string, number, number, string][] = [
    counted('functions'),
    ['type definitions', summary.types, limits.types, 'MODULE_MAX_TYPES'],
    counted('globals'),
    counted('exports'),
    counted('interfaceBytes'),
    counted('tableElements'),
    ['element segment entries', summary.elementEntries, limits.tableElements, SIZE_NAMES.tableElements.env],
    counted('tags'),
  ];
  for (const [what, count, limit, env] of checks) if (count > limit) throw overLimit(what, count, limit, env);
  if (summary.gcTypes > 0) {
    throw new ModuleRefusedError(
      'INVALID_WASM',
      `the module defines ${summary.gcTypes} struct or array types (Wasm GC): their objects would live on the ` +
        `engine's JS heap, which a plugin must not be able to fill; GC types are not supported`,
    );
  }
  const [what, pages, limit, env] = counted('memoryPages');
  if (pages > limit) throw overLimit(what, pages, limit, env);
  const opaque = summary.opaqueGlobal;
  if (opaque) {
    throw new ModuleRefusedError(
      'INVALID_WASM',
      `global ${opaque.index} is a mutable ${opaque.type}: the engine restores mutable globals after every call ` +
        `through JavaScript, which cannot read or write a ${opaque.type}; such globals are not supported`,
    );
  }
}

/** What a refusal says for each per-function limit, after "function N". */
const FUNCTION_LIMITS: Readonly<
  Record<keyof FunctionCostLimits, { env: string; says: (c: FunctionCost, max: number) => string }>
> = {
  controlDepth: {
    env: 'MODULE_MAX_CONTROL_DEPTH',
    says: (_, max) => `nests blocks, loops, ifs and trys more than ${max} deep`,
  },
  localsTimesControl: {
    env: 'MODULE_MAX_LOCALS_X_CONTROL',
    says: (c) =>
      `has ${c.locals} locals and ${c.control} control instructions (blocks, loops, ifs, branches, calls in a try): ` +
      `${c.locals * c.control} locals × control instructions`,
  },
  loopAssignments: {
    env: 'MODULE_MAX_LOOP_ASSIGNMENTS',
    says: (_, max) =>
      `assigns locals inside loops more than ${max} times (each local.set or local.tee counted once per loop around it)`,
  },
};

const functionValue = (key: keyof FunctionCostLimits, cost: FunctionCost): number =>
  key === 'controlDepth' ? cost.depth : key === 'loopAssignments' ? cost.loopAssignments : cost.locals * cost.control;

/**
 * Throws ModuleRefusedError for the first function whose body passes a per-function limit (what V8's
 * compilers would spend on it: function-cost.ts), or WasmRewriteError for a body with an instruction
 * the walk does not know. Run after checkModuleLimits, before V8 sees the module.
 */
export function checkFunctions(bytes: Uint8Array, summary: ModuleSummary, limits: FunctionCostLimits): void {
  const code = splitSections(bytes).find((s) => s.id === SECTION.code);
  if (!code) return;
  const params = functionParams(bytes);
  const { count, reader: r } = vector(bytes, code);
  for (let i = 0; i < count; i++) {
    const size = r.u32();
    const start = r.pos;
    r.skip(size);
    const index = summary.importedFunctions + i;
    let cost: FunctionCost;
    try {
      cost = functionCost(new Reader(bytes, start, start + size), Math.max(0, params[i] ?? 0), limits);
    } catch (err) {
      throw err instanceof WasmRewriteError ? new WasmRewriteError(`function ${index}: ${err.message}`) : err;
    }
    if (!cost.over) continue;
    const { env, says } = FUNCTION_LIMITS[cost.over];
    const max = limits[cost.over];
    throw new ModuleRefusedError('INVALID_WASM', `function ${index} ${says(cost, max)}; the limit is ${max} (${env})`, {
      limit: env,
      value: functionValue(cost.over, cost),
      max,
      function: index,
    });
  }
}

/** Where the Extism SDKs put the host functions an embedding registers itself. */
const EXTISM_USER = 'extism:host/user';

const PROVIDED: Readonly<Record<string, ReadonlyMap<string, Signature>>> = {
  [EXTISM_ENV]: EXTISM_ENV_SIGNATURES,
  [WASI_PREVIEW1]: WASI_SIGNATURES,
};

/** True for an import of a host module the engine provides (everything else comes from a linked module or nowhere). */
export function isHostImport(i: Pick<ImportSummary, 'module'>): boolean {
  return PROVIDED[i.module] !== undefined;
}

/**
 * Throws UNSUPPORTED_IMPORTS listing every import the engine does not provide: not a function, an
 * unknown module or name, or a function declared with another signature than the engine's.
 * `linking`: the module is one of a manifest's; imports from other module names are left to the
 * manifest's link check (link-check.ts).
 */
export function checkImports(iface: ModuleInterface, linking = false): void {
  const refused: RefusedImport[] = [];
  for (const i of iface.imports) {
    if (linking && !isHostImport(i)) continue;
    const expected = PROVIDED[i.module]?.get(i.name);
    if (i.kind !== 'function' || !expected) {
      refused.push({ module: i.module, name: i.name, kind: i.kind });
    } else if (!i.signature || !sameSignature(i.signature, expected)) {
      const actual = i.signature ? formatSignature(i.signature) : 'a signature with reference or vector types';
      refused.push({ module: i.module, name: i.name, kind: i.kind, expected: formatSignature(expected), actual });
    }
  }
  if (refused.length === 0) return;
  const listed = refused.map((r) =>
    r.expected
      ? `${r.module}.${r.name} declared as ${r.actual}, provided as ${r.expected}`
      : `${r.module}.${r.name}${r.kind === 'function' ? '' : ` (${r.kind})`}`,
  );
  // A plugin built for a host that registers its own functions (`extism:host/user`, or any namespace)
  // needs them to do its job: say so, rather than let it look like a broken module.
  const custom = refused.some((r) => r.kind === 'function' && !PROVIDED[r.module]);
  throw new ModuleRefusedError(
    'UNSUPPORTED_IMPORTS',
    `the module imports what this service does not provide: ${listed.slice(0, 20).join(', ')}` +
      `${listed.length > 20 ? `, and ${listed.length - 20} more` : ''} ` +
      `(available: functions of "${EXTISM_ENV}" and "${WASI_PREVIEW1}" with their signatures` +
      `${custom ? `; custom host functions (${EXTISM_USER} or any other namespace) are not offered` : ''})`,
    { unsupportedImports: refused.slice(0, 100) },
  );
}
