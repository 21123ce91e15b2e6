// Text from the service (names, descriptions, plugin logs and output, error messages) on its way to a
// person's terminal: control characters in it could clear the screen, set the window title or rewrite
// what was printed, so they are shown escaped. JSON output and output piped elsewhere stay exact.

/** C0 controls, DEL and C1 controls. */
const isControl = (code: number): boolean => code < 0x20 || (code >= 0x7f && code <= 0x9f);

/** `text` with every control character shown as \xNN; `multiline` keeps newline and tab. */
export function escapeControls(text: string, { multiline = false } = {}): string {
  let shown = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    const kept = !isControl(code) || (multiline && (code === 0x0a || code === 0x09));
    shown += kept ? char : `\\x${code.toString(16).padStart(2, '0')}`;
  }
  return shown;
}
