import type { Writable } from "node:stream";

/**
 * Corks a connection at its first write in a tick and uncorks it once the tick's work is done, so
 * the acknowledgements released together by one durable batch leave in one system call and one
 * TCP segment instead of one each.
 */
export function coalesceWrites<T extends Writable>(connection: T): T {
  const write = connection.write.bind(connection);
  let corked = false;
  const uncork = () => {
    corked = false;
    connection.uncork();
  };
  connection.write = ((...args: Parameters<T["write"]>) => {
    if (!corked) {
      corked = true;
      connection.cork();
      process.nextTick(uncork);
    }
    return (write as (...a: unknown[]) => boolean)(...args);
  }) as T["write"];
  return connection;
}
