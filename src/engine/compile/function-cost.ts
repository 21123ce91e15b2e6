// What V8's compilers will spend on each function body, read before V8 sees the module. Their memory
// and time grow with a function's shape more than with its size (measured on Node 24, 49,000 locals):
// - Liftoff (every function, at upload) and TurboFan (a hot function, in a worker) keep a copy of
//   every local at each block, loop, if and branch, and TurboFan at each call or throw inside a try:
//   1,000 loops or blocks in a 3 KB function took 0.6-0.8 GB and seconds (~12-23 bytes per local per
//   such instruction); 10,000 branches to one block aborted the process (V8's zone out of memory).
// - TurboFan makes a phi at a loop's header for each local assigned inside the loop: a local assigned
//   in the innermost of 250 nested loops costs 250 of them (~150 bytes each: +2 GB for 49,000 locals).
//   Bounded by counting each local.set/local.tee once per loop around it.
// - Nesting alone: 1,000,000 nested blocks (3 MB) took V8's validation 0.24 GB, Liftoff 0.9 GB.
// Every instruction is decoded (wasm-instructions.ts): one it does not know refuses the module, since
// skipping it could hide a block or a branch.
import { skipValType, type Reader } from './wasm-binary.ts';
import { InstructionReader, PREFIX_GC } from './wasm-instructions.ts';

export interface FunctionCostLimits {
  /** Blocks, loops, ifs and trys open at once (MODULE_MAX_CONTROL_DEPTH). */
  controlDepth: number;
  /** Locals (parameters included) times control instructions (MODULE_MAX_LOCALS_X_CONTROL). */
  localsTimesControl: number;
  /** Assignments of locals (local.set, local.tee) inside loops, each counted once per loop around it (MODULE_MAX_LOOP_ASSIGNMENTS). */
  loopAssignments: number;
}

/** One function's measures; `over` names the first limit it passes (the walk stops there). */
export interface FunctionCost {
  locals: number;
  /** Control instructions: see isControl. */
  control: number;
  /** The deepest nesting of blocks, loops, ifs and trys (the function's own block not counted). */
  depth: number;
  loopAssignments: number;
  over: keyof FunctionCostLimits | null;
}

const BLOCK = 0x02;
const LOOP = 0x03;
const IF = 0x04;
const TRY = 0x06;
const TRY_TABLE = 0x1f;
const END = 0x0b;
const DELEGATE = 0x18;
const LOCAL_SET = 0x21;
const LOCAL_TEE = 0x22;

/** Instructions at which the compilers keep or merge a copy of the locals (without a prefix). */
const CONTROL = new Set([
  BLOCK, LOOP, IF, 0x05, TRY, 0x07, DELEGATE, 0x19, TRY_TABLE, // else catch delegate catch_all
  0x0c, 0x0d, 0x0e, 0xd5, 0xd6, // br br_if br_table br_on_null br_on_non_null
]); // prettier-ignore
/** Inside a try, these also lead to its handlers. */
const TO_HANDLER = new Set([0x10, 0x11, 0x14, 0x08, 0x09, 0x0a]); // call call_indirect call_ref throw rethrow throw_ref

function isControl(op: number, sub: number, inTry: boolean): boolean {
  if (op === PREFIX_GC) return sub === 24 || sub === 25; // br_on_cast br_on_cast_fail
  return CONTROL.has(op) || (inTry && TO_HANDLER.has(op));
}

/**
 * Measures one function body (without its size prefix) with `params` parameters, stopping at the
 * first limit passed. Throws WasmRewriteError for a body it cannot decode.
 */
export function functionCost(body: Reader, params: number, limits: FunctionCostLimits): FunctionCost {
  let locals = params;
  for (let groups = body.u32(), i = 0; i < groups; i++) {
    locals += body.u32();
    skipValType(body);
  }
  const cost: FunctionCost = { locals, control: 0, depth: 0, loopAssignments: 0, over: null };
  // The opcodes of the open blocks; how many of them are loops, and trys.
  const open: number[] = [];
  let loops = 0;
  let tries = 0;
  const code = new InstructionReader(body, locals);
  while (code.more) {
    code.next();
    const { op, sub } = code;
    if (isControl(op, sub, tries > 0)) cost.control++;
    if (sub !== -1) continue;
    if (op === BLOCK || op === LOOP || op === IF || op === TRY || op === TRY_TABLE) {
      open.push(op);
      if (op === LOOP) loops++;
      else if (op === TRY || op === TRY_TABLE) tries++;
      if (open.length > cost.depth && (cost.depth = open.length) > limits.controlDepth) return { ...cost, over: 'controlDepth' };
    } else if (op === LOCAL_SET || op === LOCAL_TEE) {
      // A bound on TurboFan's loop phis (it makes one per distinct local a loop assigns), O(1) to keep.
      cost.loopAssignments += loops;
      if (cost.loopAssignments > limits.loopAssignments) return { ...cost, over: 'loopAssignments' };
    } else if ((op === END || op === DELEGATE) && open.length > 0) {
      const closed = open.pop();
      if (closed === LOOP) loops--;
      else if (closed === TRY || closed === TRY_TABLE) tries--;
    }
  }
  if (cost.locals * cost.control > limits.localsTimesControl) cost.over = 'localsTimesControl';
  return cost;
}
