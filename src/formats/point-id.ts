import { hash } from "node:crypto";

/**
 * The dedupe id of a reading that carries its own time in a format without ids of its own (line
 * protocol, OTLP): the same point sent again (a client's retry after an answer it never got) is
 * stored once within the dedupe window, as InfluxDB keeps one value per series and time. The id
 * covers agent, metric, time and tags, so distinct points never share one.
 */
export function pointDedupeId(
  format: "lp" | "otlp",
  agentId: string,
  name: string,
  ts: number,
  tags: Record<string, string> | undefined,
): string {
  // NUL separates: no part can hold one, so distinct points never make the same key.
  let key = `${agentId}\0${name}\0${ts}`;
  if (tags) for (const tag in tags) key += `\0${tag}\0${tags[tag]}`;
  // One-shot hashing: a Hash object a reading cost four times as much (bench: formats).
  return `${format}:${hash("sha256", key, "base64url").slice(0, 32)}`;
}
