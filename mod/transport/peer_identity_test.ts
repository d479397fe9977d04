// The identity scheme is scripts/gen_certs.sh's: these tests issue certificates with the
// script itself and read each back the way TLS hands it to the server.

import assert from "node:assert/strict";
import { missingPart } from "../base/testing.ts";
import { GEN_CERTS, OPENSSL } from "./_testing.ts";
import { X509Certificate } from "node:crypto";
import {
  certificateIdentity,
  describeIdentity,
  type PeerCertificateNames,
} from "./peer_identity.ts";

/** A certificate file's names in the shape node:tls's getPeerCertificate() gives them. */
async function namesOf(path: string): Promise<PeerCertificateNames> {
  const x509 = new X509Certificate(await Deno.readTextFile(path));
  const subject: Record<string, string | string[]> = {};
  for (const line of x509.subject.split("\n")) {
    const eq = line.indexOf("=");
    const [k, v] = [line.slice(0, eq), line.slice(eq + 1)];
    const prior = subject[k];
    subject[k] = prior === undefined ? v : [prior, v].flat();
  }
  return { subject, subjectAltName: x509.subjectAltName ?? "" };
}

Deno.test({
  name: "certificateIdentity() reads every kind of certificate scripts/gen_certs.sh issues" +
    (OPENSSL ? "" : " (IGNORED: openssl missing, Debian package openssl)"),
  ignore: missingPart("openssl", !OPENSSL && "the openssl command is not installed"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-identity-" });
    try {
      const tenant = "6b697365-6b69-4000-8000-0000000000a1";
      const out = await new Deno.Command("bash", {
        args: [
          GEN_CERTS,
          "--out",
          dir,
          "--node",
          "node1:127.0.0.1",
          "--keyserver",
          "keysrv1:127.0.0.1",
          "--control",
          "control1:127.0.0.1",
          "--admin",
          "--tenant",
          tenant,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      assert.deepEqual(certificateIdentity(await namesOf(`${dir}/node1/server.crt`)), {
        kind: "node",
        name: "node1",
      });
      assert.deepEqual(certificateIdentity(await namesOf(`${dir}/keysrv1/keyserver.crt`)), {
        kind: "keyserver",
        name: "keysrv1",
      });
      assert.deepEqual(certificateIdentity(await namesOf(`${dir}/control1/control.crt`)), {
        kind: "control",
        name: "control1",
      });
      assert.deepEqual(certificateIdentity(await namesOf(`${dir}/admin/admin.crt`)), {
        kind: "admin",
        name: "kiseki-admin",
      });
      assert.deepEqual(certificateIdentity(await namesOf(`${dir}/tenant-${tenant}/client.crt`)), {
        kind: "tenant",
        tenant,
      });
      // The CA itself authenticates nobody.
      assert.match(
        certificateIdentity(await namesOf(`${dir}/ca.crt`)) as string,
        /OU=cluster CA is not one scripts\/gen_certs\.sh issues/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("certificateIdentity() refuses certificates that are ambiguous or half a tenant's", () => {
  const tenantSan = "URI:kiseki://tenant/acme";
  assert.deepEqual(
    certificateIdentity({ subject: { OU: "tenant", CN: "acme" }, subjectAltName: tenantSan }),
    { kind: "tenant", tenant: "acme" },
  );
  const problems: [PeerCertificateNames, RegExp][] = [
    [{ subject: { CN: "acme" }, subjectAltName: tenantSan }, /has no OU/],
    [{ subject: { OU: ["tenant", "node"], CN: "acme" }, subjectAltName: tenantSan }, /several OUs/],
    [{ subject: { OU: "node" }, subjectAltName: "" }, /no single CN/],
    [{ subject: { OU: "node", CN: ["a", "b"] }, subjectAltName: "" }, /no single CN/],
    // A tenant certificate must carry its id twice, the same: CN and the URI SAN.
    [{ subject: { OU: "tenant", CN: "acme" }, subjectAltName: "" }, /URI SAN/],
    [
      { subject: { OU: "tenant", CN: "acme" }, subjectAltName: "URI:kiseki://tenant/other" },
      /URI SAN kiseki:\/\/tenant\/acme/,
    ],
    [
      {
        subject: { OU: "tenant", CN: "acme" },
        subjectAltName: `${tenantSan}, URI:kiseki://tenant/acme`,
      },
      /exactly one URI SAN/,
    ],
    [{ subject: { OU: "tenant", CN: "a/b" }, subjectAltName: "URI:kiseki://tenant/a/b" }, /URI/],
    [{ subject: { OU: "guest", CN: "x" }, subjectAltName: "" }, /OU=guest is not one/],
  ];
  for (const [names, why] of problems) {
    const identity = certificateIdentity(names);
    assert.equal(typeof identity, "string", JSON.stringify(names));
    assert.match(identity as string, why);
  }
  assert.equal(
    describeIdentity({ kind: "tenant", tenant: "acme" }),
    "tenant acme's client certificate",
  );
  assert.equal(describeIdentity({ kind: "node", name: "node1" }), "node certificate node1");
});
