import { StartupError, startApp } from "../app.ts";
import type { Config } from "../config.ts";
import { createLogger } from "../logger.ts";

/**
 * Runs the service until SIGTERM or SIGINT, then stops taking work, finishes what is in flight and
 * closes cleanly (exit code 0). A second signal while stopping gives up at once (exit code 1).
 */
export async function serve(config: Config): Promise<number> {
  const logger = createLogger(config.LOG_LEVEL);
  let app: Awaited<ReturnType<typeof startApp>>;
  try {
    app = await startApp(config, logger);
  } catch (error) {
    if (error instanceof StartupError) logger.fatal(`edge-ingest could not start:\n  ${error.message}`);
    else logger.fatal({ err: error }, "edge-ingest could not start");
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  logger.info({ signal }, "shutting down: finishing in-flight work");
  const forceExit = () => {
    logger.warn("second signal: exiting without finishing in-flight work");
    process.exit(1);
  };
  process.once("SIGTERM", forceExit);
  process.once("SIGINT", forceExit);
  await app.close();
  logger.info("stopped");
  return 0;
}
