// Test helpers of the transport: certificates issued by scripts/gen_certs.sh itself (the
// identity scheme the transports check), and whether openssl, which it needs, is here.

import assert from "node:assert/strict";
import type { TlsMaterial } from "./raft_transport.ts";

export const GEN_CERTS = new URL("../../scripts/gen_certs.sh", import.meta.url).pathname;

/** Whether the openssl command runs (gen_certs.sh needs it). */
export const OPENSSL: boolean = (() => {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/** Runs gen_certs.sh with `--out dir` and `args`; fails the test with its stderr. */
export async function genCerts(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [GEN_CERTS, "--out", dir, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** The CA, certificate and key gen_certs.sh wrote for `name` (`kind`: server, client...). */
export async function tlsMaterial(
  dir: string,
  name: string,
  kind = "server",
): Promise<TlsMaterial> {
  return {
    ca: await Deno.readTextFile(`${dir}/ca.crt`),
    cert: await Deno.readTextFile(`${dir}/${name}/${kind}.crt`),
    key: await Deno.readTextFile(`${dir}/${name}/${kind}.key`),
  };
}
