import protobuf from "protobufjs";

/**
 * The part of OTLP's metrics protocol that the service reads and answers (opentelemetry-proto,
 * collector/metrics/v1 and what it imports; field numbers as published). Fields the service does
 * not use (exemplars, bucket counts, scope, schema urls) are left out: protobuf skips them.
 */
const OTLP_METRICS_PROTO = `
syntax = "proto3";
package otlp;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }

message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
message ScopeMetrics { repeated Metric metrics = 2; }
message Metric {
  string name = 1;
  oneof data {
    Gauge gauge = 5;
    Sum sum = 7;
    Histogram histogram = 9;
    ExponentialHistogram exponential_histogram = 10;
    Summary summary = 11;
  }
}
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum { repeated NumberDataPoint data_points = 1; int32 aggregation_temporality = 2; bool is_monotonic = 3; }
message Histogram { repeated HistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message ExponentialHistogram { repeated ExponentialHistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message Summary { repeated SummaryDataPoint data_points = 1; }
message NumberDataPoint {
  repeated KeyValue attributes = 7;
  fixed64 time_unix_nano = 3;
  oneof value { double as_double = 4; sfixed64 as_int = 6; }
  uint32 flags = 8;
}
message HistogramDataPoint {
  repeated KeyValue attributes = 9;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  uint32 flags = 10;
  optional double min = 11;
  optional double max = 12;
}
message ExponentialHistogramDataPoint {
  repeated KeyValue attributes = 1;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  uint32 flags = 10;
  optional double min = 12;
  optional double max = 13;
}
message SummaryDataPoint {
  repeated KeyValue attributes = 7;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  message ValueAtQuantile { double quantile = 1; double value = 2; }
  repeated ValueAtQuantile quantile_values = 6;
  uint32 flags = 8;
}

message ExportMetricsServiceResponse { ExportMetricsPartialSuccess partial_success = 1; }
message ExportMetricsPartialSuccess { int64 rejected_data_points = 1; string error_message = 2; }
// google.rpc.Status, the body of an OTLP/HTTP error.
message Status { int32 code = 1; string message = 2; }
`;

const root = protobuf.parse(OTLP_METRICS_PROTO).root;
const Request = root.lookupType("otlp.ExportMetricsServiceRequest");
const Response = root.lookupType("otlp.ExportMetricsServiceResponse");
const Status = root.lookupType("otlp.Status");

/** What decoding yields for a 64-bit integer: a Long (protobuf), a string or a number (OTLP JSON). */
export type Int64 = number | string | { toNumber(): number };

export interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: Int64;
  doubleValue?: number | string;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
  bytesValue?: Uint8Array | string;
}
interface PointBase {
  attributes?: OtlpKeyValue[];
  timeUnixNano?: Int64;
  flags?: number;
}
export interface NumberPoint extends PointBase {
  asDouble?: number | string;
  asInt?: Int64;
}
/** A histogram's or an exponential histogram's point: the fields both have. */
export interface HistogramPoint extends PointBase {
  count?: Int64;
  sum?: number | string;
  min?: number | string;
  max?: number | string;
}
export interface SummaryPoint extends PointBase {
  count?: Int64;
  sum?: number | string;
  quantileValues?: { quantile?: number | string; value?: number | string }[];
}
export interface OtlpMetric {
  name?: string;
  gauge?: { dataPoints?: NumberPoint[] };
  sum?: { dataPoints?: NumberPoint[]; aggregationTemporality?: number | string };
  histogram?: { dataPoints?: HistogramPoint[]; aggregationTemporality?: number | string };
  exponentialHistogram?: { dataPoints?: HistogramPoint[]; aggregationTemporality?: number | string };
  summary?: { dataPoints?: SummaryPoint[] };
}
/** An `ExportMetricsServiceRequest` as protobuf decodes it, or as OTLP's JSON encoding spells it. */
export interface OtlpMetricsRequest {
  resourceMetrics?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeMetrics?: { metrics?: OtlpMetric[] }[];
  }[];
}

/** Decodes a protobuf body; throws on bytes that are not one (protobuf's own error). */
export function decodeOtlpRequest(body: Uint8Array): OtlpMetricsRequest {
  return Request.decode(body) as unknown as OtlpMetricsRequest;
}

/** Encodes a request as an exporter would send it (for the benchmark, which sends prepared bodies). */
export function encodeOtlpRequest(request: OtlpMetricsRequest): Uint8Array {
  return Request.encode(Request.fromObject(request)).finish();
}

export function encodeOtlpResponse(rejected: number, errorMessage: string): Uint8Array {
  const partialSuccess = rejected > 0 ? { rejectedDataPoints: rejected, errorMessage } : undefined;
  return Response.encode(Response.create(partialSuccess ? { partialSuccess } : {})).finish();
}

export function encodeOtlpStatus(code: number, message: string): Uint8Array {
  return Status.encode(Status.create({ code, message })).finish();
}
