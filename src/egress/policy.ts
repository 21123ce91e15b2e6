// What a plugin may reach: matching URLs against host patterns (the grammar is ../host-patterns.ts)
// and address classification. Pure functions, no I/O: the fetch in ./fetch.ts applies them to every
// request and redirect hop.
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { HostPattern } from '../host-patterns.ts';

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
