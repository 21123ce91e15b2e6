// A manifest's linked modules, instantiated together for one call, as @extism/extism links them
// (foreground-plugin.ts, instantiateModule): from the main module, depth first in import order, each
// module named by an import is instantiated on first need and its export satisfies the import; a
// function imported from a module still being instantiated (a cycle) goes through a trampoline that
// finds the export on its first call. Only modules reachable from the main one are instantiated.
// Every module has its own memory (the engine creates it: compile/wasm-rewrite.ts), unless it imports
// one from a linked module (a shared memory), and its own WASI when it imports WASI.
//
// Isolation: every module of a call starts fresh (instantiated and started for that call, thrown away
// after it), so nothing one call does is seen by the next.
// Memory cap: the call's memoryMaxPages counts every module's memory together. No memory can grow past
// the cap alone (its maximum); before the call each module's grow shim may grow its memory by what the
// others leave, and after it the total is checked again (two modules growing at once can pass the cap
// for the length of the call, by at most the cap per module; the call then fails with MEMORY_LIMIT).
import { CallFailure } from './call-failure.ts';
import { DirtyPageMap } from './dirty-pages.ts';
import { createExtismEnv, EXTISM_ENV, type CallState, type HostSlot } from './host-env.ts';
import type { ModuleShape } from './instance.ts';
import { startModule, startupState } from './startup.ts';
import { createWasi, WASI_PREVIEW1 } from './wasi.ts';
import { DIRTY_MAP_IMPORT, HOST_MODULE, MEMORY_IMPORT } from '../compile/wasm-rewrite.ts';

const PAGE = 65536;
/** The name the main module is linked by (compile/link-check.ts MAIN_MODULE_NAME). */
const MAIN = 'main';

export interface LinkedModuleShape {
  /** The stored module's id. */
  id: string;
  /** The name other modules import it by (null: none can). */
  name: string | null;
  shape: ModuleShape;
}

/** What a worker keeps for a linked manifest: its modules, the main one at `main`. */
export interface LinkedShapes {
  modules: LinkedModuleShape[];
  main: number;
}

interface Member {
  shape: ModuleShape;
  instance: WebAssembly.Instance;
  memory: WebAssembly.Memory;
}

/** One call's instances of a linked manifest (see above). Used once, then dropped. */
export class LinkedPlugin {
  /** The main module's. */
  readonly shape: ModuleShape;
  readonly #set: LinkedShapes;
  readonly #byName = new Map<string, number>();
  readonly #slot: HostSlot = { call: null };
  /** The modules instantiated so far; null while one is being instantiated (its imports are resolving). */
  readonly #linked = new Map<number, Member | null>();
  readonly #env: WebAssembly.ModuleImports;
  /** Marks of every module's writes: never read (nothing is restored), but every rewritten module imports one. */
  readonly #dirty = new DirtyPageMap();
  readonly #cap: number;
  readonly #exports = new Map<string, () => number | Promise<number>>();

  /**
   * Instantiates and starts every module reachable from the main one. `capPages`: the call's
   * memoryMaxPages, over all modules' memories.
   */
  constructor(set: LinkedShapes, capPages: number) {
    this.#set = set;
    this.shape = set.modules[set.main]!.shape;
    this.#cap = capPages;
    set.modules.forEach((m, i) => {
      const name = i === set.main ? MAIN : m.name;
      if (name !== null) this.#byName.set(name, i);
    });
    // One host environment for all (the SDK shares its call context between modules): with JSPI when any module does HTTP.
    const jspi = set.modules.some((m) => m.shape.jspi);
    this.#env = createExtismEnv(this.#slot, jspi) as WebAssembly.ModuleImports;
    this.#slot.call = startupState();
    try {
      this.#instantiate(set.main, [MAIN]);
    } finally {
      this.#slot.call = null;
    }
    const main = this.#linked.get(set.main)!.instance;
    const promising = (WebAssembly as unknown as { promising?: (f: unknown) => () => Promise<number> }).promising;
    for (const [name, value] of Object.entries(main.exports)) {
      if (typeof value === 'function') this.#exports.set(name, jspi && promising ? promising(value) : (value as () => number));
    }
  }

  #nameOf(index: number): string {
    return index === this.#set.main ? MAIN : (this.#set.modules[index]!.name ?? `wasm[${index}]`);
  }

  /** The instance of module `index`, instantiated now if it is not yet; null while it is being instantiated. */
  #provider(index: number, path: string[]): Member | null {
    if (!this.#linked.has(index)) this.#instantiate(index, [...path, this.#nameOf(index)]);
    return this.#linked.get(index) ?? null;
  }

  #instantiate(index: number, path: string[]): Member {
    const { shape } = this.#set.modules[index]!;
    this.#linked.set(index, null);
    const from = `from module "${path.join('"/"')}"`;
    const imports: Record<string, Record<string, unknown>> = {};
    const add = (module: string, name: string, value: unknown) => ((imports[module] ??= {})[name] = value);

    // The memory: a linked module's (shared), else its own.
    let memory: WebAssembly.Memory;
    const shared = shape.importedMemory;
    if (shared) {
      const providerIndex = this.#byName.get(shared.module);
      const provider = providerIndex === undefined ? null : this.#provider(providerIndex, path);
      const exported = provider?.instance.exports[shared.name];
      if (!(exported instanceof WebAssembly.Memory)) {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot import "${shared.module}" "${shared.name}"; no memory is exported by that name (or it is in an import cycle)`,
        );
      }
      memory = exported;
    } else {
      const maximum = Math.min(this.#cap, shape.declaredMaxPages ?? this.#cap);
      if (shape.initialPages > maximum) throw this.#tooSmall(shape.initialPages);
      memory = new WebAssembly.Memory({ initial: shape.initialPages, maximum });
    }
    add(HOST_MODULE, MEMORY_IMPORT, memory);
    if (shape.dirtyTracking) add(HOST_MODULE, DIRTY_MAP_IMPORT, this.#dirty.memory);

    for (const i of WebAssembly.Module.imports(shape.module)) {
      if (i.module === HOST_MODULE) continue;
      if (i.module === EXTISM_ENV) {
        add(i.module, i.name, this.#env[i.name]);
        continue;
      }
      if (i.module === WASI_PREVIEW1) {
        imports[WASI_PREVIEW1] ??= createWasi(this.#slot, memory, () => {});
        continue;
      }
      const providerIndex = this.#byName.get(i.module);
      if (providerIndex === undefined) {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot resolve import "${i.module}" "${i.name}": not provided by host imports nor linked manifest items`,
        );
      }
      const provider = this.#provider(providerIndex, path);
      if (provider) add(i.module, i.name, provider.instance.exports[i.name]);
      else if (i.kind === 'function') add(i.module, i.name, this.#trampoline(providerIndex, i.name, path));
      else {
        throw new CallFailure(
          'PLUGIN_ERROR',
          `${from}: cannot import "${i.module}" "${i.name}"; circular imports of type="${i.kind}" are not supported`,
        );
      }
    }

    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(shape.module, imports as WebAssembly.Imports);
    } catch (err) {
      const failure = this.#slot.call?.failure;
      if (failure instanceof CallFailure) throw new CallFailure(failure.code, `the plugin failed to start: ${failure.message}`);
      if (err instanceof CallFailure) throw err;
      throw new CallFailure('PLUGIN_ERROR', `the plugin failed to instantiate: ${from}: ${(err as Error).message}`);
    }
    const global = (name: string | null) => (name ? (instance.exports[name] as WebAssembly.Global) : null);
    // A shared memory may have grown before this module came: its grow shim starts from the memory's size.
    if (shared) {
      const pages = global(shape.memoryPagesExport);
      if (pages) pages.value = memory.buffer.byteLength / PAGE;
    }
    const cap = global(shape.memoryCapExport);
    if (cap) cap.value = this.#cap;
    startModule(instance, shape.wasi, this.#slot);
    const member = { shape, instance, memory };
    this.#linked.set(index, member);
    return member;
  }

  /** A function of a module still being instantiated: looked up on its first call, as the SDK does. */
  #trampoline(index: number, name: string, path: string[]): (...args: unknown[]) => unknown {
    let target: ((...args: unknown[]) => unknown) | null = null;
    return (...args: unknown[]) => {
      if (!target) {
        const member = this.#linked.get(index);
        if (!member) {
          throw new CallFailure(
            'PLUGIN_ERROR',
            `from module instance "${path.join('"/"')}": target module "${this.#nameOf(index)}" was never instantiated`,
          );
        }
        target = member.instance.exports[name] as (...args: unknown[]) => unknown;
      }
      return target(...args);
    };
  }

  #tooSmall(pages: number): CallFailure {
    return new CallFailure(
      'MEMORY_LIMIT',
      `the plugin's modules need ${pages} pages of memory to start; the limit is ${this.#cap} pages (memoryMaxPages)`,
    );
  }

  /** The distinct memories of the instantiated modules (a shared one once). */
  #memories(): Member[] {
    const seen = new Set<WebAssembly.Memory>();
    const out: Member[] = [];
    for (const member of this.#linked.values()) {
      if (member && !seen.has(member.memory)) {
        seen.add(member.memory);
        out.push(member);
      }
    }
    return out;
  }

  hasFunction(name: string): boolean {
    return this.#exports.has(name);
  }

  /** Runs one export of the main module; every module's memory together stays within `callCap`. */
  async run(name: string, call: CallState): Promise<number> {
    const fn = this.#exports.get(name);
    if (!fn) throw new CallFailure('FUNCTION_NOT_FOUND', `the plugin has no function "${name}"`);
    const total = this.memoryPages();
    if (total > this.#cap) throw this.#tooSmall(total);
    // Each grow shim may grow its memory by what all of them leave.
    for (const member of this.#linked.values()) {
      const cap = member?.shape.memoryCapExport
        ? (member.instance.exports[member.shape.memoryCapExport] as WebAssembly.Global)
        : null;
      if (cap && member) cap.value = member.memory.buffer.byteLength / PAGE + (this.#cap - total);
    }
    this.#slot.call = call;
    try {
      const rc: unknown = await fn();
      const after = this.memoryPages();
      if (after > this.#cap) {
        throw new CallFailure(
          'MEMORY_LIMIT',
          `the plugin ran out of memory: its modules' memories grew to ${after} pages together; the limit is ${this.#cap} pages (memoryMaxPages)`,
        );
      }
      return typeof rc === 'number' ? rc : 0;
    } finally {
      this.#slot.call = null;
    }
  }

  get callCap(): number {
    return this.#cap;
  }

  /** Pages of all modules' memories together. */
  memoryPages(): number {
    return this.#memories().reduce((n, m) => n + m.memory.buffer.byteLength / PAGE, 0);
  }

  /** A grow shim of any module refused a memory.grow during this call. */
  growRefused(): boolean {
    for (const member of this.#linked.values()) {
      const name = member?.shape.growRefusedExport;
      if (name && (member.instance.exports[name] as WebAssembly.Global).value === 1) return true;
    }
    return false;
  }
}
