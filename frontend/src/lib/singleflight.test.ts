import { describe, expect, it } from 'vitest';
import { SingleFlight } from './singleflight';

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('single flight', () => {
  it('runs once for any number of concurrent callers', async () => {
    let calls = 0;
    const d = deferred<string>();
    const sf = new SingleFlight(() => {
      calls += 1;
      return d.promise;
    });
    const all = Promise.all([sf.run(), sf.run(), sf.run(), sf.run()]);
    d.resolve('token');
    expect(await all).toEqual(['token', 'token', 'token', 'token']);
    expect(calls).toBe(1);
    expect(sf.generation).toBe(1);
  });

  it('does not run again for a caller whose failure predates a completed run', async () => {
    let calls = 0;
    const sf = new SingleFlight(async () => `t${++calls}`);
    const seen = sf.generation;
    await sf.run();
    expect(await sf.run(seen)).toBe('t1');
    expect(calls).toBe(1);
    expect(await sf.run(sf.generation)).toBe('t2');
  });

  it('shares a failure, then lets the next caller try again', async () => {
    let calls = 0;
    const sf = new SingleFlight(async () => {
      calls += 1;
      if (calls === 1) throw new Error('refresh refused');
      return 'ok';
    });
    const results = await Promise.allSettled([sf.run(), sf.run()]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(sf.generation).toBe(0);
    expect(await sf.run()).toBe('ok');
    expect(calls).toBe(2);
  });

  it('copes with a function that throws synchronously', async () => {
    const sf = new SingleFlight<string>(() => {
      throw new Error('boom');
    });
    await expect(sf.run()).rejects.toThrow('boom');
    await expect(sf.run()).rejects.toThrow('boom');
  });
});
