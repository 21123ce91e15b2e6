// What function-cost.ts counts in a body (the per-function module limits rest on it): control
// instructions, nesting, and assignments inside loops, read from modules written in WAT.
import { describe, expect, it } from 'vitest';
import { functionCost, type FunctionCostLimits } from '../src/engine/compile/function-cost.ts';
import { checkFunctions, ModuleRefusedError } from '../src/engine/compile/module-check.ts';
import { Reader, SECTION, splitSections, vector } from '../src/engine/compile/wasm-binary.ts';
import { summarizeModule } from '../src/engine/compile/wasm-summary.ts';
import { wat } from './helpers.ts';

const UNLIMITED: FunctionCostLimits = { controlDepth: 1e9, localsTimesControl: 1e15, loopAssignments: 1e9 };

/** The cost of the module's first defined function, whose type has `params` parameters. */
function costOf(bytes: Uint8Array, params: number, limits = UNLIMITED) {
  const code = splitSections(bytes).find((s) => s.id === SECTION.code)!;
  const { reader } = vector(bytes, code);
  const size = reader.u32();
  return functionCost(new Reader(bytes, reader.pos, reader.pos + size), params, limits);
}

describe('functionCost', () => {
  it('counts blocks, loops, ifs, else and every branch as control instructions, parameters as locals', async () => {
    const bytes = await wat(`(module (func (param i32 i64) (local f32 f64 i32)
      (block (loop (br_if 1 (local.get 0)) (br 0)))
      (if (local.get 0) (then (nop)) (else (nop)))
      (block (block (br_table 0 1 (local.get 0))))))`);
    // block loop br_if br, if else, block block br_table: 9; depth 2 (the function's own block not counted).
    expect(costOf(bytes, 2)).toEqual({ locals: 5, control: 9, depth: 2, loopAssignments: 0, over: null });
  });

  it('counts calls and throws as control instructions only inside a try (they lead to its handlers)', async () => {
    const bytes = await wat(
      `(module (tag $t) (func $f)
        (func (call $f) (call $f)
          (try (do (call $f) (call $f) (throw $t)) (catch_all))
          (call $f)))`,
      { exceptions: true },
    );
    const code = splitSections(bytes).find((s) => s.id === SECTION.code)!;
    const { reader } = vector(bytes, code);
    reader.skip(reader.u32()); // $f
    const size = reader.u32();
    const cost = functionCost(new Reader(bytes, reader.pos, reader.pos + size), 0, UNLIMITED);
    // try, 2 calls and a throw inside it, catch_all.
    expect(cost).toMatchObject({ control: 5, depth: 1 });
  });

  it('counts each local.set and local.tee once per loop around it', async () => {
    const bytes = await wat(`(module (func (local i32)
      (local.set 0 (i32.const 1))
      (loop (local.set 0 (i32.const 2))
        (block (loop (local.set 0 (local.tee 0 (i32.const 3))))))))`);
    // 0 + 1 + 2 × 2 (the set and the tee inside two loops).
    expect(costOf(bytes, 0)).toMatchObject({ loopAssignments: 5, depth: 3 });
  });

  it('stops at the first limit passed and says which', async () => {
    const bytes = await wat(`(module (func (local i32) (block (block (block (nop))))))`);
    expect(costOf(bytes, 0, { ...UNLIMITED, controlDepth: 2 })).toMatchObject({ depth: 3, over: 'controlDepth' });
    expect(costOf(bytes, 0, { ...UNLIMITED, localsTimesControl: 2 })).toMatchObject({ control: 3, over: 'localsTimesControl' });
    expect(costOf(bytes, 0, { ...UNLIMITED, localsTimesControl: 3 }).over).toBeNull();
  });
});

describe('checkFunctions', () => {
  it('names the function (imports first) and the limit in its refusal', async () => {
    const bytes = await wat(`(module (import "extism:host/env" "input_length" (func (result i64)))
      (func) (func (local i32 i32) (loop (br 0))))`);
    const err = (() => {
      try {
        checkFunctions(bytes, summarizeModule(bytes), { ...UNLIMITED, localsTimesControl: 3 });
      } catch (e) {
        return e;
      }
    })() as ModuleRefusedError;
    expect(err).toBeInstanceOf(ModuleRefusedError);
    expect(err.message).toBe(
      'function 2 has 2 locals and 2 control instructions (blocks, loops, ifs, branches, calls in a try): ' +
        '4 locals × control instructions; the limit is 3 (MODULE_MAX_LOCALS_X_CONTROL)',
    );
    expect(err.details).toEqual({ limit: 'MODULE_MAX_LOCALS_X_CONTROL', value: 4, max: 3, function: 2 });
  });
});
