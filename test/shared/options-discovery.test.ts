// --dns, --ns-hosts, --to-ns, -N, -H, --seed-hosts in the option model.
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/shared/errors.js';
import { type ConnectOptions, parseNameservers, parseSeedHosts, parseToNs, resolveOptions } from '../../src/shared/options.js';

const resolve = (options: Partial<ConnectOptions>) => resolveOptions({ subnets: [], ...options }, () => ['fw']);

describe('discovery options', () => {
  it('-N or --dns may stand without subnets; nothing at all may not', () => {
    expect(resolve({ autoNets: true })).toMatchObject({ autoNets: true, subnets: [] });
    expect(resolve({ dns: true })).toMatchObject({ dns: {}, autoNets: false });
    expect(() => resolve({})).toThrow(UsageError);
    expect(() => resolve({ autoHosts: true })).toThrow(/no subnets given/);
  });

  it('defaults: no DNS, no -N, no -H', () => {
    const options = resolve({ subnets: ['10/8'] });
    expect(options.autoNets).toBe(false);
    expect(options).not.toHaveProperty('dns');
    expect(options).not.toHaveProperty('autoHosts');
  });

  it('--ns-hosts implies DNS capture of just those; --to-ns says who answers', () => {
    expect(resolve({ nsHosts: '10.98.0.3, FD00::53', toNs: '10.98.0.9:5353' })).toMatchObject({
      dns: { nameservers: ['10.98.0.3', 'fd00::53'], toNs: { family: 4, address: '10.98.0.9', port: 5353 } },
    });
    expect(resolve({ dns: true, toNs: '[fd00::53]' })).toMatchObject({ dns: { toNs: { family: 6, address: 'fd00::53', port: 53 } } });
    expect(() => resolve({ subnets: ['10/8'], toNs: '10.0.0.1' })).toThrow(/--to-ns needs --dns or --ns-hosts/);
  });

  it('-H with seed hosts; seed hosts without -H are a usage error', () => {
    expect(resolve({ subnets: ['10/8'], autoHosts: true, seedHosts: 'a.lab,b' })).toMatchObject({ autoHosts: { seeds: ['a.lab', 'b'] } });
    expect(resolve({ subnets: ['10/8'], autoHosts: true })).toMatchObject({ autoHosts: { seeds: [] } });
    expect(() => resolve({ subnets: ['10/8'], seedHosts: 'a' })).toThrow(/--seed-hosts needs -H/);
  });

  it('resolved options pass through resolveOptions unchanged (connect() takes either)', () => {
    const once = resolve({ subnets: ['10/8'], autoNets: true, autoHosts: true, seedHosts: ['x'], nsHosts: ['10.0.0.1'], toNs: '10.0.0.2' });
    expect(resolveOptions(once, () => ['other'])).toEqual(once);
  });

  it('parseNameservers', () => {
    expect(parseNameservers(['10.0.0.1', '10.0.0.1', '[fd00:0::1]'])).toEqual(['10.0.0.1', 'fd00::1']);
    expect(() => parseNameservers('10.0.0.1,dns.google')).toThrow(/invalid --ns-hosts "dns.google"/);
    expect(() => parseNameservers('10.0.0.0/8')).toThrow(UsageError);
    expect(() => parseNameservers(' , ')).toThrow(/no address/);
  });

  it('parseToNs', () => {
    expect(parseToNs('10.0.0.53')).toEqual({ family: 4, address: '10.0.0.53', port: 53 });
    expect(parseToNs('[fd00::53]:5353')).toEqual({ family: 6, address: 'fd00::53', port: 5353 });
    expect(parseToNs('fd00:0::53')).toEqual({ family: 6, address: 'fd00::53', port: 53 });
    for (const bad of ['dns.google', '10.0.0.1:0', '10.0.0.1:70000', '[fd00::53', '10.0.0.256']) expect(() => parseToNs(bad), bad).toThrow(UsageError);
  });

  it('parseSeedHosts', () => {
    expect(parseSeedHosts(' a.lab , 10.0.0.1,fd00::1 ')).toEqual(['a.lab', '10.0.0.1', 'fd00::1']);
    expect(() => parseSeedHosts('a b')).toThrow(/invalid --seed-hosts entry "a b"/);
    expect(() => parseSeedHosts(Array.from({ length: 101 }, (_, i) => `h${i}`))).toThrow(/at most 100/);
  });
});
