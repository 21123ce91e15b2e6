// Editable key = value rows (config), kept as a list so a half-typed row is not lost.
export interface Row {
  key: string;
  value: string;
}

export function rowsToRecord(rows: Row[]): Record<string, string> {
  return Object.fromEntries(rows.filter((row) => row.key.trim() !== '').map((row) => [row.key.trim(), row.value]));
}

/** Host patterns typed one per line or separated by commas. */
export function parseHosts(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((host) => host.trim())
    .filter((host) => host !== '');
}

export function KeyValueRows({ label, rows, onChange }: { label: string; rows: Row[]; onChange: (rows: Row[]) => void }) {
  const set = (index: number, patch: Partial<Row>) => onChange(rows.map((row, i) => (i === index ? { ...row, ...patch } : row)));
  return (
    <fieldset class="rows">
      <legend>{label}</legend>
      {rows.map((row, i) => (
        <div class="row" key={i}>
          <input
            aria-label={`${label} key ${i + 1}`}
            placeholder="key"
            value={row.key}
            onInput={(e) => set(i, { key: e.currentTarget.value })}
          />
          <span>=</span>
          <input
            aria-label={`${label} value ${i + 1}`}
            placeholder="value"
            value={row.value}
            onInput={(e) => set(i, { value: e.currentTarget.value })}
          />
          <button type="button" class="icon" title="remove" onClick={() => onChange(rows.filter((_, j) => j !== i))}>
            ×
          </button>
        </div>
      ))}
      <button type="button" class="link" onClick={() => onChange([...rows, { key: '', value: '' }])}>
        + add {label.toLowerCase()} row
      </button>
    </fieldset>
  );
}
