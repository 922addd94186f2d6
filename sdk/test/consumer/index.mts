// A consumer of the package by its name, as an ES module: type-checked under NodeNext and Bundler.
import { init, Observer, maskText, VERSION } from 'observer-sdk';
import type { ObserverEvent, ObserverInstance, ObserverOptions, Stats } from 'observer-sdk';

const options: ObserverOptions = {
  apiKey: 'pk_test',
  endpoint: 'https://ingest.example.com',
  defaultOptOut: true,
  maskAllText: true,
  pageViewTrigger: 'path',
  release: 'web@1.2.3',
  properties: { plan: 'pro' },
  capture: { webVitals: true },
  beforeSend: (e: ObserverEvent) => (e.type === 'custom' ? e : null),
};
const obs: ObserverInstance = init(options);
obs.track('signup', { step: 2 });
obs.captureException(new Error('boundary'), { component: 'Cart' });
obs.setProperties({ tier: 'gold' });
const done: Promise<void> = obs.shutdown();
const s: Stats = obs.stats();
const masked: string = maskText('jane@example.com');
const fromWindow = window.Observer?.init(options);
Observer.track('via the global object');
export { done, s, masked, fromWindow, VERSION };
