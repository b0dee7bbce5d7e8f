// The near cache's bookkeeping (lib/store/near-cache.ts): tickets against the read/invalidation
// race, flushes, the LRU bound, the age limit and the slides due.
import { expect } from 'chai';
import { NearCache } from '../../lib/store/near-cache.js';
import { sleep } from '../support/service.js';

describe('NearCache', () => {
  const on = (max = 10, maxAgeMs = 60_000) => {
    const n = new NearCache(max, maxAgeMs);
    n.setEnabled(true);
    return n;
  };

  it('caches a completed read; nothing while tracking is off', () => {
    const n = new NearCache(10, 60_000);
    expect(n.begin('a')).to.equal(undefined);
    n.complete('a', undefined, 'v');
    expect(n.get('a')).to.equal(undefined);
    n.setEnabled(true);
    n.complete('a', n.begin('a'), 'v');
    expect(n.get('a')).to.equal('v');
    n.setEnabled(false);
    expect(n.get('a')).to.equal(undefined);
    n.setEnabled(true);
    expect(n.get('a')).to.equal(undefined); // emptied when tracking went off
  });

  it('a read in flight while its key is invalidated is not cached (the race of the Redis docs)', () => {
    const n = on();
    const t = n.begin('a');
    n.invalidate('a'); // the push arrives before the read's answer
    n.complete('a', t, 'old');
    expect(n.get('a')).to.equal(undefined);
    const t2 = n.begin('a');
    n.flush(); // the connection dropped meanwhile
    n.complete('a', t2, 'old');
    expect(n.get('a')).to.equal(undefined);
    const t3 = n.begin('a');
    n.setEnabled(false);
    n.setEnabled(true); // tracking re-established meanwhile
    n.complete('a', t3, 'old');
    expect(n.get('a')).to.equal(undefined);
  });

  it('misses and failed reads are not cached; an invalidation drops the entry', () => {
    const n = on();
    n.complete('a', n.begin('a'), null);
    n.complete('b', n.begin('b'), undefined);
    expect(n.size).to.equal(0);
    n.complete('a', n.begin('a'), 'v');
    n.invalidate('a');
    expect(n.get('a')).to.equal(undefined);
  });

  it('bounded: the least recently used entry goes first', () => {
    const n = on(2);
    n.complete('a', n.begin('a'), '1');
    n.complete('b', n.begin('b'), '2');
    expect(n.get('a')).to.equal('1'); // b is now the least recently used
    n.complete('c', n.begin('c'), '3');
    expect(n.size).to.equal(2);
    expect(n.get('b')).to.equal(undefined);
    expect(n.get('a')).to.equal('1');
    expect(n.get('c')).to.equal('3');
  });

  it('an entry is not served past its age limit', async () => {
    const n = on(10, 30);
    n.complete('a', n.begin('a'), 'v');
    expect(n.get('a')).to.equal('v');
    await sleep(50);
    expect(n.get('a')).to.equal(undefined);
  });

  it('hits mark slides due, once per key until taken', () => {
    const n = on();
    n.complete('a', n.begin('a'), '1');
    n.complete('b', n.begin('b'), '2');
    expect(n.takeSlides()).to.deep.equal([]);
    n.get('a');
    n.get('a');
    n.get('b');
    expect(n.takeSlides().sort()).to.deep.equal(['a', 'b']);
    expect(n.takeSlides()).to.deep.equal([]);
  });
});
