// aedes-persistence-redis ships no types: the part of its surface this project uses.
declare module "aedes-persistence-redis" {
  interface RedisPersistence {
    destroy(): Promise<void>;
  }
  export default function aedesPersistenceRedis(options: { conn?: unknown }): RedisPersistence;
}
