import type { PayloadLimits } from "../config.ts";
import {
  checkTimeRange,
  METRIC_NAME_PATTERN,
  type ParsedBatch,
  parseTags,
  refuse,
  refuseOversized,
  wholeMs,
} from "../ingest/payload.ts";
import { Rejected, type RejectionReason, reject } from "../ingest/refusals.ts";
import type { MetricPoint } from "../ingest/submission.ts";
import type { AgentRule } from "./agents.ts";
import { pointDedupeId } from "./point-id.ts";

/**
 * InfluxDB line protocol (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/):
 * `measurement[,tag=value…] field=value[,field=value…] [timestamp]`, one point a line. Each numeric
 * field becomes one reading (docs/formats.md has the mapping); each line is judged on its own, and a
 * field that cannot be a reading costs only itself.
 */

export const PRECISIONS = ["ns", "us", "ms", "s"] as const;
export type Precision = (typeof PRECISIONS)[number];

/** Decimal digits of whole units after the epoch, as milliseconds: exact, where a float of nanoseconds is not. */
const TO_MS: Record<Precision, (digits: string) => number> = {
  ns: (digits) => wholeMs(digits, 6),
  us: (digits) => wholeMs(digits, 3),
  ms: (digits) => Number(digits),
  s: (digits) => Number(digits) * 1000,
};

export interface LineRejection {
  /** The line's number in the body, from 1. */
  line: number;
  reason: RejectionReason;
  message: string;
}

export interface LineReadings {
  points: MetricPoint[];
  rejected: LineRejection[];
}

export interface LineProtocolOptions {
  precision: Precision;
  receivedAt: number;
  limits: PayloadLimits;
  /** Which agent each line is for (src/formats/agents.ts). */
  agent: AgentRule;
}

/** One line, parsed: values still raw text, escapes already resolved. */
interface ParsedLine {
  measurement: string;
  tags: Record<string, string>;
  fields: [key: string, value: FieldValue][];
  timestamp?: string;
}

type FieldValue = { kind: "number"; value: number } | { kind: "string" };

const SPACE = 0x20;
const COMMA = 0x2c;
const EQUALS = 0x3d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

const FLOAT = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
const INTEGER = /^[-+]?\d+i$/;
const UNSIGNED = /^\d+u$/;
const TIMESTAMP = /^-?\d{1,19}$/;
const TRUE = new Set(["t", "T", "true", "True", "TRUE"]);
const FALSE = new Set(["f", "F", "false", "False", "FALSE"]);

class LineError extends Error {}

/**
 * Reads an escaped name (measurement, tag key or value, field key) from `start` up to an unescaped
 * space or comma, or equals sign when `toEquals`: `\,` `\ ` `\=` stand for the character itself.
 */
function readName(line: string, start: number, toEquals: boolean): [value: string, end: number] {
  let escaped = false;
  let i = start;
  for (; i < line.length; i++) {
    const code = line.charCodeAt(i);
    if (code === BACKSLASH && i + 1 < line.length) {
      const next = line.charCodeAt(i + 1);
      if (next === COMMA || next === SPACE || next === EQUALS) {
        escaped = true;
        i++;
        continue;
      }
    }
    if (code === SPACE || code === COMMA || (toEquals && code === EQUALS)) break;
  }
  const raw = line.slice(start, i);
  return [escaped ? raw.replace(/\\([, =])/g, "$1") : raw, i];
}

/** A quoted string field from the quote at `start`; returns the index after the closing quote. */
function skipString(line: string, start: number): number {
  for (let i = start + 1; i < line.length; i++) {
    const code = line.charCodeAt(i);
    if (code === BACKSLASH) i++;
    else if (code === QUOTE) return i + 1;
  }
  throw new LineError("a string field has no closing quote");
}

function fieldValue(raw: string): FieldValue {
  if (FLOAT.test(raw)) return { kind: "number", value: Number(raw) };
  if (INTEGER.test(raw) || UNSIGNED.test(raw)) return { kind: "number", value: Number(raw.slice(0, -1)) };
  if (TRUE.has(raw)) return { kind: "number", value: 1 };
  if (FALSE.has(raw)) return { kind: "number", value: 0 };
  throw new LineError(
    `field value ${JSON.stringify(raw.slice(0, 32))} is not a number, an integer, a boolean or a string`,
  );
}

function parseLine(line: string, maxFields: number): ParsedLine {
  const [measurement, afterMeasurement] = readName(line, 0, false);
  if (measurement === "") throw new LineError("the line has no measurement");
  let i = afterMeasurement;
  const tags: Record<string, string> = Object.create(null);
  while (line.charCodeAt(i) === COMMA) {
    const [key, afterKey] = readName(line, i + 1, true);
    if (line.charCodeAt(afterKey) !== EQUALS || key === "") throw new LineError("a tag is not key=value");
    const [value, afterValue] = readName(line, afterKey + 1, true);
    if (value === "") throw new LineError(`tag ${key} has no value`);
    tags[key] = value;
    i = afterValue;
  }
  if (line.charCodeAt(i) !== SPACE) throw new LineError("the line has no fields");
  while (line.charCodeAt(i) === SPACE) i++;

  const fields: ParsedLine["fields"] = [];
  for (;;) {
    const [key, afterKey] = readName(line, i, true);
    if (line.charCodeAt(afterKey) !== EQUALS || key === "") throw new LineError("a field is not key=value");
    if (fields.length === maxFields) throw new LineError(`more than ${maxFields} fields on one line`);
    let end: number;
    if (line.charCodeAt(afterKey + 1) === QUOTE) {
      end = skipString(line, afterKey + 1);
      fields.push([key, { kind: "string" }]);
    } else {
      end = afterKey + 1;
      while (end < line.length && line.charCodeAt(end) !== COMMA && line.charCodeAt(end) !== SPACE) end++;
      fields.push([key, fieldValue(line.slice(afterKey + 1, end))]);
    }
    i = end;
    if (line.charCodeAt(i) !== COMMA) break;
    i++;
  }
  while (line.charCodeAt(i) === SPACE) i++;
  if (i >= line.length) return { measurement, tags, fields };
  const timestamp = line.slice(i).trimEnd();
  if (!TIMESTAMP.test(timestamp)) throw new LineError("the timestamp is not an integer");
  return { measurement, tags, fields, timestamp };
}

/** Telegraf's naming (its Prometheus output's): `measurement_field`, and the measurement alone for a field called `value`. */
export function metricNameOf(measurement: string, field: string): string {
  return field === "value" ? measurement : `${measurement}_${field}`;
}

/** What the readings of a line share (agent, tags, time), or why the line gives none. */
function lineContext(
  parsed: ParsedLine,
  options: LineProtocolOptions,
): { agentId: string; tags: Record<string, string> | undefined; ts: number } | Rejected {
  const { limits, receivedAt } = options;
  let ts = receivedAt;
  if (parsed.timestamp !== undefined) {
    if (parsed.timestamp.startsWith("-")) return reject("bad_timestamp", "timestamp must be a non-negative epoch");
    const inRange = checkTimeRange(TO_MS[options.precision](parsed.timestamp), receivedAt, limits);
    if (inRange instanceof Rejected) return inRange;
    ts = inRange;
  }
  const agent = options.agent.of(parsed.tags);
  if (agent instanceof Rejected) return agent;
  if (agent.key !== undefined) delete parsed.tags[agent.key];
  const tags = parseTags(parsed.tags, limits);
  if (tags instanceof Rejected) return tags;
  return { agentId: agent.agentId, tags, ts };
}

/** Adds the readings of one parsed line to `out`, and what of it was refused. */
function readingsOf(parsed: ParsedLine, line: number, options: LineProtocolOptions, out: LineReadings): void {
  const context = lineContext(parsed, options);
  if (context instanceof Rejected) {
    out.rejected.push({ line, reason: context.reason, message: context.message });
    return;
  }
  const { agentId, tags, ts } = context;
  for (const [field, value] of parsed.fields) {
    const name = metricNameOf(parsed.measurement, field);
    if (!METRIC_NAME_PATTERN.test(name)) {
      const message = `metric name ${JSON.stringify(name.slice(0, 140))} breaks [A-Za-z0-9_.:-]{1,128}`;
      out.rejected.push({ line, reason: "bad_name", message });
    } else if (value.kind === "string") {
      const message = `field ${field} is a string; only numbers, integers and booleans are readings`;
      out.rejected.push({ line, reason: "bad_value", message });
    } else if (!Number.isFinite(value.value)) {
      out.rejected.push({ line, reason: "bad_value", message: `field ${field} is not a finite number` });
    } else {
      const point: MetricPoint = { agentId, name, value: value.value, ts };
      if (tags) point.tags = tags;
      if (parsed.timestamp !== undefined) point.dedupeId = pointDedupeId("lp", agentId, name, ts, tags);
      out.points.push(point);
    }
  }
}

/**
 * The readings of a body of line protocol. More than `maxBatchItems` lines refuse the whole body
 * (`too_many`), as an oversized JSON batch is; otherwise every line is judged on its own.
 */
export function readLineProtocol(text: string, options: LineProtocolOptions): LineReadings | Rejected {
  const out: LineReadings = { points: [], rejected: [] };
  const { limits } = options;
  let lines = 0;
  let start = 0;
  for (let number = 1; start <= text.length; number++) {
    let end = text.indexOf("\n", start);
    if (end === -1) end = text.length;
    const line = text.slice(start, text.charCodeAt(end - 1) === 0x0d ? end - 1 : end).trimStart();
    start = end + 1;
    if (line === "" || line.charCodeAt(0) === 0x23 /* # */) continue;
    if (++lines > limits.maxBatchItems) {
      return reject("too_many", `at most ${limits.maxBatchItems} lines in one request or payload`);
    }
    if (line.includes("\u0000")) {
      out.rejected.push({ line: number, reason: "bad_line", message: "the line holds a NUL byte" });
      continue;
    }
    let parsed: ParsedLine;
    try {
      parsed = parseLine(line, limits.maxLineFields);
    } catch (error) {
      if (!(error instanceof LineError)) throw error;
      out.rejected.push({ line: number, reason: "bad_line", message: error.message });
      continue;
    }
    readingsOf(parsed, number, options, out);
  }
  if (lines === 0) return reject("bad_line", "the body holds no line of line protocol");
  return out;
}

/** An MQTT payload of line protocol, for the agent that published it (its topic: src/broker/topics.ts). */
export function parseLinePayload(
  payload: Buffer,
  agent: AgentRule,
  receivedAt: number,
  limits: PayloadLimits & { maxPayloadBytes: number },
): ParsedBatch {
  const oversized = refuseOversized(payload, limits);
  if (oversized) return oversized;
  const result = readLineProtocol(payload.toString("utf8"), { precision: "ns", receivedAt, limits, agent });
  return result instanceof Rejected ? refuse(result) : result;
}
