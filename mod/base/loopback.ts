// Is an address this host's own loopback? The one rule every listener that serves callers
// without TLS applies (the data-path gRPC in development, the operator API on the metrics
// port): 127.0.0.0/8, ::1, and IPv4 loopback written as an IPv4-mapped IPv6 address.

/**
 * True when `host` (an IP literal, IPv6 with or without brackets) is a loopback address.
 * Names (even `localhost`) are false: a caller's address is always a literal, and a name
 * would be a question for a resolver.
 */
export function isLoopbackAddress(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (v4 !== null) {
    const octets = v4.slice(1).map(Number);
    return octets.every((o) => o <= 255) && octets[0] === 127;
  }
  if (!/^[0-9a-f:]+$/.test(h) || !h.includes(":")) return false;
  return expandIpv6(h) === "0000:0000:0000:0000:0000:0000:0000:0001";
}

/** The eight groups of an IPv6 literal, four hex digits each; "" when it is not one. */
function expandIpv6(h: string): string {
  const halves = h.split("::");
  if (halves.length > 2) return "";
  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 2 && halves[1] !== "" ? halves[1]!.split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return "";
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (groups.some((g) => g.length === 0 || g.length > 4)) return "";
  return groups.map((g) => g.padStart(4, "0")).join(":");
}

/**
 * The address part of `host:port`, `[v6]:port` or grpc-js's unbracketed `v6:port`
 * (everything before the last colon); the whole text when it has no port.
 */
export function addressOfPeer(peer: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(peer);
  if (bracketed !== null) return bracketed[1]!;
  const colon = peer.lastIndexOf(":");
  if (colon < 0) return peer;
  // One colon: IPv4 or a name with a port. Several: IPv6 with the port appended.
  return /^\d+$/.test(peer.slice(colon + 1)) ? peer.slice(0, colon) : peer;
}
