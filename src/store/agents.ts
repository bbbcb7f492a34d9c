import type { Sql } from "./database.ts";
import { iso } from "./readings.ts";

export interface AgentActivityRow {
  agent_id: string;
  registered: boolean;
  /** When a reading of it was last stored; null if none ever was (or all were retired). */
  last_seen_at: string | null;
  readings_last_hour: number;
}

/**
 * A tenant's agents as an operator sees them: every registered agent and every agent an ingest
 * token wrote for, with when it was last heard of and how much it sent in the last hour. Read from
 * small tables only (agents, metric_latest, agent_activity), never from the metrics themselves.
 */
export class AgentDirectory {
  constructor(private readonly sql: Sql) {}

  /** A page of agents by agent_id, from `after` (exclusive) on; `agentId` narrows to one. */
  list(scope: { tenantId: string; agentId?: string }, limit: number, after?: string): Promise<AgentActivityRow[]> {
    const params: unknown[] = [scope.tenantId, after ?? "", limit];
    let only = "";
    if (scope.agentId !== undefined) {
      params.push(scope.agentId);
      only = " AND agent_id = $4";
    }
    return this.sql<AgentActivityRow>(
      `WITH ids AS (
         SELECT agent_id FROM agents WHERE tenant_id = $1::uuid AND agent_id > $2${only}
         UNION
         SELECT DISTINCT agent_id FROM metric_latest WHERE tenant_id = $1::uuid AND agent_id > $2${only}
         ORDER BY agent_id LIMIT $3
       )
       SELECT ids.agent_id,
         EXISTS (SELECT 1 FROM agents a WHERE a.tenant_id = $1::uuid AND a.agent_id = ids.agent_id) AS registered,
         (SELECT ${iso("max(l.received_at)")}
            FROM metric_latest l WHERE l.tenant_id = $1::uuid AND l.agent_id = ids.agent_id) AS last_seen_at,
         (SELECT coalesce(sum(readings), 0)::int FROM agent_activity c
            WHERE c.tenant_id = $1::uuid AND c.agent_id = ids.agent_id
              AND c.minute > now() - interval '1 hour') AS readings_last_hour
       FROM ids ORDER BY ids.agent_id`,
      params,
    );
  }
}
