// Pure unit tests of the egress policy: no sockets, no DNS. Addresses outside loopback are only
// ever classified here, never connected to.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';
import { classifyAddress, isUrlAllowed, matchesAny } from '../src/egress/policy.ts';
import { InvalidHostPatternError, parseHostPattern, validateHostPatterns } from '../src/host-patterns.ts';

const allows = (patterns: string[], url: string) => matchesAny(new URL(url), validateHostPatterns(patterns));

describe('host pattern matching', () => {
  const table: [pattern: string, url: string, allowed: boolean][] = [
    ['api.example.com', 'https://api.example.com/v1?q=1', true],
    ['api.example.com', 'https://API.Example.COM/', true],
    ['API.EXAMPLE.COM', 'http://api.example.com/', true],
    ['api.example.com', 'https://www.example.com/', false],
    ['api.example.com', 'https://api.example.com.evil.test/', false],
    ['api.example.com', 'https://api.example.com./', true],
    ['*.example.com', 'https://api.example.com/', true],
    ['*.example.com', 'https://a.b.example.com/', true],
    ['*.example.com', 'https://example.com/', false],
    ['*.example.com', 'https://evilexample.com/', false],
    ['*.example.com', 'https://example.com.evil.test/', false],
    ['*.example.com', 'https://.example.com/', false],
    ['*', 'https://a..example.com/', false],
    ['*', 'https://anything.test/', true],
    ['*', 'http://127.0.0.1:8080/', true],
    ['https://api.example.com', 'https://api.example.com/', true],
    ['https://api.example.com', 'http://api.example.com/', false],
    ['http://*.example.com', 'http://a.example.com/', true],
    ['http://*.example.com', 'https://a.example.com/', false],
    ['api.example.com:8443', 'https://api.example.com:8443/', true],
    ['api.example.com:8443', 'https://api.example.com/', false],
    ['https://api.example.com:8443', 'https://api.example.com:8443/x', true],
    ['https://api.example.com:8443', 'http://api.example.com:8443/x', false],
    ['api.example.com:443', 'https://api.example.com/', true],
    ['api.example.com:443', 'http://api.example.com/', false],
    ['*:8080', 'http://any.test:8080/', true],
    ['*:8080', 'http://any.test:8081/', false],
    ['127.0.0.1', 'http://0x7f000001/', true],
    ['[::1]', 'http://[0:0:0:0:0:0:0:1]:3000/', true],
    ['bücher.example', 'https://xn--bcher-kva.example/', true],
  ];

  it.each(table)('%s × %s → %s', (pattern, url, allowed) => {
    expect(allows([pattern], url)).toBe(allowed);
  });

  it('allows a URL matching any entry of the list and refuses when the list is empty', () => {
    expect(allows(['a.test', 'b.test'], 'http://b.test/')).toBe(true);
    expect(allows([], 'http://b.test/')).toBe(false);
  });
});

describe('effective allow-list = call list ∩ operator ceiling', () => {
  const check = (call: string[], ceiling: string[], url: string) =>
    isUrlAllowed(new URL(url), validateHostPatterns(call), validateHostPatterns(ceiling));

  it('narrows a caller `*` to the ceiling', () => {
    expect(check(['*'], ['*.example.com'], 'https://api.example.com/')).toBe(true);
    expect(check(['*'], ['*.example.com'], 'https://other.test/')).toBe(false);
  });

  it('refuses a host the caller allowed but the ceiling does not (a caller cannot widen)', () => {
    expect(check(['api.example.com', 'other.test'], ['api.example.com'], 'https://other.test/')).toBe(false);
    expect(check(['api.example.com', 'other.test'], ['api.example.com'], 'https://api.example.com/')).toBe(true);
  });

  it('lets a caller narrow a `*` ceiling to one host, scheme and port', () => {
    const call = ['https://api.example.com:8443'];
    expect(check(call, ['*'], 'https://api.example.com:8443/')).toBe(true);
    expect(check(call, ['*'], 'https://api.example.com/')).toBe(false);
    expect(check(call, ['*'], 'https://www.example.com:8443/')).toBe(false);
  });

  it('applies a scheme-restricted ceiling even when the caller allows any scheme', () => {
    expect(check(['api.example.com'], ['https://*'], 'http://api.example.com/')).toBe(false);
    expect(check(['api.example.com'], ['https://*'], 'https://api.example.com/')).toBe(true);
  });
});

describe('host pattern validation', () => {
  it.each([
    '!api.example.com',
    '!*',
    '',
    ' api.example.com',
    'api.example.com/path',
    'https://api.example.com/',
    'ftp://api.example.com',
    '*example.com',
    'api.*.com',
    '**.example.com',
    '*.',
    'api.example.com:0',
    'api.example.com:70000',
    'api.example.com:',
    'user@api.example.com',
    'api example.com',
    'api.example.com.',
    '-bad.example.com',
    '[::1',
    '[not-an-ip]',
    '*.10.0.0.1',
    'a'.repeat(301),
  ])('rejects %j with a typed error', (pattern) => {
    expect(() => validateHostPatterns([pattern])).toThrow(InvalidHostPatternError);
  });

  it('names the bad pattern and says what is wrong with a negation', () => {
    let caught: unknown;
    try {
      validateHostPatterns(['api.example.com', '!evil.test']);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidHostPatternError);
    expect((caught as InvalidHostPatternError).pattern).toBe('!evil.test');
    expect((caught as InvalidHostPatternError).problem).toMatch(/negation/);
  });

  it('rejects a list that is not an array or is too long', () => {
    expect(() => validateHostPatterns('api.example.com' as unknown as string[])).toThrow(InvalidHostPatternError);
    expect(() => validateHostPatterns(Array.from({ length: 257 }, (_, i) => `h${i}.test`))).toThrow(InvalidHostPatternError);
  });

  it('parses scheme, host kind and port into canonical form', () => {
    expect(parseHostPattern('HTTPS://API.Example.com:8443')).toEqual({
      source: 'HTTPS://API.Example.com:8443',
      scheme: 'https:',
      host: { kind: 'exact', name: 'api.example.com' },
      port: 8443,
    });
    expect(parseHostPattern('*.Example.com').host).toEqual({ kind: 'subdomains', suffix: 'example.com' });
    expect(parseHostPattern('*').host).toEqual({ kind: 'any' });
    expect(parseHostPattern('[0:0::1]').host).toEqual({ kind: 'exact', name: '[::1]' });
  });
});

describe('address classification (no connection is made)', () => {
  const refused = [
    ['169.254.169.254', 'linkLocal'],
    ['fd00::1', 'uniqueLocal'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['fe80::1', 'linkLocal'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['127.0.0.1', 'loopback'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['192.0.2.1', 'reserved'],
    ['ff02::1', 'multicast'],
  ] as const;

  it.each(refused)('refuses %s (%s)', (address, range) => {
    const c = classifyAddress(address);
    expect(c).toMatchObject({ range, public: false });
  });

  const ipv4Only = refused.filter(([a]) => !a.includes(':'));
  it.each(ipv4Only)('refuses the IPv4-mapped IPv6 form of %s (%s)', (address, range) => {
    for (const form of [`::ffff:${address}`, `[::ffff:${address}]`, new URL(`http://[::ffff:${address}]/`).hostname]) {
      expect(classifyAddress(form)).toMatchObject({ address, family: 4, range, public: false });
    }
  });

  it.each([
    ['::7f00:1', 'IPv4-compatible form of 127.0.0.1'],
    ['64:ff9b::a01:203', 'NAT64 form of 10.1.2.3'],
    ['2002:a01:203::1', '6to4 form of 10.1.2.3'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'Teredo'],
    ['2001:db8::1', 'documentation'],
  ])('refuses %s (%s)', (address) => {
    expect(classifyAddress(address)?.public).toBe(false);
  });

  it('classifies the weird IPv4 spellings the URL parser normalises as loopback', () => {
    for (const host of ['0x7f000001', '2130706433', '0177.0.0.1', '127.1']) {
      const hostname = new URL(`http://${host}/`).hostname;
      expect(classifyAddress(hostname)).toMatchObject({ address: '127.0.0.1', range: 'loopback', public: false });
    }
  });

  it('allows public unicast addresses', () => {
    expect(classifyAddress('93.184.216.34')).toEqual({ address: '93.184.216.34', family: 4, range: 'unicast', public: true });
    expect(classifyAddress('2606:4700::1')).toEqual({ address: '2606:4700::1', family: 6, range: 'unicast', public: true });
    expect(classifyAddress('[2606:4700::1]')?.public).toBe(true);
    expect(classifyAddress('::ffff:93.184.216.34')).toMatchObject({ address: '93.184.216.34', public: true });
  });

  it('returns null for anything that is not an IP address', () => {
    for (const text of ['example.com', '127.1', '0x7f000001', '', '[example.com]', '1.2.3.4.5']) {
      expect(classifyAddress(text)).toBeNull();
    }
  });
});

describe('operator ceiling from the environment', () => {
  it('fails at start on a malformed EGRESS_ALLOWED_HOSTS and keeps a valid one as written', () => {
    expect(() => loadConfig({ EGRESS_ALLOWED_HOSTS: 'api.example.com,!evil.test' })).toThrow(ConfigError);
    expect(() => loadConfig({ EGRESS_ALLOWED_HOSTS: '*.example.com/path' })).toThrow(/EGRESS_ALLOWED_HOSTS/);
    expect(loadConfig({ EGRESS_ALLOWED_HOSTS: 'https://api.example.com:8443, *.example.test' }).egress.allowedHosts).toEqual([
      'https://api.example.com:8443',
      '*.example.test',
    ]);
    expect(loadConfig({}).egress).toMatchObject({ allowedHosts: ['*'], allowPrivate: false });
  });
});
