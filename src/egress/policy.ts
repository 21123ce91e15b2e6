// What a plugin may reach: host patterns (parse, validate, match) and address classification.
// Pure functions, no I/O: the fetch in ./fetch.ts applies them to every request and redirect hop.
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { AppError } from '../errors.ts';

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

/** A pattern outside the grammar; the API answers 400 INVALID_ALLOWED_HOSTS with `pattern` and `problem`. */
export class InvalidHostPatternError extends Error {
  override name = 'InvalidHostPatternError';
  readonly pattern: string;
  readonly problem: string;
  constructor(pattern: string, problem: string) {
    super(`invalid host pattern ${JSON.stringify(pattern)}: ${problem}`);
    this.pattern = pattern;
    this.problem = problem;
  }
}

export const MAX_HOST_PATTERNS = 256;
const MAX_PATTERN_LENGTH = 300;

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

/** The API's answer to a pattern outside the grammar: 400 INVALID_ALLOWED_HOSTS naming the pattern and the problem. */
export function invalidAllowedHosts(err: InvalidHostPatternError): AppError {
  return new AppError('INVALID_ALLOWED_HOSTS', err.message, { details: { pattern: err.pattern, problem: err.problem } });
}

/** validateHostPatterns, a bad pattern thrown as the caller's error (an API 400 unless told otherwise). */
export function checkHostPatterns(
  patterns: readonly string[],
  toError: (err: InvalidHostPatternError) => Error = invalidAllowedHosts,
): HostPattern[] {
  try {
    return validateHostPatterns(patterns);
  } catch (err) {
    throw err instanceof InvalidHostPatternError ? toError(err) : err;
  }
}

const DEFAULT_PORT: Record<string, number> = { 'http:': 80, 'https:': 443 };

/** The host of a URL as matched and resolved: canonical, one trailing dot dropped (`a.com.` is `a.com`). */
export function urlHost(url: URL): string {
  return url.hostname.endsWith('.') ? url.hostname.slice(0, -1) : url.hostname;
}

export function matchesPattern(url: URL, pattern: HostPattern): boolean {
  if (pattern.scheme !== null && url.protocol !== pattern.scheme) return false;
  if (pattern.port !== null) {
    const port = url.port === '' ? DEFAULT_PORT[url.protocol] : Number(url.port);
    if (port !== pattern.port) return false;
  }
  const host = urlHost(url);
  // The URL parser keeps empty labels (".example.com", "a..b"); no real host has them.
  if (host.startsWith('.') || host.includes('..')) return false;
  switch (pattern.host.kind) {
    case 'any':
      return true;
    case 'exact':
      return host === pattern.host.name;
    case 'subdomains':
      return host.endsWith(`.${pattern.host.suffix}`);
  }
}

export function matchesAny(url: URL, patterns: readonly HostPattern[]): boolean {
  return patterns.some((pattern) => matchesPattern(url, pattern));
}

/**
 * The effective allow-list is the call's list intersected with the operator ceiling: a URL passes
 * only if it matches both, so a caller can narrow the ceiling but never widen it.
 */
export function isUrlAllowed(url: URL, callList: readonly HostPattern[], ceiling: readonly HostPattern[]): boolean {
  return matchesAny(url, callList) && matchesAny(url, ceiling);
}

export interface AddressClass {
  /** Canonical address (IPv4-mapped IPv6 shown as the IPv4 it maps to). */
  address: string;
  family: 4 | 6;
  /** ipaddr.js range name, e.g. 'unicast', 'loopback', 'private', 'linkLocal', 'uniqueLocal'. */
  range: string;
  /** Publicly routable unicast: the only class reachable without EGRESS_ALLOW_PRIVATE. */
  public: boolean;
}

// ipaddr.js calls ::/8 plain 'unicast', yet it holds the deprecated IPv4-compatible form (::7f00:1
// for 127.0.0.1) and is reserved by RFC 4291, so it is never public.
const IPV6_RESERVED_ZERO_PREFIX = ipaddr.IPv6.parseCIDR('::/8');

/** Classifies an IP address (IPv4, IPv6, or a bracketed IPv6 URL host). Returns null for anything else. */
export function classifyAddress(text: string): AddressClass | null {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  // net.isIP first: ipaddr.parse also accepts shorthand like "127.1" that is not an address here.
  if (!isIPv4(bare) && !isIPv6(bare)) return null;
  let addr = ipaddr.parse(bare);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
  let range: string = addr.range();
  if (addr.kind() === 'ipv6' && range === 'unicast' && addr.match(IPV6_RESERVED_ZERO_PREFIX)) range = 'reserved';
  return { address: addr.toString(), family: addr.kind() === 'ipv4' ? 4 : 6, range, public: range === 'unicast' };
}

/** True for names that always mean this machine (RFC 6761): `localhost` and `*.localhost`. */
export function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost');
}
