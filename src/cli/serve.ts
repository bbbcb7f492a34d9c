import { startApp } from "../app.ts";
import type { Config } from "../config.ts";
import { StartupError } from "../errors.ts";
import { createLogger, resolveLogFormat } from "../logger.ts";
import { embeddedDatabaseExists } from "../store/database.ts";
import { migrateApart } from "./migrate-apart.ts";

/**
 * Runs the service until SIGTERM or SIGINT (SIGHUP reads the TLS certificate again), then stops taking work, finishes what is in flight and
 * closes cleanly (exit code 0). A second signal while stopping, or SHUTDOWN_TIMEOUT_MS passing,
 * gives up (exit code 1): what was not acknowledged is sent again by its client, and jobs left
 * running are handed to another worker, so giving up loses nothing acknowledged.
 */
export async function serve(config: Config, env: NodeJS.ProcessEnv): Promise<number> {
  const logger = createLogger(config.LOG_LEVEL, resolveLogFormat(config.LOG_FORMAT));
  let app: Awaited<ReturnType<typeof startApp>>;
  try {
    const script = process.argv[1];
    // A first start: the database is created by this script run again as `migrate`, so that this
    // process then opens it as a restart does, with less memory.
    if (config.mode === "embedded" && config.MIGRATE_ON_START && script && !embeddedDatabaseExists(config.DATA_DIR)) {
      const applied = await migrateApart([...process.execArgv, script], env);
      logger.info({ applied }, "created the embedded database in a process of its own");
    }
    app = await startApp(config, logger);
  } catch (error) {
    if (error instanceof StartupError) logger.fatal(`edge-ingest could not start:\n  ${error.message}`);
    else logger.fatal({ err: error }, "edge-ingest could not start");
    return 1;
  }
  // SIGHUP: a renewed TLS certificate (and key) is read again; a file that cannot be read keeps the old one.
  const reload = () =>
    app.reloadCertificates().then(
      () => logger.info("SIGHUP: the MQTT TLS certificate was read again"),
      (error: Error) =>
        logger.error({ err: error }, "SIGHUP: cannot read the MQTT TLS certificate; the previous one stays"),
    );
  process.on("SIGHUP", reload);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  logger.info({ signal, timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, "shutting down: finishing in-flight work");
  const giveUp = (why: string) => {
    logger.warn({ waitingFor: app.closingStep() }, `${why}: exiting without finishing in-flight work`);
    process.exit(1);
  };
  process.once("SIGTERM", () => giveUp("second signal"));
  process.once("SIGINT", () => giveUp("second signal"));
  const deadline = setTimeout(
    () => giveUp(`still stopping after SHUTDOWN_TIMEOUT_MS (${config.SHUTDOWN_TIMEOUT_MS} ms)`),
    config.SHUTDOWN_TIMEOUT_MS,
  ).unref();
  await app.close();
  clearTimeout(deadline);
  logger.info("stopped");
  return 0;
}
