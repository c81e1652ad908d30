/**
 * Round-robin service between connections. Each connection queues the requests it has
 * read; the scheduler serves one request per connection per round, up to `batch` requests
 * per event-loop turn, then yields (setImmediate) so that sockets are read again before
 * the next turn. The first turn runs at once, in the read that woke the scheduler. A client that pipelines thousands of signatures therefore delays another
 * client's request by at most one request per busy connection, instead of by its whole
 * backlog (which is what serving each read to completion did).
 */
export interface Queue {
  /** Requests waiting. */
  readonly queued: number;
  /** Serves the oldest waiting request (synchronously). */
  serveOne(): void;
  /** Called once at the end of a turn in which this queue was served (flush corked writes). */
  endTurn(): void;
}

export class FairScheduler {
  private readonly active: Queue[] = [];
  private readonly member = new Set<Queue>();
  private scheduled = false;
  /** Requests served, for tests and metrics. */
  served = 0;

  constructor(
    private readonly batch: number,
    private readonly defer: (run: () => void) => void = (run) => setImmediate(run),
  ) {}

  /** `queue` has work: it joins the rotation (at the end) if it is not in it. */
  wake(queue: Queue): void {
    if (!this.member.has(queue)) {
      this.member.add(queue);
      this.active.push(queue);
    }
    // No turn pending: serve one now, in the read that brought the work, as keyd did
    // before the round-robin (no extra event-loop hop per request for a lone client).
    // A turn is still bounded by `batch`; what remains waits for the deferred next turn,
    // after which other sockets have been read.
    if (!this.scheduled) this.turn();
  }

  /** Drops a closed queue from the rotation. */
  forget(queue: Queue): void {
    if (!this.member.delete(queue)) return;
    const i = this.active.indexOf(queue);
    if (i >= 0) this.active.splice(i, 1);
  }

  private turn(): void {
    this.scheduled = false;
    const touched = new Set<Queue>();
    let budget = this.batch;
    while (budget > 0 && this.active.length > 0) {
      const queue = this.active.shift()!;
      if (queue.queued > 0) {
        touched.add(queue);
        queue.serveOne();
        this.served++;
        budget--;
      }
      if (queue.queued > 0 && this.member.has(queue)) this.active.push(queue);
      else this.member.delete(queue);
    }
    for (const queue of touched) queue.endTurn();
    if (this.active.length > 0 && !this.scheduled) {
      this.scheduled = true;
      this.defer(() => this.turn());
    }
  }
}
