/**
 * What PostgreSQL spends on the production insert (`npm run bench -- --only=insert-cost`, about
 * 15 seconds): its CPU a reading (the whole local server, as in the throughput scenarios) at several
 * readings a statement, with and without dedupe ids, on four connections as the worker's default
 * concurrency. Readings of ten agents and one metric, as the load generator publishes. Every variant
 * runs once per round, alternating, into tables emptied before each pass, and reports its medians.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import pino from "pino";
import type { MetricPoint } from "../src/ingest/submission.ts";
import { openDatabase } from "../src/store/database.ts";
import { ReadingStore } from "../src/store/readings.ts";
import { median } from "./lib/processes.ts";
import { postgresCpu } from "./lib/service-cpu.ts";
import { createDatabase } from "./lib/targets.ts";

const CONNECTIONS = 4;
const AGENTS = 10;
const ROUNDS = 3;

export interface InsertCostResult {
  readingsPerStatement: number;
  dedupeIds: boolean;
  /** Medians over the rounds. */
  postgresCpuMicrosPerReading: number;
  readingsPerSecond: number;
}

export interface InsertCost {
  readingsPerPass: number;
  variants: InsertCostResult[];
  /**
   * From the variants with dedupe ids at the fewest and most readings a statement, CPU = fixed +
   * perReading × readings: what a statement costs whatever it carries, and what each reading adds.
   */
  fixedMicrosPerStatement: number;
  microsPerReading: number;
  /** At the most readings a statement: CPU a reading with dedupe ids less without. */
  dedupeMicrosPerReading: number;
}

export async function runInsertCost(readingsPerPass: number, sizes: number[]): Promise<InsertCost> {
  process.stderr.write("insert cost on postgresql…\n");
  const target = await createDatabase();
  const db = await openDatabase({ url: target.url }, { migrate: false, logger: pino({ level: "silent" }) });
  try {
    const store = new ReadingStore(db.sql, 86_400_000);
    const tenantId = randomUUID();
    const prefix = randomBytes(4).toString("hex");
    let sequence = 0;
    const submission = (readings: number, dedupeIds: boolean) => {
      const now = Date.now();
      const metrics: MetricPoint[] = Array.from({ length: readings }, (_, i) => {
        sequence++;
        const point: MetricPoint = { agentId: `agent-${sequence % AGENTS}`, name: "load", value: i + 0.5, ts: now - i };
        if (dedupeIds) point.dedupeId = `${prefix}-${sequence}`;
        return point;
      });
      return { id: randomUUID(), tenantId, agentId: "agent-0", source: "mqtt" as const, receivedAt: now, metrics };
    };
    const pass = async (readings: number, dedupeIds: boolean) => {
      await db.sql("TRUNCATE metrics, metric_dedupe, metric_latest, agent_activity, ingest_submissions", []);
      const statements = Math.ceil(readingsPerPass / readings);
      let next = 0;
      const cpuBefore = await postgresCpu(target.url);
      const started = performance.now();
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (next++ < statements) await store.storeQuietly(submission(readings, dedupeIds));
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const cpu = (await postgresCpu(target.url)) - cpuBefore;
      return { micros: (cpu * 1e6) / (statements * readings), perSecond: (statements * readings) / seconds };
    };
    const variants = sizes.flatMap((readings) =>
      [true, false].map((dedupeIds) => ({ readings, dedupeIds, micros: [] as number[], perSecond: [] as number[] })),
    );
    // Uncounted: prepares the statements on every connection and warms the server's caches.
    for (const variant of variants) await pass(variant.readings, variant.dedupeIds);
    for (let round = 0; round < ROUNDS; round++) {
      for (const variant of variants) {
        const result = await pass(variant.readings, variant.dedupeIds);
        variant.micros.push(result.micros);
        variant.perSecond.push(result.perSecond);
      }
    }
    const results = variants.map((variant) => ({
      readingsPerStatement: variant.readings,
      dedupeIds: variant.dedupeIds,
      postgresCpuMicrosPerReading: median(variant.micros),
      readingsPerSecond: median(variant.perSecond),
    }));
    const cost = (readings: number, dedupeIds: boolean) =>
      results.find((r) => r.readingsPerStatement === readings && r.dedupeIds === dedupeIds)
        ?.postgresCpuMicrosPerReading ?? 0;
    const fewest = Math.min(...sizes);
    const most = Math.max(...sizes);
    // CPU a reading at n readings = fixed / n + perReading.
    const fixed = (cost(fewest, true) - cost(most, true)) / (1 / fewest - 1 / most);
    return {
      readingsPerPass,
      variants: results,
      fixedMicrosPerStatement: fixed,
      microsPerReading: cost(most, true) - fixed / most,
      dedupeMicrosPerReading: cost(most, true) - cost(most, false),
    };
  } finally {
    await db.close();
    await target.drop();
  }
}
