/** The limits a tenant's clients are held to; each has a default in the config and may be overridden per tenant. */
export interface TenantLimits {
  agentReadingsPerSecond: number;
  agentReadingsBurst: number;
  agentBytesPerSecond: number;
  agentBytesBurst: number;
  tenantReadingsPerSecond: number;
  tenantReadingsBurst: number;
  maxConnections: number;
}

export type LimitKey = keyof TenantLimits;

/** A tenant's overrides: a value replaces the default, null (or absence) keeps it. */
export type LimitOverrides = { [K in LimitKey]?: number | null };

/** Every limit, with its name in the environment (the default), the admin API and the CLI. */
export const LIMITS: readonly { key: LimitKey; env: string; api: string; flag: string; means: string }[] = [
  {
    key: "agentReadingsPerSecond",
    env: "AGENT_MAX_READINGS_PER_SECOND",
    api: "agent_readings_per_second",
    flag: "agent-readings-per-second",
    means: "readings one agent may send per second (MQTT and HTTP)",
  },
  {
    key: "agentReadingsBurst",
    env: "AGENT_READINGS_BURST",
    api: "agent_readings_burst",
    flag: "agent-readings-burst",
    means: "readings one agent may send at once above its rate",
  },
  {
    key: "agentBytesPerSecond",
    env: "AGENT_MAX_BYTES_PER_SECOND",
    api: "agent_bytes_per_second",
    flag: "agent-bytes-per-second",
    means: "payload bytes one agent may send per second",
  },
  {
    key: "agentBytesBurst",
    env: "AGENT_BYTES_BURST",
    api: "agent_bytes_burst",
    flag: "agent-bytes-burst",
    means: "payload bytes one agent may send at once above its rate",
  },
  {
    key: "tenantReadingsPerSecond",
    env: "TENANT_MAX_READINGS_PER_SECOND",
    api: "tenant_readings_per_second",
    flag: "tenant-readings-per-second",
    means: "readings all of a tenant's agents together may send per second, across every process",
  },
  {
    key: "tenantReadingsBurst",
    env: "TENANT_READINGS_BURST",
    api: "tenant_readings_burst",
    flag: "tenant-readings-burst",
    means: "readings a tenant may send at once above its rate",
  },
  {
    key: "maxConnections",
    env: "TENANT_MAX_CONNECTIONS",
    api: "max_connections",
    flag: "max-connections",
    means: "MQTT connections of a tenant's agents and viewers, across every broker",
  },
];

/** The limits that hold for a tenant: its overrides over the defaults. */
export function effectiveLimits(defaults: TenantLimits, overrides: LimitOverrides): TenantLimits {
  const limits = { ...defaults };
  for (const { key } of LIMITS) {
    const value = overrides[key];
    if (value !== null && value !== undefined) limits[key] = value;
  }
  return limits;
}
