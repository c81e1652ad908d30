/** Errors raised by the edge, each with a stable `code` (tests and logs match on it). */
export class EdgeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EdgeError';
  }
}
