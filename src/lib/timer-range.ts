/**
 * The longest delay node's timers keep: 2^31 - 1 ms, about 24.8 days. setTimeout,
 * setInterval and socket.setTimeout run a longer delay after 1 ms instead (with a
 * TimeoutOverflowWarning), so a duration meant as "very long" becomes "at once". Every
 * duration a user or caller gives that reaches a timer is checked against this at load.
 */
export const MAX_TIMER_MS = 2_147_483_647;
