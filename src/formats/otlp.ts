import type { PayloadLimits } from "../config.ts";
import { checkTimeRange, METRIC_NAME_PATTERN, parseTags, wholeMs } from "../ingest/payload.ts";
import { Rejected, type RejectionReason, reject } from "../ingest/refusals.ts";
import type { MetricPoint } from "../ingest/submission.ts";
import type { AgentRule } from "./agents.ts";
import type {
  HistogramPoint,
  Int64,
  NumberPoint,
  OtlpAnyValue,
  OtlpKeyValue,
  OtlpMetric,
  OtlpMetricsRequest,
  SummaryPoint,
} from "./otlp-proto.ts";
import { pointDedupeId } from "./point-id.ts";

/**
 * OTLP metrics to readings (docs/formats.md): a gauge's or a sum's data point is one reading; a
 * histogram's (and an exponential histogram's) is its count, sum, min and max; a summary's its count,
 * sum and quantiles. Data point attributes are tags; the resource's attributes name the agent.
 */

/** A data point the sender marked as having no recorded value (a staleness marker): not a reading. */
const NO_RECORDED_VALUE = 1;

/** The tag a sum's or a histogram's readings carry, so a delta is never read as a running total. */
export const TEMPORALITY_TAG = "otel.temporality";
const TEMPORALITIES: Record<string, string> = {
  "1": "delta",
  "2": "cumulative",
  AGGREGATION_TEMPORALITY_DELTA: "delta",
  AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
};

export interface OtlpReadings {
  points: MetricPoint[];
  /** One per refused data point; OTLP's answer counts them in `rejected_data_points`. */
  rejected: { reason: RejectionReason; message: string }[];
}

export interface OtlpOptions {
  receivedAt: number;
  limits: PayloadLimits;
  agent: AgentRule;
}

const has = (object: object, key: string) => Object.hasOwn(object, key);

function toNumber(value: Int64 | number | string | undefined): number {
  if (value === undefined) return Number.NaN;
  if (typeof value === "object") return value.toNumber();
  return Number(value);
}

/**
 * Nanoseconds after the epoch as whole milliseconds; 0 when absent or not a time. Decimal digits
 * (OTLP JSON) are read exactly; a number or a protobuf Long is a float off by up to 256 ns, so it is
 * rounded to the microsecond first (exact there) and then cut to the millisecond.
 */
function nanosToMs(value: Int64 | undefined): number {
  if (typeof value === "string") return /^\d+$/.test(value) ? wholeMs(value, 6) : 0;
  const nanos = typeof value === "object" ? value.toNumber() : (value ?? 0);
  return Number.isFinite(nanos) && nanos > 0 ? Math.floor(Math.round(nanos / 1000) / 1000) : 0;
}

function attributeText(value: OtlpAnyValue | undefined): string {
  if (!value) return "";
  if (has(value, "stringValue")) return value.stringValue as string;
  if (has(value, "boolValue")) return String(value.boolValue);
  if (has(value, "intValue")) return String(value.intValue);
  if (has(value, "doubleValue")) return String(value.doubleValue);
  if (has(value, "arrayValue")) return JSON.stringify((value.arrayValue?.values ?? []).map(attributeText));
  if (has(value, "kvlistValue")) return JSON.stringify(attributesOf(value.kvlistValue?.values));
  if (has(value, "bytesValue")) {
    const bytes = value.bytesValue;
    return typeof bytes === "string" ? bytes : Buffer.from(bytes ?? []).toString("base64");
  }
  return "";
}

function attributesOf(list: OtlpKeyValue[] | undefined): Record<string, string> {
  const attributes: Record<string, string> = Object.create(null);
  for (const { key, value } of list ?? []) attributes[key] = attributeText(value);
  return attributes;
}

/** Every data point of a metric, with what makes readings of it. */
function pointsOf(metric: OtlpMetric): { points: readonly object[]; temporality?: string } {
  if (metric.gauge) return { points: metric.gauge.dataPoints ?? [] };
  const aggregated = metric.sum ?? metric.histogram ?? metric.exponentialHistogram;
  if (aggregated) {
    const temporality = TEMPORALITIES[String(aggregated.aggregationTemporality ?? "")];
    return temporality ? { points: aggregated.dataPoints ?? [], temporality } : { points: aggregated.dataPoints ?? [] };
  }
  return { points: metric.summary?.dataPoints ?? [] };
}

/** The (name, value, extra tag) readings of one data point. */
function valuesOf(metric: OtlpMetric, name: string, point: object): [string, number, [string, string]?][] {
  if (metric.gauge || metric.sum) {
    const number = point as NumberPoint;
    return [[name, has(number, "asInt") ? toNumber(number.asInt) : toNumber(number.asDouble)]];
  }
  const aggregate = point as HistogramPoint & SummaryPoint;
  const values: [string, number, [string, string]?][] = [[`${name}.count`, toNumber(aggregate.count)]];
  for (const key of ["sum", "min", "max"] as const) {
    if (has(aggregate, key)) values.push([`${name}.${key}`, toNumber(aggregate[key])]);
  }
  for (const { quantile, value } of aggregate.quantileValues ?? []) {
    values.push([name, toNumber(value), ["quantile", String(toNumber(quantile))]]);
  }
  return values;
}

function dataPointCount(request: OtlpMetricsRequest): number {
  let count = 0;
  for (const resource of request.resourceMetrics ?? []) {
    for (const scope of resource.scopeMetrics ?? []) {
      for (const metric of scope.metrics ?? []) count += pointsOf(metric).points.length;
    }
  }
  return count;
}

/** The readings of an export request; more data points than `maxBatchItems` refuse it whole (`too_many`). */
export function readOtlpMetrics(request: OtlpMetricsRequest, options: OtlpOptions): OtlpReadings | Rejected {
  const { limits } = options;
  const total = dataPointCount(request);
  if (total > limits.maxBatchItems) {
    return reject("too_many", `at most ${limits.maxBatchItems} data points in one request (this one has ${total})`);
  }
  const out: OtlpReadings = { points: [], rejected: [] };
  const refuse = (count: number, reason: RejectionReason, message: string) => {
    for (let i = 0; i < count; i++) out.rejected.push({ reason, message });
  };

  for (const resource of request.resourceMetrics ?? []) {
    const agent = options.agent.of(attributesOf(resource.resource?.attributes));
    for (const scope of resource.scopeMetrics ?? []) {
      for (const metric of scope.metrics ?? []) {
        const { points, temporality } = pointsOf(metric);
        if (agent instanceof Rejected) {
          refuse(points.length, agent.reason, agent.message);
          continue;
        }
        const name = metric.name ?? "";
        if (!METRIC_NAME_PATTERN.test(name)) {
          refuse(
            points.length,
            "bad_name",
            `metric name ${JSON.stringify(name.slice(0, 140))} breaks [A-Za-z0-9_.:-]{1,128}`,
          );
          continue;
        }
        for (const point of points) {
          const refused = readPoint(metric, name, point as NumberPoint, temporality, agent.agentId, options, out);
          if (refused) refuse(1, refused.reason, refused.message);
        }
      }
    }
  }
  return out;
}

/** Adds the readings of one data point to `out`, or says why it has none. */
function readPoint(
  metric: OtlpMetric,
  name: string,
  point: NumberPoint,
  temporality: string | undefined,
  agentId: string,
  { limits, receivedAt }: OtlpOptions,
  out: OtlpReadings,
): Rejected | undefined {
  if (((point.flags ?? 0) & NO_RECORDED_VALUE) !== 0) return undefined;
  const ms = nanosToMs(point.timeUnixNano);
  const timed = ms > 0;
  const ts = timed ? checkTimeRange(ms, receivedAt, limits) : receivedAt;
  if (ts instanceof Rejected) return ts;
  const attributes = attributesOf(point.attributes);
  if (temporality) attributes[TEMPORALITY_TAG] = temporality;

  const values = valuesOf(metric, name, point);
  // The point's tags, judged once for all its readings (a quantile's add one of their own).
  const pointTags = parseTags(attributes, limits);
  if (pointTags instanceof Rejected) return pointTags;
  const readings: MetricPoint[] = [];
  for (const [readingName, value, extraTag] of values) {
    if (!METRIC_NAME_PATTERN.test(readingName))
      return reject("bad_name", `metric name ${readingName} is over 128 characters`);
    if (!Number.isFinite(value)) return reject("bad_value", `${readingName}: the value is not a finite number`);
    const tags = extraTag ? parseTags({ ...attributes, [extraTag[0]]: extraTag[1] }, limits) : pointTags;
    if (tags instanceof Rejected) return tags;
    const reading: MetricPoint = { agentId, name: readingName, value, ts };
    if (tags) reading.tags = tags;
    if (timed) reading.dedupeId = pointDedupeId("otlp", agentId, readingName, ts, tags);
    readings.push(reading);
  }
  out.points.push(...readings);
  return undefined;
}
