// A CommonJS consumer (require) of the package by its name: type-checked under NodeNext.
import sdk = require('observer-sdk');

const obs: sdk.ObserverInstance = sdk.init({ apiKey: 'pk_test', endpoint: 'https://ingest.example.com' });
obs.track('signup');
export const version: string = sdk.VERSION;
