import swagger from "@fastify/swagger";
import fastJson from "fast-json-stringify";
import type { FastifyInstance, FastifySerializerCompiler } from "fastify";
import fp from "fastify-plugin";
import { jsonSchemaTransform, jsonSchemaTransformObject, validatorCompiler } from "fastify-type-provider-zod";
import { z } from "zod";
import { reading } from "./schemas.ts";

type JsonSchema = { [key: string]: unknown };

const isMap = (s: JsonSchema) =>
  s.type === "object" && s.properties === undefined && typeof s.additionalProperties === "object";
const isMapOrNull = (s: JsonSchema) =>
  isMap(s) || (Array.isArray(s.anyOf) && (s.anyOf as JsonSchema[]).every((b) => isMap(b) || b.type === "null"));

/**
 * The schema as fast-json-stringify should follow it: a map (tags) or a map-or-null becomes "any
 * JSON", written by JSON.stringify, because fast-json-stringify walks a map's keys one by one and
 * tries each branch of a nullable one: 20,000 rows with tags took 27 ms that way and 9 without.
 */
function forSerializer(schema: JsonSchema): JsonSchema {
  if (isMapOrNull(schema)) return {};
  const walk = (value: unknown): unknown =>
    Array.isArray(value)
      ? value.map(walk)
      : value !== null && typeof value === "object"
        ? forSerializer(value as JsonSchema)
        : value;
  return Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, walk(value)]));
}

/**
 * Replies are written by fast-json-stringify (fastify's own serializer) from the JSON Schema of
 * their zod schema: as fast as a hand-written schema, and the same shape the document shows.
 */
const serializerCompiler: FastifySerializerCompiler<z.ZodType> = ({ schema }) => {
  // An empty registry: no named definitions, everything inline, for the serializer alone.
  const json = z.toJSONSchema(schema, {
    target: "draft-7",
    io: "output",
    metadata: z.registry(),
    unrepresentable: "any",
  }) as JsonSchema;
  delete json.$schema;
  return fastJson(forSerializer(json)) as (data: unknown) => string;
};

/**
 * Schemas for every route (zod, through fastify-type-provider-zod) and the OpenAPI document made
 * from them, at GET /api/openapi.json. Registered before any route, so every route is in it.
 */
export const openapiPlugin = fp(
  async (app: FastifyInstance) => {
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    await app.register(swagger, {
      openapi: {
        openapi: "3.1.0",
        info: {
          title: "edge-ingest",
          // The API's version, as in its paths (/api/v1).
          version: "1",
          description:
            "Metrics ingestion, queries, live streams and administration. Devices over MQTT: docs/devices.md; every refusal with its status and MQTT 5 code: docs/refusals.md.",
        },
        components: {
          // Referenced by POST /api/v1/metrics, whose items are judged one by one rather than by the schema.
          schemas: { Reading: z.toJSONSchema(reading, { target: "draft-2020-12" }) as Record<string, unknown> },
          securitySchemes: {
            bearer: { type: "http", scheme: "bearer", description: "a tenant token or the admin token" },
            basic: { type: "http", scheme: "basic", description: "an agent's username and password" },
            queryToken: {
              type: "apiKey",
              in: "query",
              name: "token",
              description: "a tenant token, for EventSource, which cannot set headers",
            },
          },
        },
        security: [{ bearer: [] }, { basic: [] }],
      },
      transform: jsonSchemaTransform,
      transformObject: (document) => {
        const openapi = jsonSchemaTransformObject(document);
        // Every named schema comes in an input and an output variant; ours are replies, so only
        // the variants something refers to stay.
        const used = JSON.stringify(openapi.paths);
        const schemas: Record<string, unknown> = ("components" in openapi && openapi.components?.schemas) || {};
        for (const name of Object.keys(schemas)) {
          if (name.endsWith("Input") && !used.includes(`"#/components/schemas/${name}"`)) delete schemas[name];
        }
        return openapi;
      },
    });
    app.get("/api/openapi.json", { schema: { hide: true } }, async () => app.swagger());
  },
  { name: "openapi", dependencies: ["errors"] },
);
