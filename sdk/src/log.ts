/** The one place the SDK may write to the console, and only when `debug` is on. */
export type Logger = (...args: unknown[]) => void;

export function makeLogger(debug: boolean): Logger {
  return debug
    ? (...args) => {
        try { console.log('[observer]', ...args); } catch { /* no console */ }
      }
    : () => {};
}
