/**
 * Records every listener added and every global patched, so `shutdown()` can undo them all.
 */
export class Teardown {
  private undo: Array<() => void> = [];

  constructor(private readonly onError: (e: unknown) => void = () => {}) {}

  /** Adds a listener whose handler can never throw into the page. */
  listen(target: EventTarget, type: string, fn: (e: Event) => void, capture = false): void {
    const h = (e: Event) => {
      try {
        fn(e);
      } catch (err) {
        this.onError(err);
      }
    };
    const opts: AddEventListenerOptions = { capture, passive: true };
    target.addEventListener(type, h, opts);
    this.add(() => target.removeEventListener(type, h, opts));
  }

  /**
   * Replaces `obj[key]` by a wrapper around `make(original)`. On teardown the original is put
   * back if the wrapper is still the current value; if another library wrapped it later, our
   * wrapper stays in its chain but only passes calls through to the original.
   */
  patch<T extends object>(obj: T, key: keyof T, make: (orig: (...a: unknown[]) => unknown) => (...a: unknown[]) => unknown): void {
    const orig = obj[key] as unknown as (...a: unknown[]) => unknown;
    if (typeof orig !== 'function') return;
    const impl = make(orig);
    let active = true;
    const wrapper = function (this: unknown, ...args: unknown[]) {
      return (active ? impl : orig).apply(this, args);
    };
    (obj as Record<keyof T, unknown>)[key] = wrapper;
    this.add(() => {
      active = false;
      if (obj[key] === (wrapper as unknown)) (obj as Record<keyof T, unknown>)[key] = orig;
    });
  }

  add(fn: () => void): void {
    this.undo.push(fn);
  }

  /** Undoes everything, newest first. */
  run(): void {
    const list = this.undo.reverse();
    this.undo = [];
    for (const fn of list) {
      try {
        fn();
      } catch (e) {
        this.onError(e);
      }
    }
  }
}
