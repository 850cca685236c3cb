/**
 * Wait for a condition that event callbacks make true, without polling.
 */

/** Callbacks call {@link wake} after changing state; a test awaits {@link until}. */
export class Waker {
  #wake: (() => void) | undefined;

  /** Re-check the condition of a pending {@link until}. */
  wake(): void {
    this.#wake?.();
  }

  /** Resolve once `done()` holds or `ms` passed (check `done()` again to know which). */
  async until(done: () => boolean, ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (!done() && Date.now() < end) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, end - Date.now()));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    this.#wake = undefined;
  }
}
