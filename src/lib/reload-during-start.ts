/**
 * SIGHUP while a daemon starts.
 *
 * keyd and the edge install their SIGHUP handler (reload) only once they have started, and
 * until then the signal's default action applies: terminate (signal(7)). Starting can take
 * seconds — keyd unsealing its root key in the TPM, the edge waiting for an unreachable keyd —
 * and the systemd units reload with `kill -HUP $MAINPID` (deploy/systemd), so a
 * `systemctl reload` in that window killed the daemon instead of reloading it.
 *
 * holdReloadsDuringStart() catches SIGHUP from the first line of the command. Once the
 * daemon's own handler is in place, release() removes the holder and says whether a SIGHUP
 * came meanwhile; the daemon then reloads once, since its start may have read the config
 * before the operator's change.
 */
export interface HeldReloads {
  /** Stops holding; true when at least one SIGHUP arrived while held. Idempotent. */
  release(): boolean;
}

export function holdReloadsDuringStart(): HeldReloads {
  let arrived = false;
  let held = true;
  const hold = (): void => {
    arrived = true;
  };
  process.on('SIGHUP', hold);
  return {
    release() {
      if (held) {
        held = false;
        process.off('SIGHUP', hold);
      }
      return arrived;
    },
  };
}
