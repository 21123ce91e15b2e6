// Just enough of the WebAssembly binary format to read and re-emit sections (LEB128, names,
// limits, value types, constant expressions). Anything unexpected throws WasmRewriteError.

export class WasmRewriteError extends Error {
  override name = 'WasmRewriteError';
}

export class Reader {
  pos: number;
  readonly bytes: Uint8Array;
  readonly end: number;
  constructor(bytes: Uint8Array, start: number, end: number) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }
  byte(): number {
    if (this.pos >= this.end) throw new WasmRewriteError('unexpected end of section');
    return this.bytes[this.pos++] as number;
  }
  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 35) throw new WasmRewriteError('LEB128 integer too long');
    }
    return result;
  }
  /** Skips a LEB128 (signed or unsigned) of any width. */
  skipLeb(): void {
    while (this.byte() & 0x80);
  }
  skip(n: number): void {
    if (this.pos + n > this.end) throw new WasmRewriteError('unexpected end of section');
    this.pos += n;
  }
  skipName(): void {
    this.skip(this.u32());
  }
}

export function leb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

/** Signed LEB128 of an integer (any safe integer, so i32 and i64 immediates alike). */
export function sleb(value: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = value & 0x7f;
    // Division rather than >>, which would cut the value to 32 bits.
    value = Math.floor(value / 128);
    if ((value === 0 && (b & 0x40) === 0) || (value === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

// ignoreBOM: a leading U+FEFF is part of the name, as V8 reads it (a decoder drops it by default).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A name (length-prefixed UTF-8). */
export function readName(r: Reader): string {
  const length = r.u32();
  const start = r.pos;
  r.skip(length);
  try {
    return utf8.decode(r.bytes.subarray(start, start + length));
  } catch {
    throw new WasmRewriteError('a name is not valid UTF-8');
  }
}

export function nameBytes(text: string): number[] {
  const encoded = new TextEncoder().encode(text);
  return [...leb(encoded.length), ...encoded];
}

export function concat(parts: (Uint8Array | number[])[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** A vector section's entry count, the bytes of its entries and a reader at the first (an absent section has none). */
export function vector(bytes: Uint8Array, s: RawSection | undefined): { count: number; entries: Uint8Array; reader: Reader } {
  if (!s) return { count: 0, entries: new Uint8Array(0), reader: new Reader(new Uint8Array(0), 0, 0) };
  const reader = new Reader(bytes, s.start, s.end);
  const count = reader.u32();
  return { count, entries: bytes.subarray(reader.pos, s.end), reader };
}

export function section(id: number, body: Uint8Array | number[]): Uint8Array {
  return concat([[id, ...leb(body.length)], body]);
}

/** Memory or table limits: [min, max | null]. Shared and 64-bit memories are refused. */
export function readLimits(r: Reader): [number, number | null] {
  const flags = r.byte();
  if (flags > 0x01) {
    throw new WasmRewriteError(`unsupported memory/table limits (flags 0x${flags.toString(16)}: shared or 64-bit)`);
  }
  const min = r.u32();
  const max = flags & 1 ? r.u32() : null;
  return [min, max];
}

export function skipValType(r: Reader): void {
  const t = r.byte();
  // (ref null? ht) carries a heap type.
  if (t === 0x63 || t === 0x64) r.skipLeb();
}

/** Skips a constant expression up to and including its `end`. */
export function skipConstExpr(r: Reader): void {
  for (;;) {
    const op = r.byte();
    switch (op) {
      case 0x0b:
        return; // end
      case 0x41:
      case 0x42:
        r.skipLeb();
        break; // i32.const, i64.const
      case 0x43:
        r.skip(4);
        break; // f32.const
      case 0x44:
        r.skip(8);
        break; // f64.const
      case 0x23:
        r.u32();
        break; // global.get
      case 0xd0:
        r.skipLeb();
        break; // ref.null ht
      case 0xd2:
        r.u32();
        break; // ref.func
      case 0x6a:
      case 0x6b:
      case 0x6c:
      case 0x7c:
      case 0x7d:
      case 0x7e:
        break; // extended-const arithmetic
      case 0xfd: {
        // v128.const
        if (r.u32() !== 12) throw new WasmRewriteError('unsupported SIMD instruction in a constant expression');
        r.skip(16);
        break;
      }
      default:
        throw new WasmRewriteError(`unsupported instruction 0x${op.toString(16)} in a constant expression`);
    }
  }
}

/** Section ids of the binary format. */
export const SECTION = {
  custom: 0,
  type: 1,
  import: 2,
  function: 3,
  table: 4,
  memory: 5,
  global: 6,
  export: 7,
  elem: 9,
  code: 10,
  data: 11,
  tag: 13,
} as const;

/** Reads one element segment: whether it is passive (usable by table.init), and its entry count. */
export function readElementSegment(r: Reader): { passive: boolean; entries: number } {
  const flags = r.u32();
  if (flags > 7) throw new WasmRewriteError(`unknown element segment kind ${flags}`);
  if (flags & 2 && !(flags & 1)) r.u32(); // explicit table index
  if (!(flags & 1)) skipConstExpr(r); // active: offset
  const expressions = (flags & 4) !== 0;
  if (flags & 3) {
    if (expressions)
      skipValType(r); // reference type
    else r.byte(); // element kind
  }
  const entries = r.u32();
  for (let e = 0; e < entries; e++) {
    if (expressions) skipConstExpr(r);
    else r.u32();
  }
  // 3 is declarative: never usable by table.init.
  return { passive: (flags & 3) === 1, entries };
}

export interface RawSection {
  id: number;
  /** Offset of the section id byte. */
  headerStart: number;
  start: number;
  end: number;
}

export function splitSections(bytes: Uint8Array): RawSection[] {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new WasmRewriteError('not a WebAssembly binary (bad magic)');
  }
  if (bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0) {
    throw new WasmRewriteError('unsupported WebAssembly binary version (a component?)');
  }
  const sections: RawSection[] = [];
  const r = new Reader(bytes, 8, bytes.length);
  while (r.pos < bytes.length) {
    const headerStart = r.pos;
    const id = r.byte();
    const size = r.u32();
    const start = r.pos;
    r.skip(size);
    sections.push({ id, headerStart, start, end: r.pos });
  }
  return sections;
}
