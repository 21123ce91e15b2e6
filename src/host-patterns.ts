// The host pattern grammar of egress allow-lists: a call's, a plugin's default and the operator's
// ceiling (EGRESS_ALLOWED_HOSTS, checked by config.ts at start). Parsing only; matching URLs against
// parsed patterns is egress/policy.ts.
import { isIPv4, isIPv6 } from 'node:net';
import { AppError } from './errors.ts';

/**
 * A parsed allow-list entry. Grammar: `[http://|https://]HOST[:PORT]` where HOST is `*` (any host),
 * `*.suffix` (subdomains of suffix, not suffix itself), a host name (exact, case-insensitive), an
 * IPv4 address or a bracketed IPv6 address.
 */
export interface HostPattern {
  /** The pattern as written. */
  source: string;
  scheme: 'http:' | 'https:' | null;
  host: { kind: 'any' } | { kind: 'exact'; name: string } | { kind: 'subdomains'; suffix: string };
  port: number | null;
}

/** A pattern outside the grammar: INVALID_ALLOWED_HOSTS, naming the `pattern` and the `problem`. */
export class InvalidHostPatternError extends AppError {
  override name = 'InvalidHostPatternError';
  readonly pattern: string;
  readonly problem: string;
  constructor(pattern: string, problem: string) {
    super('INVALID_ALLOWED_HOSTS', `invalid host pattern ${JSON.stringify(pattern)}: ${problem}`, {
      details: { pattern, problem },
    });
    this.pattern = pattern;
    this.problem = problem;
  }
}

export const MAX_HOST_PATTERNS = 256;
export const MAX_PATTERN_LENGTH = 300;

const PATTERN_SHAPE = /^(?:(https?):\/\/)?(\*|\*\.[^:/[\]]+|\[[0-9A-Fa-f:.]+\]|[^:/[\]]+)(?::(\d{1,5}))?$/i;
const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;
// Raw characters a host name may be written with (Unicode letters for IDN); keeps `@`, `%`, `\`
// and whitespace away from the URL parser, which would otherwise quietly reinterpret them.
const NAME_CHARS = /^[\p{L}\p{M}\p{N}._-]+$/u;

/** Parses one pattern or throws InvalidHostPatternError saying what is wrong with it. */
export function parseHostPattern(source: string): HostPattern {
  if (typeof source !== 'string') throw new InvalidHostPatternError(String(source), 'must be a string');
  if (source.length === 0) throw new InvalidHostPatternError(source, 'is empty');
  if (source.length > MAX_PATTERN_LENGTH)
    throw new InvalidHostPatternError(source, `is longer than ${MAX_PATTERN_LENGTH} characters`);
  if (source.startsWith('!')) {
    throw new InvalidHostPatternError(source, 'negation is not supported; list the hosts to allow instead');
  }
  const shape = PATTERN_SHAPE.exec(source);
  if (shape === null) {
    throw new InvalidHostPatternError(
      source,
      'expected [http://|https://]HOST[:PORT] where HOST is *, *.domain, a host name or an IP address (no paths, no other wildcards)',
    );
  }
  const [, scheme, hostPart = '', portPart] = shape;

  let port: number | null = null;
  if (portPart !== undefined) {
    port = Number(portPart);
    if (port < 1 || port > 65535) throw new InvalidHostPatternError(source, 'port must be between 1 and 65535');
  }

  let host: HostPattern['host'];
  if (hostPart === '*') {
    host = { kind: 'any' };
  } else if (hostPart.startsWith('*.')) {
    const suffix = canonicalName(source, hostPart.slice(2));
    if (isIPv4(suffix) || suffix.startsWith('['))
      throw new InvalidHostPatternError(source, 'a wildcard needs a domain name, not an IP address');
    host = { kind: 'subdomains', suffix };
  } else {
    host = { kind: 'exact', name: canonicalName(source, hostPart) };
  }
  return { source, scheme: scheme === undefined ? null : (`${scheme.toLowerCase()}:` as 'http:' | 'https:'), host, port };
}

/** The canonical (WHATWG URL) form of a host: lower case, punycode, IPv4 in dotted decimal, IPv6 compressed. */
function canonicalName(source: string, hostPart: string): string {
  if (hostPart.includes('*'))
    throw new InvalidHostPatternError(
      source,
      'a wildcard is only allowed as the whole host (*) or as the first label (*.domain)',
    );
  if (!hostPart.startsWith('[') && !NAME_CHARS.test(hostPart)) {
    throw new InvalidHostPatternError(source, 'a host name may only contain letters, digits, ".", "-" and "_"');
  }
  if (hostPart.endsWith('.')) throw new InvalidHostPatternError(source, 'drop the trailing dot');
  let name: string;
  try {
    name = new URL(`http://${hostPart}/`).hostname;
  } catch {
    throw new InvalidHostPatternError(source, 'not a valid host name or IP address');
  }
  if (name.startsWith('[')) {
    if (!isIPv6(name.slice(1, -1))) throw new InvalidHostPatternError(source, 'not a valid IPv6 address');
    return name;
  }
  if (isIPv4(name)) return name;
  if (name.length > 253 || !name.split('.').every((label) => LABEL.test(label))) {
    throw new InvalidHostPatternError(source, 'not a valid host name');
  }
  return name;
}

/** Validates a whole list (caller, plugin default or operator ceiling); throws on the first bad entry. */
export function validateHostPatterns(patterns: readonly string[]): HostPattern[] {
  if (!Array.isArray(patterns)) throw new InvalidHostPatternError(String(patterns), 'allowedHosts must be an array of strings');
  if (patterns.length > MAX_HOST_PATTERNS) {
    throw new InvalidHostPatternError(`(${patterns.length} patterns)`, `at most ${MAX_HOST_PATTERNS} patterns are allowed`);
  }
  return patterns.map(parseHostPattern);
}
