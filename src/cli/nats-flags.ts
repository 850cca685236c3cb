/**
 * The NATS authentication and TLS flags shared by `fan serve --publish` and `fan connect nats://`.
 * Secrets come from files, never from the command line (where `ps` shows them).
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { NatsAuthOptions } from '../remote/index.js';

/** The flags as commander parses them. */
export interface NatsFlags {
  natsTokenFile?: string;
  natsUser?: string;
  natsPasswordFile?: string;
  natsCreds?: string;
  natsCa?: string;
  natsCert?: string;
  natsKey?: string;
}

/** Add the NATS auth and TLS options to a command. */
export function addNatsFlags(cmd: Command): Command {
  return cmd
    .option('--nats-token-file <file>', 'nats: file holding the token nats-server expects')
    .option('--nats-user <name>', 'nats: user name (with --nats-password-file)')
    .option('--nats-password-file <file>', 'nats: file holding the password of --nats-user')
    .option('--nats-creds <file>', 'nats: .creds file (user JWT and NKey seed) for operator/decentralized auth')
    .option('--nats-ca <file>', 'nats: PEM CA certificate to trust; any --nats-ca/--nats-cert requires TLS')
    .option('--nats-cert <file>', 'nats: PEM client certificate for servers that verify clients (with --nats-key)')
    .option('--nats-key <file>', 'nats: PEM private key of --nats-cert');
}

function secret(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(`cannot read the NATS ${what} file ${file}: ${(err as Error).message}`);
  }
}

/** The parsed flags as {@link NatsAuthOptions} (secret files read here). */
export function natsAuthOf(flags: NatsFlags): NatsAuthOptions {
  return {
    ...(flags.natsTokenFile !== undefined ? { token: secret(flags.natsTokenFile, 'token') } : {}),
    ...(flags.natsUser !== undefined ? { user: flags.natsUser } : {}),
    ...(flags.natsPasswordFile !== undefined ? { pass: secret(flags.natsPasswordFile, 'password') } : {}),
    ...(flags.natsCreds !== undefined ? { credsFile: flags.natsCreds } : {}),
    ...(flags.natsCa !== undefined ? { tlsCa: flags.natsCa } : {}),
    ...(flags.natsCert !== undefined ? { tlsCert: flags.natsCert } : {}),
    ...(flags.natsKey !== undefined ? { tlsKey: flags.natsKey } : {}),
  };
}
