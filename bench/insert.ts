/**
 * Worker-insert micro-benchmark: rows/s of the production insert path (one set-based statement per
 * submission, src/store/readings.ts) against Prisma's `createMany`, on PostgreSQL and PGlite,
 * in batches of 1,000 small rows.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import pg from "pg";
import pino from "pino";
import type { MetricPoint } from "../src/ingest/submission.ts";
import { type Database, openDatabase } from "../src/store/database.ts";
import { ReadingStore } from "../src/store/readings.ts";
import { PG_ADMIN_URL } from "./lib/targets.ts";

const BATCH = 1000;

export interface InsertResult {
  database: "postgresql" | "pglite";
  rows: number;
  productionRowsPerSecond: number;
  createManyRowsPerSecond: number;
  ratio: number;
}

function batchOf(offset: number): MetricPoint[] {
  const now = Date.now();
  return Array.from({ length: BATCH }, (_, i) => ({
    name: "load",
    value: i + 0.5,
    ts: now - i,
    dedupeId: `d-${offset + i}`,
  }));
}

async function measure(db: Database, rows: number): Promise<{ production: number; createMany: number }> {
  const prisma = await db.prisma();
  const tenantId = (await prisma.tenant.create({ data: { name: "bench" } })).id;
  const rowsPerSecond = async (insert: (points: MetricPoint[]) => Promise<unknown>) => {
    const batches = Array.from({ length: rows / BATCH }, (_, b) => batchOf(b * BATCH + Math.random() * 1e12));
    const start = performance.now();
    for (const points of batches) await insert(points);
    return rows / ((performance.now() - start) / 1000);
  };
  const store = new ReadingStore(db.sql, 86_400_000);
  const production = await rowsPerSecond((metrics) =>
    store.store({
      id: randomUUID(),
      tenantId,
      agentId: "a",
      source: "mqtt",
      receivedAt: Date.now(),
      metrics,
    }),
  );
  const createMany = await rowsPerSecond((metrics) =>
    prisma.metric.createMany({
      data: metrics.map((m) => ({
        tenantId,
        agentId: "a",
        name: m.name,
        value: m.value,
        ts: new Date(m.ts),
        dedupeId: m.dedupeId ?? null,
        receivedAt: new Date(),
      })),
      skipDuplicates: true,
    }),
  );
  return { production, createMany };
}

export async function runInsert(rows: number): Promise<InsertResult[]> {
  const logger = pino({ level: "silent" });
  const results: InsertResult[] = [];
  const name = `edge_ingest_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-bench-"));
  try {
    for (const [database, target] of [
      ["postgresql", { url: url.toString() }],
      ["pglite", { dataDir: dir }],
    ] as const) {
      process.stderr.write(`insert benchmark on ${database}…\n`);
      const db = await openDatabase(target, { migrate: true, logger });
      try {
        const { production, createMany } = await measure(db, rows);
        results.push({
          database,
          rows,
          productionRowsPerSecond: production,
          createManyRowsPerSecond: createMany,
          ratio: production / createMany,
        });
      } finally {
        await db.close();
      }
    }
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}
