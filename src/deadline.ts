export class DeadlineError extends Error {
  override name = "DeadlineError";
}

/**
 * Settles as `work` does, or rejects with `DeadlineError(message)` after `ms`: for answers that
 * must come in time (a probe, a scrape) even when a dependency hangs. The work itself goes on.
 */
export function within<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(message)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
