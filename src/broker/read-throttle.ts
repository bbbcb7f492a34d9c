import type { Duplex } from "node:stream";

/**
 * The most a connection hands the broker per read. A read's publishes are all handled before a
 * hold can take effect, so this is how far past its limit a client can get; it is well above a
 * normal client's reads (a few packets at a time). The rest waits for the next turn of the event
 * loop: Aedes reads again from inside its parser when a read's packets are all handled at once
 * (rejected QoS 0 publishes), and must then be told that nothing is there.
 */
const MAX_READ_BYTES = 16 * 1024;

const byConnection = new WeakMap<Duplex, ReadThrottle>();

/**
 * What the connections of one tenant together hand the broker in one turn of the event loop: at
 * most `bytes` (MQTT_TENANT_TURN_BYTES), however many they are; those past it wait for the next turn. So a turn's
 * work grows with the tenants that have data, not with their connections: a tenant's many flooding
 * agents, each inside its own rate, cannot fill every turn before another tenant's packets are read
 * (bench/README.md, "Noisy neighbour").
 */
export class TurnShare {
  constructor(private readonly bytes: number) {}

  private used = 0;
  private turnEnding = false;
  /** Who waits for the next turn: those that got nothing this turn go first, then those that got a slice. */
  private readonly starved = new Set<() => void>();
  private readonly served = new Set<() => void>();

  /** Bytes the tenant's connections may still read this turn. */
  left(): number {
    this.endTurnLater();
    return this.bytes - this.used;
  }

  spend(bytes: number): void {
    this.used += bytes;
  }

  /**
   * `resume` runs at the start of the next turn: first those `served` nothing this turn, so the same
   * connection does not take every turn's share while the others of its tenant wait.
   */
  waitForNextTurn(resume: () => void, served: boolean): void {
    (served ? this.served : this.starved).add(resume);
    this.endTurnLater();
  }

  private endTurnLater(): void {
    if (this.turnEnding) return;
    this.turnEnding = true;
    setImmediate(() => {
      this.turnEnding = false;
      this.used = 0;
      const waiting = [...this.starved, ...this.served];
      this.starved.clear();
      this.served.clear();
      for (const resume of waiting) resume();
    });
  }
}

/** One TurnShare per tenant, for the connections of its agents on this broker. */
export class TurnShares {
  private readonly byTenant = new Map<string, TurnShare>();

  constructor(private readonly bytes: number) {}

  of(tenantId: string): TurnShare {
    let share = this.byTenant.get(tenantId);
    if (!share) {
      share = new TurnShare(this.bytes);
      this.byTenant.set(tenantId, share);
    }
    return share;
  }
}

/**
 * Stops the broker reading a connection for a while: a client over its rate is not disconnected and
 * nothing it sent is dropped; its socket is simply not read until its tokens have refilled, so the
 * kernel's buffers fill and the client's own TCP stack slows it down (its QoS 1 publishes wait for
 * their PUBACKs). Aedes reads a connection with `read()` on `readable`: while held, `read()` answers
 * that nothing is there, and when the hold ends the connection is announced readable again.
 * Attach it before anything else that wraps `read()` (the packet-size guard): what it puts back
 * must not have been looked at yet.
 */
export class ReadThrottle {
  /** When the timed hold ends (epoch ms); the hold is the timer, not a comparison with the clock. */
  private until = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Held until this settles as well (a lease on its way), and then for as long as it says. */
  private awaiting: Promise<number> | undefined;
  /** Whether a read was refused during the hold: only then must the reader be woken. */
  private refused = false;
  /** A slice was handed out this turn of the event loop; the rest waits for the next. */
  private sliced = false;
  /** The turns this connection shares with the other connections of its tenant, once it is known. */
  private share: TurnShare | undefined;
  /** A new turn: the slice is over, and a reader refused meanwhile is told to read again. */
  private readonly nextTurn = () => {
    this.sliced = false;
    this.wake();
  };

  private constructor(private readonly connection: Duplex) {
    const read = connection.read.bind(connection);
    connection.read = (size?: number) => {
      if (this.awaiting || this.timer || this.sliced) {
        this.refused = true;
        return null;
      }
      // Node's own read(0) (topping its buffer up) hands out nothing: it must not get a slice, which
      // its caller would drop, the bytes lost to the parser.
      if (size === 0) return read(0);
      // read(n) takes n bytes off the buffered chunks without joining the rest (it answers null for
      // more than is buffered, hence the bound by what is buffered).
      const { share } = this;
      const allowed = share ? Math.min(share.left(), MAX_READ_BYTES) : MAX_READ_BYTES;
      // The tenant's share of this turn is spent: this connection waits for the next.
      if (allowed <= 0) {
        this.refused = true;
        this.sliced = true;
        share?.waitForNextTurn(this.nextTurn, false);
        return null;
      }
      const buffered = connection.readableLength;
      if (buffered <= allowed) {
        share?.spend(buffered);
        return read(size);
      }
      this.sliced = true;
      // The rest is announced next turn whatever Aedes does meanwhile: a slice that ends inside a
      // packet (one larger than the slice) gives Aedes no packet to finish, so it would not read
      // again, and the stream announces nothing while data it holds is unread.
      this.refused = true;
      if (share) {
        share.spend(allowed);
        share.waitForNextTurn(this.nextTurn, true);
      } else {
        setImmediate(this.nextTurn);
      }
      return read(allowed);
    };
    connection.once("close", () => clearTimeout(this.timer));
  }

  /** From now on this connection's reads count against its tenant's share of each turn. */
  shareTurns(share: TurnShare): void {
    this.share = share;
  }

  static attach(connection: Duplex): ReadThrottle {
    const throttle = new ReadThrottle(connection);
    byConnection.set(connection, throttle);
    return throttle;
  }

  static of(connection: Duplex): ReadThrottle | undefined {
    return byConnection.get(connection);
  }

  /** Holds reading for `ms` from `now`, unless already held longer; returns how much longer it is now held. */
  holdFor(ms: number, now = Date.now()): number {
    const until = now + ms;
    if (this.timer && until <= this.until) return 0;
    const added = until - (this.timer ? Math.max(this.until, now) : now);
    this.until = until;
    this.arm();
    return Math.max(0, added);
  }

  /**
   * Ends the hold at `until` by the clock. Timers run on libuv's loop time, which can lag the clock
   * by a millisecond: one that fires early is set again for what is left.
   */
  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (Date.now() < this.until) return this.arm();
      this.timer = undefined;
      this.wake();
    }, this.until - Date.now());
  }

  /**
   * Holds reading until `settled` settles, then for the milliseconds it resolves to (nothing when it
   * already waits for that same promise); `onHeld` is told how much longer reading was held for it.
   */
  holdWhile(settled: Promise<number>, onHeld: (ms: number) => void): void {
    if (this.awaiting === settled) return;
    this.awaiting = settled;
    const since = Date.now();
    const done = (ms: number) => {
      if (this.awaiting !== settled) return;
      this.awaiting = undefined;
      const now = Date.now();
      const waited = Math.max(0, now - (this.timer ? Math.max(since, this.until) : since));
      const added = ms > 0 ? this.holdFor(ms, now) : 0;
      this.wake();
      onHeld(waited + added);
    };
    settled.then(done, () => done(0));
  }

  /** At the end of every hold: a reader that was refused meanwhile is told to read again. */
  private wake(): void {
    if (this.awaiting || this.timer || this.sliced || !this.refused || this.connection.destroyed) return;
    this.refused = false;
    this.connection.emit("readable");
  }
}
