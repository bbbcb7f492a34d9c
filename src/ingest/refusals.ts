/**
 * The catalogue of refusals: every reason the service refuses something has one name (the `reason`
 * of the feedback topic, of `/metrics` and the `code` of HTTP errors), one HTTP status, one MQTT 5
 * reason code and a one-line description. The API, the broker, the ingest parsers and
 * docs/refusals.md (generated from here: `npm run docs`) all read it.
 */

/** Where a refusal is given. */
export type RefusalScope = "reading" | "connect" | "subscribe" | "disconnect" | "request";

export interface Refusal {
  /** The HTTP status of an API answer carrying it. */
  readonly status: number;
  /** The MQTT 5 reason code of the CONNACK / PUBACK / DISCONNECT carrying it. */
  readonly mqtt5: number;
  readonly scope: RefusalScope;
  readonly description: string;
}

const refusal = (scope: RefusalScope, status: number, mqtt5: number, description: string): Refusal => ({
  scope,
  status,
  mqtt5,
  description,
});

// MQTT 5 reason codes (MQTT 5.0, 2.4) that the broker sends.
export const MQTT5 = {
  SUCCESS: 0x00,
  UNSPECIFIED_ERROR: 0x80,
  MALFORMED_PACKET: 0x81,
  PROTOCOL_ERROR: 0x82,
  UNSUPPORTED_PROTOCOL_VERSION: 0x84,
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  BAD_USERNAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_BUSY: 0x89,
  SERVER_SHUTTING_DOWN: 0x8b,
  KEEP_ALIVE_TIMEOUT: 0x8d,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  TOPIC_ALIAS_INVALID: 0x94,
  PACKET_TOO_LARGE: 0x95,
  QUOTA_EXCEEDED: 0x97,
  ADMINISTRATIVE_ACTION: 0x98,
  PAYLOAD_FORMAT_INVALID: 0x99,
  CONNECTION_RATE_EXCEEDED: 0x9f,
} as const;

/**
 * A reading refused: the publish (or the item of a batch, or the HTTP item) is acknowledged and
 * discarded, and the reason is counted in `edge_ingest_metrics_rejected_total{source,reason}`.
 */
const READING_REFUSALS = {
  bad_topic: refusal("reading", 400, MQTT5.TOPIC_NAME_INVALID, "a malformed topic under the agent's own prefix"),
  bad_json: refusal("reading", 400, MQTT5.PAYLOAD_FORMAT_INVALID, "the payload or body is not JSON"),
  bad_line: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "a line of InfluxDB line protocol that does not parse, or with more than `LINE_PROTOCOL_MAX_FIELDS` fields (formats.md)",
  ),
  bad_otlp: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "an OTLP body that does not decode as `ExportMetricsServiceRequest` (protobuf or JSON)",
  ),
  bad_value: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "no finite numeric `value` (or the item is not an object or a number)",
  ),
  bad_timestamp: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "not ISO-8601 with a zone or an epoch number, negative, or more than `MAX_FUTURE_SKEW_SECONDS` ahead",
  ),
  too_old: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "the timestamp is older than `METRICS_RETENTION_DAYS`",
  ),
  bad_dedupe_id: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "`dedupe_id` is not a string of 1 to `MAX_DEDUPE_ID_LENGTH` characters",
  ),
  bad_tags: refusal(
    "reading",
    400,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "`tags` is not an object of strings, has more than `MAX_TAGS`, or a name or value over `MAX_TAG_LENGTH`",
  ),
  bad_name: refusal("reading", 400, MQTT5.TOPIC_NAME_INVALID, "the metric name breaks `[A-Za-z0-9_.:-]{1,128}`"),
  bad_agent_id: refusal(
    "reading",
    400,
    MQTT5.NOT_AUTHORIZED,
    "HTTP: a missing or malformed `agent_id` with an ingest token, or another agent's",
  ),
  too_large: refusal(
    "reading",
    413,
    MQTT5.QUOTA_EXCEEDED,
    "the payload is over `MQTT_MAX_PAYLOAD_BYTES`, or the body over `HTTP_BODY_LIMIT_BYTES`",
  ),
  too_many: refusal(
    "reading",
    400,
    MQTT5.QUOTA_EXCEEDED,
    "more than `MAX_BATCH_ITEMS` readings in one payload or request",
  ),
  forbidden: refusal(
    "reading",
    403,
    MQTT5.NOT_AUTHORIZED,
    "another tenant's or agent's topic, or a topic or resource the principal may not use",
  ),
  retained_quota: refusal(
    "reading",
    429,
    MQTT5.QUOTA_EXCEEDED,
    "MQTT: a retained message or will past the retained quota (limits.md)",
  ),
} as const;

/** A CONNECT refused: CONNACK with the code, counted in `edge_ingest_mqtt_connects_refused_total{reason}`. */
const CONNECT_REFUSALS = {
  bad_client_id: refusal(
    "connect",
    400,
    MQTT5.CLIENT_IDENTIFIER_NOT_VALID,
    "a client id over `MQTT_MAX_CLIENT_ID_LENGTH`, with a NUL or invalid UTF-8, or empty with a persistent session",
  ),
  no_credentials: refusal("connect", 401, MQTT5.NOT_AUTHORIZED, "no credentials, and `MQTT_ALLOW_ANONYMOUS` is off"),
  bad_credentials: refusal("connect", 401, MQTT5.BAD_USERNAME_OR_PASSWORD, "an unknown, wrong or revoked credential"),
  bad_certificate: refusal(
    "connect",
    401,
    MQTT5.NOT_AUTHORIZED,
    "a client certificate that is neither pinned to an agent nor issued by a tenant's CA (with a CN that is an agent id, registered or registrable), or expired, not yet valid or revoked (certificates.md)",
  ),
  certificate_required: refusal(
    "connect",
    401,
    MQTT5.NOT_AUTHORIZED,
    "no client certificate on a TLS listener with `MQTT_TLS_CLIENT_AUTH=required`",
  ),
  not_authorized: refusal(
    "connect",
    403,
    MQTT5.NOT_AUTHORIZED,
    "a credential that may not connect over MQTT (an ingest token)",
  ),
  tenant_connection_quota: refusal(
    "connect",
    429,
    MQTT5.QUOTA_EXCEEDED,
    "the tenant already holds its `max_connections` on the brokers",
  ),
  connection_rate: refusal(
    "connect",
    429,
    MQTT5.CONNECTION_RATE_EXCEEDED,
    "the connection's wait for its CONNACK (its turn at `MQTT_MAX_CONNECTION_RATE` plus the handshakes ahead of it) would pass `MQTT_CONNECTION_MAX_WAIT_MS`: retry after a random pause (3.1.1: CONNACK 3)",
  ),
} as const;

/** A subscription filter refused: SUBACK with the code (3.1.1: 128), counted in `edge_ingest_mqtt_subscriptions_denied_total`. */
const SUBSCRIBE_REFUSALS = {
  forbidden_filter: refusal(
    "subscribe",
    403,
    MQTT5.NOT_AUTHORIZED,
    "a filter outside the principal's lane (devices.md)",
  ),
  bad_filter: refusal(
    "subscribe",
    400,
    MQTT5.TOPIC_FILTER_INVALID,
    "MQTT 5: not a topic filter (or a `$share/` filter without a share name and a filter), or over `MQTT_MAX_TOPIC_LEVELS` (a 3.1.1 client is disconnected, as 3.1.1 requires; its invalid `$share/` filter is SUBACK 128)",
  ),
} as const;

/**
 * The broker closed a connection: an MQTT 5 client gets a DISCONNECT with the code first. Counted
 * in `edge_ingest_mqtt_forced_disconnects_total{reason}`, except what the protocol closes
 * (`session_taken_over`, `shutting_down`, `keep_alive_timeout`, `protocol_error`).
 */
const DISCONNECT_REFUSALS = {
  violations: refusal("disconnect", 403, MQTT5.NOT_AUTHORIZED, "`MQTT_MAX_VIOLATIONS` forbidden publishes"),
  slow_consumer: refusal(
    "disconnect",
    503,
    MQTT5.QUOTA_EXCEEDED,
    "more than `MQTT_MAX_OUTGOING_BYTES` or `MQTT_MAX_OUTGOING_MESSAGES` waiting to be written to the client",
  ),
  packet_too_large: refusal(
    "disconnect",
    413,
    MQTT5.PACKET_TOO_LARGE,
    "a packet announced over `MQTT_MAX_PACKET_BYTES`",
  ),
  max_connections: refusal("disconnect", 503, MQTT5.SERVER_BUSY, "the broker holds `MQTT_MAX_CONNECTIONS` connections"),
  revoked: refusal(
    "disconnect",
    401,
    MQTT5.ADMINISTRATIVE_ACTION,
    "the connection's credential was revoked (a pinned certificate too), or its tenant CA removed",
  ),
  certificate_expired: refusal(
    "disconnect",
    401,
    MQTT5.NOT_AUTHORIZED,
    "the client certificate the connection was made with reached its `notAfter`",
  ),
  server_busy: refusal(
    "disconnect",
    503,
    MQTT5.SERVER_BUSY,
    "a QoS 1/2 publish the queue could not take: not acknowledged, the client resends it after reconnecting",
  ),
  receive_maximum_exceeded: refusal(
    "disconnect",
    429,
    MQTT5.RECEIVE_MAXIMUM_EXCEEDED,
    "MQTT 5: more unacknowledged QoS 1/2 publishes than `MQTT_RECEIVE_MAXIMUM`",
  ),
  topic_alias_invalid: refusal(
    "disconnect",
    400,
    MQTT5.TOPIC_ALIAS_INVALID,
    "MQTT 5: a topic alias of 0 or over `MQTT_TOPIC_ALIAS_MAXIMUM`",
  ),
  protocol_error: refusal(
    "disconnect",
    400,
    MQTT5.PROTOCOL_ERROR,
    "a packet the protocol forbids (a topic alias never set, a malformed packet)",
  ),
  session_taken_over: refusal(
    "disconnect",
    409,
    MQTT5.SESSION_TAKEN_OVER,
    "the same principal connected again with the same client id, on any broker",
  ),
  keep_alive_timeout: refusal(
    "disconnect",
    408,
    MQTT5.KEEP_ALIVE_TIMEOUT,
    "nothing received for 1.5 keep alive periods",
  ),
  shutting_down: refusal(
    "disconnect",
    503,
    MQTT5.SERVER_SHUTTING_DOWN,
    "the broker is draining (SIGTERM): publishes after it are not acknowledged, the client resends them elsewhere",
  ),
} as const;

/** An HTTP request refused as a whole: `{"error": {"code", "message"}}` with the status. */
const REQUEST_REFUSALS = {
  bad_request: refusal("request", 400, MQTT5.MALFORMED_PACKET, "a parameter, query or body the route's schema refuses"),
  unauthorized: refusal(
    "request",
    401,
    MQTT5.BAD_USERNAME_OR_PASSWORD,
    "no credential, or an unknown, wrong or revoked one",
  ),
  not_found: refusal("request", 404, MQTT5.UNSPECIFIED_ERROR, "no such route, tenant or credential"),
  conflict: refusal("request", 409, MQTT5.UNSPECIFIED_ERROR, "the agent already exists in the tenant"),
  unsupported_media_type: refusal(
    "request",
    415,
    MQTT5.PAYLOAD_FORMAT_INVALID,
    "a body that is not `application/json`",
  ),
  rate_limited: refusal(
    "request",
    429,
    MQTT5.QUOTA_EXCEEDED,
    "over an agent's or tenant's rate: nothing stored, retry after `Retry-After`",
  ),
  unavailable: refusal(
    "request",
    503,
    MQTT5.SERVER_UNAVAILABLE,
    "the queue or the database cannot take it now (the queue over `QUEUE_MAX_DEPTH`, or its Redis not answering within `REDIS_COMMAND_TIMEOUT_MS`): nothing stored, retry after `Retry-After`",
  ),
  internal: refusal("request", 500, MQTT5.UNSPECIFIED_ERROR, "a fault of the service (logged)"),
} as const;

export const REFUSALS = {
  ...READING_REFUSALS,
  ...CONNECT_REFUSALS,
  ...SUBSCRIBE_REFUSALS,
  ...DISCONNECT_REFUSALS,
  ...REQUEST_REFUSALS,
} as const satisfies Record<string, Refusal>;

export type RefusalName = keyof typeof REFUSALS;
/** Why a reading was refused. */
export type RejectionReason = keyof typeof READING_REFUSALS;
/** Why a CONNECT was refused. */
export type ConnectRefusal = keyof typeof CONNECT_REFUSALS;
/** Why the broker closed a connection. */
export type DisconnectReason = keyof typeof DISCONNECT_REFUSALS;

export const REJECTION_REASONS = Object.keys(READING_REFUSALS) as [RejectionReason, ...RejectionReason[]];

/** A reading refused with its reason; a class so it can never be mistaken for parsed data. */
export class Rejected {
  constructor(
    readonly reason: RejectionReason,
    readonly message: string,
  ) {}
}

export function reject(reason: RejectionReason, message: string): Rejected {
  return new Rejected(reason, message);
}

/**
 * The MQTT 3.1 / 3.1.1 CONNACK return code (3.2.2.3) for a refusal's MQTT 5 code: those versions
 * have five, so a quota or an overload is "server unavailable".
 */
export function connackReturnCode(mqtt5: number): 1 | 2 | 3 | 4 | 5 {
  switch (mqtt5) {
    case MQTT5.UNSUPPORTED_PROTOCOL_VERSION:
      return 1;
    case MQTT5.CLIENT_IDENTIFIER_NOT_VALID:
      return 2;
    case MQTT5.BAD_USERNAME_OR_PASSWORD:
      return 4;
    case MQTT5.NOT_AUTHORIZED:
      return 5;
    default:
      return 3;
  }
}
