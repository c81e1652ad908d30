#!/usr/bin/env node
/**
 * `delegator <command>` — the one CLI entry. This file only dispatches: each command
 * lives in `src/cli/<command>.ts` and exports `main(argv)` (returns the exit code)
 * and `summary` (one line for the help).
 */

interface CommandModule {
  main(argv: string[]): Promise<number>;
  summary: string;
}

/**
 * Registry: command name → its module, loaded when the command runs (so `delegator demo`
 * does not load keyd's PKCS#11 code, for one). Literal paths only: a bundler or a reader can
 * see every module the CLI may load. Add one line per command.
 */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  demo: () => import('./demo.js'),
  serve: () => import('./serve.js'),
  keyd: () => import('./keyd.js'),
  admin: () => import('./admin.js'),
  edge: () => import('./edge.js'),
  status: () => import('./status.js'),
};

async function load(name: string): Promise<CommandModule | undefined> {
  return Object.hasOwn(COMMANDS, name) ? COMMANDS[name]!() : undefined;
}

async function help(): Promise<void> {
  const lines = ['Usage: delegator <command> [options]', '', 'Commands:'];
  for (const name of Object.keys(COMMANDS)) {
    const mod = await load(name);
    if (mod) lines.push(`  ${name.padEnd(8)} ${mod.summary}`);
  }
  lines.push('', 'Run `delegator <command> --help` for the options of a command.');
  process.stdout.write(lines.join('\n') + '\n');
}

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    await help();
    return name ? 0 : 2;
  }
  let mod: CommandModule | undefined;
  try {
    mod = await load(name);
  } catch (err) {
    return failed(name, err);
  }
  if (!mod) {
    process.stderr.write(`delegator: unknown command '${name}' (see delegator --help)\n`);
    return 2;
  }
  try {
    return await mod.main(rest);
  } catch (err) {
    return failed(name, err);
  }
}

/**
 * An error the command did not catch (`delegator demo --home /dev/null/x`: ENOTDIR) is said
 * under the command's name, as the command's own errors are (`delegator status: …`): a bare
 * `delegator: ENOTDIR …` left the operator to guess which command failed. Exit 1.
 */
function failed(name: string, err: unknown): number {
  process.stderr.write(`delegator ${name}: ${messageOf(err)}\n`);
  return 1;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`delegator: ${messageOf(err)}\n`);
    process.exitCode = 1;
  },
);
