// A small JSON reader/writer: enough for the test plugins' inputs and HTTP responses,
// without pulling a JSON library into the build.

export const enum JsonKind { Null, Bool, Number, String, Array, Object }

export class JsonValue {
  kind: JsonKind = JsonKind.Null;
  bool: bool = false;
  num: f64 = 0;
  str: string = "";
  items: JsonValue[] = [];
  keys: string[] = [];

  /** The member `key` of an object, or null when absent or not an object. */
  get(key: string): JsonValue | null {
    if (this.kind != JsonKind.Object) return null;
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** The member `key` when it is a string, else null. */
  getString(key: string): string | null {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.String ? v.str : null;
  }

  toJson(): string {
    switch (this.kind) {
      case JsonKind.Bool: return this.bool ? "true" : "false";
      case JsonKind.Number: return Number.isInteger(this.num) ? (<i64>this.num).toString() : this.num.toString();
      case JsonKind.String: return quote(this.str);
      case JsonKind.Array: {
        const parts = new Array<string>();
        for (let i = 0; i < this.items.length; i++) parts.push(this.items[i].toJson());
        return "[" + parts.join(",") + "]";
      }
      case JsonKind.Object: {
        const parts = new Array<string>();
        for (let i = 0; i < this.keys.length; i++) parts.push(quote(this.keys[i]) + ":" + this.items[i].toJson());
        return "{" + parts.join(",") + "}";
      }
      default: return "null";
    }
  }
}

/** Parses `text`; returns null when it is not valid JSON. */
export function parseJson(text: string): JsonValue | null {
  const parser = new Parser(text);
  const value = parser.value();
  if (value === null) return null;
  parser.skipSpace();
  return parser.pos == text.length ? value : null;
}

/** `text` as a JSON string literal. */
export function quote(text: string): string {
  let out = "\"";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c < 0x20) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += String.fromCharCode(c);
  }
  return out + "\"";
}

class Parser {
  pos: i32 = 0;
  constructor(public text: string) {}

  skipSpace(): void {
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      this.pos++;
    }
  }

  value(): JsonValue | null {
    this.skipSpace();
    if (this.pos >= this.text.length) return null;
    const c = this.text.charCodeAt(this.pos);
    const v = new JsonValue();
    if (c == 0x7b) return this.object();
    if (c == 0x5b) return this.array();
    if (c == 0x22) {
      const s = this.string();
      if (s === null) return null;
      v.kind = JsonKind.String;
      v.str = s;
      return v;
    }
    if (this.text.startsWith("true", this.pos)) { this.pos += 4; v.kind = JsonKind.Bool; v.bool = true; return v; }
    if (this.text.startsWith("false", this.pos)) { this.pos += 5; v.kind = JsonKind.Bool; return v; }
    if (this.text.startsWith("null", this.pos)) { this.pos += 4; return v; }
    return this.number();
  }

  number(): JsonValue | null {
    const start = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      const numeric = (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x2b || c == 0x2e || c == 0x65 || c == 0x45;
      if (!numeric) break;
      this.pos++;
    }
    if (this.pos == start) return null;
    const v = new JsonValue();
    v.kind = JsonKind.Number;
    v.num = parseFloat(this.text.substring(start, this.pos));
    return isNaN(v.num) ? null : v;
  }

  string(): string | null {
    this.pos++; // opening quote
    let out = "";
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos++);
      if (c == 0x22) return out;
      if (c != 0x5c) { out += String.fromCharCode(c); continue; }
      if (this.pos >= this.text.length) return null;
      const e = this.text.charCodeAt(this.pos++);
      if (e == 0x6e) out += "\n";
      else if (e == 0x74) out += "\t";
      else if (e == 0x72) out += "\r";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x75) {
        if (this.pos + 4 > this.text.length) return null;
        const code = I32.parseInt(this.text.substring(this.pos, this.pos + 4), 16);
        this.pos += 4;
        out += String.fromCharCode(code);
      } else out += String.fromCharCode(e); // \" \\ \/
    }
    return null;
  }

  array(): JsonValue | null {
    this.pos++;
    const v = new JsonValue();
    v.kind = JsonKind.Array;
    this.skipSpace();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x5d) { this.pos++; return v; }
    while (true) {
      const item = this.value();
      if (item === null) return null;
      v.items.push(item);
      this.skipSpace();
      if (this.pos >= this.text.length) return null;
      const c = this.text.charCodeAt(this.pos++);
      if (c == 0x5d) return v;
      if (c != 0x2c) return null;
    }
  }

  object(): JsonValue | null {
    this.pos++;
    const v = new JsonValue();
    v.kind = JsonKind.Object;
    this.skipSpace();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x7d) { this.pos++; return v; }
    while (true) {
      this.skipSpace();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x22) return null;
      const key = this.string();
      if (key === null) return null;
      this.skipSpace();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos++) != 0x3a) return null;
      const item = this.value();
      if (item === null) return null;
      v.keys.push(key);
      v.items.push(item);
      this.skipSpace();
      if (this.pos >= this.text.length) return null;
      const c = this.text.charCodeAt(this.pos++);
      if (c == 0x7d) return v;
      if (c != 0x2c) return null;
    }
  }
}
