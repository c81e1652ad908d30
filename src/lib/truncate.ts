/**
 * `text` cut to `max` characters, the cut marked with how much was left out. Used wherever a
 * string that a peer or a request controls is quoted in a log, an audit entry or an error.
 */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length - max} more characters)`;
}
