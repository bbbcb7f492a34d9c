import type { Logger } from "pino";

/**
 * What a process has opened, closed in reverse order of opening: roles first, backends last. Each
 * step has a name, so a shutdown that takes too long can say what it waits for.
 */
export class ShutdownSteps {
  private readonly steps: { name: string; close: () => Promise<void> }[] = [];
  private current: string | undefined;

  constructor(private readonly logger: Logger) {}

  add(name: string, close: () => Promise<void>): void {
    this.steps.push({ name, close });
  }

  /** The step closing now, if any. */
  get closing(): string | undefined {
    return this.current;
  }

  async closeAll(): Promise<void> {
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      this.current = step.name;
      const started = Date.now();
      await step.close();
      this.logger.debug({ step: step.name, ms: Date.now() - started }, "stopped");
    }
    this.current = undefined;
  }
}
