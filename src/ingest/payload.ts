import type { PayloadLimits } from "../config.ts";
import { Rejected, reject } from "./refusals.ts";
import type { MetricPoint } from "./submission.ts";

export const AGENT_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const METRIC_NAME_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})$/;
// Below this an epoch number is read as seconds, above it as milliseconds (1e11 s is year 5138).
const EPOCH_SECONDS_LIMIT = 1e11;

// Half of a surrogate pair (JSON's "\ud800"), which PostgreSQL refuses in text and jsonb, as it does NUL.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Whether PostgreSQL can store the string as text: checked before a client's string goes into a
 * submission, so one reading the database would refuse never costs the readings stored with it.
 */
export function isStorableText(value: string): boolean {
  return !value.includes("\u0000") && !LONE_SURROGATE.test(value);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function parseTimestamp(raw: unknown, receivedAt: number, limits: PayloadLimits): number | Rejected {
  if (raw === undefined) return receivedAt;
  let ms: number;
  if (typeof raw === "number") {
    if (!Number.isFinite(raw) || raw < 0) return reject("bad_timestamp", "timestamp must be a non-negative epoch");
    ms = Math.round(raw < EPOCH_SECONDS_LIMIT ? raw * 1000 : raw);
  } else if (typeof raw === "string" && ISO_8601.test(raw)) {
    ms = Date.parse(raw);
    if (!Number.isFinite(ms) || ms < 0) return reject("bad_timestamp", "timestamp is not a valid date");
  } else {
    return reject("bad_timestamp", "timestamp must be ISO-8601 with a zone, epoch seconds or epoch milliseconds");
  }
  return checkTimeRange(ms, receivedAt, limits);
}

/**
 * The whole milliseconds in a decimal count of units `finer` digits finer than a millisecond
 * (microseconds: 3, nanoseconds: 6): exact, where a float of nanoseconds since the epoch is not.
 */
export function wholeMs(digits: string, finer: number): number {
  return digits.length > finer ? Number(digits.slice(0, -finer)) : 0;
}

/** An epoch-millisecond time within what may be stored: not too far ahead, not past the retention. */
export function checkTimeRange(ms: number, receivedAt: number, limits: PayloadLimits): number | Rejected {
  if (ms > receivedAt + limits.maxFutureSkewMs) {
    return reject("bad_timestamp", `timestamp is more than ${limits.maxFutureSkewMs / 1000}s in the future`);
  }
  if (ms < receivedAt - limits.maxAgeMs) {
    return reject("too_old", `timestamp is older than the retention (${limits.maxAgeMs / 86_400_000} days)`);
  }
  return ms;
}

export function parseTags(raw: unknown, limits: PayloadLimits): Record<string, string> | undefined | Rejected {
  if (raw === undefined) return undefined;
  if (!isPlainObject(raw)) return reject("bad_tags", "tags must be an object of string values");
  const entries = Object.entries(raw);
  if (entries.length > limits.maxTags) return reject("bad_tags", `at most ${limits.maxTags} tags`);
  for (const [key, value] of entries) {
    if (key.length === 0 || key.length > limits.maxTagLength || !isStorableText(key)) {
      return reject("bad_tags", `tag names must be 1-${limits.maxTagLength} characters, with no NUL`);
    }
    if (typeof value !== "string" || value.length > limits.maxTagLength || !isStorableText(value)) {
      return reject("bad_tags", `tag values must be strings of at most ${limits.maxTagLength} characters, with no NUL`);
    }
  }
  return entries.length > 0 ? (raw as Record<string, string>) : undefined;
}

/**
 * One reading: `{value, timestamp?, dedupe_id?, tags?}` or a bare number, for a metric whose name
 * is already known (from the MQTT topic or the HTTP item).
 */
export function parseReading(
  raw: unknown,
  name: string,
  receivedAt: number,
  limits: PayloadLimits,
): MetricPoint | Rejected {
  if (typeof raw === "number") {
    return Number.isFinite(raw) ? { name, value: raw, ts: receivedAt } : reject("bad_value", "value must be finite");
  }
  if (!isPlainObject(raw)) return reject("bad_value", "a reading is an object with a numeric value, or a number");
  const { value, timestamp, dedupe_id: dedupeId } = raw;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return reject("bad_value", "value must be a finite number");
  }
  const ts = parseTimestamp(timestamp, receivedAt, limits);
  if (ts instanceof Rejected) return ts;
  if (
    dedupeId !== undefined &&
    (typeof dedupeId !== "string" ||
      dedupeId.length === 0 ||
      dedupeId.length > limits.maxDedupeIdLength ||
      !isStorableText(dedupeId))
  ) {
    return reject(
      "bad_dedupe_id",
      `dedupe_id must be a string of 1-${limits.maxDedupeIdLength} characters, with no NUL`,
    );
  }
  const tags = parseTags(raw.tags, limits);
  if (tags instanceof Rejected) return tags;
  const point: MetricPoint = { name, value, ts };
  if (dedupeId !== undefined) point.dedupeId = dedupeId as string;
  if (tags !== undefined) point.tags = tags;
  return point;
}

/** One item of an HTTP body: a reading that carries its own `name`. */
export function parseNamedReading(raw: unknown, receivedAt: number, limits: PayloadLimits): MetricPoint | Rejected {
  if (!isPlainObject(raw)) return reject("bad_value", "each metric must be an object");
  const { name } = raw;
  if (typeof name !== "string" || !METRIC_NAME_PATTERN.test(name)) {
    return reject("bad_name", "name must be 1-128 characters of A-Z a-z 0-9 _ . : -");
  }
  return parseReading(raw, name, receivedAt, limits);
}

export interface ParsedBatch {
  points: MetricPoint[];
  /**
   * `index` is the item's place in a batch, `line` the line of a line-protocol payload (from 1);
   * neither when the whole payload was refused.
   */
  rejected: { index?: number; line?: number; reason: Rejected["reason"]; message: string }[];
}

/**
 * Parses each item on its own, so a bad item never costs the good ones next to it.
 * `items` must already be an array no longer than the batch limit.
 */
export function parseItems(items: unknown[], parseItem: (item: unknown) => MetricPoint | Rejected): ParsedBatch {
  const batch: ParsedBatch = { points: [], rejected: [] };
  items.forEach((item, index) => {
    const result = parseItem(item);
    if (result instanceof Rejected) batch.rejected.push({ index, reason: result.reason, message: result.message });
    else batch.points.push(result);
  });
  return batch;
}

export function refuse(rejection: Rejected): ParsedBatch {
  return { points: [], rejected: [{ reason: rejection.reason, message: rejection.message }] };
}

/** An MQTT payload over `MQTT_MAX_PAYLOAD_BYTES`, refused whole before it is read; undefined for one within it. */
export function refuseOversized(payload: Buffer, limits: { maxPayloadBytes: number }): ParsedBatch | undefined {
  if (payload.length <= limits.maxPayloadBytes) return undefined;
  return refuse(reject("too_large", `the payload is over ${limits.maxPayloadBytes} bytes`));
}

/**
 * An MQTT payload for the metric named by its topic: one reading, or a JSON array of readings.
 * Each reading of an array is judged on its own.
 */
export function parseMqttPayload(
  payload: Buffer,
  name: string,
  receivedAt: number,
  limits: PayloadLimits & { maxPayloadBytes: number },
): ParsedBatch {
  const oversized = refuseOversized(payload, limits);
  if (oversized) return oversized;
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString("utf8"));
  } catch {
    return refuse(reject("bad_json", "the payload is not JSON"));
  }
  if (Array.isArray(raw)) {
    if (raw.length === 0) return refuse(reject("bad_value", "the batch is empty"));
    if (raw.length > limits.maxBatchItems) {
      return refuse(reject("too_many", `at most ${limits.maxBatchItems} readings in one payload`));
    }
    return parseItems(raw, (item) => parseReading(item, name, receivedAt, limits));
  }
  const reading = parseReading(raw, name, receivedAt, limits);
  return reading instanceof Rejected ? refuse(reading) : { points: [reading], rejected: [] };
}
