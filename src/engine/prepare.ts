// Turns a plugin's stored bytes into what workers run: the rewritten module, compiled once.
import { rewriteForEngine, type ModuleLayout } from './wasm-rewrite.ts';

export interface PreparedModule {
  module: WebAssembly.Module;
  layout: ModuleLayout;
  /** Time spent rewriting and compiling, for the compile metric. */
  compileMs: number;
}

/** Throws WasmRewriteError for a module the engine cannot run, or a CompileError. */
export async function prepareModule(bytes: Uint8Array): Promise<PreparedModule> {
  const started = performance.now();
  const { bytes: rewritten, ...layout } = rewriteForEngine(bytes);
  const module = await WebAssembly.compile(rewritten as Uint8Array<ArrayBuffer>);
  return { module, layout, compileMs: performance.now() - started };
}
