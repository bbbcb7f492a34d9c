/**
 * Soak (`npm run bench -- --only=soak [--soak-seconds=600] [--soak-rate=N]`): the distributed
 * service under QoS 1 load at a steady rate (80 % of the measured maximum unless given) for ten
 * minutes, the resident memory of every process sampled every 10 s; whether it grows after the
 * warm-up (the slope of a least-squares line), and whether every acknowledged reading was stored.
 */
import path from "node:path";
import { currentRssMiB, startNode } from "./lib/processes.ts";
import { startTarget } from "./lib/targets.ts";
import type { LoadPlan, LoadResult } from "./load-generator.ts";

const SAMPLE_MS = 10_000;
/** Samples before this share of the run are warm-up, left out of the slope. */
const WARM_UP_SHARE = 0.2;

export interface SoakResult {
  ratePerSecond: number;
  seconds: number;
  acknowledged: number;
  acknowledgedPerSecond: number;
  acknowledgedNotStored: number | null;
  /** RSS per process, MiB, every SAMPLE_MS from the start of the load. */
  samples: { atSeconds: number; rssMiB: Record<string, number> }[];
  /** Per process: RSS after warm-up (first, last, max) and its trend in MiB per 10 minutes. */
  trend: Record<string, { firstMiB: number; lastMiB: number; maxMiB: number; slopeMiBPer10Min: number }>;
}

/** Least-squares slope of y over x. */
function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

export async function runSoak(ratePerSecond: number, seconds: number, scratch: string): Promise<SoakResult> {
  const publishers = 10;
  const target = await startTarget("edge-ingest-distributed", publishers);
  const samples: SoakResult["samples"] = [];
  const started = Date.now();
  const sample = () =>
    samples.push({
      atSeconds: Math.round((Date.now() - started) / 1000),
      rssMiB: Object.fromEntries(target.processes.map((p) => [p.name, currentRssMiB(p.child.pid as number)])),
    });
  const sampler = setInterval(sample, SAMPLE_MS);
  try {
    sample();
    const ackedFile = path.join(scratch, "soak.acked");
    const plan: LoadPlan = {
      mode: "publish",
      url: target.mqttUrl,
      publishers: target.publishers,
      messages: Math.round((ratePerSecond * seconds) / publishers),
      inflight: 100,
      qos: 1,
      ackedFile,
      ratePerSecond,
    };
    const loadgen = await startNode("load-generator", "bench/load-generator.ts", [JSON.stringify(plan)], {
      readyText: "RESULT ",
      timeoutMs: (seconds + 600) * 1000,
    });
    clearInterval(sampler);
    const load = JSON.parse(loadgen.lines.find((l) => l.startsWith("RESULT "))?.slice(7) ?? "{}") as LoadResult;
    const rows = target.measure ? await target.measure(load.acknowledged, ackedFile, async () => {}) : undefined;
    const trend: SoakResult["trend"] = {};
    const steady = samples.filter((s) => s.atSeconds >= seconds * WARM_UP_SHARE);
    for (const name of Object.keys(samples[0]?.rssMiB ?? {})) {
      const series = steady.map((s) => [s.atSeconds, s.rssMiB[name] ?? 0] as [number, number]);
      trend[name] = {
        firstMiB: series[0]?.[1] ?? 0,
        lastMiB: series.at(-1)?.[1] ?? 0,
        maxMiB: Math.max(...series.map(([, y]) => y)),
        slopeMiBPer10Min: slope(series) * 600,
      };
    }
    return {
      ratePerSecond,
      seconds,
      acknowledged: load.acknowledged,
      acknowledgedPerSecond: load.acknowledged / (load.durationMs / 1000),
      acknowledgedNotStored: rows ? rows.acknowledgedNotStored : null,
      samples,
      trend,
    };
  } finally {
    clearInterval(sampler);
    await target.close();
  }
}
