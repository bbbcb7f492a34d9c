import { execFile } from "node:child_process";
import { access, readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { loadConfig } from "../../src/config.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { request } from "../helpers/http.ts";

const read = (file: string) => readFile(new URL(`../../${file}`, import.meta.url), "utf8");

/** PromQL functions and keywords that look like metric names. */
const PROMQL_WORDS = new Set([
  "histogram_quantile",
  "label_replace",
  "label_join",
  "predict_linear",
  "count_values",
  "sort_desc",
  "clamp_min",
  "clamp_max",
  ...["avg", "min", "max", "sum", "count", "last", "quantile", "stddev", "absent"].map((f) => `${f}_over_time`),
]);

/** The metric names a PromQL expression reads. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/\{[^}]*\}/g, "") // label matchers
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "") // label lists
    .replace(/\[[^\]]*\]/g, "") // ranges
    .replace(/"[^"]*"/g, ""); // strings
  const words = bare.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return [...new Set(words.filter((word) => word.includes("_") && !PROMQL_WORDS.has(word)))];
}

/** Every series name /metrics can show, histogram and summary parts included. */
function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name as string);
    if (type === "histogram") for (const part of ["_bucket", "_sum", "_count"]) names.add(`${name}${part}`);
    if (type === "summary") for (const part of ["_sum", "_count"]) names.add(`${name}${part}`);
  }
  return names;
}

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

const panelsOf = (panels: Panel[]): Panel[] => panels.flatMap((panel) => [panel, ...panelsOf(panel.panels ?? [])]);

describe("dashboards and alerts", () => {
  let t: TestApp;
  let exposed: Set<string>;
  beforeAll(async () => {
    t = await startTestApp("embedded");
    exposed = exposedNames((await request<string>(`${t.url}/metrics`)).body);
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("reads the names of metrics out of PromQL", () => {
    expect(
      metricNames('histogram_quantile(0.99, sum by (le) (rate(edge_ingest_mqtt_puback_seconds_bucket{job="x"}[5m])))'),
    ).toEqual(["edge_ingest_mqtt_puback_seconds_bucket"]);
    expect(metricNames("sum(rate(a_total[1m])) / (sum(rate(b_total[1m])) + 1) > 0.1")).toEqual(["a_total", "b_total"]);
  });

  it("has a Grafana dashboard whose every query names metrics that /metrics exposes", async () => {
    const dashboard = JSON.parse(await read("deploy/grafana/edge-ingest.json")) as { panels: Panel[] };
    const exprs = panelsOf(dashboard.panels).flatMap((panel) =>
      (panel.targets ?? []).map((target) => target.expr ?? ""),
    );
    expect(exprs.length).toBeGreaterThan(10);
    const used = new Set(exprs.flatMap(metricNames));
    for (const name of used) expect(exposed, `${name} is not exposed at /metrics`).toContain(name);
    // What an operator looks at first, each on the dashboard.
    for (const name of [
      "edge_ingest_metrics_accepted_total",
      "edge_ingest_metrics_rejected_total",
      "edge_ingest_queue_depth",
      "edge_ingest_jobs_failed_total",
      "edge_ingest_mqtt_puback_seconds_bucket",
      "edge_ingest_worker_batch_duration_seconds_bucket",
      "nodejs_eventloop_lag_p99_seconds",
      "edge_ingest_mqtt_connections",
      "process_resident_memory_bytes",
    ]) {
      expect(used, name).toContain(name);
    }
  });

  it("has alerting rules that promtool accepts, on metrics that /metrics exposes", async () => {
    const rules = parseYaml(await read("deploy/prometheus/alerts.yml")) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const alerts = rules.groups.flatMap((group) => group.rules);
    for (const { alert, expr } of alerts) {
      // `up` is Prometheus's own: whether the scrape of a process answered.
      for (const name of metricNames(expr)) expect(exposed, `${alert}: ${name}`).toContain(name);
    }
    expect(alerts.map((rule) => rule.alert)).toEqual(
      expect.arrayContaining([
        "EdgeIngestQueueNearMaxDepth",
        "EdgeIngestFailedSubmissions",
        "EdgeIngestHighRejectionRatio",
        "EdgeIngestBrokerDown",
        "EdgeIngestEventLoopLag",
        "EdgeIngestMemoryGrowing",
      ]),
    );
    // "Near" QUEUE_MAX_DEPTH: below the default, where brokers stop acknowledging.
    const depthAlert = alerts.find((rule) => rule.alert === "EdgeIngestQueueNearMaxDepth")?.expr ?? "";
    const threshold = Number(/> (\d+)/.exec(depthAlert)?.[1]);
    expect(threshold).toBeLessThan(loadConfig({}).QUEUE_MAX_DEPTH);
    expect(threshold).toBeGreaterThanOrEqual(0.5 * loadConfig({}).QUEUE_MAX_DEPTH);
    const promtool = await access("/usr/bin/promtool").then(
      () => true,
      () => false,
    );
    if (!promtool) {
      expect(process.env.CI, ".ci/run installs prometheus (promtool)").toBeFalsy();
      return;
    }
    const { stdout } = await promisify(execFile)("/usr/bin/promtool", [
      "check",
      "rules",
      "deploy/prometheus/alerts.yml",
    ]);
    expect(stdout).toContain(`SUCCESS: ${alerts.length} rules found`);
  });
});
