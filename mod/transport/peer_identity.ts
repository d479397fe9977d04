// Who a caller is, from the client certificate it presented under mutual TLS. The scheme is
// the one scripts/gen_certs.sh issues, and that script is its single source: the subject OU
// names the kind of holder (node, keyserver, control, admin, tenant), CN names the holder,
// and a tenant's certificate also carries the URI SAN kiseki://tenant/<id> with the same id
// as its CN. A certificate of the cluster CA that fits none of these is not an identity.
// Callers without TLS have no certificate; what they may do is the listener's decision
// (loopback only, unless explicitly insecure), recorded here as their identity too.

/** Holders of cluster server certificates (gen_certs.sh --node, --keyserver, --control). */
export const SERVER_CERTIFICATE_KINDS = ["node", "keyserver", "control"] as const;
export type ServerCertificateKind = (typeof SERVER_CERTIFICATE_KINDS)[number];

export type PeerIdentity =
  /** A cluster server, named by its certificate CN. */
  | { kind: ServerCertificateKind; name: string }
  /** An operator (gen_certs.sh --admin). */
  | { kind: "admin"; name: string }
  /** One tenant's client (gen_certs.sh --tenant ID); `tenant` is the ID as issued. */
  | { kind: "tenant"; tenant: string }
  /** No TLS, a loopback caller: single-node development, trusted like the host itself. */
  | { kind: "loopback" }
  /** No TLS, any caller, because the operator said so (KISEKI_ALLOW_INSECURE=true). */
  | { kind: "insecure" };

/** The parts of a verified client certificate that name its holder. */
export interface PeerCertificateNames {
  subject: Record<string, string | string[]>;
  /** Node's `subjectaltname` text: `DNS:a, IP Address:1.2.3.4, URI:kiseki://...`. */
  subjectAltName: string;
}

/** Tenant ids as gen_certs.sh accepts them (--tenant). */
const TENANT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TENANT_URI_PREFIX = "URI:kiseki://tenant/";

/**
 * The identity a verified certificate carries, or why it carries none (a sentence naming
 * what is wrong). Only call this for certificates TLS has verified against the cluster CA.
 */
export function certificateIdentity(cert: PeerCertificateNames): PeerIdentity | string {
  const ou = cert.subject["OU"];
  const cn = cert.subject["CN"];
  if (typeof ou !== "string") {
    return ou === undefined
      ? "the certificate has no OU"
      : `the certificate has several OUs (${ou.join(", ")})`;
  }
  if (typeof cn !== "string" || cn.length === 0) {
    return `the certificate (OU=${ou}) has no single CN`;
  }
  if ((SERVER_CERTIFICATE_KINDS as readonly string[]).includes(ou)) {
    return { kind: ou as ServerCertificateKind, name: cn };
  }
  if (ou === "admin") return { kind: "admin", name: cn };
  if (ou === "tenant") {
    const uris = cert.subjectAltName.split(",").map((s) => s.trim())
      .filter((s) => s.startsWith(TENANT_URI_PREFIX))
      .map((s) => s.slice(TENANT_URI_PREFIX.length));
    if (uris.length !== 1 || uris[0] !== cn || !TENANT_ID.test(cn)) {
      return `the tenant certificate CN=${cn} does not carry exactly one URI SAN ` +
        `kiseki://tenant/${cn}`;
    }
    return { kind: "tenant", tenant: cn };
  }
  return `the certificate OU=${ou} is not one scripts/gen_certs.sh issues ` +
    `(node, keyserver, control, admin, tenant)`;
}

/** How an identity reads in a log line or an error message. */
export function describeIdentity(identity: PeerIdentity): string {
  switch (identity.kind) {
    case "tenant":
      return `tenant ${identity.tenant}'s client certificate`;
    case "admin":
      return `operator certificate ${identity.name}`;
    case "loopback":
      return "a loopback caller without TLS";
    case "insecure":
      return "a caller without TLS";
    default:
      return `${identity.kind} certificate ${identity.name}`;
  }
}
