import assert from "node:assert/strict";
import { addressOfPeer, isLoopbackAddress } from "./loopback.ts";

Deno.test("isLoopbackAddress() accepts 127.0.0.0/8, ::1 and IPv4-mapped loopback only", () => {
  for (
    const a of ["127.0.0.1", "127.255.3.9", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.5"]
  ) {
    assert.equal(isLoopbackAddress(a), true, a);
  }
  for (
    const a of [
      "10.0.0.1",
      "128.0.0.1",
      "0.0.0.0",
      "127.0.0.256",
      "::",
      "::2",
      "fe80::1",
      "::ffff:10.0.0.1",
      "1::1",
      "localhost",
      "127.0.0.1.example.com",
      "",
      "unknown",
    ]
  ) {
    assert.equal(isLoopbackAddress(a), false, a);
  }
});

Deno.test("addressOfPeer() takes the address from host:port, [v6]:port and grpc-js's v6:port", () => {
  assert.equal(addressOfPeer("127.0.0.1:5000"), "127.0.0.1");
  assert.equal(addressOfPeer("[::1]:5000"), "::1");
  assert.equal(addressOfPeer("::1:5000"), "::1");
  assert.equal(addressOfPeer("::ffff:10.0.0.2:443"), "::ffff:10.0.0.2");
  assert.equal(addressOfPeer("10.0.0.2"), "10.0.0.2");
  assert.equal(addressOfPeer("unknown"), "unknown");
});
