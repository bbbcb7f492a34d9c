/** The ceiling: Aedes with no hooks, in memory, on MQTT over TCP. Prints `READY <port>`. */
import { createServer, type Socket } from "node:net";
import { Aedes } from "aedes";

const broker = await Aedes.createBroker();
const server = createServer((socket: Socket) => broker.handle(socket));
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`READY ${(server.address() as { port: number }).port}`);
});
process.once("SIGTERM", () => broker.close(() => server.close(() => process.exit(0))));
